import Foundation
import Testing
@testable import TTACLI

@Suite struct HelpTests {
    @Test(arguments: CommandName.allCases)
    func helpListsEveryOptionWithItsDefault(_ command: CommandName) {
        let r = tta([command.rawValue, "--help"])
        #expect(r.code == 0 && r.err.isEmpty)
        #expect(r.out.hasPrefix("OVERVIEW: "))
        #expect(r.out.contains("USAGE: tta \(command.rawValue)"))
        #expect(r.out.contains("-h, --help"))
        let flat = r.out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        for spec in OptionSpec.options(for: command) {
            #expect(r.out.contains("  --\(spec.name)"), "--\(spec.name) missing from 'tta \(command.rawValue) --help'")
            if let d = spec.defaultText {
                #expect(flat.contains("(default: \(d))"), "default of --\(spec.name) missing")
            }
        }
        #expect(r.out.split(separator: "\n").allSatisfy { $0.count <= Help.width + 2 })
        #expect(tta(["help", command.rawValue]).out == r.out)
        #expect(tta([command.rawValue, "--bogus", "-h"]).out == r.out)
    }

    @Test func compareHelpShowsTheDocumentedDefaults() {
        let out = tta(["compare", "--help"]).out
        #expect(out.contains("  --batch-size <n>                Images per batch (one adaptation step each). norm_alpha run alone\n"))
        for d in ["(default: 200; 64 for imagenet-c, tiny-imagenet-c; 50 for fmnist-c; 1 for norm_alpha alone)", "(default: source,norm_test,tent,cotta)", "(default: shuffled)", "(default: 0.001)",
                  "(default: adam)", "(default: continual)", "(default: auto)", "(default: 1)", "(default: 5)", "(default: table)"] {
            #expect(out.split(whereSeparator: \.isWhitespace).joined(separator: " ").contains(d), "\(d)")
        }
        #expect(tta(["predict", "--help"]).out.contains("(default: source)"))
        #expect(tta(["run", "--help"]).out.contains("(default: tent)"))
        // --optimizer names the methods it applies to, and SAR's own SGD with SAM, from the registry.
        let words = out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(words.contains("Optimizer of the gradient-based methods (tent, cotta, eta, eata, rdumb, rotta, roid, rmt; sar always takes SGD with SAM)."))
    }

    @Test func topLevel() {
        let r = tta(["--help"])
        #expect(r.code == 0)
        for c in CommandName.allCases { #expect(r.out.contains("\n  \(c.rawValue) ")) }
        #expect(tta([]).out == r.out && tta(["help"]).out == r.out && tta(["-h"]).out == r.out)
        #expect(tta(["--version"]).out == "tta 0.1.0\n")
        #expect(r.out.contains("\n  --version ") && r.out.contains("\n  -h, --help "))
    }

    /// The one word wrap of the help and `tta list`: lines within the width after the indent; beside a name column, a
    /// first word that does not fit leaves the name on its own line; a word longer than a line goes past the width.
    @Test func wrapKeepsWordsWithinTheWidth() {
        #expect(Help.wrap("aa bb cc", width: 5, indent: "  ") == ["  aa bb", "  cc"])
        #expect(Help.wrap("aa bb cc", width: 5, indent: "  ", first: "n ") == ["n aa bb", "  cc"])
        #expect(Help.wrap("aa bb", width: 5, indent: "  ", first: "longname ") == ["longname", "  aa bb"])
        #expect(Help.wrap("abcdefgh x", width: 5, indent: "  ") == ["  abcdefgh", "  x"])
        #expect(Help.wrap("", width: 5, indent: "  ", first: "n   ") == ["n   "])
    }

    @Test func listShowsMethodsWithDefaults() {
        let r = tta(["list"])
        #expect(r.code == 0)
        #expect(r.out.contains("  tent         entropy minimisation over BN affine parameters (TENT)\n               --optimizer adam --lr 0.001 --beta1 0.9 --weight-decay 0 --steps 1\n"))
        #expect(r.out.contains("  norm_alpha   BN with (1-α)·source + α·batch statistics (α-BN)\n               --bn-alpha 0.1\n"))
        #expect(r.out.contains("--rotta-memory-size 64 --rotta-update-frequency 64 --rotta-nu 0.001"))
        #expect(r.out.contains("--lame-affinity rbf --lame-neighbours 5 --lame-force-symmetry false\n"))
        // SAR takes SGD with SAM whatever --optimizer says (as the reference): no optimizer settings it ignores.
        #expect(r.out.contains("(SAR)\n               --lr 0.001 --momentum 0.9 --steps 1 --entropy-margin "))
        #expect(r.out.contains("\n  resnet50 ") && r.out.contains("\n  resnext-29-4x32 "))
        #expect(r.out.contains("  unmix_tns    per-sample BN statistics mixed from K running components, no training (UnMix-TNS)\n"
                               + "               --unmix-components 16 --unmix-batch-size-max 64\n"))
        #expect(r.out.contains("  <method>+unmix_tns: tent, eta, eata, sar, rdumb, lame, cotta, rotta, roid adapting through\n"
                               + "               UnMix-TNS normalisation (e.g. tent+unmix_tns): "))
        for section in ["METHODS", "MODELS (--model)", "DATASETS (--dataset)", "SETTINGS (--setting)", "ORDERS (--order)"] {
            #expect(r.out.contains(section))
        }
        for s in ["continual", "reset_each_shift", "gradual", "mixed_domains", "correlated", "cifar10-c", "cifar100-c", "fmnist-c"] {
            #expect(r.out.contains("  \(s) "))
        }
    }
}
