import TTAKernels
import TTANN
import TTATensor

/// timm's `PatchEmbed`: a `patch×patch` convolution with stride `patch` and bias
/// (`<name>.proj.weight (D, C, p, p)`, `<name>.proj.bias (D)`), flattened to tokens `(B, (H/p)·(W/p), D)`
/// in row-major patch order. Run as a reshape of the image into patches and one GEMM.
final class PatchEmbedding: Module {
    let store: ParameterStore
    let weight, bias: ParameterRef
    let channels, patch, dim: Int
    private var savedPatches: Tensor?
    private var savedImageShape: [Int] = []

    init(_ store: ParameterStore, name: String, channels: Int, patch: Int, dim: Int) {
        (self.store, self.channels, self.patch, self.dim) = (store, channels, patch, dim)
        weight = store.add("\(name).proj.weight", shape: [dim, channels, patch, patch], kind: .parameter)
        bias = store.add("\(name).proj.bias", shape: [dim], kind: .parameter)
    }

    var patchFeatures: Int { channels * patch * patch }

    func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        let (b, gh, gw) = (x.shape[0], x.shape[2] / patch, x.shape[3] / patch)
        let patches = patchify(x)
        var y = Tensor(shape: [b, gh * gw, dim])
        patches.withUnsafeBufferPointer { pp in
            y.withUnsafeMutableBufferPointer { yp in
                linearForward(x: pp.baseAddress!, weight: store.pointer(weight), bias: store.pointer(bias), y: yp.baseAddress!,
                              n: b * gh * gw, inFeatures: patchFeatures, outFeatures: dim)
            }
        }
        if ctx.recording { (savedPatches, savedImageShape) = (patches, x.shape) } else { savedPatches = nil }
        return y
    }

    func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let patches = savedPatches else { preconditionFailure("PatchEmbedding.backward without a recorded forward") }
        savedPatches = nil
        var dPatches = [Float](repeating: 0, count: needInputGradient ? patches.count : 0)
        patches.withUnsafeBufferPointer { pp in
            dy.withUnsafeBufferPointer { dyp in
                dPatches.withUnsafeMutableBufferPointer { dp in
                    linearBackward(dy: dyp.baseAddress!, x: pp.baseAddress!, weight: store.pointer(weight),
                                   dx: needInputGradient ? dp.baseAddress : nil,
                                   dWeight: store.requiresGrad(weight) ? store.gradPointer(weight) : nil,
                                   dBias: store.requiresGrad(bias) ? store.gradPointer(bias) : nil,
                                   n: patches.shape[0], inFeatures: patchFeatures, outFeatures: dim)
                }
            }
        }
        return needInputGradient ? unpatchify(Tensor(shape: patches.shape, storage: dPatches), imageShape: savedImageShape) : nil
    }

    /// `(B, C, H, W)` → `(B·(H/p)·(W/p), C·p·p)`, each row one patch in the conv weight's `(c, ky, kx)` order.
    private func patchify(_ x: Tensor) -> Tensor {
        var patches = Tensor(shape: [x.count / patchFeatures, patchFeatures])
        var image = x
        copyPatches(image: &image, patches: &patches, imageShape: x.shape, toPatches: true)
        return patches
    }

    /// The adjoint of `patchify` (patches do not overlap: each value goes back to its pixel).
    private func unpatchify(_ patches: Tensor, imageShape: [Int]) -> Tensor {
        var image = Tensor(shape: imageShape), p = patches
        copyPatches(image: &image, patches: &p, imageShape: imageShape, toPatches: false)
        return image
    }

    /// Copies every patch row between `image` and `patches`, in the direction `toPatches` says.
    private func copyPatches(image: inout Tensor, patches: inout Tensor, imageShape s: [Int], toPatches: Bool) {
        let (b, c, h, w, p) = (s[0], s[1], s[2], s[3], patch)
        let (gh, gw) = (h / p, w / p)
        for n in 0..<b { for i in 0..<gh { for j in 0..<gw {
            let row = ((n * gh + i) * gw + j) * c * p * p
            for ch in 0..<c { for ky in 0..<p {
                let pixel = ((n * c + ch) * h + i * p + ky) * w + j * p, entry = row + (ch * p + ky) * p
                for kx in 0..<p {
                    if toPatches { patches.storage[entry + kx] = image.storage[pixel + kx] }
                    else { image.storage[pixel + kx] = patches.storage[entry + kx] }
                }
            } }
        } } }
    }
}

/// timm's pre-norm `Block`: `x + attn(norm1(x))`, then `h + mlp.fc2(GELU(mlp.fc1(norm2(h))))`.
final class TransformerBlock: Module {
    let norm1: LayerNorm, attn: MultiHeadSelfAttention
    let norm2: LayerNorm, fc1: TokenLinear, act = GELU(), fc2: TokenLinear

