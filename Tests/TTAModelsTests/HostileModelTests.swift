import Foundation
import Testing
import TTAData
import TTAModels
import TTANN
import TTATensor

/// Checkpoints and `--model` names that parse but describe a model that cannot be built (no classes, no
/// channels, groups of no channel, sizes past Int.max): each used to stop the process on a precondition,
/// a division by zero, an index out of range or an overflow. They must be refused with a `DataError`
/// naming the tensor (or `--model`) before anything is allocated.
@Suite struct HostileModelTests {
    typealias Shapes = [(name: String, shape: [Int])]

    /// The keys and shapes a checkpoint of `model` holds (parameters and buffers).
    static func shapes(of model: any ImageClassifier) -> Shapes {
        model.store.entries.map { (name: $0.name, shape: $0.shape) }
    }

    /// `shapes` with the shape of `key` replaced by `shape`, or the key dropped when `shape` is nil.
    static func replacing(_ key: String, with shape: [Int]?, in shapes: Shapes) -> Shapes {
        shapes.compactMap { (entry) -> (name: String, shape: [Int])? in
            guard entry.name == key else { return entry }
            return shape.map { (name: key, shape: $0) }
        }
    }

    /// Writes zero-filled tensors of these shapes to a safetensors file in a temporary directory and returns what
    /// `ModelZoo.infer` throws for it; nil when it infers a model.
    static func inferError(_ shapes: Shapes, metadata: [String: String]? = nil) throws -> DataError? {
        do {
            _ = try inferred(shapes, metadata: metadata)
            return nil
        } catch let e as DataError {
            return e
        }
    }

    /// The model `ModelZoo.infer` builds for a file of zero-filled tensors of these shapes.
    static func inferred(_ shapes: Shapes, metadata: [String: String]? = nil) throws -> any ImageClassifier {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swifttta-hostile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("hostile.safetensors")
        try SafeTensorsFile.write(shapes.map { (name: $0.name, tensor: Tensor(shape: $0.shape)) }, metadata: metadata, to: url)
        return try ModelZoo.infer(try SafeTensorsFile.read(url))
    }

