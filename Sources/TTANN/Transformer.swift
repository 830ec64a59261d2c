import TTAKernels
import TTATensor

// The layers a Vision Transformer adds to the CNN ones: LayerNorm, GELU and multi-head self-attention,
// all on token tensors `(…, D)` whose last dimension is the feature dimension.

/// `nn.LayerNorm(features, eps)` over the last dimension, `<name>.weight`, `<name>.bias` (γ, β:
/// norm-affine parameters, selected by TENT, EATA and SAR). No running statistics: every mode uses the
/// statistics of each token itself.
public final class LayerNorm: Module {
    public let store: ParameterStore
    public let name: String
    public let features: Int
    public let eps: Float
    public let weight, bias: ParameterRef
    private var savedInput: Tensor?
    private var savedMean: [Float] = [], savedInvStd: [Float] = []

    public init(_ store: ParameterStore, name: String, features: Int, eps: Float = 1e-5) {
        (self.store, self.name, self.features, self.eps) = (store, name, features, eps)
        weight = store.add("\(name).weight", shape: [features], kind: .parameter, initial: 1, isNormAffine: true)
        bias = store.add("\(name).bias", shape: [features], kind: .parameter, initial: 0, isNormAffine: true)
    }

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        precondition(x.rank >= 1 && x.shape.last == features, "LayerNorm \(name): expected (…, \(features)), got \(x.shape)")
        let rows = x.count / features
        var y = Tensor(shape: x.shape)
        var mean = [Float](repeating: 0, count: rows), invStd = [Float](repeating: 0, count: rows)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                layerNormForward(x: xp.baseAddress!, rows: rows, dim: features, gamma: store.pointer(weight),
                                 beta: store.pointer(bias), eps: eps, y: yp.baseAddress!, mean: &mean, invStd: &invStd)
            }
        }
        if ctx.recording { (savedInput, savedMean, savedInvStd) = (x, mean, invStd) } else { savedInput = nil }
        return y
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let x = savedInput else { preconditionFailure("LayerNorm \(name).backward without a recorded forward") }
        savedInput = nil
        var dx = [Float](repeating: 0, count: needInputGradient ? x.count : 0)
        let dG = store.requiresGrad(weight) ? store.gradPointer(weight) : nil
        let dB = store.requiresGrad(bias) ? store.gradPointer(bias) : nil
        x.withUnsafeBufferPointer { xp in
            dy.withUnsafeBufferPointer { dyp in
                dx.withUnsafeMutableBufferPointer { dxp in
                    layerNormBackward(dy: dyp.baseAddress!, x: xp.baseAddress!, rows: x.count / features, dim: features,
                                      mean: savedMean, invStd: savedInvStd, gamma: store.pointer(weight),
                                      dx: needInputGradient ? dxp.baseAddress : nil, dGamma: dG, dBeta: dB)
                }
            }
        }
        return needInputGradient ? Tensor(shape: x.shape, storage: dx) : nil
    }
}

/// Exact (erf) GELU, `nn.GELU()`. Keeps its input for backward.
public final class GELU: Module {
    private var savedInput: Tensor?
    public init() {}

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        savedInput = ctx.recording ? x : nil
        return mapElements(x) { geluForward(x: $0, y: $1, count: $2) }
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let x = savedInput else { preconditionFailure("GELU.backward without a recorded forward") }
        savedInput = nil
        guard needInputGradient else { return nil }
        return mapElements(dy, x) { geluBackward(dy: $0, x: $1, dx: $2, count: $3) }
    }
}

/// A `Linear` applied to every token of `(B, N, I)` → `(B, N, O)` (PyTorch's `nn.Linear` on 3-D input).
public final class TokenLinear: Module {
    public let linear: Linear
    public init(_ store: ParameterStore, name: String, inputFeatures: Int, outputFeatures: Int) {
        linear = Linear(store, name: name, inputFeatures: inputFeatures, outputFeatures: outputFeatures)
    }

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        precondition(x.rank == 3, "TokenLinear: expected (B, N, \(linear.inputFeatures)), got \(x.shape)")
        return linear.forward(x.reshaped([x.shape[0] * x.shape[1], x.shape[2]]), ctx)
            .reshaped([x.shape[0], x.shape[1], linear.outputFeatures])
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        linear.backward(dy.reshaped([dy.shape[0] * dy.shape[1], dy.shape[2]]), needInputGradient: needInputGradient)?
            .reshaped([dy.shape[0], dy.shape[1], linear.inputFeatures])
    }
}

/// timm's `Attention`: `<name>.qkv` (D → 3D, with bias), softmax(q·kᵀ/√hd)·v per head, `<name>.proj` (D → D).
/// Tokens `(B, N, D)` in and out.
public final class MultiHeadSelfAttention: Module {
    public let qkv: TokenLinear, proj: TokenLinear
    public let heads: Int, headDim: Int
    public var scale: Float { 1 / Float(headDim).squareRoot() }
    private var saved: (qkv: Tensor, probs: [Float])?

    public init(_ store: ParameterStore, name: String, dim: Int, heads: Int) {
        precondition(heads >= 1 && dim % heads == 0, "MultiHeadSelfAttention \(name): \(dim) features do not split into \(heads) heads")
        (self.heads, headDim) = (heads, dim / heads)
        qkv = TokenLinear(store, name: "\(name).qkv", inputFeatures: dim, outputFeatures: 3 * dim)
        proj = TokenLinear(store, name: "\(name).proj", inputFeatures: dim, outputFeatures: dim)
    }

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        let packed = qkv.forward(x, ctx)
        let (b, n, d) = (x.shape[0], x.shape[1], heads * headDim)
        var probs = [Float](repeating: 0, count: b * heads * n * n)
        var out = Tensor(shape: [b, n, d])
        packed.withUnsafeBufferPointer { qp in
            out.withUnsafeMutableBufferPointer { op in
                attentionForward(qkv: qp.baseAddress!, batch: b, tokens: n, heads: heads, headDim: headDim, scale: scale,
                                 probs: &probs, out: op.baseAddress!)
            }
        }
        saved = ctx.recording ? (packed, probs) : nil
        return proj.forward(out, ctx)
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let (packed, probs) = saved else { preconditionFailure("MultiHeadSelfAttention.backward without a recorded forward") }
        saved = nil
        let dOut = proj.backward(dy, needInputGradient: true)!
        var dPacked = Tensor(shape: packed.shape)
        dOut.withUnsafeBufferPointer { dop in
            packed.withUnsafeBufferPointer { qp in
                dPacked.withUnsafeMutableBufferPointer { dp in
                    attentionBackward(dOut: dop.baseAddress!, qkv: qp.baseAddress!, probs: probs, batch: packed.shape[0],
                                      tokens: packed.shape[1], heads: heads, headDim: headDim, scale: scale, dqkv: dp.baseAddress!)
                }
            }
        }
        return qkv.backward(dPacked, needInputGradient: needInputGradient)
    }
}
