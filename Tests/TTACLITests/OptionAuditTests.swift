import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTARuntime
@testable import TTACLI

/// What an audit of the options found: ranges the parser accepted and validation then refused in other words,
/// hyper-parameters without an option, `--config` examples a command refuses, repeated options taking the last value,
/// `--` and `--version`, `tta list`'s alignment and `tta inspect`'s range of a file with NaN.
@Suite struct OptionAuditTests {
    /// Values at the edges of what the parser accepts for a number option.
    static func edges(_ range: ValueKind.NumberRange) -> [String] {
        switch range {
        case .nonNegative: return ["0", "1000"]
        case .unit: return ["0", "1"]
        case .unitOpen: return ["0", "0.999"]
        case .positive: return ["0.001", "1000"]
        case .positiveUnit: return ["0.001", "1"]
        }
    }

    /// Whatever the parser accepts, the method configuration and the collapse policy accept too: the parser is where a
    /// value out of range is refused, in the words of the help.
    @Test func everyValueTheParserAcceptsIsValid() throws {
        for spec in OptionSpec.options(for: .run) {
            let values: [String]
            switch spec.kind {
            case .number(let range): values = Self.edges(range)
            case .int(let min, let max): values = max < .max ? ["\(min)", "\(max)"] : ["\(min)"]
            default: continue
            }
            for value in values {
                let a = try Parser.parse(["--\(spec.name)", value], command: .run)
                do {
                    _ = try methodConfiguration("tent", family: .cifar, numClasses: 10, a)
                    try ExperimentOptions(a, command: .run).collapse.validate()
                } catch {
                    Issue.record("--\(spec.name) \(value) is parsed, then refused: \(error)")
                }
            }
        }
    }

