import TTAData
import TTANN
import TTATensor

/// torchvision's bottleneck `ResNet` (`resnet50`, v1.5) with its module names, so that
/// `torchvision.models.resnet50().state_dict()` loads without key edits (320 entries, 25,557,032
/// parameters for ResNet-50 with 1,000 classes).
///
/// Layout: `conv1` 7×7/2 (in→base) → `bn1` → ReLU → `maxpool` 3×3/2 pad 1 → `layer1..4` of
/// `blocks[k]` bottlenecks with planes base·2^k (first block of layer 2–4 strided by 2 on its 3×3) →
/// global average pool → `fc`. A block's inner width is `Int(planes · widthPerGroup / 64) · groups`
/// and its output `4 · planes`, as torchvision computes them. `base` 64 with `groups` 1 and
/// `widthPerGroup` 64 is ResNet-50/101/152; smaller `base` builds the test-sized models (torchvision
/// fixes 64, the parity script builds the same graph with torchvision's own `Bottleneck`).
///
/// Input normalisation defaults to the ImageNet mean/std torchvision's weights expect (applied to
/// [0, 1] images inside `forward`; set `inputNormalization` to change or drop it).
public final class ResNet: LinearHeadClassifier {
    public let store = ParameterStore()
    public let blocksPerLayer: [Int]
    public let baseWidth, groups, widthPerGroup, numClasses, inputChannels: Int
    public var inputNormalization: (mean: [Float], std: [Float])? = ResNet.imageNetNormalization
    public let batchNorms: [BatchNorm2d]
    /// `conv1` and the max-pool, then the first blocks of layers 2-4: 1/32 of the input's side at layer 4.
    public var batchNormHalvings: Int { 5 }
    let trunk: BottleneckTrunk
    let fc: Linear
    public var classifierLayer: Linear { fc }

