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
        if baseWidth == 64, let n = Self.named.first(where: { $0.blocks == blocksPerLayer && $0.groups == groups && $0.widthPerGroup == widthPerGroup }) {
            return n.name
        }
        let g = groups == 1 && widthPerGroup == 64 ? "" : "-g\(groups)x\(widthPerGroup)"
        return "resnet-" + blocksPerLayer.map(String.init).joined(separator: ".") + "-w\(baseWidth)" + g
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
    static func configuration(named name: String) -> (blocks: [Int], base: Int, groups: Int, widthPerGroup: Int)? {
        let lower = name.lowercased()
        if let n = named.first(where: { $0.name == lower }) { return (n.blocks, 64, n.groups, n.widthPerGroup) }
        let parts = lower.split(separator: "-").map(String.init)
        guard (3...4).contains(parts.count), parts[0] == "resnet", parts[2].hasPrefix("w"), let base = Int(parts[2].dropFirst()), base >= 1 else { return nil }
        let blocks = parts[1].split(separator: ".").compactMap { Int($0) }
        guard blocks.count == 4, blocks.allSatisfy({ $0 >= 1 }) else { return nil }
        guard parts.count == 4 else { return (blocks, base, 1, 64) }
        let g = parts[3].dropFirst().split(separator: "x").compactMap { Int($0) }
        guard parts[3].hasPrefix("g"), g.count == 2, g[0] >= 1, g[1] >= 1 else { return nil }
        return (blocks, base, g[0], g[1])
    }

    /// The ResNet a state dict describes (keys `conv1.weight`, `layer1.0.conv3.weight`, `fc.weight`), or nil when
    /// it has no torchvision bottleneck-ResNet keys. `shape` looks a key up.
    static func infer(_ shape: (String) -> [Int]?, file: String) throws -> ResNet? {
        guard let c1 = shape("conv1.weight"), c1.count == 4, let fc = shape("fc.weight"), fc.count == 2,
              shape("layer1.0.conv1.weight") != nil else { return nil }
        guard let c2 = shape("layer1.0.conv2.weight"), c2.count == 4, shape("layer1.0.conv3.weight") != nil else {
            throw DataError(file: file, key: "layer1.0.conv3.weight",
                            message: "looks like a torchvision ResNet without bottlenecks (resnet18/34); only bottleneck ResNets (resnet50 and up) are supported")
        }
        let blocks = (1...4).map { layer in (0...).prefix { shape("layer\(layer).\($0).conv1.weight") != nil }.count }
        let base = c1[0], width = c2[0]
        guard blocks.allSatisfy({ $0 >= 1 }), c2[1] >= 1, width % c2[1] == 0 else {
            throw DataError(file: file, key: "layer1.0.conv2.weight", message: "cannot read a bottleneck ResNet from blocks per layer \(blocks) and shape \(c2)")
        }
        let groups = width / c2[1]
        let widthPerGroup = width / groups * 64 / base
        return ResNet(blocks: blocks, baseWidth: base, groups: groups, widthPerGroup: widthPerGroup, numClasses: fc[0], inputChannels: c1[1])
    }
}
