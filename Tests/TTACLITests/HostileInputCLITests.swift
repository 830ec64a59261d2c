import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTAModels
import TTARuntime
import TTATensor
import TTATestSupport
@testable import TTACLI

/// Input that used to crash a command, hang it, or have it allocate without limit, refused before any work with one
/// line naming the file, the key or the flag and what was expected.
@Suite struct HostileInputCLITests {
    static let pipeline = "augments them with CoTTA's augmentation pipeline, which takes square images of at least 2×2 pixels with 1 or 3 channels"

    /// Rewrites the tiny benchmark's corruption files with `height` × `width` RGB images.
    func reshape(_ tiny: TinyBenchmark, height: Int, width: Int) throws {
        for name in TinyBenchmark.corruptions {
            let rows = 5 * tiny.perSeverity
            try NPYFile.write(uint8: [UInt8](repeating: 100, count: rows * height * width * 3), shape: [rows, height, width, 3],
                              to: tiny.dataFolder.appendingPathComponent(name + ".npy"))
        }
    }

    /// `count` uint8 NHWC images of `height` × `width` × 3 at `path`.
    func writeImages(_ path: String, count: Int, height: Int, width: Int) throws {
        try NPYFile.write(uint8: [UInt8](repeating: 100, count: count * height * width * 3), shape: [count, height, width, 3],
                          to: URL(fileURLWithPath: path))
    }

    // MARK: Images the augmenting methods cannot take

    /// cotta, rotta, roid and rmt (and their +unmix_tns forms) augment with CoTTA's pipeline, which crops back to a
    /// square: non-square images (a CIFAR-C-layout folder of 16×20 images) used to stop the process at its first
    /// augmented batch. `run`, `compare` and `predict` refuse them up front, naming the method, the size and the file.
    @Test func augmentingMethodsRefuseNonSquareImagesUpFront() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        try reshape(tiny, height: 16, width: 20)
        let file = tiny.dataFolder.appendingPathComponent("gaussian_noise.npy").path
        expectError(tta(["run"] + tiny.dataOptions + ["--method", "roid"]),
                    "\(file): images are 16×20 (H×W); --method roid \(Self.pipeline) (--roid-consistency false runs roid without augmenting)",
                    code: 1)
        expectError(tta(["run"] + tiny.dataOptions + ["--method", "rotta+unmix_tns"]),
                    "\(file): images are 16×20 (H×W); --method rotta+unmix_tns \(Self.pipeline)", code: 1)
        // rmt is refused before its source data is read.
        expectError(tta(["run"] + tiny.dataOptions + ["--method", "rmt", "--source-data", tiny.root]),
                    "\(file): images are 16×20 (H×W); --method rmt \(Self.pipeline)", code: 1)
        expectError(tta(["compare"] + tiny.dataOptions + ["--methods", "source,cotta"]),
                    "\(file): images are 16×20 (H×W); cotta (--methods) \(Self.pipeline) (--augmentations 0 runs cotta without augmenting)",
                    code: 1)

        // predict: (8, 32, 40, 3), and images smaller than 2×2.
        let input = tiny.folder.path("wide.npy"), output = tiny.folder.path("logits.npy")
        try writeImages(input, count: 8, height: 32, width: 40)
        expectError(tta(["predict", "--weights", tiny.weights, "--input", input, "--output", output, "--method", "roid", "--quiet"]),
                    "--input \(input): images are 32×40 (H×W); --method roid \(Self.pipeline) (--roid-consistency false runs roid without augmenting)",
                    code: 1)
        let dots = tiny.folder.path("dots.npy")
        try writeImages(dots, count: 4, height: 1, width: 1)
        expectError(tta(["predict", "--weights", tiny.weights, "--input", dots, "--output", output, "--method", "cotta+unmix_tns", "--quiet"]),
                    "--input \(dots): images are 1×1 (H×W); --method cotta+unmix_tns \(Self.pipeline) (--augmentations 0 runs cotta without augmenting)",
                    code: 1)
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    /// Only a configuration that augments is refused: cotta without augmented passes, roid without its consistency loss
    /// and the methods that never augment take any image size; channels other than 1 or 3 are named too.
    @Test func theRefusalFollowsWhatTheMethodAugments() {
        func configuration(_ method: String, _ edit: (inout MethodConfiguration) -> Void = { _ in }) -> MethodConfiguration {
            var c = MethodConfiguration.defaults(for: .cifar, method: method)
            edit(&c)
            return c
        }
        #expect(augmentationRefusal("cotta", configuration("cotta") { $0.augmentations = 0 }, channels: 3, height: 16, width: 20) == nil)
        #expect(augmentationRefusal("roid", configuration("roid") { $0.roidConsistency = false }, channels: 3, height: 16, width: 20) == nil)
        #expect(augmentationRefusal("tent", configuration("tent"), channels: 3, height: 16, width: 20) == nil)
        #expect(augmentationRefusal("rotta", configuration("rotta"), channels: 3, height: 16, width: 16) == nil)
        #expect(augmentationRefusal("rotta", configuration("rotta"), channels: 4, height: 16, width: 16)?.found == "images have 4 channels")
        #expect(augmentationRefusal("roid+unmix_tns", configuration("roid"), channels: 3, height: 20, width: 16)?.found == "images are 20×16 (H×W)")
    }