    /// torchvision's `Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])`.
    public static let imageNetNormalization: (mean: [Float], std: [Float]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

    /// torchvision's named configurations: blocks per layer, groups, width per group.
    static let named: [(name: String, blocks: [Int], groups: Int, widthPerGroup: Int)] = [
        ("resnet50", [3, 4, 6, 3], 1, 64), ("resnet101", [3, 4, 23, 3], 1, 64), ("resnet152", [3, 8, 36, 3], 1, 64),
        ("resnext50_32x4d", [3, 4, 6, 3], 32, 4), ("resnext101_32x8d", [3, 4, 23, 3], 32, 8),
        ("wide_resnet50_2", [3, 4, 6, 3], 1, 128), ("wide_resnet101_2", [3, 4, 23, 3], 1, 128),
    ]

    /// `resnet50` for torchvision's configurations; otherwise `resnet-<b1>.<b2>.<b3>.<b4>-w<base>[-g<groups>x<widthPerGroup>]`.
    public var architecture: String {
        Self.architectureName(blocks: blocksPerLayer, baseWidth: baseWidth, groups: groups, widthPerGroup: widthPerGroup)
    }

    /// The `architecture` of a ResNet of this shape, without building it.
    static func architectureName(blocks: [Int], baseWidth: Int, groups: Int, widthPerGroup: Int) -> String {
        if baseWidth == 64, let n = named.first(where: { $0.blocks == blocks && $0.groups == groups && $0.widthPerGroup == widthPerGroup }) {
            return n.name
        }
        let g = groups == 1 && widthPerGroup == 64 ? "" : "-g\(groups)x\(widthPerGroup)"
        return "resnet-" + blocks.map(String.init).joined(separator: ".") + "-w\(baseWidth)" + g
    }

    /// The trainable parameters (`store.parameterCount`) of the ResNet these arguments build, computed without
    /// building it; nil when the count does not fit in an Int or an argument is not positive.
    public static func parameterCount(blocks: [Int], baseWidth: Int, groups: Int = 1, widthPerGroup: Int = 64,
                                      numClasses: Int, inputChannels: Int = 3) -> Int? {
        bottleneckParameterCount(stem: baseWidth, stemKernel: 7, blocks: blocks, groups: groups, widthPerGroup: widthPerGroup,
                                 numClasses: numClasses, inputChannels: inputChannels)
    }

    public init(blocks: [Int], baseWidth: Int = 64, groups: Int = 1, widthPerGroup: Int = 64, numClasses: Int = 1000, inputChannels: Int = 3) {
        precondition(blocks.count == 4 && blocks.allSatisfy { $0 >= 1 }, "ResNet: four layers of at least one block each, got \(blocks)")
        precondition(baseWidth >= 1 && groups >= 1 && widthPerGroup >= 1 && numClasses >= 1 && inputChannels >= 1)
        (blocksPerLayer, self.baseWidth, self.groups, self.widthPerGroup) = (blocks, baseWidth, groups, widthPerGroup)
        (self.numClasses, self.inputChannels) = (numClasses, inputChannels)
        let conv1 = Conv2d(store, name: "conv1", inputChannels: inputChannels, outputChannels: baseWidth, kernelSize: 7, stride: 2, padding: 3)
        let bn1 = BatchNorm2d(store, name: "bn1", features: baseWidth)
        var built: [Bottleneck] = []
        var inPlanes = baseWidth
        for (layer, count) in blocks.enumerated() {
            let planes = baseWidth << layer
            let width = planes * widthPerGroup / 64 * groups
            for i in 0..<count {
                built.append(Bottleneck(store, name: "layer\(layer + 1).\(i)", names: .torchvision, inPlanes: inPlanes, width: width,
                                        outPlanes: 4 * planes, stride: i == 0 && layer > 0 ? 2 : 1, groups: groups))
                inPlanes = 4 * planes
            }
        }
        trunk = BottleneckTrunk(conv: conv1, bn: bn1, maxpool: MaxPool2d(kernelSize: 3, stride: 2, padding: 1), blocks: built)
        fc = Linear(store, name: "fc", inputFeatures: inPlanes, outputFeatures: numClasses)
        batchNorms = trunk.batchNorms
        store.finalize()
    }

    /// `conv1` … `layer4` → global average pool: `(N, 32·base)` (2048 for ResNet-50).
    public func features(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == inputChannels, "\(architecture): expected images (N, \(inputChannels), H, W), got \(x.shape)")
        return trunk.forward(normalizeInput(x), ctx)
    }

    public func backwardFeatures(_ dFeatures: Tensor, needInputGradient: Bool) -> Tensor? {
        trunk.backward(dFeatures, needInputGradient: needInputGradient)
    }

    public func copy() -> ResNet {
        copyState(to: ResNet(blocks: blocksPerLayer, baseWidth: baseWidth, groups: groups, widthPerGroup: widthPerGroup,
                             numClasses: numClasses, inputChannels: inputChannels))
    }
}

extension ResNet {
    /// The configuration a `--model` name describes (`resnet50`, `resnet-1.1.1.1-w8-g2x32`, …), or nil.
    /// Nil too when a layer would have no channel per group (`⌊planes · widthPerGroup / 64⌋ = 0`): the model
    /// cannot be built. The size limits are `ModelZoo.make`'s.
    static func configuration(named name: String) -> (blocks: [Int], base: Int, groups: Int, widthPerGroup: Int)? {
        let lower = name.lowercased()
        if let n = named.first(where: { $0.name == lower }) { return (n.blocks, 64, n.groups, n.widthPerGroup) }
        let parts = lower.split(separator: "-").map(String.init)
        guard (3...4).contains(parts.count), parts[0] == "resnet", parts[2].hasPrefix("w"), let base = Int(parts[2].dropFirst()), base >= 1 else { return nil }
        let blocks = parts[1].split(separator: ".").compactMap { Int($0) }
        guard blocks.count == 4, blocks.allSatisfy({ $0 >= 1 }) else { return nil }
        var (groups, widthPerGroup) = (1, 64)
        if parts.count == 4 {
            let g = parts[3].dropFirst().split(separator: "x").compactMap { Int($0) }
            guard parts[3].hasPrefix("g"), g.count == 2, g[0] >= 1, g[1] >= 1 else { return nil }
            (groups, widthPerGroup) = (g[0], g[1])
        }
        guard everyStageHasChannels(stem: base, stages: 4, widthPerGroup: widthPerGroup) else { return nil }
        return (blocks, base, groups, widthPerGroup)
    }

