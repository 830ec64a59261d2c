import Foundation
import Testing
import TTAAdaptation
import TTAData
@testable import TTACLI

@Suite struct ParserTests {
    /// Every option of `compare` with a value, and what it parses to.
    static let compareCases: [([String], String, OptionValue)] = [
        (["--dataset", "cifar100-c"], "dataset", .word("cifar100-c")),
        (["--data-dir", "/data"], "data-dir", .word("/data")),
        (["--source-data", "/src"], "source-data", .word("/src")),
        (["--source-samples", "2000"], "source-samples", .int(2000)),
        (["--cache-dir", "/cache"], "cache-dir", .word("/cache")),
        (["--model", "wideresnet-28-10"], "model", .word("wideresnet-28-10")),
        (["--subset", "robustbench5000"], "subset", .word("robustbench5000")),
        (["--normalize", "0.5,0.5,0.5:0.25,0.25,0.25"], "normalize", .word("0.5,0.5,0.5:0.25,0.25,0.25")),
        (["--weights", "w.safetensors"], "weights", .word("w.safetensors")),
        (["--methods", "tent,cotta"], "methods", .list(["tent", "cotta"])),
        (["--methods", "tent,tent+unmix_tns"], "methods", .list(["tent", "tent+unmix_tns"])),
        (["--setting", "reset_each_shift"], "setting", .word("reset_each_shift")),
        (["--severity", "5,4,3"], "severity", .ints([5, 4, 3])),
        (["--severity", "3"], "severity", .ints([3])),
        (["--corruptions", "fog, snow"], "corruptions", .list(["fog", "snow"])),
        (["--samples-per-domain", "100"], "samples-per-domain", .int(100)),
        (["--batch-size", "64"], "batch-size", .int(64)),
        (["--order", "file"], "order", .word("file")),
        (["--seed", "18446744073709551615"], "seed", .seed(.max)),
        (["--dirichlet", "0.1"], "dirichlet", .number(0.1)),
        (["--episodic"], "episodic", .bool(true)),
        (["--episodic=false"], "episodic", .bool(false)),
        (["--lr", "1e-4"], "lr", .number(1e-4)),
        (["--optimizer", "sgd"], "optimizer", .word("sgd")),
        (["--steps", "3"], "steps", .int(3)),
        (["--momentum", "0.8"], "momentum", .number(0.8)),
        (["--dampening", "0.1"], "dampening", .number(0.1)),
        (["--nesterov", "false"], "nesterov", .bool(false)),
        (["--weight-decay", "0.0005"], "weight-decay", .number(0.0005)),
        (["--beta1", "0.5"], "beta1", .number(0.5)),
        (["--bn-alpha", "0.2"], "bn-alpha", .number(0.2)),
        (["--teacher-momentum", "0.99"], "teacher-momentum", .number(0.99)),
        (["--restore-probability", "0"], "restore-probability", .number(0)),
        (["--confidence-threshold", "1"], "confidence-threshold", .number(1)),
        (["--augmentations", "0"], "augmentations", .int(0)),
        (["--symmetric-loss", "true"], "symmetric-loss", .bool(true)),
        (["--warmup-samples", "0"], "warmup-samples", .int(0)),
        (["--unmix-components", "128"], "unmix-components", .int(128)),
        (["--unmix-batch-size-max", "16"], "unmix-batch-size-max", .int(16)),
        (["--format", "csv"], "format", .word("csv")),
        (["--output", "r.json"], "output", .word("r.json")),
        (["--report", "r.html"], "report", .word("r.html")),
        (["--threads", "1"], "threads", .int(1)),
        (["--memory-limit", "8GiB"], "memory-limit", .word("8GiB")),
        (["--quiet"], "quiet", .bool(true)),
        (["--batch-size=32"], "batch-size", .int(32)),
        (["--collapse-window", "20"], "collapse-window", .int(20)),
        (["--collapse-threshold", "0.9"], "collapse-threshold", .number(0.9)),
        (["--on-collapse", "reset"], "on-collapse", .word("reset")),
        (["--checkpoint", "run.ckpt"], "checkpoint", .word("run.ckpt")),
        (["--checkpoint-every", "5"], "checkpoint-every", .int(5)),
        (["--resume", "run.ckpt"], "resume", .word("run.ckpt")),
        (["--window-length", "16"], "window-length", .int(16)),
        (["--entropy-margin", "0.3"], "entropy-margin", .number(0.3)),
        (["--redundancy-margin", "0.2"], "redundancy-margin", .number(0.2)),
        (["--fisher-alpha", "2000"], "fisher-alpha", .number(2000)),
        (["--sar-reset-constant", "0.1"], "sar-reset-constant", .number(0.1)),
        (["--sam-rho", "0.1"], "sam-rho", .number(0.1)),
        (["--lame-affinity", "knn"], "lame-affinity", .word("knn")),
        (["--lame-neighbours", "3"], "lame-neighbours", .int(3)),
        (["--lame-force-symmetry", "true"], "lame-force-symmetry", .bool(true)),
        (["--reset-after-updates", "7"], "reset-after-updates", .int(7)),
        (["--rotta-memory-size", "16"], "rotta-memory-size", .int(16)),
        (["--rotta-update-frequency", "8"], "rotta-update-frequency", .int(8)),
        (["--rotta-nu", "0.01"], "rotta-nu", .number(0.01)),
        (["--rotta-alpha", "0.1"], "rotta-alpha", .number(0.1)),
        (["--rotta-lambda-t", "0.5"], "rotta-lambda-t", .number(0.5)),
        (["--rotta-lambda-u", "2"], "rotta-lambda-u", .number(2)),
        (["--roid-weighting", "false"], "roid-weighting", .bool(false)),
        (["--roid-prior-correction", "false"], "roid-prior-correction", .bool(false)),
        (["--roid-consistency", "false"], "roid-consistency", .bool(false)),
        (["--roid-momentum-source", "0.9"], "roid-momentum-source", .number(0.9)),
        (["--roid-momentum-probs", "0.8"], "roid-momentum-probs", .number(0.8)),
        (["--roid-temperature", "0.5"], "roid-temperature", .number(0.5)),
        (["--rmt-lambda-target", "0.5"], "rmt-lambda-target", .number(0.5)),
        (["--rmt-lambda-contrast", "0.25"], "rmt-lambda-contrast", .number(0.25)),
        (["--rmt-lambda-source", "0"], "rmt-lambda-source", .number(0)),
        (["--contrast-temperature", "0.2"], "contrast-temperature", .number(0.2)),
        (["--projection-dim", "64"], "projection-dim", .int(64)),
    ]

