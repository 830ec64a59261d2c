import TTAData
import TTANN
import TTATensor

/// RobustBench's `CifarResNeXt` with its module names: `Hendrycks2020AugMix_ResNeXt` (CIFAR-10-C and
/// CIFAR-100-C source model) is `ResNeXt(depth: 29, cardinality: 4, baseWidth: 32, numClasses: 100)`,
/// 188 state-dict entries and 6,900,132 parameters.
///
/// Layout: `conv_1_3x3` 3×3 (in→stem) → `bn_1` → ReLU → `stage_1..3` of (depth−2)/9 bottlenecks with
/// planes stem, 2·stem, 4·stem (first block of stage 2 and 3 strided by 2), output 4·planes → average
/// pool → `classifier`. A block's inner width is `⌊planes · baseWidth / 64⌋ · cardinality` and its
/// 3×3 convolution has `groups = cardinality`: **4 groups of width 32** for the AugMix model, weights
/// `(128, 32, 3, 3)` in stage 1 (not 32 groups of 4, despite the "32x4d" in RobustBench's listing).
/// `stem` is 64 in RobustBench; smaller values build the test-sized models.
///
/// RobustBench applies `AvgPool2d(8)` to the 8×8 maps of a 32×32 input; this uses the global mean,
/// the same thing there. Input normalisation defaults to RobustBench's `(x − 0.5) / 0.5` (its `mu` and
/// `sigma` buffers, which are not in the checkpoint).
public final class ResNeXt: LinearHeadClassifier {
    public let store = ParameterStore()
    public let depth, cardinality, baseWidth, stemWidth, numClasses, inputChannels: Int
    public var inputNormalization: (mean: [Float], std: [Float])? = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    public let batchNorms: [BatchNorm2d]
    /// The first blocks of stages 2 and 3: a quarter of the input's side at stage 3.
    public var batchNormHalvings: Int { 2 }
    let trunk: BottleneckTrunk
    let classifier: Linear
    public var classifierLayer: Linear { classifier }

    /// `resnext-29-4x32` (RobustBench's stem of 64) or `resnext-<depth>-<cardinality>x<baseWidth>-s<stem>`.
    public var architecture: String {
        Self.architectureName(depth: depth, cardinality: cardinality, baseWidth: baseWidth, stemWidth: stemWidth)
    }

    public init(depth: Int, cardinality: Int, baseWidth: Int, stemWidth: Int = 64, numClasses: Int, inputChannels: Int = 3) {
        precondition(depth >= 11 && (depth - 2) % 9 == 0, "ResNeXt: depth must be 9n+2 (11, 20, 29, …), got \(depth)")
        precondition(cardinality >= 1 && baseWidth >= 1 && stemWidth >= 1 && numClasses >= 1 && inputChannels >= 1)
        (self.depth, self.cardinality, self.baseWidth, self.stemWidth) = (depth, cardinality, baseWidth, stemWidth)
        (self.numClasses, self.inputChannels) = (numClasses, inputChannels)
        if inputChannels != 3 { inputNormalization = (Array(repeating: 0.5, count: inputChannels), Array(repeating: 0.5, count: inputChannels)) }
        let conv1 = Conv2d(store, name: "conv_1_3x3", inputChannels: inputChannels, outputChannels: stemWidth, kernelSize: 3, padding: 1)
        let bn1 = BatchNorm2d(store, name: "bn_1", features: stemWidth)
        var built: [Bottleneck] = []
        var inPlanes = stemWidth
        for stage in 0..<3 {
            let planes = stemWidth << stage
            let width = planes * baseWidth / 64 * cardinality
            precondition(width >= cardinality, "ResNeXt: planes \(planes) · baseWidth \(baseWidth) / 64 leaves no channels per group")
            for i in 0..<(depth - 2) / 9 {
                built.append(Bottleneck(store, name: "stage_\(stage + 1).\(i)", names: .resnext, inPlanes: inPlanes, width: width,
                                        outPlanes: 4 * planes, stride: i == 0 && stage > 0 ? 2 : 1, groups: cardinality))
                inPlanes = 4 * planes
            }
        }
        trunk = BottleneckTrunk(conv: conv1, bn: bn1, maxpool: nil, blocks: built)
        classifier = Linear(store, name: "classifier", inputFeatures: inPlanes, outputFeatures: numClasses)
        batchNorms = trunk.batchNorms
        store.finalize()
    }

    /// `conv_1_3x3` … `stage_3` → average pool: `(N, 16·stem)` (1024 for ResNeXt-29).
    public func features(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == inputChannels, "\(architecture): expected images (N, \(inputChannels), H, W), got \(x.shape)")
        return trunk.forward(normalizeInput(x), ctx)
    }

    public func backwardFeatures(_ dFeatures: Tensor, needInputGradient: Bool) -> Tensor? {
        trunk.backward(dFeatures, needInputGradient: needInputGradient)
    }

    public func copy() -> ResNeXt {
        copyState(to: ResNeXt(depth: depth, cardinality: cardinality, baseWidth: baseWidth, stemWidth: stemWidth,
                              numClasses: numClasses, inputChannels: inputChannels))
    }
}

extension ResNeXt {
    /// The `architecture` of a ResNeXt of this shape, without building it.
    static func architectureName(depth: Int, cardinality: Int, baseWidth: Int, stemWidth: Int) -> String {
        "resnext-\(depth)-\(cardinality)x\(baseWidth)" + (stemWidth == 64 ? "" : "-s\(stemWidth)")
    }

