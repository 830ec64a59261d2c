import TTAKernels
import TTATensor

/// 2-D convolution without bias (`nn.Conv2d(..., bias=False)`), weight `(O, C/groups, KH, KW)` under `<name>.weight`.
public final class Conv2d: Module {
    public let store: ParameterStore
    public let weight: ParameterRef
    public let inputChannels, outputChannels, kernelSize, stride, padding, groups: Int
    /// The forward input, kept only when backward computes the weight gradient (else only its shape).
    private var savedInput: Tensor?
    private var savedShape: [Int]?

    public init(_ store: ParameterStore, name: String, inputChannels: Int, outputChannels: Int,
                kernelSize: Int, stride: Int = 1, padding: Int = 0, groups: Int = 1) {
        precondition(inputChannels % groups == 0 && outputChannels % groups == 0)
        self.store = store
        (self.inputChannels, self.outputChannels, self.kernelSize) = (inputChannels, outputChannels, kernelSize)
        (self.stride, self.padding, self.groups) = (stride, padding, groups)
        weight = store.add("\(name).weight", shape: [outputChannels, inputChannels / groups, kernelSize, kernelSize], kind: .parameter)
    }

    /// The kernel geometry for an input of `shape` (N, C, H, W).
    package func geometry(for shape: [Int]) -> Conv2dGeometry {
        precondition(shape.count == 4 && shape[1] == inputChannels,
                     "Conv2d: expected (N, \(inputChannels), H, W), got \(shape)")
        return Conv2dGeometry(n: shape[0], c: shape[1], h: shape[2], w: shape[3], o: outputChannels,
                              kh: kernelSize, kw: kernelSize, strideH: stride, strideW: stride,
                              padH: padding, padW: padding, groups: groups)
    }

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        let g = geometry(for: x.shape)
        var y = Tensor(shape: [g.n, g.o, g.ho, g.wo])
        let w = store.pointer(weight)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in conv2dForward(x: xp.baseAddress!, weight: w, y: yp.baseAddress!, g, inference: !ctx.recording) }
        }
        // The gradient to the input needs only the weight: the input is kept for the weight's gradient alone
        // (TENT-style methods, which train no convolution, keep no convolution input).
        savedInput = ctx.recording && store.requiresGrad(weight) ? x : nil
        savedShape = ctx.recording ? x.shape : nil
        return y
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let shape = savedShape else { preconditionFailure("Conv2d.backward without a recorded forward") }
        let g = geometry(for: shape)
        let w = store.pointer(weight)
        if let x = savedInput {
            precondition(store.requiresGrad(weight), "Conv2d.backward: the weight stopped requiring a gradient after the forward pass")
            let dw = store.gradPointer(weight)
            x.withUnsafeBufferPointer { xp in
                dy.withUnsafeBufferPointer { dyp in conv2dBackwardWeight(x: xp.baseAddress!, dy: dyp.baseAddress!, dWeight: dw, g) }
            }
        } else {
            precondition(!store.requiresGrad(weight), "Conv2d.backward: the weight requires a gradient but was frozen during the forward pass")
        }
        (savedInput, savedShape) = (nil, nil)
        guard needInputGradient else { return nil }
        var dx = Tensor(shape: shape)
        dy.withUnsafeBufferPointer { dyp in
            dx.withUnsafeMutableBufferPointer { dxp in conv2dBackwardInput(dy: dyp.baseAddress!, weight: w, dx: dxp.baseAddress!, g) }
        }
        return dx
    }
}

/// `max(x, 0)`. Keeps one byte per element for backward (where the output is positive), not the output.
public final class ReLU: Module {
    private var savedMask: [UInt8]?
    public init() {}

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        guard ctx.recording else {
            savedMask = nil
            return mapElements(x) { reluForward(x: $0, y: $1, count: $2) }
        }
        var y: Tensor?
        savedMask = [UInt8](unsafeUninitializedCapacity: x.count) { m, initialized in   // the kernel writes every byte
            y = mapElements(x) { reluForward(x: $0, y: $1, mask: m.baseAddress!, count: $2) }
            initialized = x.count
        }
        return y!
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let mask = savedMask else { preconditionFailure("ReLU.backward without a recorded forward") }
        savedMask = nil
        guard needInputGradient else { return nil }
        precondition(mask.count == dy.count, "ReLU.backward: gradient of \(dy.count) elements for a forward of \(mask.count)")
        return mask.withUnsafeBufferPointer { m in
            mapElements(dy) { reluBackward(dy: $0, mask: m.baseAddress!, dx: $1, count: $2) }
        }
    }
}