    // MARK: Models made for one image size

    /// A ViT of `imageSize` (patches of `patchSize`, 10 classes) saved at `path`; its architecture name.
    func saveViT(imageSize: Int, patchSize: Int, to path: String) throws -> String {
        let vit = VisionTransformer(ViTConfiguration(imageSize: imageSize, patchSize: patchSize, dim: 8, depth: 1, heads: 2, numClasses: 10))
        try vit.save(to: URL(fileURLWithPath: path))
        return vit.architecture
    }

    /// A ViT takes only its own image size. The benchmark's images, the source data's (which EATA's Fisher information and
    /// RMT's prototypes run through the model when the method is set up, where a mismatch used to stop the process) and
    /// predict's input are checked against it up front, each named.
    @Test func modelsWithARequiredImageSizeAreCheckedUpFront() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let file = tiny.dataFolder.appendingPathComponent("gaussian_noise.npy").path
        let vit8 = tiny.folder.path("vit8.safetensors")
        let arch8 = try saveViT(imageSize: 8, patchSize: 4, to: vit8)
        expectError(tta(["run"] + tiny.dataOptions(with: ["--weights", vit8]) + ["--method", "tent"]),
                    "\(file): images are 16×16 (H×W); \(arch8) (--weights \(vit8)) takes 8×8 images", code: 1)
        expectError(tta(["compare"] + tiny.dataOptions(with: ["--weights", vit8]) + ["--methods", "eata", "--source-data", tiny.root]),
                    "\(file): images are 16×16 (H×W); \(arch8) (--weights \(vit8)) takes 8×8 images", code: 1)

        // The benchmark fits a 16×16 ViT; 8×8 source data does not.
        let vit16 = tiny.folder.path("vit16.safetensors")
        let arch16 = try saveViT(imageSize: 16, patchSize: 8, to: vit16)
        let source = tiny.folder.url.appendingPathComponent("source-8")
        try FileManager.default.createDirectory(at: source, withIntermediateDirectories: true)
        try writeImages(source.appendingPathComponent("images.npy").path, count: 20, height: 8, width: 8)
        try NPYFile.write(int64: (0..<20).map { Int64($0 % 10) }, shape: [20], to: source.appendingPathComponent("labels.npy"))
        for method in ["eata", "rmt"] {
            expectError(tta(["compare"] + tiny.dataOptions(with: ["--weights", vit16]) + ["--methods", method, "--source-data", source.path]),
                        "--source-data \(source.path): images are 8×8 (H×W); \(arch16) takes 16×16 images", code: 1)
        }

