import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTARuntime
import TTATensor
@testable import TTACLI

/// Error messages found by an audit to name internal fields, dump whole configurations or miss the
/// likely cause: each now names what the user typed (flag, file, setting) and what was expected.
@Suite struct MessageAuditTests {
    /// Too few samples for the Dirichlet ordering: the advice is in the user's terms, not the stream
    /// configuration's field names (it used to end "use more samples or dirichletDelta 0").
    @Test func dirichletAdviceNamesNoInternalField() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let r = tta(["run"] + tiny.dataOptions + ["--setting", "correlated", "--dirichlet", "0.1", "--samples-per-domain", "8"])
        expectError(r, "--dirichlet: domain gaussian_noise5: the Dirichlet ordering needs at least 10 samples in each of the 8 chunks "
                    + "(one per class), i.e. ≥ 80 samples, but the domain has 8; use more samples per domain, or a Dirichlet δ of 0 "
                    + "(each domain sorted by label)", code: 64)
        #expect(!r.err.contains("dirichletDelta") && !r.err.contains("samplesPerDomain"))
    }

    /// An empty benchmark folder under the --data-dir: the error says which folder to give (it used to say
    /// "or its parent with folderName set").
    @Test func emptyBenchmarkFolderSaysWhatToGive() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let parent = try TemporaryFolder()
        defer { parent.cleanup() }
        try FileManager.default.createDirectory(at: parent.url.appendingPathComponent("CIFAR-10-C"), withIntermediateDirectories: true)
        let r = tta(["run", "--dataset", "cifar10-c", "--data-dir", parent.url.path, "--weights", tiny.weights, "--quiet"])
        expectError(r, "\(parent.path("CIFAR-10-C")): missing labels.npy (the folder has no .npy files); expected the folder that holds "
                    + "labels.npy and the <corruption>.npy files, or its parent holding them in CIFAR-10-C/", code: 1)
        #expect(!r.err.contains("folderName"))
    }

    /// A resumed run with other settings: only the settings that differ are listed, with both values, each
    /// method named when there are several (it used to print both configurations as JSON).
    @Test func identityDifferenceListsOnlyTheDifferingSettings() {
        var tent = MethodConfiguration.defaults(for: .cifar, method: "tent")
        tent.lr = 0.001
        let a = RunCheckpoint.Identity(dataset: "cifar10-c", model: "m", weightsFingerprint: "1:ab", dataFingerprint: "-",
                                       stream: StreamConfiguration(), methods: ["tent", "cotta"], methodConfigurations: [tent, tent],
                                       seed: 1, collapse: CollapsePolicy())
        #expect(a.difference(from: a) == nil)
        var b = a
        b.stream.batchSize = 8
        b.stream.samplesPerDomain = 4
        #expect(a.difference(from: b) == "stream (batch size 200 in the checkpoint, 8 now; samples per domain not set in the checkpoint, 4 now)")
        b = a
        b.methodConfigurations[1].lr = 0.01
        #expect(a.difference(from: b) == "method settings (cotta: lr 0.001 in the checkpoint, 0.01 now)")
        b = a
        b.collapse = CollapsePolicy(threshold: 0.5)
        #expect(a.difference(from: b) == "collapse policy (threshold 0.95 in the checkpoint, 0.5 now)")
        var single = a
        single.methods = ["tent"]
        single.methodConfigurations = [tent]
        b = single
        b.methodConfigurations[0].lr = 0.01
        #expect(single.difference(from: b) == "method settings (lr 0.001 in the checkpoint, 0.01 now)")
    }

    /// Files given as --weights that are not safetensors files: the error names --weights, says so, and
    /// recognises a NumPy array and PyTorch checkpoints (it used to say only "header length 379676406402707
    /// exceeds the limit").
    @Test func weightsThatAreNotSafeTensors() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let images = tiny.folder.path("images.npy"), out = tiny.folder.path("o.npy")
        try NPYFile.write(uint8: [UInt8](repeating: 0, count: 2 * 16 * 16 * 3), shape: [2, 16, 16, 3], to: URL(fileURLWithPath: images))
        expectError(tta(["predict", "--weights", images, "--input", images, "--output", out]),
                    "--weights \(images): not a safetensors file but a NumPy .npy array (it starts with \\x93NUMPY)", code: 1)

        let zip = tiny.folder.path("model.pt")
        let zipBytes: [UInt8] = [0x50, 0x4B, 0x03, 0x04] + [UInt8](repeating: 0, count: 60)
        try Data(zipBytes).write(to: URL(fileURLWithPath: zip))
        let z = tta(["predict", "--weights", zip, "--input", images, "--output", out])
        #expect(z.code == 1 && z.out.isEmpty)
        #expect(z.err.hasPrefix("tta: error: --weights \(zip): not a safetensors file but a zip archive (it starts with PK\\x03\\x04), "
                                + "as PyTorch saves .pt/.pth checkpoints; convert a PyTorch state dict with `safetensors.torch.save_file(torch.load("),
                "\(z.err)")

        let junk = tiny.folder.path("junk.safetensors")
        try Data("not a model".utf8).write(to: URL(fileURLWithPath: junk))
        expectError(tta(["predict", "--weights", junk, "--input", images, "--output", out]),
                    "--weights \(junk): not a safetensors file (header length 8029109312199880558 exceeds the limit of 100000000 bytes)", code: 1)
        #expect(!FileManager.default.fileExists(atPath: out))

        // In memory: an old-style pickle, and the framing errors, all saying "not a safetensors file".
        let pickle: [UInt8] = [0x80, 0x02, 0x8A, 0x0A] + [UInt8](repeating: 0, count: 60)
        #expect(throws: DataError(file: "w.pth", message: "not a safetensors file but a Python pickle (it starts with \\x80\\x02), as PyTorch "
                                  + "before 1.6 saved .pt/.pth checkpoints; convert a PyTorch state dict with "
                                  + "`safetensors.torch.save_file(torch.load(\"model.pt\"), \"model.safetensors\")`")) {
            _ = try SafeTensorsFile(data: Data(pickle), name: "w.pth")
        }
        #expect(throws: DataError(file: "w", message: "not a safetensors file (file is 3 bytes, shorter than the 8-byte header-length prefix)")) {
            _ = try SafeTensorsFile(data: Data([1, 2, 3]), name: "w")
        }
    }

    /// predict reads no source data: eata is refused unless --fisher-alpha 0, rmt always, as usage errors
    /// before any file is read (they used to fail with eata's "set fisher-alpha to 0 ... give it source batches").
    @Test func predictRefusesMethodsThatNeedSourceData() throws {
        let base = ["predict", "--weights", "w", "--input", "i", "--output", "o"]
        func eataRefusal(_ method: String) -> String {
            "--method \(method) needs source images for its Fisher information (--fisher-alpha > 0), which 'tta predict' does not take: "
                + "give --fisher-alpha 0 (EATA without its Fisher term, as eta), or use 'tta run --method \(method) --source-data <path>' "
                + "(on a benchmark) instead"
        }
        expectError(tta(base + ["--method", "eata"]), eataRefusal("eata"), code: 64)
        expectError(tta(base + ["--method", "eata", "--fisher-alpha", "2000"]), eataRefusal("eata"), code: 64)
        expectError(tta(base + ["--method", "eata+unmix_tns"]), eataRefusal("eata+unmix_tns"), code: 64)
        expectError(tta(base + ["--method", "rmt", "--fisher-alpha", "0"]),
                    "--method rmt needs labelled source data, which 'tta predict' does not take; use 'tta run --method rmt --source-data <path>' (on a benchmark) instead",
                    code: 64)

        // With --fisher-alpha 0, eata runs (as eta).
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let (bytes, _) = PredictTests.images(count: 8, channels: 3, size: 16)
        let input = tiny.folder.path("images.npy"), output = tiny.folder.path("eata.npy")
        try NPYFile.write(uint8: bytes, shape: [8, 16, 16, 3], to: URL(fileURLWithPath: input))
        let r = tta(["predict", "--weights", tiny.weights, "--input", input, "--output", output, "--method", "eata", "--fisher-alpha", "0",
                     "--batch-size", "4", "--quiet"])
        #expect(r.code == 0, "\(r.err)")
        #expect(FileManager.default.fileExists(atPath: output))

        // The library's own refusal is neutral: no CLI flag spelling, no "give it source batches".
        #expect(throws: AdaptationError("eata needs source images for its Fisher information (fisherAlpha 1.0 > 0) and none were given; "
                                        + "give source batches, a fisherAlpha of 0, or use eta (EATA without its Fisher term)")) {
            _ = try EATAMethod(eata: .defaults(for: .cifar, method: "eata"), sourceBatches: [])
        }
    }

    /// predict never writes NaN logits: a --normalize that overflows is refused up front, and a batch whose
    /// outputs are not finite fails naming the batch, its images and the likely cause, writing nothing (it
    /// used to write all-NaN logits and exit 0).
    @Test func predictWritesNoNonFiniteLogits() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let (bytes, _) = PredictTests.images(count: 4, channels: 3, size: 16)
        let input = tiny.folder.path("images.npy"), output = tiny.folder.path("logits.npy")
        try NPYFile.write(uint8: bytes, shape: [4, 16, 16, 3], to: URL(fileURLWithPath: input))
        let huge = "1e38,1e38,1e38:1e-38,1e-38,1e-38"
        let n = tta(["predict", "--weights", tiny.weights, "--input", input, "--output", output, "--normalize", huge])
        #expect(n.code == 64 && n.out.isEmpty)
        #expect(n.err.hasPrefix("tta: error: invalid value '\(huge)' for '--normalize': expected means and stds with which (x - mean) / std "
                                + "stays finite for pixels x in [0, 1] (channel 1, "), "\(n.err)")
        #expect(!FileManager.default.fileExists(atPath: output))

        // Finite float32 images so large that the network overflows: the first batch fails, nothing is written.
        let big = tiny.folder.path("big.npy")
        try NPYFile.write(floats: [Float](repeating: .greatestFiniteMagnitude, count: 4 * 3 * 16 * 16), shape: [4, 3, 16, 16],
                          to: URL(fileURLWithPath: big))
        let r = tta(["predict", "--weights", tiny.weights, "--input", big, "--output", output, "--batch-size", "2"])
        #expect(r.code == 1 && r.out.isEmpty)
        #expect(r.err.hasPrefix("tta: error: batch 1 of 2 (images 0..<2): the model's outputs hold NaN or infinity for "), "\(r.err)")
        #expect(r.err.contains("nothing was written to \(output). Check the weights and the input's values (here in ["), "\(r.err)")
        #expect(r.err.split(separator: "\n").count == 1)
        #expect(!FileManager.default.fileExists(atPath: output))
        // With --normalize given, the error points at it.
        let withNormalize = tta(["predict", "--weights", tiny.weights, "--input", big, "--output", output, "--normalize", "half"])
        #expect(withNormalize.code == 1 && withNormalize.err.contains("Check --normalize half (the model computes (x - mean) / std) and the input's values"),
                "\(withNormalize.err)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    /// A --normalize whose channel count does not fit the model is quoted as the user typed it, not as numbers.
    @Test func normalizeIsQuotedAsGiven() throws {
        let tiny = try TinyBenchmark(channels: 1)
        defer { tiny.cleanup() }
        let images = tiny.folder.path("grey.npy")
        try NPYFile.write(uint8: [UInt8](repeating: 9, count: 2 * 16 * 16), shape: [2, 16, 16], to: URL(fileURLWithPath: images))
        expectError(tta(["predict", "--weights", tiny.weights, "--input", images, "--output", tiny.folder.path("o.npy"), "--normalize", "imagenet"]),
                    "invalid value 'imagenet' for '--normalize': expected 1 means and stds, one per input channel of wideresnet-10-1", code: 64)
    }
}