    /// The ResNet a state dict describes (keys `conv1.weight`, `layer1.0.conv3.weight`, `fc.weight`), or nil when
    /// it has no torchvision bottleneck-ResNet keys. `shape` looks a key up.
    ///
    /// The model is built from these shapes before the weights are checked, so they are validated first (ranks,
    /// positive dimensions, whole groups, the size limits of `ModelZoo`) and every convolution weight must be in the
    /// file with the shape the inferred model gives it: a small file cannot ask for a huge model.
    static func infer(_ shape: (String) -> [Int]?, file: String) throws -> ResNet? {
        // The keys say it is a torchvision ResNet; a wrong rank is then an error naming the key, not "no ResNet keys".
        guard shape("conv1.weight") != nil, shape("fc.weight") != nil, shape("layer1.0.conv1.weight") != nil else { return nil }
        guard shape("layer1.0.conv2.weight") != nil, shape("layer1.0.conv3.weight") != nil else {
            throw DataError(file: file, key: "layer1.0.conv3.weight",
                            message: "looks like a torchvision ResNet without bottlenecks (resnet18/34); only bottleneck ResNets (resnet50 and up) are supported")
        }
        let model = "a torchvision bottleneck ResNet"
        let stem = try requireShape(shape, file: file, "conv1.weight", rank: 4, of: model)
        let fc = try requireShape(shape, file: file, "fc.weight", rank: 2, of: model)
        let classes = fc[0]
        let c2 = try requireShape(shape, file: file, "layer1.0.conv2.weight", rank: 4, of: model)
        let (base, inputChannels, width) = (stem[0], stem[1], c2[0])
        // torchvision: width = ⌊planes · widthPerGroup / 64⌋ · groups, and the 3×3 weight is (width, width / groups, 3, 3).
        guard width % c2[1] == 0 else {
            throw DataError(file: file, key: "layer1.0.conv2.weight",
                            message: "shape \(shapeString(c2)) does not describe a bottleneck: expected (width, width / groups, 3, 3) with whole groups")
        }
        let groups = width / c2[1]
        let limit = ModelZoo.maxBlocks
        let blocks = (1...4).map { layer in (0...limit).prefix { shape("layer\(layer).\($0).conv1.weight") != nil }.count }
        for (layer, n) in blocks.enumerated() where n < 1 || n > limit {
            throw DataError(file: file, key: "layer\(layer + 1).\(min(n, limit)).conv1.weight",
                            message: n < 1 ? "missing; a bottleneck ResNet has at least one block in each of layer1 to layer4"
                                : "one block too many: a ResNet may have at most \(limit) blocks per layer")
        }
        let widthPerGroup = try inferWidthPerGroup(shape, file: file, stem: base, convKeys: (1...4).map { "layer\($0).0.conv2.weight" },
                                                   stemKey: "conv1.weight", model: model, parameter: "widthPerGroup")
        let architecture = architectureName(blocks: blocks, baseWidth: base, groups: groups, widthPerGroup: widthPerGroup)
        let count = parameterCount(blocks: blocks, baseWidth: base, groups: groups, widthPerGroup: widthPerGroup,
                                   numClasses: classes, inputChannels: inputChannels)
        try checkInferred(architecture, parameters: count, key: "conv1.weight",
                          from: "layer1.0.conv2.weight \(shapeString(c2)) and fc.weight \(shapeString(fc))", file: file, shape: shape,
                          expected: [(key: "conv1.weight", shape: [base, inputChannels, 7, 7])]
                              + bottleneckConvShapes(stagePrefix: "layer", names: .torchvision, stem: base, blocks: blocks,
                                                     groups: groups, widthPerGroup: widthPerGroup)
                              + [(key: "fc.weight", shape: [classes, 32 * base])])
        return ResNet(blocks: blocks, baseWidth: base, groups: groups, widthPerGroup: widthPerGroup, numClasses: classes, inputChannels: inputChannels)
    }
}