        let input = tiny.folder.path("images16.npy")
        try writeImages(input, count: 2, height: 16, width: 16)
        expectError(tta(["predict", "--weights", vit8, "--input", input, "--output", tiny.folder.path("out.npy"), "--quiet"]),
                    "--input \(input): images are 16×16 (H×W); \(arch8) takes 8×8 images", code: 1)
    }

    // MARK: num_batches_tracked

    /// The tiny WideResNet's state dict as PyTorch writes it: F32 parameters and buffers, and the first BN counter as an
    /// I64 scalar holding `value`. Returns the counter's name.
    func writeWeights(counter value: Int64, to path: String) throws -> String {
        let model = TinyBenchmark.makeModel(channels: 3)
        var entries: [(name: String, dtype: String, shape: [Int], bytes: [UInt8])] = model.store.stateDict()
            .filter { !$0.name.hasSuffix("num_batches_tracked") }
            .map { t -> (name: String, dtype: String, shape: [Int], bytes: [UInt8]) in
                var bytes: [UInt8] = []
                for v in t.tensor.storage { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
                return (name: t.name, dtype: "F32", shape: t.tensor.shape, bytes: bytes)
            }
        let counter = try #require(model.store.counterNames.first)
        // First, so that its 8 bytes are 8-byte aligned as the F32 data after it is 4-byte aligned.
        entries.insert((name: counter, dtype: "I64", shape: [], bytes: withUnsafeBytes(of: value.littleEndian) { Array($0) }), at: 0)
        var header: [String: Any] = ["__metadata__": ["format": "pt", "architecture": model.architecture]]
        var offset = 0
        for e in entries {
            header[e.name] = ["dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + e.bytes.count]] as [String: Any]
            offset += e.bytes.count
        }
        var json = [UInt8](try JSONSerialization.data(withJSONObject: header))
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var file = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json
        for e in entries { file += e.bytes }
        try Data(file).write(to: URL(fileURLWithPath: path))
        return counter
    }

    /// A `num_batches_tracked` below 0, or above 2^53 (BatchNorm's `+ 1` overflows near Int64.max), is no count PyTorch
    /// writes: the weights are refused naming the key. A real count loads.
    @Test func batchCountersOutOfRangeAreRefused() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let weights = tiny.folder.path("counters.safetensors")
        let arch = TinyBenchmark.makeModel(channels: 3).architecture
        for value: Int64 in [-1, (1 << 53) + 1, Int64.max] {
            let counter = try writeWeights(counter: value, to: weights)
            expectError(tta(["run"] + tiny.dataOptions(with: ["--weights", weights]) + ["--method", "source"]),
                        "cannot load \(weights) as \(arch): tensor '\(counter)': expected a count of batches in 0...9007199254740992 (2^53), found \(value)",
                        code: 1)
        }
        _ = try writeWeights(counter: 1 << 53, to: weights)
        let loaded = try LoadedWeights(path: weights, modelName: "auto").makeModel(numClasses: 10, inputChannels: 3)
        #expect(loaded.store.counters.values.contains(1 << 53))
    }

    // MARK: Devices

    /// `--source-data /dev/zero` and `--subset /dev/zero` used to read without end; they are refused as devices.
    @Test func devicesAreRefusedAsInputFiles() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        expectError(tta(["compare"] + tiny.dataOptions + ["--methods", "eata", "--source-data", "/dev/zero"]),
                    "/dev/zero: is a device; expected a regular file", code: 1)
        let imagenet = fixturesDirectory.appendingPathComponent("imagenetc").path
        expectError(tta(["run", "--dataset", "imagenet-c", "--data-dir", imagenet, "--weights", tiny.weights, "--corruptions", "fog",
                         "--subset", "/dev/zero", "--method", "source", "--quiet"]),
                    "/dev/zero: is a device; expected a regular file", code: 1)
    }

    /// An ImageNet-C-layout sample that links to /dev/zero (not the first, which alone is decoded when the folder is
    /// opened) used to be hashed without end for the results' input fingerprint; it is refused as a device.
    @Test func aDeviceAmongTheImagesIsRefusedBeforeItIsHashed() throws {
        let folder = try TemporaryFolder()
        defer { folder.cleanup() }
        let cls = folder.url.appendingPathComponent("ImageNet-C/fog/5/n01440764", isDirectory: true)
        try FileManager.default.createDirectory(at: cls, withIntermediateDirectories: true)
        try Data(contentsOf: fixturesDirectory.appendingPathComponent("jpeg/rgb420_q75_17x13.jpg")).write(to: cls.appendingPathComponent("a.JPEG"))
        let device = cls.appendingPathComponent("b.JPEG")
        try FileManager.default.createSymbolicLink(atPath: device.path, withDestinationPath: "/dev/zero")
        let weights = folder.path("one-class.safetensors")
        try TinyBenchmark.save(WideResNet(depth: 10, widenFactor: 1, numClasses: 1, inputChannels: 3), to: weights)
        expectError(tta(["run", "--dataset", "imagenet-c", "--data-dir", folder.url.path, "--weights", weights, "--corruptions", "fog",
                         "--subset", "all", "--method", "source", "--quiet"]),
                    "\(device.path): is a device; expected a regular file", code: 1)
    }

    // MARK: Counts that size allocations

    /// --projection-dim (RMT's P×P projector), --unmix-components (K statistics per BN channel) and --threads (the kernels
    /// split work into 4 × threads parts) used to take any Int and overflow a shape product or allocate without limit in
    /// the memory probe. They are bounded in the option table, in the usual words, on the command line and in a config
    /// file; the bound itself is accepted and valid.
    @Test func countsThatSizeAllocationsAreBounded() throws {
        for (flag, bound) in [("projection-dim", 4096), ("unmix-components", 1024), ("threads", 1024)] {
            for value in ["9223372036854775807", "1000000000000", "\(bound + 1)", "0"] {
                expectError(tta(["run", "--\(flag)", value]), "invalid value '\(value)' for '--\(flag)': expected an integer in 1...\(bound)", code: 64)
            }
            expectError(tta(["predict", "--\(flag)", "\(bound + 1)"]),
                        "invalid value '\(bound + 1)' for '--\(flag)': expected an integer in 1...\(bound)", code: 64)
            let a = try Parser.parse(["--\(flag)", "\(bound)"], command: .run)
            #expect(a.int(flag) == bound)
            _ = try methodConfiguration("rmt", family: .cifar, numClasses: 10, a)
        }
        let folder = try TemporaryFolder()
        defer { folder.cleanup() }
        let path = folder.path("config.json")
        try Data(#"{"unmix-components": 1000000000000}"#.utf8).write(to: URL(fileURLWithPath: path))
        expectError(tta(["run", "--config", path]),
                    "\(path): key 'unmix-components': invalid value '1000000000000': expected an integer in 1...1024", code: 64)
    }

    // MARK: Finished runs in a checkpoint

    /// The finished runs of a checkpoint are printed and written as read. One whose method is not the run's, or whose
    /// errors are not what its counts give, is refused on reading; one consistent in itself whose domains are not the
    /// stream's (a sample moved from one domain to the next, every error recomputed) is refused on resuming. The
    /// checkpoint as written resumes.
    @Test func finishedRunsOfACheckpointAreChecked() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let checkpoint = tiny.folder.path("run.ckpt")
        let url = URL(fileURLWithPath: checkpoint)
        let options = ["compare"] + tiny.dataOptions + ["--methods", "source,norm_test", "--format", "json"]
        // 6 batches per method, 7 stop checks each: norm_test runs 3 batches.
        #expect(tta(options + ["--checkpoint", checkpoint], stopAfter: 10).code == 130)
        let saved = try RunCheckpoint.read(url)
        try #require(saved.finishedRuns.map(\.method) == ["source"])
        func resume(after edit: (inout RunResult) -> Void) throws -> Invocation {
            var c = saved
            edit(&c.finishedRuns[0])
            try c.write(to: url)
            return tta(options + ["--resume", checkpoint])
        }
        let unusable = "\(checkpoint) is not a usable SwiftTTA checkpoint: finished run 0 (source): "
        let renamed = try resume { $0.method = "tent" }
        expectError(renamed, unusable + "method is 'tent'; the run's method at this place is 'source'", code: 1)
        let d0 = saved.finishedRuns[0].domains[0]
        let misscored = try resume { $0.domains[0].error += 1 }
        expectError(misscored,
                    unusable + "domains[0] (gaussian_noise5) has error \(d0.error + 1); \(d0.samples - d0.correct) wrong of 8 samples is \(d0.error)",
                    code: 1)
        func moved(_ r: inout RunResult) {
            let (a, b) = (r.domains[0], r.domains[1])
            r.domains[0] = DomainResult(name: a.name, severity: a.severity, samples: a.samples - 1, correct: min(a.correct, a.samples - 1))
            r.domains[1] = DomainResult(name: b.name, severity: b.severity, samples: b.samples + 1, correct: b.correct + (a.correct == a.samples ? 1 : 0))
            r.meanError = RunResult.averageError(of: r.domains, mixedDomains: false)
        }
        let shifted = try resume(after: moved)
        expectError(shifted,
                    "--resume \(checkpoint): the checkpoint's finished runs do not fit this stream: finished run 0 (source): "
                        + "domains[0] is gaussian_noise5 with 7 samples; the stream's domain 0 is gaussian_noise5 with 8 samples", code: 1)
        try saved.write(to: url)
        let resumed = tta(options + ["--resume", checkpoint])
        #expect(resumed.code == 0, "\(resumed.err)")
    }
}
