import TTANN
import TTATensor

/// A CNN or ViT classifier whose whole state lives in one `ParameterStore` under PyTorch names.
public protocol ImageClassifier: AnyObject {
    /// Architecture name as users type it, e.g. `wideresnet-28-10`.
    var architecture: String { get }
    var store: ParameterStore { get }
    /// Input channels the first layer expects.
    var inputChannels: Int { get }
    var numClasses: Int { get }
    /// Every BatchNorm2d, in registration order (methods set their modes).
    var batchNorms: [BatchNorm2d] { get }
    /// The `(height, width)` the model requires (a ViT's, fixed by its position embedding); nil when any size works.
    var requiredImageSize: (height: Int, width: Int)? { get }
    /// Per-channel `(mean, std)` applied to [0, 1] inputs inside `forward`, when the checkpoint expects it.
    var inputNormalization: (mean: [Float], std: [Float])? { get set }
    /// Logits `(N, numClasses)` for images `(N, C, H, W)` in [0, 1].
    func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor
    /// Accumulates the gradients of the trainable parameters given `∂L/∂logits`. Needs a recorded forward.
    func backward(_ dLogits: Tensor)
    /// A new model of the same architecture with a copy of this one's state and BN modes.
    func copy() -> Self
}

/// A classifier that splits into a feature extractor and a head: `forward(x) == head(features(x))`.
///
/// Methods that work on penultimate features (LAME's affinity, and later RMT's and AdaContrast's
/// projections) ask for this protocol. `features` ends where the reference benchmark's
/// `split_up_model` ends the encoder: after global pooling and flattening.
public protocol FeatureClassifier: ImageClassifier {
    /// Width `D` of the features.
    var featureCount: Int { get }
    /// Penultimate features `(N, D)` for images `(N, C, H, W)` in [0, 1].
    func features(_ x: Tensor, _ ctx: ForwardContext) -> Tensor
    /// Logits `(N, numClasses)` for features `(N, D)`.
    func head(_ features: Tensor, _ ctx: ForwardContext) -> Tensor
    /// Accumulates the gradients of the trainable parameters given `∂L/∂logits` and an extra `∂L/∂features`
    /// (a loss on the features themselves, e.g. RMT's contrastive term), after a recorded `features` then `head`.
    func backward(dLogits: Tensor, dFeatures: Tensor)
}

extension ImageClassifier {
    public var requiredImageSize: (height: Int, width: Int)? { nil }

    /// Sets every BatchNorm2d to `mode`.
    public func setBatchNormMode(_ mode: BatchNormMode) {
        for bn in batchNorms { bn.mode = mode }
    }

    /// Applies `inputNormalization` (if any) to `x`.
    public func normalizeInput(_ x: Tensor) -> Tensor {
        guard let (mean, std) = inputNormalization else { return x }
        precondition(x.rank == 4 && x.shape[1] == mean.count, "input normalisation expects \(mean.count) channels, got \(x.shape)")
        var y = x
        let hw = x.shape[2] * x.shape[3], c = x.shape[1]
        y.withUnsafeMutableBufferPointer { p in
            for i in 0..<(x.shape[0] * c) {
                let ch = i % c, s = 1 / std[ch], m = mean[ch]
                for j in 0..<hw { p[i * hw + j] = (p[i * hw + j] - m) * s }
            }
        }
        return y
    }
}