    @Test func rangesAreRefusedByTheParserInTheirOwnWords() throws {
        let refusals: [(String, String, String)] = [
            ("collapse-threshold", "0", "a number in (0, 1]"),
            ("collapse-threshold", "1.5", "a number in (0, 1]"),
            ("entropy-margin", "0", "a positive number"),
            ("roid-temperature", "0", "a positive number"),
            ("contrast-temperature", "0", "a positive number"),
            ("dampening", "2", "a number in [0, 1]"),
            ("sam-rho", "-1", "a non-negative number"),
        ]
        for (name, value, expected) in refusals {
            #expect(throws: CLIError.invalidValue(option: name, value: value, expected: expected)) {
                try Parser.parse(["--\(name)", value], command: .run)
            }
        }
        expectError(tta(["run", "--collapse-threshold", "0"]), "invalid value '0' for '--collapse-threshold': expected a number in (0, 1]", code: 64)
        expectError(tta(["run", "--entropy-margin", "0"]), "invalid value '0' for '--entropy-margin': expected a positive number", code: 64)
        #expect(try Parser.parse(["--collapse-threshold", "1"], command: .run).number("collapse-threshold") == 1)
    }

    /// Every option a validation message starts with is an option of the commands that adapt, spelled as the option.
    @Test func validationMessagesNameOptionsThatExist() throws {
        let breakers: [(inout MethodConfiguration) -> Void] = [
            { $0.lr = -1 }, { $0.steps = 0 }, { $0.beta1 = 1 }, { $0.momentum = -1 }, { $0.bnAlpha = 2 }, { $0.teacherMomentum = 2 },
            { $0.restoreProbability = 2 }, { $0.confidenceThreshold = 2 }, { $0.augmentations = -1 }, { $0.entropyMarginFactor = 0 },
            { $0.redundancyMargin = -1 }, { $0.fisherAlpha = -1 }, { $0.sarResetConstant = .nan }, { $0.samRho = -1 },
            { $0.lameNeighbours = 0 }, { $0.resetAfterUpdates = -1 }, { $0.rottaMemorySize = 0 }, { $0.rottaUpdateFrequency = 0 },
            { $0.rottaNu = 2 }, { $0.rottaAlpha = 2 }, { $0.rottaLambdaT = .nan }, { $0.roidMomentumSource = 2 },
            { $0.roidMomentumProbabilities = 2 }, { $0.roidTemperature = 0 }, { $0.unmixComponents = 0 }, { $0.unmixBatchSizeMax = 0 },
            { $0.batchSize = 0 }, { $0.rmtLambdaTarget = -1 }, { $0.rmtLambdaContrast = -1 }, { $0.rmtLambdaSource = -1 },
            { $0.rmtWarmupSamples = -1 }, { $0.contrastTemperature = 0 }, { $0.projectionDim = 0 },
        ]
        for breaker in breakers {
            var c = MethodConfiguration.defaults(for: .cifar)
            breaker(&c)
            let broken = c
            let e = #expect(throws: AdaptationError.self) { try broken.validate() }
            let name = String(e?.message.prefix { $0 != " " } ?? "")
            #expect(OptionSpec.spec(name, for: .run) != nil && OptionSpec.spec(name, for: .predict) != nil, "\(e?.message ?? "no error")")
        }
    }

    /// ROTTA.LAMBDA_T / LAMBDA_U, OPTIM.DAMPENING and SAR's SAM radius have options, read into the configuration and
    /// listed by `tta list` with their defaults.
    @Test func newHyperParameterOptionsReachTheConfiguration() throws {
        let a = try Parser.parse(["--dampening", "0.25", "--sam-rho", "0.1", "--rotta-lambda-t", "0.5", "--rotta-lambda-u", "2"], command: .run)
        let c = try methodConfiguration("rotta", family: .cifar, numClasses: 10, a)
        #expect(c.dampening == 0.25 && c.samRho == 0.1 && c.rottaLambdaT == 0.5 && c.rottaLambdaU == 2)
        let d = try methodConfiguration("rotta", family: .cifar, numClasses: 10, try Parser.parse([], command: .run))
        #expect(d.dampening == 0 && d.samRho == 0.05 && d.rottaLambdaT == 1 && d.rottaLambdaU == 1)
        let predict = try Parser.parse(["--sam-rho", "0.2"], command: .predict)
        #expect(try methodConfiguration("sar", family: .cifar, numClasses: 10, predict).samRho == 0.2)

        let list = tta(["list"]).out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(list.contains("--sar-reset-constant 0.2 --sam-rho 0.05"))
        #expect(list.contains("--rotta-alpha 0.05 --rotta-lambda-t 1 --rotta-lambda-u 1"))
        let help = tta(["run", "--help"]).out
        for name in ["dampening", "sam-rho", "rotta-lambda-t", "rotta-lambda-u"] { #expect(help.contains("\n  --\(name) <x> ")) }
    }

    /// The `--config` example of the help and the errors is accepted by every command that takes the file; an integer
    /// past Int.max keeps its digits (it used to go through Double: '1.8446744073709552e+19').
    @Test func configExampleAndLargeIntegers() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanup() }
        let path = dir.path("c.json")
        try Data(Parser.configExample.utf8).write(to: URL(fileURLWithPath: path))
        for command in CommandName.allCases where OptionSpec.spec("config", for: command) != nil {
            let a = try Parser.parse(["--config", path], command: command)
            #expect(a.number("lr") == 0.01 && a.int("batch-size") == 64, "\(command)")
            let help = tta([command.rawValue, "--help"]).out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            #expect(help.contains(Parser.configExample), "\(command)")
        }
        try Data(#"{"seed": 18446744073709551615}"#.utf8).write(to: URL(fileURLWithPath: path))
        #expect(try Parser.parse(["--config", path], command: .run).seed("seed") == .max)
        #expect(try Parser.parse(["--seed", "18446744073709551615"], command: .run).seed("seed") == .max)
        try Data(#"{"seed": -1}"#.utf8).write(to: URL(fileURLWithPath: path))
        expectError(tta(["run", "--config", path]), "\(path): key 'seed': invalid value '-1': expected a non-negative integer", code: 64)
    }

    /// A single-valued option given twice is refused, naming both values; the command line still overrides the
    /// config file, and what follows `--` is not read as options.
    @Test func repeatedOptionsAreRefused() throws {
        expectError(tta(["run", "--method", "tent", "--method", "source"]), "--method given twice ('tent', then 'source')", code: 64)
        expectError(tta(["compare", "--batch-size=8", "--batch-size", "16"]), "--batch-size given twice ('8', then '16')", code: 64)
        expectError(tta(["run", "--config", "a.json", "--config", "b.json"]), "--config given twice ('a.json', then 'b.json')", code: 64)
        expectError(tta(["run", "--quiet", "--quiet"]), "--quiet given twice", code: 64)
        let dir = try TemporaryFolder()
        defer { dir.cleanup() }
        let path = dir.path("c.json")
        try Data(#"{"method": "tent", "batch-size": 8}"#.utf8).write(to: URL(fileURLWithPath: path))
        let a = try Parser.parse(["--config", path, "--method", "source"], command: .run)
        #expect(a.word("method") == "source" && a.int("batch-size") == 8)
    }

    /// `--` ends the options (POSIX): everything after it is positional, `--help` included.
    @Test func doubleDashEndsTheOptions() throws {
        let a = try Parser.parse(["--", "-x.npy"], command: .inspect)
        #expect(a.positionals == ["-x.npy"] && !a.help)
        let b = try Parser.parse(["--quiet", "--", "--quiet", "--help"], command: .run)
        #expect(b.values == ["quiet": .bool(true)] && b.positionals == ["--quiet", "--help"] && !b.help)
        expectError(tta(["inspect", "--", "-x.npy"]), "inspect: no such file: -x.npy", code: 1)
        expectError(tta(["inspect", "--", "a.npy", "b.npy"]), "unexpected argument 'b.npy' for 'tta inspect'; see 'tta inspect --help'", code: 64)
    }

    @Test func versionTakesNoArgument() {
        expectError(tta(["--version", "extra"]), "unexpected argument 'extra' after --version; see 'tta --help'", code: 64)
        let help = tta(["--help"]).out
        #expect(help.contains("\n  --version "))
    }

    /// Every line of `tta list` fits the help's width (but a path longer than a line, alone on its line), and the
    /// columns are as wide as their longest name.
    @Test func listFitsTheWidthAndAligns() {
        let r = tta(["list"])
        #expect(r.code == 0 && r.err.isEmpty)
        for line in r.out.split(separator: "\n") {
            let words = line.split(separator: " ")
            #expect(line.count <= Help.width + 2 || words.count == 1, "\(line)")
        }
        #expect(r.out.contains("\n  tiny-imagenet-c   Tiny-ImageNet-C: 200 classes"))
        #expect(r.out.contains("\n  cifar10-c         CIFAR-10-C (Hendrycks & Dietterich)"))
        #expect(r.out.contains("\n  rmt          mean teacher with symmetric CE, source prototypes, contrastive term, source warm-up\n"
                               + "               and replay; needs labelled source data (RMT)\n"))
    }

    /// The range of a `.npy` is over its finite values; NaN or infinity are counted apart.
    @Test func inspectRangeSkipsNaN() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanup() }
        let mixed = dir.path("mixed.npy")
        try NPYFile.write(floats: [.nan, 2, -1, .infinity, 0.5], shape: [5], to: URL(fileURLWithPath: mixed))
        let r = tta(["inspect", mixed])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.out.contains("\nvalues: min -1, max 2 (of the finite values), 2 NaN or infinite\n"), "\(r.out)")
        let none = dir.path("none.npy")
        try NPYFile.write(floats: [.nan, -Float.infinity], shape: [2], to: URL(fileURLWithPath: none))
        #expect(tta(["inspect", none]).out.contains("\nvalues: none finite, 2 NaN or infinite\n"))
        let clean = dir.path("clean.npy")
        try NPYFile.write(floats: [3, 1.5], shape: [2], to: URL(fileURLWithPath: clean))
        #expect(tta(["inspect", clean]).out.contains("\nvalues: min 1.5, max 3\n"))
    }
}
