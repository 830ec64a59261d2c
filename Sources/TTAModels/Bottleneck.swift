import TTANN
import TTATensor

/// The post-activation bottleneck shared by torchvision's ResNet-50 (`Bottleneck`, v1.5) and
/// RobustBench's CIFAR ResNeXt (`ResNeXtBottleneck`): only the module names differ.
///
/// `reduce` 1×1 (in→width) → BN → ReLU → `conv` 3×3 (stride s, `groups`) → BN → ReLU →
/// `expand` 1×1 (width→out) → BN; shortcut `downsample.0` 1×1 (stride s) → `downsample.1` BN when
/// the block changes width or resolution, else the identity; then **ReLU(shortcut + branch)**.
/// The stride sits on the 3×3 convolution in both (ResNet v1.5).
final class Bottleneck: Module {
    /// The PyTorch names of the three convolutions and their batch norms.
    struct Names {
        var conv: (String, String, String)
        var norm: (String, String, String)
        static let torchvision = Names(conv: ("conv1", "conv2", "conv3"), norm: ("bn1", "bn2", "bn3"))
        static let resnext = Names(conv: ("conv_reduce", "conv_conv", "conv_expand"), norm: ("bn_reduce", "bn", "bn_expand"))
    }

    let reduce: Conv2d, bnReduce: BatchNorm2d, relu1 = ReLU()
    let conv: Conv2d, bnConv: BatchNorm2d, relu2 = ReLU()
    let expand: Conv2d, bnExpand: BatchNorm2d
    let downsample: (conv: Conv2d, bn: BatchNorm2d)?
    let reluOut = ReLU()

    init(_ store: ParameterStore, name: String, names: Names, inPlanes: Int, width: Int, outPlanes: Int, stride: Int, groups: Int) {
        reduce = Conv2d(store, name: "\(name).\(names.conv.0)", inputChannels: inPlanes, outputChannels: width, kernelSize: 1)
        bnReduce = BatchNorm2d(store, name: "\(name).\(names.norm.0)", features: width)
        conv = Conv2d(store, name: "\(name).\(names.conv.1)", inputChannels: width, outputChannels: width, kernelSize: 3,
                      stride: stride, padding: 1, groups: groups)
        bnConv = BatchNorm2d(store, name: "\(name).\(names.norm.1)", features: width)
        expand = Conv2d(store, name: "\(name).\(names.conv.2)", inputChannels: width, outputChannels: outPlanes, kernelSize: 1)
        bnExpand = BatchNorm2d(store, name: "\(name).\(names.norm.2)", features: outPlanes)
        downsample = stride == 1 && inPlanes == outPlanes ? nil
            : (Conv2d(store, name: "\(name).downsample.0", inputChannels: inPlanes, outputChannels: outPlanes, kernelSize: 1, stride: stride),
               BatchNorm2d(store, name: "\(name).downsample.1", features: outPlanes))
    }

    /// The block's batch norms in state-dict order.
    var batchNorms: [BatchNorm2d] { [bnReduce, bnConv, bnExpand] + (downsample.map { [$0.bn] } ?? []) }

    func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        var h = relu1.forward(bnReduce.forward(reduce.forward(x, ctx), ctx), ctx)
        h = relu2.forward(bnConv.forward(conv.forward(h, ctx), ctx), ctx)
        h = bnExpand.forward(expand.forward(h, ctx), ctx)
        let shortcut = downsample.map { $0.bn.forward($0.conv.forward(x, ctx), ctx) } ?? x
        return reluOut.forward(add(shortcut, h), ctx)
    }

    func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        let g = reluOut.backward(dy, needInputGradient: true)!
        var b = bnExpand.backward(g, needInputGradient: true)!
        b = expand.backward(b, needInputGradient: true)!
        b = relu2.backward(b, needInputGradient: true)!
        b = bnConv.backward(b, needInputGradient: true)!
        b = conv.backward(b, needInputGradient: true)!
        b = relu1.backward(b, needInputGradient: true)!
        b = bnReduce.backward(b, needInputGradient: true)!
        let dxBranch = reduce.backward(b, needInputGradient: needInputGradient)
        var dxShortcut: Tensor? = g
        if let (dsConv, dsBN) = downsample {
            let s = dsBN.backward(g, needInputGradient: true)!
            dxShortcut = dsConv.backward(s, needInputGradient: needInputGradient)
        }
        guard needInputGradient, let dxBranch, let dxShortcut else { return nil }
        return add(dxBranch, dxShortcut)
    }
}

/// The trunk shared by `ResNet` and `ResNeXt`: stem convolution → BN → ReLU (→ max pool) → the
/// bottlenecks → global average pool, giving the penultimate features `(N, D)`.
final class BottleneckTrunk: Module {
    let conv: Conv2d, bn: BatchNorm2d, relu = ReLU()
    let maxpool: MaxPool2d?
    let blocks: [Bottleneck]
    let pool = GlobalAvgPool()

    init(conv: Conv2d, bn: BatchNorm2d, maxpool: MaxPool2d?, blocks: [Bottleneck]) {
        (self.conv, self.bn, self.maxpool, self.blocks) = (conv, bn, maxpool, blocks)
    }

    /// Every batch norm in state-dict order.
    var batchNorms: [BatchNorm2d] { [bn] + blocks.flatMap(\.batchNorms) }

    func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        var h = relu.forward(bn.forward(conv.forward(x, ctx), ctx), ctx)
        if let maxpool { h = maxpool.forward(h, ctx) }
        for b in blocks { h = b.forward(h, ctx) }
        return pool.forward(h, ctx)
    }

    func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        var g = pool.backward(dy, needInputGradient: true)!
        for b in blocks.reversed() { g = b.backward(g, needInputGradient: true)! }
        if let maxpool { g = maxpool.backward(g, needInputGradient: true)! }
        g = relu.backward(g, needInputGradient: true)!
        g = bn.backward(g, needInputGradient: true)!
        return conv.backward(g, needInputGradient: needInputGradient)
    }
}
