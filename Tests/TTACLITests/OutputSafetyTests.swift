import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTARuntime
@testable import TTACLI

/// Results are never put under the wrong domain, never lost to stdout or to a path mistake, and options that
/// would do nothing are refused. Each case was found by a read-through of the CLI as a user.
@Suite struct OutputSafetyTests {
    /// `mixed_domains` with one image per domain leaves some corruptions without images (3 of 24 drawn). Their
    /// columns are left out, and every value sits under its own domain in the table and the CSV (the columns
    /// used to be filled by position, so a value moved left past each empty domain).
    @Test func mixedDomainsKeepEachErrorUnderItsDomain() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        var sawAnEmptyDomain = false
        for seed in 1...4 {
            let common = tiny.dataOptions + ["--method", "source", "--setting", "mixed_domains", "--samples-per-domain", "1", "--seed", "\(seed)"]
            let json = tta(["run"] + common + ["--format", "json"])
            #expect(json.code == 0, "\(json.err)")
            let run = try JSONDecoder().decode(ResultsFile.self, from: Data(json.out.utf8)).runs[0]
            sawAnEmptyDomain = sawAnEmptyDomain || run.domains.count < TinyBenchmark.corruptions.count
            let csv = tta(["run"] + common + ["--format", "csv"]).out.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
            try #require(csv.count == 2, "\(csv)")
            #expect(csv[0] == ["method"] + run.domains.map(\.name) + ["mean", "images_per_second", "seconds", "peak_memory_bytes", "completed"])
            #expect(Array(csv[1][1...run.domains.count]) == run.domains.map { ResultsView.percent($0.error) }, "seed \(seed)")
            let table = tta(["run"] + common).out
            #expect(table.contains("images mixed"), "\(table)")
        }
        #expect(sawAnEmptyDomain)
    }

    /// `mixed_domains` over several severities: under the table, each corruption's error over all its severities, their
    /// average and the error over all samples, as the reference's `eval_domain_dict` prints them (the results split by
    /// domain name, which is the corruption), recomputed here from the run's per-domain counts.
    @Test func mixedDomainsOverSeveralSeveritiesAreSplitByCorruption() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let common = tiny.dataOptions + ["--method", "source", "--setting", "mixed_domains", "--severity", "5,3", "--seed", "3"]
        let json = tta(["run"] + common + ["--format", "json"])
        #expect(json.code == 0, "\(json.err)")
        let run = try JSONDecoder().decode(ResultsFile.self, from: Data(json.out.utf8)).runs[0]
        try #require(Set(run.domains.map(\.severity)) == [5, 3])
        var names: [String] = []
        var wrong: [String: Int] = [:], samples: [String: Int] = [:]
        for d in run.domains {
            if samples[d.name] == nil { names.append(d.name) }
            wrong[d.name, default: 0] += d.samples - d.correct
            samples[d.name, default: 0] += d.samples
        }
        let errors = names.map { 100 * Double(wrong[$0]!) / Double(samples[$0]!) }
        let line = "source: " + zip(names, errors).map { "\($0) \(ResultsView.percent($1))" }.joined(separator: ", ")
            + "; average \(ResultsView.percent(errors.reduce(0, +) / Double(errors.count)))"
            + ", over all samples \(ResultsView.percent(run.errorOverAllSamples))"
        let table = tta(["run"] + common).out
        #expect(table.contains("\nerror per corruption over its severities (the reference's split by domain):\n" + line + "\n"), "\(table)")
        // One severity: no such lines (the domains are the corruptions).
        #expect(!tta(["run"] + tiny.dataOptions + ["--method", "source", "--setting", "mixed_domains"]).out.contains("over its severities"))
    }

    /// `gradual` runs a single severity as 1,…,5,…,1: a lone `--severity` would be ignored and is refused; the
    /// title names the sequence run.
    @Test func gradualNamesTheSeveritiesItRuns() throws {
        let tiny = try TinyBenchmark(corruptions: ["fog"])
        defer { tiny.cleanup() }
        let options = tiny.dataOptions.map { $0 == "gaussian_noise,shot_noise,fog" ? "fog" : $0 }
        expectError(tta(["run"] + options + ["--method", "source", "--setting", "gradual", "--severity", "3"]),
                    "--severity 3: --setting gradual runs each corruption at severities 1,2,3,4,5,4,3,2,1; give the whole sequence "
                    + "to change it (e.g. --severity 1,3,5,3,1)", code: 64)
        let r = tta(["run"] + options + ["--method", "source", "--setting", "gradual"])
        #expect(r.code == 0 && r.out.contains(" · severity 1,2,3,4,5,4,3,2,1 · "), "\(r.out)")
        // The reference prints the mean over the severity-5 domains beside the mean; so does the table.
        let json = tta(["run"] + options + ["--method", "source", "--setting", "gradual", "--format", "json"])
        let run = try JSONDecoder().decode(ResultsFile.self, from: Data(json.out.utf8)).runs[0]
        let five = try #require(run.domains.first { $0.severity == 5 })
        #expect(run.domains.count == 9 && run.meanErrorAtSeverity5 == five.error)
        #expect(r.out.contains("mean error at severity 5 (the reference's \"mean error at 5\"): source \(ResultsView.percent(five.error))\n"), "\(r.out)")
        // A stream of severity 5 alone has no such line: its mean is that mean.
        #expect(!tta(["run"] + options + ["--method", "source"]).out.contains("mean error at severity 5"))
    }

    /// Options none of the methods reads are refused by name, with the methods that read them; read by one of
    /// the methods compared, they are taken. SAR's results record the SGD it builds itself.
    @Test func optionsThatWouldDoNothingAreRefused() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        expectError(tta(["run"] + tiny.dataOptions + ["--method", "tent", "--rotta-nu", "0.01"]),
                    "--rotta-nu is read only by rotta; tent does not read it", code: 64)
        expectError(tta(["run"] + tiny.dataOptions + ["--method", "sar", "--optimizer", "adam"]),
                    "--optimizer is read only by tent, cotta, eta, eata, rdumb, rotta, roid, rmt; sar does not read it", code: 64)
        expectError(tta(["compare"] + tiny.dataOptions + ["--methods", "source,norm_test", "--lr", "0.1"]),
                    "--lr is read only by tent, cotta, eta, eata, sar, rdumb, rotta, roid, rmt; none of source, norm_test does", code: 64)
        expectError(tta(["run"] + tiny.dataOptions + ["--method", "tent", "--source-data", tiny.root]),
                    "--source-data is read only by eata, rmt; tent does not read it", code: 64)
        expectError(tta(["predict", "--weights", tiny.weights, "--input", "x.npy", "--output", "y.npy", "--augmentations", "2"]),
                    "--augmentations is read only by cotta; source does not read it", code: 64)
        expectError(tta(["run"] + tiny.dataOptions + ["--method", "tent", "--checkpoint-every", "3"]),
                    "--checkpoint-every needs --checkpoint (the file to save the run's state in)", code: 64)
        // Optimizer settings the optimizer a method runs does not read: tent runs Adam on CIFAR, so --momentum is SGD's.
        expectError(tta(["run"] + tiny.dataOptions + ["--method", "tent", "--momentum", "0.5"]),
                    "--momentum is read by SGD only; tent runs Adam here (--optimizer sgd selects it)", code: 64)
        expectError(tta(["compare"] + tiny.dataOptions + ["--methods", "tent,cotta", "--optimizer", "sgd", "--beta1", "0.5"]),
                    "--beta1 is read by Adam only; none of tent, cotta runs Adam here (--optimizer adam selects it)", code: 64)
        #expect(tta(["run"] + tiny.dataOptions + ["--method", "tent", "--optimizer", "sgd", "--momentum", "0.5"]).code == 0)
        #expect(tta(["run"] + tiny.dataOptions + ["--method", "sar", "--momentum", "0.5"]).code == 0)
        // A --config file may set what a run does not read (it may serve several runs): the help's own example runs
        // with a method that trains nothing.
        let config = tiny.folder.path("shared.json")
        try Data(Parser.configExample.utf8).write(to: URL(fileURLWithPath: config))
        let shared = tta(["run"] + tiny.dataOptions(with: ["--method", "norm_test", "--config", config]))
        #expect(shared.code == 0, "\(shared.err)")
        // Nor are a shared file's --checkpoint-every (for the runs that checkpoint) and single --severity (for the
        // runs that are not gradual) refused.
        let sharedRuns = tiny.folder.path("shared-runs.json")
        try Data(#"{"checkpoint-every": 5, "severity": "5"}"#.utf8).write(to: URL(fileURLWithPath: sharedRuns))
        let gradual = tta(["run"] + tiny.dataOptions(with: ["--method", "source", "--setting", "gradual", "--config", sharedRuns]))
        #expect(gradual.code == 0 && gradual.out.contains(" · severity 1,2,3,4,5,4,3,2,1 · "), "\(gradual.err)")
        // Read by one of the methods compared: taken.
        let both = tta(["compare"] + tiny.dataOptions + ["--methods", "tent,sar", "--optimizer", "sgd", "--format", "json"])
        #expect(both.code == 0, "\(both.err)")
        let runs = try JSONDecoder().decode(ResultsFile.self, from: Data(both.out.utf8)).runs
        #expect(runs[0].methodConfiguration.optimizer == .sgd && runs[0].methodConfiguration.nesterov)
        let sar = tta(["run"] + tiny.dataOptions + ["--method", "sar", "--format", "json"])
        let recorded = try JSONDecoder().decode(ResultsFile.self, from: Data(sar.out.utf8)).runs[0].methodConfiguration
        #expect(recorded.optimizer == .sgd && !recorded.nesterov && recorded.weightDecay == 0 && recorded.dampening == 0)
    }

    /// Output paths that would fail after the run, or overwrite an input or each other, are refused before it
    /// starts, naming the flags; so is a checkpoint file that exists and is not the one resumed.
    @Test func outputPathsThatWouldLoseAFileAreRefused() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let run = ["run"] + tiny.dataOptions + ["--method", "source"]
        expectError(tta(run + ["--output", tiny.folder.url.path]), "--output \(tiny.folder.url.path) is a folder; give the path of a file to write", code: 64)
        let same = tiny.folder.path("same.json")
        expectError(tta(run + ["--output", same, "--report", same]), "--output and --report are the same file, \(same): one would overwrite the other", code: 64)
        let weights = try Data(contentsOf: URL(fileURLWithPath: tiny.weights))
        expectError(tta(run + ["--output", tiny.weights]),
                    "--output \(tiny.weights) is the --weights file: writing it would overwrite an input", code: 64)
        #expect(try Data(contentsOf: URL(fileURLWithPath: tiny.weights)) == weights)
        let checkpoint = tiny.folder.path("kept.ckpt")
        try Data("another run".utf8).write(to: URL(fileURLWithPath: checkpoint))
        expectError(tta(run + ["--checkpoint", checkpoint]),
                    "--checkpoint \(checkpoint) already exists (another run's checkpoint?): continue that run with --resume \(checkpoint), "
                    + "or give another path", code: 64)
        #expect(try String(contentsOfFile: checkpoint, encoding: .utf8) == "another run")
        expectError(tta(run + ["--output", checkpoint, "--checkpoint", checkpoint, "--resume", checkpoint]),
                    "--output \(checkpoint) is the --resume file: writing it would overwrite an input", code: 64)
        let report = tiny.folder.path("report.html")
        expectError(tta(run + ["--report", report, "--checkpoint", report]),
                    "--report and --checkpoint are the same file, \(report): one would overwrite the other", code: 64)
        // Nor over the --config file, nor among the benchmark's files.
        let config = tiny.folder.path("run.json")
        try Data(#"{"seed": 2}"#.utf8).write(to: URL(fileURLWithPath: config))
        expectError(tta(run + ["--config", config, "--output", config]),
                    "--output \(config) is the --config file: writing it would overwrite an input", code: 64)
        let inData = tiny.dataFolder.appendingPathComponent("labels.json").path
        expectError(tta(run + ["--output", inData]),
                    "--output \(inData) is inside the benchmark folder \(tiny.dataFolder.path): results are not written among its files", code: 64)
        // predict: its logits are not written over its images.
        let images = tiny.folder.path("images.npy")
        try NPYFile.write(uint8: [UInt8](repeating: 7, count: 2 * 16 * 16 * 3), shape: [2, 16, 16, 3], to: URL(fileURLWithPath: images))
        expectError(tta(["predict", "--weights", tiny.weights, "--input", images, "--output", images]),
                    "--output \(images) is the --input file: writing it would overwrite an input", code: 64)
        #expect(try NPYFile(contentsOf: URL(fileURLWithPath: images)).dtype == .uint8)
    }

    /// A stdout that cannot be written (a full device, a closed pipe) no longer stops the process: the results
    /// file is written, and the command then fails saying why. (FileHandle's write trapped, and SIGPIPE killed the
    /// process, both before --output was written.)
    @Test func aFailingStdoutDoesNotCostTheResultsFile() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        for target in ["/dev/full", "closed pipe"] {
            let output = tiny.folder.path("results-\(target.hasPrefix("/") ? "full" : "pipe").json")
            let p = Process()
            p.executableURL = try ttaExecutable()
            p.arguments = ["compare"] + tiny.dataOptions + ["--methods", "source", "--output", output]
            let err = Pipe()
            p.standardError = err
            if target.hasPrefix("/") {
                p.standardOutput = try #require(FileHandle(forWritingAtPath: target))
            } else {
                let out = Pipe()
                try out.fileHandleForReading.close()
                p.standardOutput = out
            }
            try p.run()
            let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationReason == .exit && p.terminationStatus == 1, "\(target): \(message)")
            #expect(message.hasPrefix("tta: error: cannot write to standard output: "), "\(target): \(message)")
            let file = try JSONDecoder().decode(ResultsFile.self, from: Data(contentsOf: URL(fileURLWithPath: output)))
            #expect(file.runs.first?.completed == true, "\(target)")
        }
        // In-process: the same through the console's record of the failure.
        let console = Console(out: { _ in }, err: { _ in }, outputFailure: { "Broken pipe" })
        #expect(TTACLI.main(arguments: ["list"], console: console) == 1)
    }
}