// MARK: - Sizes without building (shared with ResNeXt and the ViT)

/// Sums products of factors without trapping: the parameter counts computed before a model is built.
struct ParameterTally {
    private(set) var total = 0
    private(set) var overflowed = false

    /// Adds the product of `factors`.
    mutating func add(_ factors: Int...) {
        var p = 1
        for f in factors {
            let (r, o) = p.multipliedReportingOverflow(by: f)
            p = r
            overflowed = overflowed || o
        }
        let (r, o) = total.addingReportingOverflow(p)
        total = r
        overflowed = overflowed || o
    }

    /// The sum, nil when it or one of its products does not fit in an Int.
    var count: Int? { overflowed ? nil : total }
}

/// Whether every stage `k < stages` of a bottleneck trunk (planes `stem · 2^k`) keeps at least one channel per group,
/// `⌊planes · widthPerGroup / 64⌋ ≥ 1` (a product too large for an Int has plenty; the size limit refuses it).
func everyStageHasChannels(stem: Int, stages: Int, widthPerGroup: Int) -> Bool {
    guard stem >= 1, widthPerGroup >= 1 else { return false }
    return (0..<stages).allSatisfy { k in
        let (planes, o1) = stem.multipliedReportingOverflow(by: 1 << k)
        if o1 { return true }
        let (scaled, o2) = planes.multipliedReportingOverflow(by: widthPerGroup)
        return o2 || scaled >= 64
    }
}

/// The `widthPerGroup` of a bottleneck trunk read back from its weights: stage `k` (planes `stem · 2^k`) has
/// `⌊planes · widthPerGroup / 64⌋` input channels per group in its 3×3 convolution `convKeys[k]`. Every stage
/// narrows the values that fit; all of them build the same model, and the smallest is returned. One stage alone
/// can leave the wrong value: `⌊8 · 12 / 64⌋ = ⌊8 · 8 / 64⌋ = 1` on an 8-channel stem, told apart only by the
/// wider stages. Throws naming the first stage no value agreeing with the ones before fits. `model` names the
/// architecture, `stemKey` the stem's weight and `parameter` the width's name in it.
func inferWidthPerGroup(_ shape: (String) -> [Int]?, file: String, stem: Int, convKeys: [String], stemKey: String,
                        model: String, parameter: String) throws -> Int {
    var (lo, hi) = (1, Int.max)
    for (k, key) in convKeys.enumerated() {
        let channels = try requireShape(shape, file: file, key, rank: 4, of: model)[1]
        let (planes, o1) = stem.multipliedReportingOverflow(by: 1 << k)
        let (low, o2) = channels.multipliedReportingOverflow(by: 64)
        let (high, o3) = (channels &+ 1).multipliedReportingOverflow(by: 64)
        if stem >= 1, channels < Int.max, !(o1 || o2 || o3) {
            // ⌊planes · w / 64⌋ = channels  ⇔  64 · channels ≤ planes · w ≤ 64 · (channels + 1) − 1.
            lo = max(lo, low / planes + (low % planes == 0 ? 0 : 1))
            hi = min(hi, (high - 1) / planes)
            if lo <= hi { continue }
        }
        throw DataError(file: file, key: key,
                        message: "\(channels) channels per group do not fit \(model) with the \(stem)-channel stem of \(stemKey)"
                            + (k == 0 ? "" : " and the stages before") + ": expected ⌊\(planes) · \(parameter) / 64⌋ for one \(parameter) ≥ 1")
    }
    return lo
}

