import TTAKernels
import TTANN
import TTATensor

/// The pre-activation basic block of RobustBench's WideResNet (`wide_resnet.py` `BasicBlock`).
///
/// When input and output widths differ, `x` is replaced by `relu1(bn1(x))` and the 1×1 `convShortcut`
/// is applied to that **activated** input; otherwise the identity shortcut adds the **raw** input.
/// No ReLU after the addition.
final class WideBasicBlock: Module {
    let bn1: BatchNorm2d, relu1 = ReLU(), conv1: Conv2d
    let bn2: BatchNorm2d, relu2 = ReLU(), conv2: Conv2d
    let convShortcut: Conv2d?

    init(_ store: ParameterStore, name: String, inPlanes: Int, outPlanes: Int, stride: Int) {
        bn1 = BatchNorm2d(store, name: "\(name).bn1", features: inPlanes)
        conv1 = Conv2d(store, name: "\(name).conv1", inputChannels: inPlanes, outputChannels: outPlanes,
                       kernelSize: 3, stride: stride, padding: 1)
        bn2 = BatchNorm2d(store, name: "\(name).bn2", features: outPlanes)
        conv2 = Conv2d(store, name: "\(name).conv2", inputChannels: outPlanes, outputChannels: outPlanes,
                       kernelSize: 3, stride: 1, padding: 1)
        convShortcut = inPlanes == outPlanes ? nil
            : Conv2d(store, name: "\(name).convShortcut", inputChannels: inPlanes, outputChannels: outPlanes,
                     kernelSize: 1, stride: stride, padding: 0)
    }

    func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        let a = relu1.forward(bn1.forward(x, ctx), ctx)
        var out = relu2.forward(bn2.forward(conv1.forward(a, ctx), ctx), ctx)
        out = conv2.forward(out, ctx)
        let shortcut = convShortcut.map { $0.forward(a, ctx) } ?? x
        return add(shortcut, out)
    }

    func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        var g = conv2.backward(dy, needInputGradient: true)!
        g = relu2.backward(g, needInputGradient: true)!
        g = bn2.backward(g, needInputGradient: true)!
        var da = conv1.backward(g, needInputGradient: true)!
        if let convShortcut {
            da = add(da, convShortcut.backward(dy, needInputGradient: true)!)
            da = relu1.backward(da, needInputGradient: true)!
            return bn1.backward(da, needInputGradient: needInputGradient)
        }
        da = relu1.backward(da, needInputGradient: true)!
        guard let dx = bn1.backward(da, needInputGradient: needInputGradient) else { return nil }
        return add(dx, dy)
    }
}

/// `WideResNet(depth, widen_factor, num_classes)` with RobustBench's module names and forward pass,
/// so that `model.state_dict()` of the CIFAR-10 `Standard` model (WRN-28-10) loads without key edits.
///
/// Layout: `conv1` (3×3, in→16) → `block1..3` (n = (depth−4)/6 blocks each, widths 16k, 32k, 64k,
/// strides 1, 2, 2) → `bn1` → ReLU → global average pool (RobustBench's `avg_pool2d(8)` on 32×32
/// inputs) → `fc`. `inputChannels` is 3 for CIFAR; other values serve grey-scale benchmarks.
public final class WideResNet: LinearHeadClassifier {
    public let store = ParameterStore()
    public let depth, widenFactor, numClasses, inputChannels: Int
    public var inputNormalization: (mean: [Float], std: [Float])?
    public let batchNorms: [BatchNorm2d]
    /// Groups 2 and 3 start with stride 2; the final `bn1` sees a quarter of the input's side.
    public var batchNormHalvings: Int { 2 }
    let conv1: Conv2d
    let blocks: [WideBasicBlock]
    let bn1: BatchNorm2d
    let relu = ReLU()
    let pool = GlobalAvgPool()
    let fc: Linear
    public var classifierLayer: Linear { fc }

    public var architecture: String { "wideresnet-\(depth)-\(widenFactor)" }

    /// Larger models are refused before anything is allocated (WRN-28-10 has 36.5 million parameters).
    public static let maxParameterCount = 1 << 32