    init(_ store: ParameterStore, name: String, dim: Int, heads: Int, mlpHidden: Int, eps: Float) {
        norm1 = LayerNorm(store, name: "\(name).norm1", features: dim, eps: eps)
        attn = MultiHeadSelfAttention(store, name: "\(name).attn", dim: dim, heads: heads)
        norm2 = LayerNorm(store, name: "\(name).norm2", features: dim, eps: eps)
        fc1 = TokenLinear(store, name: "\(name).mlp.fc1", inputFeatures: dim, outputFeatures: mlpHidden)
        fc2 = TokenLinear(store, name: "\(name).mlp.fc2", inputFeatures: mlpHidden, outputFeatures: dim)
    }

    func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        let h = add(x, attn.forward(norm1.forward(x, ctx), ctx))
        return add(h, fc2.forward(act.forward(fc1.forward(norm2.forward(h, ctx), ctx), ctx), ctx))
    }

    func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        var g = fc2.backward(dy, needInputGradient: true)!
        g = act.backward(g, needInputGradient: true)!
        g = fc1.backward(g, needInputGradient: true)!
        let dh = add(dy, norm2.backward(g, needInputGradient: true)!)
        g = attn.backward(dh, needInputGradient: true)!
        return add(dh, norm1.backward(g, needInputGradient: true)!)
    }
}

/// The shape of a Vision Transformer (timm `VisionTransformer` with class-token pooling).
public struct ViTConfiguration: Sendable, Equatable {
    public var imageSize, patchSize, dim, depth, heads, mlpHidden, numClasses, inputChannels: Int
    /// LayerNorm eps: 1e-6 in timm's ViTs.
    public var eps: Float = 1e-6

    public init(imageSize: Int, patchSize: Int, dim: Int, depth: Int, heads: Int, mlpHidden: Int? = nil,
                numClasses: Int, inputChannels: Int = 3) {
        (self.imageSize, self.patchSize, self.dim, self.depth, self.heads) = (imageSize, patchSize, dim, depth, heads)
        (self.mlpHidden, self.numClasses, self.inputChannels) = (mlpHidden ?? 4 * dim, numClasses, inputChannels)
    }

    /// timm `vit_base_patch16_224`: 224×224 images, 16×16 patches, width 768, 12 blocks of 12 heads, MLP 3072.
    public static func base16(numClasses: Int = 1000) -> ViTConfiguration {
        ViTConfiguration(imageSize: 224, patchSize: 16, dim: 768, depth: 12, heads: 12, numClasses: numClasses)
    }

    /// Patches per image side.
    public var grid: Int { imageSize / patchSize }
    /// Tokens per image, the class token included.
    public var tokens: Int { grid * grid + 1 }

    /// The `architecture` of a `VisionTransformer` of this shape: `vit-b-16` for timm's ViT-B/16 shape,
    /// else `vit-<dim>d-<depth>x<heads>h-p<patch>-<image>px`.
    public var architecture: String {
        var base = ViTConfiguration.base16(numClasses: numClasses)
        base.inputChannels = inputChannels
        if self == base { return "vit-b-16" }
        return "vit-\(dim)d-\(depth)x\(heads)h-p\(patchSize)-\(imageSize)px"
    }

    /// The trainable parameters (`store.parameterCount`) of a `VisionTransformer` of this shape, computed
    /// without building it; nil when the count does not fit in an Int or a size is not positive.
    public var parameterCount: Int? {
        guard patchSize >= 1, imageSize >= patchSize, dim >= 1, depth >= 1, mlpHidden >= 1, numClasses >= 1, inputChannels >= 1 else {
            return nil
        }
        let (cells, o1) = grid.multipliedReportingOverflow(by: grid)
        let (tokenCount, o2) = cells.addingReportingOverflow(1)
        guard !o1, !o2 else { return nil }
        var t = ParameterTally()
        t.add(dim)                                                      // cls_token
        t.add(tokenCount, dim)                                          // pos_embed
        t.add(dim, inputChannels, patchSize, patchSize); t.add(dim)     // patch_embed.proj
        // Each block: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2 (weights and biases).
        t.add(depth, 2, dim)
        t.add(depth, 3, dim, dim); t.add(depth, 3, dim)
        t.add(depth, dim, dim); t.add(depth, dim)
        t.add(depth, 2, dim)
        t.add(depth, mlpHidden, dim); t.add(depth, mlpHidden)
        t.add(depth, dim, mlpHidden); t.add(depth, dim)
        t.add(2, dim)                                                   // norm
        t.add(numClasses, dim); t.add(numClasses)                       // head
        return t.count
    }
}

/// A Vision Transformer with timm's module names and forward pass (`vit_base_patch16_224` and smaller
/// widths), so that timm's `model.state_dict()` loads without key edits:
///
/// `patch_embed.proj` → prepend `cls_token` → add `pos_embed` → `blocks.0 … blocks.{depth−1}` → `norm` →
/// token 0 → `head`. Inputs are `(N, C, S, S)` images in [0, 1], normalised inside with mean = std = 0.5
/// per channel (timm's data config for these weights: IMAGENET_INCEPTION mean/std).
public final class VisionTransformer: LinearHeadClassifier {
    public let store = ParameterStore()
    public let configuration: ViTConfiguration
    public var inputNormalization: (mean: [Float], std: [Float])?
    public let batchNorms: [BatchNorm2d] = []
    public var batchNormHalvings: Int { 0 }
    /// Every LayerNorm, in registration order.
    public let layerNorms: [LayerNorm]
    let patchEmbed: PatchEmbedding
    let clsToken, posEmbed: ParameterRef
    let blocks: [TransformerBlock]
    let norm: LayerNorm
    let fc: Linear
    public var classifierLayer: Linear { fc }
    private var savedBatch = 0