    /// The trainable parameters (`store.parameterCount`) of the ResNeXt these arguments build, computed without
    /// building it; nil when the count does not fit in an Int or the arguments describe no ResNeXt.
    public static func parameterCount(depth: Int, cardinality: Int, baseWidth: Int, stemWidth: Int = 64,
                                      numClasses: Int, inputChannels: Int = 3) -> Int? {
        guard depth >= 11, (depth - 2) % 9 == 0 else { return nil }
        return bottleneckParameterCount(stem: stemWidth, stemKernel: 3, blocks: Array(repeating: (depth - 2) / 9, count: 3),
                                        groups: cardinality, widthPerGroup: baseWidth, numClasses: numClasses, inputChannels: inputChannels)
    }

    /// The configuration a `--model` name describes (`resnext-29-4x32`, `resnext-11-4x32-s8`), or nil. Nil too when
    /// a stage would have no channel per group (`⌊planes · baseWidth / 64⌋ = 0`, e.g. `resnext-29-4x32-s1`): the model
    /// cannot be built. The size limits are `ModelZoo.make`'s.
    static func configuration(named name: String) -> (depth: Int, cardinality: Int, baseWidth: Int, stem: Int)? {
        let parts = name.lowercased().split(separator: "-").map(String.init)
        guard (3...4).contains(parts.count), parts[0] == "resnext", let depth = Int(parts[1]), depth >= 11, (depth - 2) % 9 == 0 else { return nil }
        let cw = parts[2].split(separator: "x").compactMap { Int($0) }
        guard cw.count == 2, cw[0] >= 1, cw[1] >= 1 else { return nil }
        var stem = 64
        if parts.count == 4 {
            guard parts[3].hasPrefix("s"), let s = Int(parts[3].dropFirst()), s >= 1 else { return nil }
            stem = s
        }
        guard everyStageHasChannels(stem: stem, stages: 3, widthPerGroup: cw[1]) else { return nil }
        return (depth, cw[0], cw[1], stem)
    }

    /// The ResNeXt a state dict describes (keys `conv_1_3x3.weight`, `stage_1.0.conv_conv.weight`, `classifier.weight`),
    /// or nil when it has none of them.
    ///
    /// The model is built from these shapes before the weights are checked, so they are validated first (ranks,
    /// positive dimensions, whole groups, the size limits of `ModelZoo`) and every convolution weight must be in the
    /// file with the shape the inferred model gives it: a small file cannot ask for a huge model.
    static func infer(_ shape: (String) -> [Int]?, file: String) throws -> ResNeXt? {
        guard shape("conv_1_3x3.weight") != nil, shape("stage_1.0.conv_reduce.weight") != nil else { return nil }
        let model = "a RobustBench CIFAR ResNeXt"
        let c1 = try requireShape(shape, file: file, "conv_1_3x3.weight", rank: 4, of: model)
        let fc = try requireShape(shape, file: file, "classifier.weight", rank: 2, of: model)
        let reduce = try requireShape(shape, file: file, "stage_1.0.conv_reduce.weight", rank: 4, of: model)
        let cc = try requireShape(shape, file: file, "stage_1.0.conv_conv.weight", rank: 4, of: model)
        let (stem, inputChannels, width, classes) = (c1[0], c1[1], reduce[0], fc[0])
        // RobustBench: width = ⌊planes · baseWidth / 64⌋ · cardinality, and the 3×3 weight is (width, width / cardinality, 3, 3).
        guard width % cc[1] == 0 else {
            throw DataError(file: file, key: "stage_1.0.conv_conv.weight",
                            message: "shape \(shapeString(cc)) does not divide the block width \(width) (stage_1.0.conv_reduce.weight) into whole groups")
        }
        let cardinality = width / cc[1]
        let limit = ModelZoo.maxBlocks
        let n = (0...limit).prefix { shape("stage_1.\($0).conv_reduce.weight") != nil }.count
        guard n <= limit else {
            throw DataError(file: file, key: "stage_1.\(limit).conv_reduce.weight",
                            message: "one block too many: a ResNeXt may have at most \(limit) blocks per stage")
        }
        let baseWidth = try inferWidthPerGroup(shape, file: file, stem: stem, convKeys: (1...3).map { "stage_\($0).0.conv_conv.weight" },
                                               stemKey: "conv_1_3x3.weight", model: model, parameter: "baseWidth")
        let depth = 9 * n + 2
        let architecture = architectureName(depth: depth, cardinality: cardinality, baseWidth: baseWidth, stemWidth: stem)
        let count = parameterCount(depth: depth, cardinality: cardinality, baseWidth: baseWidth, stemWidth: stem,
                                   numClasses: classes, inputChannels: inputChannels)
        try checkInferred(architecture, parameters: count, key: "conv_1_3x3.weight",
                          from: "stage_1.0.conv_conv.weight \(shapeString(cc)) and classifier.weight \(shapeString(fc))", file: file, shape: shape,
                          expected: [(key: "conv_1_3x3.weight", shape: [stem, inputChannels, 3, 3])]
                              + bottleneckConvShapes(stagePrefix: "stage_", names: .resnext, stem: stem, blocks: [n, n, n],
                                                     groups: cardinality, widthPerGroup: baseWidth)
                              + [(key: "classifier.weight", shape: [classes, 16 * stem])])
        return ResNeXt(depth: depth, cardinality: cardinality, baseWidth: baseWidth, stemWidth: stem,
                       numClasses: classes, inputChannels: inputChannels)
    }
}
