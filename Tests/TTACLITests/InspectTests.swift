import Foundation
import Testing
import TTAData
import TTATestSupport
@testable import TTACLI

@Suite struct InspectTests {
    @Test func safetensorsShowsKeysShapesAndArchitecture() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let r = tta(["inspect", tiny.weights])
        #expect(r.code == 0 && r.err.isEmpty)
        let lines = r.out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        try #require(lines.count > 5, "\(r.err)")
        let file = try SafeTensorsFile.read(URL(fileURLWithPath: tiny.weights))
        #expect(lines[0].hasPrefix("\(tiny.weights): safetensors, \(file.entries.count) tensors, "))
        #expect(lines[1] == "metadata: architecture=wideresnet-10-1, format=pt")
        let params = TinyBenchmark.makeModel(channels: 3).store.parameterCount
        #expect(lines[2] == "architecture: wideresnet-10-1 (3 input channels, 10 classes), \(formatCount(params)) parameters; the weights load into it")
        #expect(lines[3] == "input normalisation: none (the architecture's default; --normalize changes it)")
        #expect(lines[5].split(separator: " ") == ["name", "dtype", "shape", "elements"])
        #expect(lines.contains { $0.hasPrefix("conv1.weight ") && $0.contains("  F32    [16, 3, 3, 3] ") && $0.hasSuffix(" 432") })
        #expect(lines.filter { $0.contains(" F32 ") || $0.contains(" I64 ") }.count == file.entries.count)
    }

    /// The normalisation a checkpoint stores is shown with its keys (golden: `layout_mu_sigma_cases()` in
    /// scripts/make_layout_fixtures.py, which stores CIFAR's mean and std as RobustBench's mu/sigma buffers).
    @Test func storedNormalizationIsShown() {
        let path = fixturesDirectory.appendingPathComponent("cnn/layout_mu_sigma.safetensors").path
        let r = tta(["inspect", path])
        #expect(r.out.contains("\narchitecture: resnext-20-4x16-s8 (3 input channels, 10 classes), ")
                && r.out.contains("parameters; the weights load into it\ninput normalisation: (x - mean) / std, mean 0.4914, 0.4822, 0.4465, "
                                  + "std 0.2471, 0.2435, 0.2616 (stored in the weights: mu, sigma)\n"), "\(r.out)")
    }

    @Test func npyShowsDtypeShapeAndLayout() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let labels = tiny.dataFolder.appendingPathComponent("labels.npy").path
        #expect(tta(["inspect", labels]).out == """
            \(labels): .npy version 1.0, dtype uint8 ('|u1'), shape (40,), 40 elements, 40 bytes of data
            values: min 0, max 7
            looks like: 40 integer labels (as labels.npy: 5 severities x 8)

            """)
        let fog = tiny.dataFolder.appendingPathComponent("fog.npy").path
        let r = tta(["inspect", fog])
        #expect(r.out.hasPrefix("\(fog): .npy version 1.0, dtype uint8 ('|u1'), shape (40, 16, 16, 3), 30,720 elements, 30,720 bytes of data\n"))
        #expect(r.out.hasSuffix("looks like: 40 uint8 images 16x16 with 3 channels (NHWC); as a CIFAR-C corruption file: 5 severities x 8 images; tta predict divides it by 255\n"))
    }

    @Test func otherFiles() throws {
        let dir = try TemporaryFolder()
        defer { dir.cleanup() }
        let text = dir.path("notes.txt")
        try Data("hello".utf8).write(to: URL(fileURLWithPath: text))
        let r = tta(["inspect", text])
        expectError(r, "\(text): not a .npy file (no \\x93NUMPY magic), and not a safetensors file (file is 5 bytes, shorter than the "
                    + "8-byte header-length prefix)", code: 1)
        expectError(tta(["inspect", dir.url.path]), "\(dir.url.path) is a folder; expected a .safetensors or .npy file", code: 1)
    }
}