    public var numClasses: Int { configuration.numClasses }
    public var inputChannels: Int { configuration.inputChannels }
    public var requiredImageSize: (height: Int, width: Int)? { (configuration.imageSize, configuration.imageSize) }

    /// `vit-b-16` for timm's ViT-B/16 shape, else `vit-<dim>d-<depth>x<heads>h-p<patch>-<image>px`.
    public var architecture: String { configuration.architecture }

    public init(_ c: ViTConfiguration) {
        precondition(c.patchSize >= 1 && c.imageSize % c.patchSize == 0 && c.imageSize >= c.patchSize,
                     "VisionTransformer: image size \(c.imageSize) must be a multiple of the patch size \(c.patchSize)")
        precondition(c.depth >= 1 && c.heads >= 1 && c.dim % c.heads == 0 && c.numClasses >= 1 && c.inputChannels >= 1,
                     "VisionTransformer: invalid configuration \(c)")
        configuration = c
        clsToken = store.add("cls_token", shape: [1, 1, c.dim], kind: .parameter)
        posEmbed = store.add("pos_embed", shape: [1, c.tokens, c.dim], kind: .parameter)
        patchEmbed = PatchEmbedding(store, name: "patch_embed", channels: c.inputChannels, patch: c.patchSize, dim: c.dim)
        let store = store
        blocks = (0..<c.depth).map {
            TransformerBlock(store, name: "blocks.\($0)", dim: c.dim, heads: c.heads, mlpHidden: c.mlpHidden, eps: c.eps)
        }
        norm = LayerNorm(store, name: "norm", features: c.dim, eps: c.eps)
        fc = Linear(store, name: "head", inputFeatures: c.dim, outputFeatures: c.numClasses)
        layerNorms = blocks.flatMap { [$0.norm1, $0.norm2] } + [norm]
        inputNormalization = ([Float](repeating: 0.5, count: c.inputChannels), [Float](repeating: 0.5, count: c.inputChannels))
        store.finalize()
    }

    /// Class-token features after the final `norm`: `(N, dim)` (what timm's `forward_head(pre_logits=True)` returns).
    public func features(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        let c = configuration
        precondition(x.rank == 4 && x.shape[1] == c.inputChannels && x.shape[2] == c.imageSize && x.shape[3] == c.imageSize,
                     "\(architecture): expected images (N, \(c.inputChannels), \(c.imageSize), \(c.imageSize)), got \(x.shape)")
        let b = x.shape[0], d = c.dim, t = c.tokens
        let patches = patchEmbed.forward(normalizeInput(x), ctx)
        var h = Tensor(shape: [b, t, d])
        let cls = store.pointer(clsToken), pos = store.pointer(posEmbed)
        for n in 0..<b {
            for j in 0..<d { h.storage[n * t * d + j] = cls[j] + pos[j] }
            for i in 1..<t {
                for j in 0..<d { h.storage[(n * t + i) * d + j] = patches.storage[(n * (t - 1) + i - 1) * d + j] + pos[i * d + j] }
            }
        }
        for block in blocks { h = block.forward(h, ctx) }
        h = norm.forward(h, ctx)
        savedBatch = b
        var out = Tensor(shape: [b, d])
        for n in 0..<b { for j in 0..<d { out.storage[n * d + j] = h.storage[n * t * d + j] } }
        return out
    }

    /// Backward of `features` given `∂L/∂features`.
    public func backwardFeatures(_ dFeatures: Tensor, needInputGradient: Bool) -> Tensor? {
        let (b, d, t) = (savedBatch, configuration.dim, configuration.tokens)
        var g = Tensor(shape: [b, t, d])
        for n in 0..<b { for j in 0..<d { g.storage[n * t * d + j] = dFeatures.storage[n * d + j] } }
        g = norm.backward(g, needInputGradient: true)!
        for block in blocks.reversed() { g = block.backward(g, needInputGradient: true)! }
        if store.requiresGrad(clsToken) {
            let dc = store.gradPointer(clsToken)
            for n in 0..<b { for j in 0..<d { dc[j] += g.storage[n * t * d + j] } }
        }
        if store.requiresGrad(posEmbed) {
            let dp = store.gradPointer(posEmbed)
            for n in 0..<b { for k in 0..<(t * d) { dp[k] += g.storage[n * t * d + k] } }
        }
        var dPatches = Tensor(shape: [b, t - 1, d])
        for n in 0..<b {
            for k in 0..<((t - 1) * d) { dPatches.storage[n * (t - 1) * d + k] = g.storage[n * t * d + d + k] }
        }
        return patchEmbed.backward(dPatches, needInputGradient: needInputGradient)
    }

    public func copy() -> VisionTransformer {
        copyState(to: VisionTransformer(configuration))
    }
}
