import Foundation
import Testing
import TTAData
@testable import TTARuntime
@testable import TTACLI

/// `--memory-limit` and the memory estimate; the input fingerprint in the results file.
@Suite struct MemoryAndInputsTests {
    @Test func memoryLimitParsing() throws {
        #expect(try parseMemoryLimit(nil) == .limit(nil))
        #expect(try parseMemoryLimit("none") == .none)
        #expect(try parseMemoryLimit("1000") == .limit(1000))
        #expect(try parseMemoryLimit("512MiB") == .limit(512 << 20))
        #expect(try parseMemoryLimit("512M") == .limit(512 << 20))
        #expect(try parseMemoryLimit("1.5GiB") == .limit(3 << 29))
        #expect(try parseMemoryLimit("2gb") == .limit(2 << 30))
        for bad in ["", "-1GiB", "0", "lots", "12XB", "inf", "1e30"] {
            #expect(throws: CLIError.invalidValue(option: "memory-limit", value: bad,
                                                  expected: "a size such as 8GiB, 512MiB or 1000000000 (bytes), or none")) {
                try parseMemoryLimit(bad)
            }
        }
    }

    /// A batch that cannot fit the limit is refused before any of the run, naming both flags.
    @Test func refusedUpFrontWhenTheEstimateExceedsTheLimit() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let out = tiny.folder.path("out.json")
        let r = tta(["run"] + tiny.dataOptions + ["--method", "tent", "--memory-limit", "1MiB", "--output", out])
        #expect(r.code == 1)
        #expect(r.out.isEmpty)
        #expect(r.err.hasPrefix("tta: error: tent at --batch-size 4 needs about "))
        #expect(r.err.contains("1.0 MiB is allowed by --memory-limit") && r.err.contains("raise --memory-limit"))
        #expect(!FileManager.default.fileExists(atPath: out))
        expectError(tta(["run"] + tiny.dataOptions + ["--memory-limit", "big"]),
                    "invalid value 'big' for '--memory-limit': expected a size such as 8GiB, 512MiB or 1000000000 (bytes), or none", code: 64)
    }

    /// A batch size far beyond any memory (the stream takes up to `Int.max`) gives an estimate of
    /// `Int.max` bytes instead of trapping on the conversion. Through the CLI the estimate is for the batches
    /// the stream forms: `--batch-size Int.max` on 8-image domains takes 8 images a step, and runs.
    @Test func hugeBatchSizesSaturateTheEstimate() throws {
        let e = MemoryEstimate(baseBytes: 1 << 30, bytesPerImage: 1e6, fixedStepBytes: 1e6, batchSize: 8, peakBytes: 0)
        #expect(e.peak(batchSize: Int.max) == Int.max)
        #expect(e.peak(batchSize: 8) == (1 << 30) + 9_000_000)
        #expect(e.largestBatch(within: Int.max) == Int((Double(Int.max) - Double(1 << 30) - 1e6) / 1e6))
        #expect(MemoryEstimate(baseBytes: 0, bytesPerImage: 1e-300, fixedStepBytes: 0, batchSize: 1, peakBytes: 0)
                    .largestBatch(within: 1 << 30) == Int.max)
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let huge = ["--method", "tent", "--batch-size", "9223372036854775807"]
        #expect(tta(["run"] + tiny.dataOptions(with: huge + ["--memory-limit", "1GiB"])).code == 0)
        let r = tta(["run"] + tiny.dataOptions(with: huge + ["--memory-limit", "1MiB"]))
        #expect(r.code == 1, "\(r.err)")
        #expect(r.err.hasPrefix("tta: error: tent at --batch-size 9223372036854775807 (batches of at most 8 images here) needs about "), "\(r.err)")
    }

    /// Through the built binary (its own process, so resident memory is its own): the estimate made
    /// before the run is within 20% of the peak the run then measured, for forward-only, gradient and
    /// mean-teacher methods. (Methods that filter samples, eta/eata/sar, depend on how many pass.)
    @Test func estimateIsCloseToTheMeasuredPeak() throws {
        for (method, batch) in [("source", "100"), ("norm_test", "200"), ("tent", "100"), ("cotta", "50")] {
            let r = try runBinary(["run", "--method", method, "--batch-size", batch, "--corruptions", "gaussian_noise,fog",
                                   "--format", "json", "--quiet"] + (method == "cotta" ? ["--augmentations", "4"] : []))
            #expect(r.code == 0, "\(r.err)")
            let file = try JSONDecoder().decode(ResultsFile.self, from: Data(r.out.utf8))
            let run = try #require(file.runs.first)
            let estimate = Double(try #require(run.estimatedPeakMemoryBytes))
            let measured = Double(run.peakMemoryBytes)
            #expect(abs(estimate - measured) <= 0.2 * measured,
                    "\(method): estimated \(estimate / 1048576) MiB, measured \(measured / 1048576) MiB")
        }
    }

    /// The results file names the SHA-256 of the weights and of each data file read, in stream order;
    /// a one-byte change to a data file changes its digest and the combined one.
    @Test func resultsRecordTheInputsDigests() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        func inputs() throws -> InputFingerprint {
            let r = tta(["run"] + tiny.dataOptions + ["--method", "source", "--format", "json"])
            #expect(r.code == 0, "\(r.err)")
            return try #require(try JSONDecoder().decode(ResultsFile.self, from: Data(r.out.utf8)).config.inputs)
        }
        let first = try inputs()
        #expect(first.weights.path == tiny.weights)
        #expect(first.weights.sha256 == (try SHA256.hex(fileAt: URL(fileURLWithPath: tiny.weights))))
        #expect(first.data.map { URL(fileURLWithPath: $0.path).lastPathComponent }
                == ["labels.npy"] + TinyBenchmark.corruptions.map { $0 + ".npy" })
        for f in first.data {
            #expect(f.files == nil)
            let bytes = try Data(contentsOf: URL(fileURLWithPath: f.path))
            #expect(f.bytes == bytes.count && f.sha256 == SHA256.hex(bytes))
        }
        #expect(try inputs() == first)
        // Change one pixel byte of the fog file (after the .npy header).
        let fog = tiny.dataFolder.appendingPathComponent("fog.npy")
        var bytes = try Data(contentsOf: fog)
        bytes[bytes.count - 1] ^= 0xFF
        try bytes.write(to: fog)
        let changed = try inputs()
        #expect(changed.weights == first.weights)
        #expect(changed.data[0] == first.data[0] && changed.data[1] == first.data[1])
        #expect(changed.data[3].sha256 != first.data[3].sha256)
        #expect(changed.dataSHA256 != first.dataSHA256)
    }
}