    /// The trainable parameters (`store.parameterCount`) the model would have, computed without
    /// building it; nil when the count does not fit in an Int.
    public static func parameterCount(depth: Int, widenFactor: Int, numClasses: Int, inputChannels: Int) -> Int? {
        var total = 0, overflow = false
        func add(_ factors: Int...) {
            var p = 1
            for f in factors { let (r, o) = p.multipliedReportingOverflow(by: f); p = r; overflow = overflow || o }
            let (r, o) = total.addingReportingOverflow(p); total = r; overflow = overflow || o
        }
        let n = (depth - 4) / 6
        let (w64, o) = widenFactor.multipliedReportingOverflow(by: 64)
        guard !o else { return nil }
        let widths = [16, w64 / 4, w64 / 2, w64]
        add(16, inputChannels, 9)
        for group in 0..<3 {
            for i in 0..<n {
                let inPlanes = i == 0 ? widths[group] : widths[group + 1], outPlanes = widths[group + 1]
                add(2, inPlanes); add(outPlanes, inPlanes, 9); add(2, outPlanes); add(outPlanes, outPlanes, 9)
                if inPlanes != outPlanes { add(outPlanes, inPlanes) }
            }
        }
        add(2, widths[3]); add(widths[3], numClasses); add(numClasses)
        return overflow ? nil : total
    }

    public init(depth: Int, widenFactor: Int, numClasses: Int, inputChannels: Int = 3) {
        precondition((depth - 4) % 6 == 0 && depth >= 10, "WideResNet: depth must be 6n+4 (10, 16, 22, 28, …), got \(depth)")
        precondition(widenFactor >= 1 && numClasses >= 1 && inputChannels >= 1)
        (self.depth, self.widenFactor, self.numClasses, self.inputChannels) = (depth, widenFactor, numClasses, inputChannels)
        let n = (depth - 4) / 6
        let widths = [16, 16 * widenFactor, 32 * widenFactor, 64 * widenFactor]
        conv1 = Conv2d(store, name: "conv1", inputChannels: inputChannels, outputChannels: widths[0], kernelSize: 3, padding: 1)
        var blocks: [WideBasicBlock] = []
        for group in 0..<3 {
            for i in 0..<n {
                blocks.append(WideBasicBlock(store, name: "block\(group + 1).layer.\(i)",
                                             inPlanes: i == 0 ? widths[group] : widths[group + 1], outPlanes: widths[group + 1],
                                             stride: i == 0 && group > 0 ? 2 : 1))
            }
        }
        self.blocks = blocks
        bn1 = BatchNorm2d(store, name: "bn1", features: widths[3])
        fc = Linear(store, name: "fc", inputFeatures: widths[3], outputFeatures: numClasses)
        batchNorms = blocks.flatMap { [$0.bn1, $0.bn2] } + [bn1]
        store.finalize()
    }

    /// `conv1` … `bn1` → ReLU → global average pool: `(N, 64·widenFactor)`.
    public func features(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == inputChannels,
                     "\(architecture): expected images (N, \(inputChannels), H, W), got \(x.shape)")
        var h = conv1.forward(normalizeInput(x), ctx)
        for b in blocks { h = b.forward(h, ctx) }
        h = relu.forward(bn1.forward(h, ctx), ctx)
        return pool.forward(h, ctx)
    }

    /// Backward of `features` given `∂L/∂features`.
    public func backwardFeatures(_ dFeatures: Tensor, needInputGradient: Bool) -> Tensor? {
        var g = pool.backward(dFeatures, needInputGradient: true)!
        g = relu.backward(g, needInputGradient: true)!
        g = bn1.backward(g, needInputGradient: true)!
        for b in blocks.reversed() { g = b.backward(g, needInputGradient: true)! }
        return conv1.backward(g, needInputGradient: needInputGradient)
    }

    public func copy() -> WideResNet {
        copyState(to: WideResNet(depth: depth, widenFactor: widenFactor, numClasses: numClasses, inputChannels: inputChannels))
    }
}

/// Elementwise sum of two tensors of equal shape.
func add(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.shape == b.shape, "add: shapes \(a.shape) and \(b.shape) differ")
    var out = a
    out.withUnsafeMutableBufferPointer { op in
        b.withUnsafeBufferPointer { bp in
            addForward(a: op.baseAddress!, b: bp.baseAddress!, out: op.baseAddress!, count: a.count)
        }
    }
    return out
}
