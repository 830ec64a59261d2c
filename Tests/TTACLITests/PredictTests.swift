import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTAModels
import TTANN
import TTATensor
import TTATestSupport
@testable import TTACLI

@Suite struct PredictTests {
    /// `count` seeded uint8 NHWC images and the same as float32 NCHW in [0, 1].
    static func images(count: Int, channels: Int, size: Int) -> (bytes: [UInt8], nchw: [Float]) {
        var g = SeededGenerator(seed: 11)
        let bytes = (0..<(count * size * size * channels)).map { _ in UInt8(truncatingIfNeeded: g.next() >> 56) }
        var nchw = [Float](repeating: 0, count: bytes.count)
        let plane = size * size
        for n in 0..<count {
            for p in 0..<plane {
                for c in 0..<channels {
                    nchw[(n * channels + c) * plane + p] = Float(bytes[(n * plane + p) * channels + c]) / 255
                }
            }
        }
        return (bytes, nchw)
    }

    @Test func roundTripMatchesTheModel() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let (bytes, nchw) = Self.images(count: 10, channels: 3, size: 16)
        let input = tiny.folder.path("images.npy"), output = tiny.folder.path("logits.npy")
        try NPYFile.write(uint8: bytes, shape: [10, 16, 16, 3], to: URL(fileURLWithPath: input))
        let r = tta(["predict", "--weights", tiny.weights, "--input", input, "--output", output, "--batch-size", "4"])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.out.hasPrefix("wrote \(output): float32 (10, 10) logits of wideresnet-10-1 with source, 10 images in 3 batches of up to 4, "))
        let logits = try NPYFile(contentsOf: URL(fileURLWithPath: output))
        #expect(logits.dtype == .float32 && logits.shape == [10, 10])

        // The same images straight through the source model (BN with running statistics).
        let model = try ModelZoo.load(SafeTensorsFile.read(URL(fileURLWithPath: tiny.weights)))
        model.setBatchNormMode(.runningStatistics)
        let expected = model.forward(Tensor(shape: [10, 3, 16, 16], storage: nchw), .inference)
        expectClose(try logits.floats(), expected.storage, tolerance: 1e-5, "uint8 input")

        // float32 NCHW input gives the same logits.
        let floatInput = tiny.folder.path("images-f32.npy"), floatOutput = tiny.folder.path("logits-f32.npy")
        try NPYFile.write(floats: nchw, shape: [10, 3, 16, 16], to: URL(fileURLWithPath: floatInput))
        #expect(tta(["predict", "--weights", tiny.weights, "--input", floatInput, "--output", floatOutput, "--batch-size", "10"]).code == 0)
        expectClose(try NPYFile(contentsOf: URL(fileURLWithPath: floatOutput)).floats(), expected.storage, tolerance: 1e-5, "float input")

        // --batch-size takes any positive Int: Int.max makes one batch (the batch count used to be
        // (n + batchSize - 1) / batchSize, which trapped on overflow; found checking what the option
        // fuzzer cannot reach).
        let oneBatch = tiny.folder.path("logits-one-batch.npy")
        let big = tta(["predict", "--weights", tiny.weights, "--input", input, "--output", oneBatch, "--batch-size", "\(Int.max)"])
        #expect(big.code == 0, "\(big.err)")
        #expect(big.out.contains("10 images in 1 batch of up to 9223372036854775807"), "\(big.out)")
        expectClose(try NPYFile(contentsOf: URL(fileURLWithPath: oneBatch)).floats(), expected.storage, tolerance: 1e-5, "one batch")
    }

    @Test func aMethodAdaptsWhilePredicting() throws {
        let tiny = try TinyBenchmark(channels: 1)
        defer { tiny.cleanup() }
        let (bytes, _) = Self.images(count: 8, channels: 1, size: 16)
        let input = tiny.folder.path("grey.npy")
        try NPYFile.write(uint8: bytes, shape: [8, 16, 16], to: URL(fileURLWithPath: input))  // (N, H, W) for one channel
        var outputs: [[Float]] = []
        for method in ["source", "norm_test", "tent"] {
            let out = tiny.folder.path("\(method).npy")
            let r = tta(["predict", "--weights", tiny.weights, "--input", input, "--output", out, "--method", method, "--batch-size", "4", "--quiet"])
            #expect(r.code == 0, "\(r.err)")
            outputs.append(try NPYFile(contentsOf: URL(fileURLWithPath: out)).floats())
        }
        #expect(outputs[0] != outputs[1])
        // tent predicts its first batch before any update: the same as norm_test there, up to rounding
        // (norm_test's pass records nothing and its 3x3 convolutions take Winograd, tent's the GEMM).
        expectClose(Array(outputs[1][0..<40]), Array(outputs[2][0..<40]), tolerance: 2e-5, "first batch")
        #expect(outputs[1][40...] != outputs[2][40...])
    }

    /// The method's defaults follow the images' size, as the benchmarks' do: 16×16 images take the reference's
    /// CIFAR settings (TENT: Adam, lr 1e-3), 40×40 ones its ImageNet-C settings (SGD, lr 2.5e-4, Nesterov
    /// momentum 0.9). The logits of two batches equal an in-process TENT so configured, and not one configured
    /// the other way (the second batch follows the first update).
    @Test func methodSettingsFollowTheImageSize() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        for (size, family, label) in [(16, MethodConfiguration.Family.cifar, "CIFAR settings"), (40, .imagenet, "ImageNet-C settings")] {
            let (bytes, nchw) = Self.images(count: 8, channels: 3, size: size)
            let input = tiny.folder.path("images-\(size).npy"), output = tiny.folder.path("logits-\(size).npy")
            try NPYFile.write(uint8: bytes, shape: [8, size, size, 3], to: URL(fileURLWithPath: input))
            let r = tta(["predict", "--weights", tiny.weights, "--input", input, "--output", output, "--method", "tent", "--batch-size", "4"])
            #expect(r.code == 0, "\(r.err)")
            #expect(r.out.contains("logits of wideresnet-10-1 with tent (\(label)), 8 images in 2 batches of up to 4, "), "\(r.out)")
            func inProcess(_ f: MethodConfiguration.Family) throws -> [Float] {
                let model = try ModelZoo.load(SafeTensorsFile.read(URL(fileURLWithPath: tiny.weights)))
                let adaptor = try Adaptor(model: model, method: MethodRegistry.make("tent", configuration: .defaults(for: f, method: "tent")), seed: 1)
                let x = Tensor(shape: [8, 3, size, size], storage: nchw)
                return try adaptor.adapt(x.slice(0..<4)).storage + adaptor.adapt(x.slice(4..<8)).storage
            }
            let logits = try NPYFile(contentsOf: URL(fileURLWithPath: output)).floats()
            expectClose(logits, try inProcess(family), tolerance: 1e-5, "\(size)×\(size)")
            #expect(relativeError(Array(logits[40...]), Array(try inProcess(family == .cifar ? .imagenet : .cifar)[40...])) > 1e-3, "\(size)×\(size)")
        }
        // Without --batch-size, 64 images a batch for ImageNet-sized images.
        let input = tiny.folder.path("images-40.npy"), output = tiny.folder.path("logits-default.npy")
        let r = tta(["predict", "--weights", tiny.weights, "--input", input, "--output", output])
        #expect(r.out.contains("with source, 8 images in 1 batch of up to 64, "), "\(r.out)")
    }

    @Test func inputThatIsNotImages() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let input = tiny.folder.path("nchw-bytes.npy")
        try NPYFile.write(uint8: [UInt8](repeating: 0, count: 4 * 3 * 16 * 16), shape: [4, 3, 16, 16], to: URL(fileURLWithPath: input))
        expectError(tta(["predict", "--weights", tiny.weights, "--input", input, "--output", tiny.folder.path("o.npy")]),
                    "\(input): expected uint8 (N, H, W, 3) NHWC or float32 (N, 3, H, W) NCHW for wideresnet-10-1, found uint8 with shape [4, 3, 16, 16]", code: 1)
        expectError(tta(["predict", "--weights", tiny.weights, "--input", tiny.folder.path("none.npy"), "--output", tiny.folder.path("o.npy")]),
                    "--input: no such file: \(tiny.folder.path("none.npy"))", code: 1)
        #expect(!FileManager.default.fileExists(atPath: tiny.folder.path("o.npy")))
    }
}