    /// The width per group is read from every stage's 3×3 convolution. On an 8-channel stem the first stage alone
    /// (⌊8 · w / 64⌋ = 1 channel per group) fits any w from 8 to 15; the wider stages pin 12. Read from the first
    /// stage only, these self-built models were refused by their own weight files. A stage that no width agreeing
    /// with the stages before fits is named.
    @Test func widthPerGroupIsReadFromEveryStage() throws {
        let resnet = ResNet(blocks: [1, 1, 1, 1], baseWidth: 8, groups: 1, widthPerGroup: 12, numClasses: 10)
        let resnext = ResNeXt(depth: 11, cardinality: 1, baseWidth: 12, stemWidth: 8, numClasses: 10)
        #expect(resnet.architecture == "resnet-1.1.1.1-w8-g1x12" && resnext.architecture == "resnext-11-1x12-s8")
        for model in [resnet, resnext] as [any ImageClassifier] {
            #expect(try Self.inferred(Self.shapes(of: model)).architecture == model.architecture)
        }
        // torchvision's own configurations are read as before.
        let wide = ResNet(blocks: [1, 1, 1, 1], baseWidth: 16, groups: 4, widthPerGroup: 4, numClasses: 10)
        #expect(try Self.inferred(Self.shapes(of: wide)).architecture == "resnet-1.1.1.1-w16-g4x4")
        // layer3 (planes 32) with 5 channels per group: w is 10 or 11 there, but layer2's 3 channels ask for 12 to 15.
        let clash = try #require(try Self.inferError(Self.replacing("layer3.0.conv2.weight", with: [5, 5, 3, 3], in: Self.shapes(of: resnet))))
        #expect(clash.key == "layer3.0.conv2.weight")
        #expect(clash.message == "5 channels per group do not fit a torchvision bottleneck ResNet with the 8-channel stem of conv1.weight and the "
                + "stages before: expected ⌊32 · widthPerGroup / 64⌋ for one widthPerGroup ≥ 1")
        let stageClash = try #require(try Self.inferError(Self.replacing("stage_2.0.conv_conv.weight", with: [1, 1, 3, 3], in: Self.shapes(of: resnext))))
        #expect(stageClash.key == "stage_2.0.conv_conv.weight")
    }

    /// torchvision-style ResNet `resnet-1.1.1.1-w4`: conv1 (4, 3, 7, 7), layer1 width 4, fc (10, 128).
    static let resnet = shapes(of: ResNet(blocks: [1, 1, 1, 1], baseWidth: 4, numClasses: 10))

    @Test func resNetShapesThatCannotBeBuiltAreRefusedByKey() throws {
        #expect(try Self.inferError(Self.resnet) == nil)
        // groups = 0 / 1 = 0: a division by zero.
        let noWidth = try #require(try Self.inferError(Self.replacing("layer1.0.conv2.weight", with: [0, 1, 3, 3], in: Self.resnet)))
        #expect(noWidth.key == "layer1.0.conv2.weight" && noWidth.description.contains("layer1.0.conv2.weight"))
        #expect(noWidth.description.contains("[0, 1, 3, 3]"))
        // No classes: ResNet's init stopped on a precondition.
        let noClasses = try #require(try Self.inferError(Self.replacing("fc.weight", with: [0, 128], in: Self.resnet)))
        #expect(noClasses.key == "fc.weight" && noClasses.description.contains("fc.weight"))
        // A head of the wrong rank is named, not reported as "no ResNet keys".
        let flatHead = try #require(try Self.inferError(Self.replacing("fc.weight", with: [10, 128, 1], in: Self.resnet)))
        #expect(flatHead.key == "fc.weight" && flatHead.message.hasPrefix("expected a 2-D tensor"))
        // No input channels.
        let noChannels = try #require(try Self.inferError(Self.replacing("conv1.weight", with: [4, 0, 7, 7], in: Self.resnet)))
        #expect(noChannels.key == "conv1.weight" && noChannels.description.contains("conv1.weight"))
        // 2^40 classes from a header of a few bytes: the head was allocated before anything was checked.
        let manyClasses = try #require(try Self.inferError(Self.replacing("fc.weight", with: [1 << 40, 0], in: Self.resnet)))
        #expect(manyClasses.key == "fc.weight")
        // A layer without blocks.
        let noLayer3 = try #require(try Self.inferError(Self.replacing("layer3.0.conv1.weight", with: nil, in: Self.resnet)))
        #expect(noLayer3.key == "layer3.0.conv1.weight" && noLayer3.description.contains("missing"))
        // A later block that does not match the model the first one describes is refused before that model is built.
        let mismatch = try #require(try Self.inferError(Self.replacing("layer2.0.conv2.weight", with: [9, 8, 3, 3], in: Self.resnet)))
        #expect(mismatch.key == "layer2.0.conv2.weight")
        #expect(mismatch.message == "has shape [9, 8, 3, 3]; a resnet-1.1.1.1-w4 needs [8, 8, 3, 3] (no zero dimension)")
    }

    /// RobustBench-style ResNeXt `resnext-11-2x32-s4`: stem 4, stage-1 width 4 in 2 groups, classifier (10, 64).
    static let resnext = shapes(of: ResNeXt(depth: 11, cardinality: 2, baseWidth: 32, stemWidth: 4, numClasses: 10))

    @Test func resNeXtShapesThatCannotBeBuiltAreRefusedByKey() throws {
        #expect(try Self.inferError(Self.resnext) == nil)
        // A scalar where the 1×1 reduce weight belongs: its first dimension was read out of range.
        let scalar = try #require(try Self.inferError(Self.replacing("stage_1.0.conv_reduce.weight", with: [], in: Self.resnext)))
        #expect(scalar.key == "stage_1.0.conv_reduce.weight" && scalar.description.contains("stage_1.0.conv_reduce.weight"))
        // A stem of no channel: baseWidth = 2 · 64 / 0.
        let noStem = try #require(try Self.inferError(Self.replacing("conv_1_3x3.weight", with: [0, 3, 3, 3], in: Self.resnext)))
        #expect(noStem.key == "conv_1_3x3.weight" && noStem.description.contains("conv_1_3x3.weight"))
        // A stem so wide that 2 channels per group make a base width of 2 · 64 / 256 = 0.
        let wideStem = try #require(try Self.inferError(Self.replacing("conv_1_3x3.weight", with: [256, 3, 3, 3], in: Self.resnext)))
        #expect(wideStem.key == "stage_1.0.conv_conv.weight" && wideStem.description.contains("stage_1.0.conv_conv.weight"))
        // No classes.
        let noClasses = try #require(try Self.inferError(Self.replacing("classifier.weight", with: [0, 64], in: Self.resnext)))
        #expect(noClasses.key == "classifier.weight" && noClasses.description.contains("classifier.weight"))
    }

    /// A timm-style ViT: 8×8 images of 4×4 patches, width 8, 2 blocks of 2 heads, MLP 16, 3 classes.
    static let vit = shapes(of: VisionTransformer(ViTConfiguration(imageSize: 8, patchSize: 4, dim: 8, depth: 2, heads: 2, mlpHidden: 16, numClasses: 3)))
    static let vitMetadata = ["num_heads": "2"]

    @Test func vitShapesThatCannotBeBuiltAreRefusedByKey() throws {
        #expect(try Self.inferError(Self.vit, metadata: Self.vitMetadata) == nil)
        // No blocks.0.norm1.weight: depth 0, and VisionTransformer's init stopped on a precondition.
        let noBlocks = try #require(try Self.inferError(Self.replacing("blocks.0.norm1.weight", with: nil, in: Self.vit), metadata: Self.vitMetadata))
        #expect(noBlocks.key == "blocks.0.norm1.weight" && noBlocks.description.contains("blocks.0.norm1.weight"))
        // A later block that does not match is refused before the model is built.
        let badQKV = try #require(try Self.inferError(Self.replacing("blocks.1.attn.qkv.weight", with: [5, 8], in: Self.vit), metadata: Self.vitMetadata))
        #expect(badQKV.key == "blocks.1.attn.qkv.weight" && badQKV.message.contains("[24, 8]"))
    }

    /// RobustBench-style WideResNet-10-1: conv1 (16, 3, 3, 3), block1 width 16, fc (10, 64).
    static let wideResNet = shapes(of: WideResNet(depth: 10, widenFactor: 1, numClasses: 10))

    /// With the WideResNet's own keys present, a stem or head of the wrong rank (or missing) is named with the
    /// rank expected; it used to fall through to "no WideResNet keys … found".
    @Test func wideResNetShapesOfTheWrongRankAreRefusedByKey() throws {
        #expect(try Self.inferError(Self.wideResNet) == nil)
        let head = try #require(try Self.inferError(Self.replacing("fc.weight", with: [10, 64, 2], in: Self.wideResNet)))
        #expect(head.key == "fc.weight")
        #expect(head.message == "expected a 2-D tensor with every dimension at least 1 for a RobustBench WideResNet, found shape [10, 64, 2]")
        let stem = try #require(try Self.inferError(Self.replacing("conv1.weight", with: [16, 3, 9], in: Self.wideResNet)))
        #expect(stem.key == "conv1.weight" && stem.message.hasPrefix("expected a 4-D tensor"))
        let block = try #require(try Self.inferError(Self.replacing("block1.layer.0.conv1.weight", with: [16, 16], in: Self.wideResNet)))
        #expect(block.key == "block1.layer.0.conv1.weight" && block.message.hasPrefix("expected a 4-D tensor"))
        let noHead = try #require(try Self.inferError(Self.replacing("fc.weight", with: nil, in: Self.wideResNet)))
        #expect(noHead.key == "fc.weight" && noHead.message == "missing; a RobustBench WideResNet checkpoint needs it")
    }

    /// Every architecture refuses no classes or no input channels the way the WideResNet does.
    @Test(arguments: ["vit-b-16", "resnet50", "resnext-29-4x32", "wideresnet-10-1"])
    func makeRefusesNoClassesForEveryArchitecture(_ name: String) throws {
        for (classes, channels) in [(0, 3), (10, 0), (-1, 3)] {
            let e = #expect(throws: DataError.self) { try ModelZoo.make(name, numClasses: classes, inputChannels: channels) }
            #expect(e?.description.hasPrefix("--model: model '\(name)': needs at least 1 class and 1 input channel") == true, "\(name) \(classes) \(channels)")
        }
    }

    /// Names that parse but cannot be built: refused naming `--model`, before anything is allocated.
    @Test func modelNamesThatCannotBeBuiltAreRefused() throws {
        // Stage 1 of a 1-channel stem keeps ⌊1 · 32 / 64⌋ = 0 channels per group (ResNeXt's init precondition).
        for name in ["resnext-29-4x32-s1", "resnet-1.1.1.1-w1-g2x32"] {
            #expect(!ModelZoo.recognizes(name), "\(name)")
            let e = #expect(throws: DataError.self) { try ModelZoo.make(name, numClasses: 10) }
            #expect(e?.description.hasPrefix("--model: model '\(name)': unknown model") == true, "\(name)")
        }
        #expect(ModelZoo.recognizes("resnext-29-4x32-s2") && ModelZoo.recognizes("resnet-1.1.1.1-w2-g2x32"))
        // Widths past Int.max: the parameter count overflowed in ParameterStore.add.
        for name in ["resnet-1.1.1.1-w4611686018427387904", "resnext-11-1x64-s4611686018427387904", "resnet-1.1.1.1-w8-g1x4611686018427387904"] {
            #expect(ModelZoo.recognizes(name), "\(name)")
            #expect(ModelZoo.sizeRefusal(name) == "a model of at most 4294967296 parameters (wideresnet-28-10 has 36479194)", "\(name)")
            let e = #expect(throws: DataError.self) { try ModelZoo.make(name, numClasses: 10) }
            #expect(e?.description == "--model: model '\(name)': has more than Int.max parameters, more than the limit of 4294967296", "\(name)")
        }
        // Within Int but over the limit: never allocated.
        let wide = #expect(throws: DataError.self) { try ModelZoo.make("resnet-1.1.1.1-w100000", numClasses: 10) }
        #expect(wide?.description.contains("parameters, more than the limit of 4294967296") == true)
        // Deeper than any real model: refused before the blocks are counted or built.
        for name in ["resnet-1001.1.1.1-w1", "resnext-9011-1x64-s1", "wrn-6010-1", "wrn-9223372036854775804-1"] {
            #expect(ModelZoo.sizeRefusal(name) == "a model of at most 1000 blocks per stage (resnet152 has 36)", "\(name)")
            let e = #expect(throws: DataError.self) { try ModelZoo.make(name, numClasses: 10) }
            #expect(e?.description.contains("blocks in one stage, more than the limit of 1000") == true, "\(name)")
        }
        #expect(ModelZoo.sizeRefusal("resnet50") == nil && ModelZoo.sizeRefusal("vit-b-16") == nil && ModelZoo.sizeRefusal("wideresnet-28-10") == nil)
    }

    /// The counts `make` and `infer` check match what the built models hold.
    @Test func parameterCountsWithoutBuilding() throws {
        #expect(ResNet.parameterCount(blocks: [3, 4, 6, 3], baseWidth: 64, numClasses: 1000) == 25_557_032)    // torchvision resnet50
        #expect(ResNeXt.parameterCount(depth: 29, cardinality: 4, baseWidth: 32, numClasses: 100) == 6_900_132)  // RobustBench AugMix ResNeXt
        #expect(ViTConfiguration.base16().parameterCount == 86_567_656)                                      // timm vit_base_patch16_224
        let r = ResNet(blocks: [2, 1, 1, 1], baseWidth: 4, groups: 2, widthPerGroup: 32, numClasses: 7, inputChannels: 1)
        #expect(ResNet.parameterCount(blocks: [2, 1, 1, 1], baseWidth: 4, groups: 2, widthPerGroup: 32, numClasses: 7, inputChannels: 1)
                == r.store.parameterCount)
        let x = ResNeXt(depth: 20, cardinality: 4, baseWidth: 16, stemWidth: 8, numClasses: 5, inputChannels: 2)
        #expect(ResNeXt.parameterCount(depth: 20, cardinality: 4, baseWidth: 16, stemWidth: 8, numClasses: 5, inputChannels: 2)
                == x.store.parameterCount)
        let c = ViTConfiguration(imageSize: 8, patchSize: 4, dim: 8, depth: 2, heads: 2, mlpHidden: 16, numClasses: 3, inputChannels: 2)
        #expect(c.parameterCount == VisionTransformer(c).store.parameterCount)
        #expect(ResNet.parameterCount(blocks: [1, 1, 1, 1], baseWidth: Int.max / 2, numClasses: 1) == nil)
    }
}