/// The trainable parameters of a `BottleneckTrunk` and its linear head, as `store.parameterCount` counts them:
/// a `stemKernel`² stem convolution (inputChannels → stem) and its BN, `blocks[k]` bottlenecks of planes
/// `stem · 2^k`, inner width `⌊planes · widthPerGroup / 64⌋ · groups` and output `4 · planes`, then the head.
/// Nil when the count does not fit in an Int or an argument is not positive.
func bottleneckParameterCount(stem: Int, stemKernel: Int, blocks: [Int], groups: Int, widthPerGroup: Int,
                              numClasses: Int, inputChannels: Int) -> Int? {
    guard stem >= 1, stemKernel >= 1, groups >= 1, widthPerGroup >= 1, numClasses >= 1, inputChannels >= 1,
          !blocks.isEmpty, blocks.allSatisfy({ $0 >= 1 }) else { return nil }
    var t = ParameterTally()
    t.add(stem, inputChannels, stemKernel, stemKernel)
    t.add(2, stem)
    var inPlanes = stem
    for (k, n) in blocks.enumerated() {
        let (planes, o1) = stem.multipliedReportingOverflow(by: 1 << k)
        let (scaled, o2) = planes.multipliedReportingOverflow(by: widthPerGroup)
        let (width, o3) = (scaled / 64).multipliedReportingOverflow(by: groups)
        let (out, o4) = planes.multipliedReportingOverflow(by: 4)
        guard !(o1 || o2 || o3 || o4) else { return nil }
        // `count` blocks taking `blockIn` channels: reduce 1×1, grouped 3×3, expand 1×1, and their three BNs.
        func addBlocks(_ count: Int, taking blockIn: Int) {
            t.add(count, width, blockIn); t.add(count, width, width / groups, 9); t.add(count, out, width)
            t.add(count, 2, width); t.add(count, 2, width); t.add(count, 2, out)
        }
        addBlocks(1, taking: inPlanes)
        // The first block of every stage has the 1×1 downsample and its BN: stage 1 quadruples the width, the others stride 2.
        t.add(out, inPlanes)
        t.add(2, out)
        addBlocks(n - 1, taking: out)
        inPlanes = out
    }
    t.add(numClasses, inPlanes)
    t.add(numClasses)
    return t.count
}

/// Checks, before an inferred model is built, that it is within `ModelZoo.maxParameterCount` (`parameters` nil: more
/// than `Int.max`; the error names `key` and the shapes it came `from`) and that the checkpoint holds each `expected`
/// tensor with its shape, so that a small file cannot ask for a huge model.
func checkInferred(_ architecture: String, parameters: Int?, key: String, from: String, file: String,
                   shape: (String) -> [Int]?, expected: [(key: String, shape: [Int])]) throws {
    guard let parameters, parameters <= ModelZoo.maxParameterCount else {
        throw DataError(file: file, key: key,
                        message: "with \(from), describes a \(architecture) of \(parameters.map(String.init) ?? "more than Int.max") "
                            + "parameters, more than the limit of \(ModelZoo.maxParameterCount)")
    }
    for (k, s) in expected { try expectShape(shape, file: file, k, s, architecture: architecture) }
}

/// The convolution weights of bottleneck stages and their shapes, as `Bottleneck` registers them
/// (`<stagePrefix><k+1>.<i>.<conv>.weight`, the first block's `downsample.0.weight`); a few thousand entries at
/// most, the blocks per stage being capped (`ModelZoo.maxBlocks`).
func bottleneckConvShapes(stagePrefix: String, names: Bottleneck.Names, stem: Int, blocks: [Int], groups: Int,
                          widthPerGroup: Int) -> [(key: String, shape: [Int])] {
    var shapes: [(key: String, shape: [Int])] = []
    var inPlanes = stem
    for (k, n) in blocks.enumerated() {
        let planes = stem << k
        let width = planes * widthPerGroup / 64 * groups
        for i in 0..<n {
            let block = "\(stagePrefix)\(k + 1).\(i)"
            shapes.append((key: "\(block).\(names.conv.0).weight", shape: [width, inPlanes, 1, 1]))
            shapes.append((key: "\(block).\(names.conv.1).weight", shape: [width, width / groups, 3, 3]))
            shapes.append((key: "\(block).\(names.conv.2).weight", shape: [4 * planes, width, 1, 1]))
            if i == 0 { shapes.append((key: "\(block).downsample.0.weight", shape: [4 * planes, inPlanes, 1, 1])) }
            inPlanes = 4 * planes
        }
    }
    return shapes
}