/// An element-wise kernel `(input, output, count)` applied to a whole tensor.
func mapElements(_ x: Tensor, _ kernel: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> Tensor {
    var y = Tensor(shape: x.shape)
    x.withUnsafeBufferPointer { xp in
        y.withUnsafeMutableBufferPointer { yp in kernel(xp.baseAddress!, yp.baseAddress!, x.count) }
    }
    return y
}

/// An element-wise backward kernel `(dy, saved, dx, count)`, `saved` being the forward's input or output.
func mapElements(_ dy: Tensor, _ saved: Tensor,
                 _ kernel: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> Tensor {
    var dx = Tensor(shape: dy.shape)
    dy.withUnsafeBufferPointer { dyp in
        saved.withUnsafeBufferPointer { sp in
            dx.withUnsafeMutableBufferPointer { dxp in kernel(dyp.baseAddress!, sp.baseAddress!, dxp.baseAddress!, dy.count) }
        }
    }
    return dx
}

/// `y = x·Wᵀ + b` on `(N, I)` inputs; `<name>.weight (O, I)`, `<name>.bias (O)`.
public final class Linear: Module {
    public let store: ParameterStore
    public let weight: ParameterRef
    public let bias: ParameterRef?
    public let inputFeatures, outputFeatures: Int
    private var savedInput: Tensor?

    public init(_ store: ParameterStore, name: String, inputFeatures: Int, outputFeatures: Int, bias: Bool = true) {
        self.store = store
        (self.inputFeatures, self.outputFeatures) = (inputFeatures, outputFeatures)
        weight = store.add("\(name).weight", shape: [outputFeatures, inputFeatures], kind: .parameter)
        self.bias = bias ? store.add("\(name).bias", shape: [outputFeatures], kind: .parameter) : nil
    }

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        precondition(x.rank == 2 && x.shape[1] == inputFeatures, "Linear: expected (N, \(inputFeatures)), got \(x.shape)")
        var y = Tensor(shape: [x.shape[0], outputFeatures])
        let w = store.pointer(weight), b = bias.map { UnsafePointer(store.pointer($0)) }
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                linearForward(x: xp.baseAddress!, weight: w, bias: b, y: yp.baseAddress!, n: x.shape[0],
                              inFeatures: inputFeatures, outFeatures: outputFeatures)
            }
        }
        savedInput = ctx.recording ? x : nil
        return y
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let x = savedInput else { preconditionFailure("Linear.backward without a recorded forward") }
        savedInput = nil
        var dx = [Float](repeating: 0, count: needInputGradient ? x.count : 0)
        let dW = store.requiresGrad(weight) ? store.gradPointer(weight) : nil
        let dB = bias.flatMap { store.requiresGrad($0) ? store.gradPointer($0) : nil }
        let w = store.pointer(weight)
        x.withUnsafeBufferPointer { xp in
            dy.withUnsafeBufferPointer { dyp in
                dx.withUnsafeMutableBufferPointer { dxp in
                    linearBackward(dy: dyp.baseAddress!, x: xp.baseAddress!, weight: w,
                                   dx: needInputGradient ? dxp.baseAddress : nil, dWeight: dW, dBias: dB,
                                   n: x.shape[0], inFeatures: inputFeatures, outFeatures: outputFeatures)
                }
            }
        }
        return needInputGradient ? Tensor(shape: x.shape, storage: dx) : nil
    }
}

/// `(N, C, H, W) → (N, C)`: mean over H·W (`F.adaptive_avg_pool2d(x, 1).view(N, -1)`; equal to the
/// WideResNet's `F.avg_pool2d(x, 8)` on its 8×8 final maps).
public final class GlobalAvgPool: Module {
    private var savedShape: [Int]?
    public init() {}

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        precondition(x.rank == 4, "GlobalAvgPool: expected (N, C, H, W), got \(x.shape)")
        let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        var y = Tensor(shape: [n, c])
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in globalAvgPoolForward(x: xp.baseAddress!, y: yp.baseAddress!, rows: n * c, hw: hw) }
        }
        savedShape = ctx.recording ? x.shape : nil
        return y
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let shape = savedShape else { preconditionFailure("GlobalAvgPool.backward without a recorded forward") }
        savedShape = nil
        guard needInputGradient else { return nil }
        var dx = Tensor(shape: shape)
        dy.withUnsafeBufferPointer { dyp in
            dx.withUnsafeMutableBufferPointer { dxp in
                globalAvgPoolBackward(dy: dyp.baseAddress!, dx: dxp.baseAddress!, rows: shape[0] * shape[1], hw: shape[2] * shape[3])
            }
        }
        return dx
    }
}
