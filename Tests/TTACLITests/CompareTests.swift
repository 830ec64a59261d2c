import Foundation
import Testing
import TTARuntime
import TTAAdaptation
@testable import TTACLI

/// `tta compare` and `tta run` end to end on a tiny CIFAR-10-C-layout benchmark written at test time.
@Suite struct CompareTests {
    /// Every method hyper-parameter option lands in the method's configuration (a typo in the mapping
    /// would leave the reference default), and SAR on a ViT takes the reference's lr 0.001 unless --lr is given.
    @Test func methodOptionsReachTheConfiguration() throws {
        let args = ["--entropy-margin", "0.3", "--redundancy-margin", "0.2", "--fisher-alpha", "5", "--sar-reset-constant", "0.1",
                    "--lame-affinity", "knn", "--lame-neighbours", "3", "--lame-force-symmetry", "true", "--reset-after-updates", "7",
                    "--rotta-memory-size", "16", "--rotta-update-frequency", "8", "--rotta-nu", "0.01", "--rotta-alpha", "0.1",
                    "--roid-weighting", "false", "--roid-prior-correction", "false", "--roid-consistency", "false",
                    "--roid-momentum-source", "0.9", "--roid-momentum-probs", "0.8", "--roid-temperature", "0.5",
                    "--unmix-components", "4", "--unmix-batch-size-max", "32", "--rmt-lambda-target", "0.5",
                    "--rmt-lambda-contrast", "0.25", "--rmt-lambda-source", "0", "--contrast-temperature", "0.2", "--projection-dim", "64"]
        let parsed = try Parser.parse(args, command: .compare)
        let c = try methodConfiguration("rmt", family: .cifar, numClasses: 10, parsed)
        #expect(c.entropyMarginFactor == 0.3 && c.redundancyMargin == 0.2 && c.fisherAlpha == 5 && c.sarResetConstant == 0.1)
        #expect(c.lameAffinity == .knn && c.lameNeighbours == 3 && c.lameForceSymmetry && c.resetAfterUpdates == 7)
        #expect(c.rottaMemorySize == 16 && c.rottaUpdateFrequency == 8 && c.rottaNu == 0.01 && c.rottaAlpha == 0.1)
        #expect(!c.roidWeighting && !c.roidPriorCorrection && !c.roidConsistency && c.roidMomentumSource == 0.9
                && c.roidMomentumProbabilities == 0.8 && c.roidTemperature == 0.5)
        #expect(c.unmixComponents == 4 && c.unmixBatchSizeMax == 32)
        #expect(c.rmtLambdaTarget == 0.5 && c.rmtLambdaContrast == 0.25 && c.rmtLambdaSource == 0 && c.contrastTemperature == 0.2
                && c.projectionDim == 64)
        let d = try methodConfiguration("rmt", family: .cifar, numClasses: 10, try Parser.parse([], command: .compare))
        #expect(d == MethodConfiguration.defaults(for: .cifar, method: "rmt", numClasses: 10))
        expectError(tta(["compare", "--rotta-nu", "2"]), "invalid value '2' for '--rotta-nu': expected a number in [0, 1]", code: 64)
    }

    @Test func jsonIsTheResultsFile() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let r = tta(["compare"] + tiny.dataOptions + ["--methods", "source,norm_test,tent", "--format", "json"])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.err.isEmpty)
        let data = Data(r.out.utf8)
        let file = try JSONDecoder().decode(ResultsFile.self, from: data)
        #expect(file.runs.map(\.method) == ["source", "norm_test", "tent"])
        #expect(file.config.dataset == "cifar10-c" && file.config.model == "wideresnet-10-1")
        #expect(file.config.stream.batchSize == 4 && file.config.stream.corruptions == TinyBenchmark.corruptions)
        #expect(file.config.methods == ["source", "norm_test", "tent"])
        for run in file.runs {
            #expect(run.completed && run.setting == "continual" && run.batches == 6 && run.totalBatches == 6)
            #expect(run.domains.map(\.name) == TinyBenchmark.corruptions)
            #expect(run.domains.allSatisfy { $0.severity == 5 && $0.samples == 8 })
            #expect(abs(run.meanError - run.domains.map(\.error).reduce(0, +) / 3) < 1e-9)
            #expect(!run.runningError.isEmpty)
        }
        // Exactly ResultsFile's encoding, keys as documented.
        #expect(r.out == String(decoding: try file.jsonData(), as: UTF8.self) + "\n")
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(Set(object.keys) == ["runs", "config", "version"])
        let run = try #require((object["runs"] as? [[String: Any]])?.first)
        for key in ["method", "setting", "meanError", "domains", "imagesPerSecond", "seconds", "peakMemoryBytes", "runningError",
                    "completed", "methodConfiguration", "phaseSeconds", "batches", "totalBatches", "errorOverAllSamples"] {
            #expect(run[key] != nil, "missing key \(key)")
        }
        let domain = try #require((run["domains"] as? [[String: Any]])?.first)
        #expect(Set(domain.keys) == ["name", "severity", "samples", "correct", "error"])
    }

    @Test func tableMarkdownAndCSV() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let base = ["compare"] + tiny.dataOptions + ["--methods", "source,norm_test"]
        let json = try JSONDecoder().decode(ResultsFile.self, from: Data(tta(base + ["--format", "json"]).out.utf8))
        let errors = json.runs.map { $0.domains.map { String(format: "%.2f", $0.error) } + [String(format: "%.2f", $0.meanError)] }

        let table = tta(base)
        #expect(table.code == 0)
        let lines = table.out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        try #require(lines.count >= 11, "\(table.err)")
        #expect(lines[0] == "Error (%) · cifar10-c · wideresnet-10-1 · continual · severity 5 · 8 images per domain · batch 4 · shuffled order · seed 1")
        #expect(lines[2] == String(repeating: " ", count: 11) + "gaussian    shot")
        #expect(lines[3] == "method        noise   noise     fog    mean")
        #expect(lines[5].split(separator: " ").map(String.init) == ["source"] + errors[0])
        #expect(lines[6].split(separator: " ").map(String.init) == ["norm_test"] + errors[1])
        #expect(lines[8].hasPrefix("method     images/s") && lines[8].hasSuffix("peak memory  batches"))
        #expect(lines[10].hasPrefix("source") && lines[10].hasSuffix("6/6"))

        let md = tta(base + ["--format", "markdown"]).out.split(separator: "\n").map(String.init)
        try #require(md.count >= 5)
        #expect(md[0] == "| method | gaussian_noise | shot_noise | fog | mean |")
        #expect(md[1] == "|---|---:|---:|---:|---:|")
        #expect(md[2] == "| source | " + errors[0].joined(separator: " | ") + " |")
        #expect(md[4] == "| method | images/s | time (s) | peak memory (MiB) | batches |")

        let csv = tta(base + ["--format", "csv"]).out.split(separator: "\n").map(String.init)
        try #require(csv.count == 3)
        #expect(csv[0] == "method,gaussian_noise,shot_noise,fog,mean,images_per_second,seconds,peak_memory_bytes,completed")
        #expect(csv[1].hasPrefix("source," + errors[0].joined(separator: ",") + ","))
        #expect(csv[2].hasPrefix("norm_test," + errors[1].joined(separator: ",") + ",") && csv[2].hasSuffix(",true"))
    }

    @Test func severitySuffixOnlyWhenSeveritiesVary() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let md = tta(["compare"] + tiny.dataOptions(with: ["--methods", "source", "--severity", "5,3", "--corruptions", "fog", "--format", "markdown"]))
        #expect(md.code == 0)
        #expect(md.out.hasPrefix("| method | fog5 | fog3 | mean |\n"))
    }

    @Test func runPrintsEachDomainAsItFinishes() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let r = tta(["run"] + tiny.dataOptions + ["--method", "norm_test"])
        #expect(r.code == 0)
        let json = try JSONDecoder().decode(ResultsFile.self, from: Data(tta(["run"] + tiny.dataOptions + ["--method", "norm_test", "--format", "json"]).out.utf8))
        let lines = r.out.split(separator: "\n").map(String.init)
        try #require(lines.count > 3 && json.runs.count == 1, "\(r.err)")
        // Each line ends with the run's clock when the domain finished (m:ss), which never goes back.
        var clocks: [Int] = []
        for (k, d) in json.runs[0].domains.enumerated() {
            let head = "[\(k + 1)/3] \(d.name)5  error \(String(format: "%.2f", d.error))%  (8 images, ", tail = " into the run)"
            #expect(lines[k].hasPrefix(head) && lines[k].hasSuffix(tail), "\(lines[k])")
            let clock = lines[k].dropFirst(head.count).dropLast(tail.count).split(separator: ":").compactMap { Int($0) }
            try #require(clock.count == 2 && clock[1] < 60, "\(lines[k])")
            clocks.append(60 * clock[0] + clock[1])
        }
        #expect(clocks == clocks.sorted())
        #expect(lines[3].hasPrefix("Error (%) · cifar10-c"))
        // Other formats print only the results.
        #expect(tta(["run"] + tiny.dataOptions + ["--method", "source", "--format", "csv"]).out.hasPrefix("method,"))
    }

    /// `<method>+unmix_tns` runs from the CLI beside its method, at batch size 1 too (every UnMix-TNS
    /// statistic is per sample), with the UnMix-TNS options; other combinations are refused by name.
    @Test func unmixCombinationsRunAtBatchSizeOne() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        var options = tiny.dataOptions
        options[options.firstIndex(of: "--batch-size")! + 1] = "1"
        let r = tta(["compare"] + options + ["--methods", "tent,tent+unmix_tns,eta+unmix_tns", "--unmix-components", "3",
                                               "--window-length", "1", "--format", "json"])   // 1: tent on single images too
        #expect(r.code == 0, "\(r.err)")
        let json = try JSONDecoder().decode(ResultsFile.self, from: Data(r.out.utf8))
        #expect(json.runs.map(\.method) == ["tent", "tent+unmix_tns", "eta+unmix_tns"])
        #expect(json.runs[1].domains.allSatisfy { $0.error.isFinite })
        let bad = tta(["run"] + tiny.dataOptions + ["--method", "rmt+unmix_tns"])
        #expect(bad.code == 64 && bad.err.contains("invalid value 'rmt+unmix_tns' for '--method'"), "\(bad.err)")
        let zero = tta(["run"] + tiny.dataOptions + ["--method", "tent+unmix_tns", "--unmix-components", "0"])
        #expect(zero.code == 64 && zero.err.contains("--unmix-components"), "\(zero.err)")
    }

    @Test func progressLinesWhenNotATerminal() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let r = tta(["compare"] + tiny.dataOptions.filter { $0 != "--quiet" } + ["--methods", "source"])
        #expect(r.code == 0)
        let lines = r.err.split(separator: "\n").map(String.init)
        try #require(lines.count == 6, "\(r.err)")
        #expect(lines[0].hasPrefix("tta compare: cifar10-c (\(tiny.dataFolder.path)), wideresnet-10-1 from \(tiny.weights); 3 domains, 24 images in 6 batches of 4"))
        #expect(lines[1].hasPrefix("tta compare: estimated peak memory: source ") && lines[1].hasSuffix(" MiB"))
        #expect(lines[2].hasPrefix("source 1/3 gaussian_noise5  error "))
        #expect(lines[4].hasPrefix("source 3/3 fog5  error "))
        #expect(lines[5].hasPrefix("source: mean error "))
        #expect(!r.err.contains("\r"))
    }

    @Test func settingsAndStreamOptionsRun() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        for extra in [["--setting", "reset_each_shift", "--episodic", "--order", "file"],
                      ["--setting", "gradual", "--corruptions", "fog"],
                      ["--setting", "mixed_domains", "--samples-per-domain", "4"],
                      ["--setting", "correlated", "--seed", "3"]] {
            let r = tta(["compare"] + tiny.dataOptions(with: ["--methods", "source,norm_alpha,norm_ema", "--format", "json"] + extra))
            #expect(r.code == 0, "\(extra): \(r.err)")
            let file = try JSONDecoder().decode(ResultsFile.self, from: Data(r.out.utf8))
            let allCompleted = file.runs.allSatisfy { $0.completed }
            #expect(allCompleted, "\(extra)")
        }
    }

    @Test func dataDirIsTheFolderOrItsParent() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let common = ["--weights", tiny.weights, "--corruptions", "fog", "--methods", "source", "--quiet", "--format", "json", "--threads", "3"]
        for dir in [tiny.root, tiny.dataFolder.path] {
            // No --dataset: the folder name (or its one child named like a benchmark) tells it.
            let r = tta(["compare", "--data-dir", dir] + common)
            #expect(r.code == 0, "\(r.err)")
            let file = try JSONDecoder().decode(ResultsFile.self, from: Data(r.out.utf8))
            #expect(file.config.dataset == "cifar10-c" && file.config.dataDirectory == tiny.dataFolder.path && file.config.threads == 3)
            #expect(file.config.stream.batchSize == 200)  // the CIFAR default; 50 is for fmnist-c only
        }
    }

    @Test func dirichletOrder() throws {
        let tiny = try TinyBenchmark(corruptions: ["fog"], perSeverity: 400)
        defer { tiny.cleanup() }
        let r = tta(["run", "--dataset", "cifar10-c", "--data-dir", tiny.root, "--weights", tiny.weights, "--corruptions", "fog",
                     "--method", "source", "--setting", "correlated", "--dirichlet", "1", "--quiet", "--format", "json"])
        #expect(r.code == 0, "\(r.err)")
        let file = try JSONDecoder().decode(ResultsFile.self, from: Data(r.out.utf8))
        #expect(file.config.stream.dirichletDelta == 1 && file.runs.first?.domains.first?.samples == 400)
    }

    @Test func cottaAndHyperParametersReachTheMethod() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let r = tta(["compare"] + tiny.dataOptions(with: ["--methods", "tent,cotta", "--format", "json", "--lr", "0.01", "--optimizer", "sgd",
                                                      "--augmentations", "2", "--steps", "2", "--corruptions", "fog"]))
        #expect(r.code == 0, "\(r.err)")
        let file = try JSONDecoder().decode(ResultsFile.self, from: Data(r.out.utf8))
        for run in file.runs {
            #expect(run.methodConfiguration.lr == 0.01 && run.methodConfiguration.optimizer == .sgd && run.methodConfiguration.steps == 2)
        }
        try #require(file.runs.count == 2)
        #expect(file.runs[1].methodConfiguration.augmentations == 2)
    }

    @Test func outputIsWrittenAtomically() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let path = tiny.folder.path("results.json")
        // An existing file is replaced whole.
        try Data(String(repeating: "old results ", count: 10_000).utf8).write(to: URL(fileURLWithPath: path))
        let r = tta(["compare"] + tiny.dataOptions + ["--methods", "source", "--output", path])
        #expect(r.code == 0)
        #expect(r.out.hasPrefix("Error (%)"))  // stdout keeps the table; the file follows its extension
        let written = try Data(contentsOf: URL(fileURLWithPath: path))
        let file = try JSONDecoder().decode(ResultsFile.self, from: written)
        #expect(written == (try file.jsonData()) + Data("\n".utf8))
        // No temporary file is left next to it.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: tiny.root).filter { $0.hasSuffix(".tmp") }
        #expect(leftovers.isEmpty)
        // --format decides the file's format when given.
        let csvPath = tiny.folder.path("results.txt")
        #expect(tta(["compare"] + tiny.dataOptions + ["--methods", "source", "--output", csvPath, "--format", "csv"]).code == 0)
        #expect(try String(contentsOfFile: csvPath, encoding: .utf8).hasPrefix("method,gaussian_noise,"))
    }

    @Test func interruptionKeepsTheFinishedDomains() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let path = tiny.folder.path("partial.json")
        // Three batches run (domain 1 = batches 1-2 finishes), then the stop request arrives.
        let r = tta(["compare"] + tiny.dataOptions + ["--methods", "source,tent", "--output", path], stopAfter: 3)
        #expect(r.code == 130)
        let file = try JSONDecoder().decode(ResultsFile.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        try #require(file.runs.count == 1)
        let run = file.runs[0]
        try #require(run.domains.count == 1)
        #expect(!run.completed && run.batches == 3 && run.totalBatches == 6)
        #expect(run.domains.map(\.name) == ["gaussian_noise"])
        #expect(r.out.contains("source    \(String(format: "%6.2f", run.domains[0].error))       –       –  \(String(format: "%.2f", run.meanError))*"))
        #expect(r.out.contains("* interrupted: the mean is over the domains finished before Ctrl-C."))
        #expect(r.err == "tta: interrupted: kept 1 of 3 domains of source; partial results written to \(path)\n")
    }

    @Test func reportIsSelfContained() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let path = tiny.folder.path("report.html")
        let r = tta(["compare"] + tiny.dataOptions + ["--methods", "source,norm_test,tent", "--report", path])
        #expect(r.code == 0)
        let html = try String(contentsOfFile: path, encoding: .utf8)
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        #expect(html.components(separatedBy: "<svg").count == 3)  // bar chart and running error
        #expect(html.contains("<table>") && html.contains("norm_test") && html.contains("gaussian<br>noise"))
        #expect(!html.contains("<script") && !html.contains("<link"))
        // The only URL is the SVG namespace.
        #expect(html.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "").range(of: "http") == nil)
    }

    /// norm_alpha run alone takes the reference's batch size, 1 (cfgs/*/norm_alpha.yaml); compared with other
    /// methods it shares their stream's batches, and a note says so. A given --batch-size applies as given.
    @Test func normAlphaAloneRunsOnSingleImages() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        var options = tiny.dataOptions
        let i = try #require(options.firstIndex(of: "--batch-size"))
        options.removeSubrange(i...(i + 1))
        let alone = tta(["run"] + options + ["--method", "norm_alpha", "--format", "json"])
        #expect(alone.code == 0, "\(alone.err)")
        let aloneFile = try JSONDecoder().decode(ResultsFile.self, from: Data(alone.out.utf8))
        #expect(aloneFile.config.stream.batchSize == 1 && aloneFile.runs[0].domains.map(\.samples) == [8, 8, 8])
        let compared = tta(["compare"] + options.filter { $0 != "--quiet" } + ["--methods", "source,norm_alpha", "--format", "json"])
        #expect(compared.code == 0, "\(compared.err)")
        #expect(try JSONDecoder().decode(ResultsFile.self, from: Data(compared.out.utf8)).config.stream.batchSize == 200)
        #expect(compared.err.contains("tta compare: note: norm_alpha shares the stream's batches of 200 here; the reference runs it on "
                                      + "batches of 1 ('tta run --method norm_alpha', or --batch-size 1)\n"), "\(compared.err)")
        let given = tta(["compare"] + tiny.dataOptions.filter { $0 != "--quiet" } + ["--methods", "norm_alpha", "--format", "json"])
        #expect(try JSONDecoder().decode(ResultsFile.self, from: Data(given.out.utf8)).config.stream.batchSize == 4)
        #expect(!given.err.contains("note:"))
    }

    @Test func embeddedBenchmarkByDefault() throws {
        let r = tta(["compare", "--methods", "source", "--corruptions", "gaussian_noise,fog", "--quiet"])
        #expect(r.code == 0, "\(r.err)")
        let lines = r.out.split(separator: "\n").map(String.init)
        try #require(lines.count > 3)
        #expect(lines[0].hasPrefix("Error (%) · fmnist-c · wideresnet-"))
        #expect(lines[0].hasSuffix("· 200 images per domain · batch 50 · shuffled order · seed 1"))
        #expect(lines[2].hasPrefix("method  ") && lines[2].contains("fog"))
    }

    @Test func embeddedDirectoryOverride() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanup() }
        final class Box { var err = "" }
        let b = Box()
        let console = Console(out: { _ in }, err: { b.err += $0 }, environment: ["TTA_EMBEDDED_DIR": dir.url.path])
        #expect(TTACLI.main(arguments: ["compare"], console: console) == 1)
        #expect(b.err == "tta: error: embedded model: no such file: \(dir.path("models/fmnist-wrn-*.safetensors"))\n")
        #expect(try Embedded.dataDirectory(environment: ["TTA_EMBEDDED_DIR": "/x/y"]).path == "/x/y")
        let root = try #require(Embedded.repositoryRoot(from: URL(fileURLWithPath: #filePath)))
        #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent("Package.swift").path))
    }
}
