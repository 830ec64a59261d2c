import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTATensor
@testable import TTACLI

/// `--source-data`, `--source-samples`, `--cache-dir` with the methods that need source data (eata, rmt).
@Suite struct SourceDataCLITests {
    /// Labelled source images for the tiny benchmark: `images.npy` uint8 (N, 16, 16, 3) and `labels.npy`.
    func writeSource(_ tiny: TinyBenchmark, count: Int = 20, size: Int = 16, labelOffset: Int = 0) throws -> String {
        let dir = tiny.folder.url.appendingPathComponent("source-\(size)-\(labelOffset)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var g = SeededGenerator(seed: 11)
        try NPYFile.write(uint8: (0..<(count * size * size * 3)).map { _ in UInt8(truncatingIfNeeded: g.next() >> 56) },
                          shape: [count, size, size, 3], to: dir.appendingPathComponent("images.npy"))
        try NPYFile.write(int64: (0..<count).map { Int64($0 % 10 + labelOffset) }, shape: [count], to: dir.appendingPathComponent("labels.npy"))
        return dir.path
    }

    /// Method name → correct predictions per domain, from `--format json` output (timings differ between runs).
    func correctPerDomain(_ json: String) throws -> [String: [Int]] {
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let runs = try #require(object?["runs"] as? [[String: Any]])
        var out: [String: [Int]] = [:]
        for run in runs {
            out[try #require(run["method"] as? String)] = try #require(run["domains"] as? [[String: Any]]).map { $0["correct"] as? Int ?? -1 }
        }
        return out
    }

    /// On the embedded benchmark (no --data-dir) eata and rmt read the committed Fashion-MNIST training
    /// images (data/fashion-mnist-source, scripts/make_embedded_source.py) without --source-data; the
    /// results record that folder and hash its files.
    @Test func embeddedBenchmarkHasSourceData() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanup() }
        let out = folder.path("r.json")
        let r = tta(["compare", "--methods", "eata,rmt", "--corruptions", "gaussian_noise", "--samples-per-domain", "50",
                     "--source-samples", "100", "--warmup-samples", "0", "--cache-dir", folder.path("cache"),
                     "--memory-limit", "none", "--output", out, "--quiet"])
        #expect(r.code == 0, "\(r.err)")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as? [String: Any]
        let inputs = (object?["config"] as? [String: Any])?["inputs"] as? [String: Any]
        let paths = (inputs?["data"] as? [[String: Any]] ?? []).compactMap { $0["path"] as? String }
        #expect(paths.contains { $0.hasSuffix("fashion-mnist-source/images.npy") } && paths.contains { $0.hasSuffix("fashion-mnist-source/labels.npy") },
                "\(paths)")
        let source = try Embedded.sourceDirectory(environment: [:])
        let labels = try NPYFile.read(source.appendingPathComponent("labels.npy"))
        #expect(labels.shape == [2000])
        // With another benchmark the source data must be given.
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        #expect(tta(["compare"] + tiny.dataOptions + ["--methods", "rmt"]).code == 64)
    }

    /// Also: a random subset that misses a class is refused for rmt (it needs a prototype per class) before any work.
    @Test func eataAndRmtRunWithSourceDataAndRmtCachesItsPreparation() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let source = try writeSource(tiny)
        let cache = tiny.folder.path("cache")
        let args = ["compare"] + tiny.dataOptions + ["--methods", "eata,rmt", "--source-data", source, "--source-samples", "20",
                                                     "--warmup-samples", "8", "--cache-dir", cache, "--format", "json"]
        let first = tta(args)
        #expect(first.code == 0, "\(first.err)")
        let entries = try FileManager.default.contentsOfDirectory(atPath: cache).filter { $0.hasSuffix(".safetensors") }
        #expect(entries.count == 2)   // prototypes and warm-up
        // Same inputs: the cached preparation is read and the results are identical.
        let second = tta(args)
        let (again, before) = (try correctPerDomain(second.out), try correctPerDomain(first.out))
        #expect(second.code == 0 && again == before)
        #expect(try correctPerDomain(first.out).count == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache).count == 2)
        // Other source data: new entries (the key hashes the source files).
        let other = try writeSource(tiny, count: 30)
        var changed = args
        changed[changed.firstIndex(of: source)!] = other
        #expect(tta(changed).code == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache).count == 4)
        var fewer = args
        fewer[fewer.firstIndex(of: "20")!] = "5"
        let refused = tta(fewer)
        #expect(refused.code == 1 && refused.out.isEmpty)
        #expect(refused.err.contains("--source-data \(source): the 5 source images drawn have no image of class ")
                && refused.err.hasSuffix("rmt needs every class for its prototypes (raise --source-samples)\n"), "\(refused.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache).count == 4)   // refused before any work
    }

    /// Source batches are `--batch-size` images, or `--window-length` on a single-image stream, as the
    /// reference's `batch_size_src` (RMT's replay and warm-up, `warmup-samples / batch` steps; EATA's
    /// Fisher batches). At batch size 1 they used to be single images: 50,000 warm-up steps of one image.
    @Test func singleImageStreamsTakeSourceBatchesOfTheWindowLength() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let source = try writeSource(tiny)
        func plan(batch: String, window: String?) throws -> (SourcePlan, RMTMethod) {
            var args = tiny.dataOptions + ["--methods", "rmt", "--source-data", source, "--warmup-samples", "8",
                                           "--memory-limit", "none", "--cache-dir", tiny.folder.path("cache")]
            args[args.firstIndex(of: "--batch-size")! + 1] = batch
            if let window { args += ["--window-length", window] }
            let o = ExperimentOptions(try Parser.parse(args, command: .compare), command: .compare)
            let e = try Experiment.prepare(o, console: Console(out: { _ in }, err: { _ in }))
            let plan = try #require(e.source)
            let rmt = try #require(try plan.makeMethod("rmt", e.methods[0].configuration, imageSize: 16) as? RMTMethod)
            return (plan, rmt)
        }
        let (windowed, windowedRMT) = try plan(batch: "1", window: "4")
        #expect(windowed.batchSize == 4 && windowedRMT.source.batchSize == 4 && windowedRMT.warmupSteps == 2)
        let (batched, batchedRMT) = try plan(batch: "3", window: nil)
        #expect(batched.batchSize == 3 && batchedRMT.source.batchSize == 3 && batchedRMT.warmupSteps == 2)
        let (single, singleRMT) = try plan(batch: "1", window: "1")
        #expect(single.batchSize == 1 && singleRMT.warmupSteps == 8)
    }

    @Test func sourceDataThatDoesNotFitIsRefusedBeforeAnyWork() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let small = try writeSource(tiny, size: 8)
        expectError(tta(["compare"] + tiny.dataOptions + ["--methods", "rmt", "--source-data", small]),
                    "--source-data \(small): images are 3×8×8 (C×H×W); the benchmark's are 3×16×16", code: 1)
        let shifted = try writeSource(tiny, labelOffset: 5)
        expectError(tta(["compare"] + tiny.dataOptions + ["--methods", "eata", "--source-data", shifted]),
                    "--source-data \(shifted): label 10 is not a class of this 10-class benchmark", code: 1)
        expectError(tta(["compare"] + tiny.dataOptions + ["--methods", "rmt", "--source-data", small, "--source-samples", "0"]),
                    "invalid value '0' for '--source-samples': expected a positive integer", code: 64)
    }
}