    @Test(arguments: compareCases)
    func everyOptionParses(_ args: [String], _ name: String, _ value: OptionValue) throws {
        let parsed = try Parser.parse(args, command: .compare)
        #expect(parsed.values == [name: value])
    }

    @Test func everyDeclaredOptionIsCovered() {
        let covered = Set(Self.compareCases.map(\.1) + ["config"])
        let declared = Set(OptionSpec.options(for: .compare).map(\.name))
        #expect(declared == covered)
    }

    @Test func runTakesMethodNotMethods() throws {
        #expect(try Parser.parse(["--method", "norm_alpha"], command: .run).values == ["method": .word("norm_alpha")])
        #expect(throws: CLIError.unknownOption("--methods", command: "run", suggestion: "method")) {
            try Parser.parse(["--methods", "tent"], command: .run)
        }
    }

    @Test func helpWins() throws {
        #expect(try Parser.parse(["--bogus", "-h"], command: .compare).help)
    }

    @Test func typedOptionsAndHyperParameters() throws {
        let a = try Parser.parse(["--methods", "tent,cotta", "--lr", "0.01", "--optimizer", "sgd", "--nesterov", "false",
                                  "--steps", "2", "--augmentations", "4", "--confidence-threshold", "0.5", "--setting", "correlated",
                                  "--dirichlet", "0.1", "--severity", "5,4"], command: .compare)
        let o = ExperimentOptions(a, command: .compare)
        #expect(o.methods == ["tent", "cotta"])
        #expect(o.setting == .correlated && o.dirichlet == 0.1 && o.severities == [5, 4])
        #expect(o.batchSize == nil && o.order == .shuffled && o.seed == 1 && o.model == "auto")
        let c = try methodConfiguration("cotta", family: .cifar, numClasses: 10, a)
        #expect(c.lr == 0.01 && c.optimizer == .sgd && !c.nesterov && c.steps == 2 && c.augmentations == 4 && c.confidenceThreshold == 0.5)
        // Untouched fields keep the reference defaults.
        #expect(c.teacherMomentum == 0.999 && c.restoreProbability == 0.01)
        #expect(try methodConfiguration("cotta", family: .cifar, numClasses: 100, Parser.parse([], command: .compare)).confidenceThreshold == 0.72)
    }

    @Test func defaults() throws {
        let o = ExperimentOptions(try Parser.parse([], command: .compare), command: .compare)
        #expect(o.methods == ["source", "norm_test", "tent", "cotta"])
        #expect(o.severities == [5] && o.corruptions == CorruptionBenchmark.standardCorruptions && o.setting == .continual)
        #expect(o.format == .table && !o.quiet && !o.episodic)
        #expect(ExperimentOptions(try Parser.parse([], command: .run), command: .run).methods == ["tent"])
    }

    @Test func outputFormatFollowsTheExtensionUnlessGiven() throws {
        func format(_ args: [String]) throws -> OutputFormat {
            ExperimentOptions(try Parser.parse(args, command: .compare), command: .compare).outputFileFormat
        }
        #expect(try format(["--output", "a.json"]) == .json)
        #expect(try format(["--output", "a.csv"]) == .csv)
        #expect(try format(["--output", "a.md"]) == .markdown)
        #expect(try format(["--output", "a.txt"]) == .table)
        #expect(try format(["--output", "a.json", "--format", "csv"]) == .csv)
    }

    @Test func configFileThenFlagsOverride() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanup() }
        let config = dir.path("c.json")
        try Data(#"{"lr": 0.01, "methods": ["tent", "cotta"], "severity": [5, 3], "episodic": true, "nesterov": false, "batch-size": 16, "format": "json"}"#.utf8)
            .write(to: URL(fileURLWithPath: config))
        let a = try Parser.parse(["--config", config, "--lr", "0.02", "--methods", "source"], command: .compare)
        #expect(a.number("lr") == 0.02)
        #expect(a.list("methods") == ["source"])
        #expect(a.ints("severity") == [5, 3])
        #expect(a.flag("episodic") && a.bool("nesterov") == false && a.int("batch-size") == 16 && a.word("format") == "json")
    }

    @Test func configErrors() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanup() }
        let path = dir.path("c.json")
        func write(_ s: String) throws { try Data(s.utf8).write(to: URL(fileURLWithPath: path)) }

        try write(#"{"learning-rate": 0.1}"#)
        expectError(tta(["compare", "--config", path]), "\(path): unknown key 'learning-rate'", code: 64)
        try write(#"{"batchsize": 8}"#)
        expectError(tta(["compare", "--config", path]), "\(path): unknown key 'batchsize'; did you mean 'batch-size'?", code: 64)
        try write(#"{"lr": "fast"}"#)
        expectError(tta(["compare", "--config", path]), "\(path): key 'lr': invalid value 'fast': expected a non-negative number", code: 64)
        try write(#"{"lr": null}"#)
        expectError(tta(["compare", "--config", path]), "\(path): key 'lr': expected a non-negative number, found null", code: 64)
        try write(#"[1, 2]"#)
        expectError(tta(["compare", "--config", path]), "\(path): expected a JSON object of options, e.g. {\"lr\": 0.01}", code: 64)
        try write(#"{"lr": 0.1,"#)
        expectError(tta(["compare", "--config", path]), "\(path): not valid JSON; expected an object such as {\"lr\": 0.01, \"batch-size\": 64}", code: 64)
        try write(#"{"config": "other.json"}"#)
        expectError(tta(["compare", "--config", path]), "\(path): unknown key 'config'", code: 64)
        expectError(tta(["compare", "--config", dir.path("missing.json")]), "--config: no such file: \(dir.path("missing.json"))", code: 1)
        expectError(tta(["compare", "--config", dir.url.path]), "--config \(dir.url.path): is a directory; expected a regular file", code: 1)
        expectError(tta(["compare", "--config", "/dev/zero"]), "--config /dev/zero: is a device; expected a regular file", code: 1)
    }

    @Test func closestSuggestions() {
        #expect(closest(to: "batchsize", in: ["batch-size", "seed"]) == "batch-size")
        #expect(closest(to: "metods", in: ["methods", "method"]) == "methods")
        #expect(closest(to: "xyz", in: ["batch-size", "seed"]) == nil)
        #expect(editDistance(Array("ab"), Array("ba")) == 1)
    }

    /// ImageNet-C takes RobustBench's 5000 images unless the reference switches to all 50,000 (a correlated setting, or
    /// NUM_EX set: datasets/corruptions_datasets.py); Tiny-ImageNet-C always takes every image.
    @Test func imageNetSubsetFollowsTheReference() {
        #expect(defaultSubset(.imagenet, .continual, samplesPerDomain: nil) == "robustbench5000")
        #expect(defaultSubset(.imagenet, .mixed_domains, samplesPerDomain: nil) == "robustbench5000")
        #expect(defaultSubset(.imagenet, .correlated, samplesPerDomain: nil) == "all")
        #expect(defaultSubset(.imagenet, .continual, samplesPerDomain: 1000) == "all")
        #expect(defaultSubset(.tinyImagenet, .continual, samplesPerDomain: nil) == "all")
    }
}
