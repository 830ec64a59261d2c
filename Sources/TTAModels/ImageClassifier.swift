import TTAData
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
    /// How many times the feature map is halved before the last BatchNorm2d, by stride-2 layers that each
    /// map a side `s` to `⌊(s − 1)/2⌋ + 1` (3×3 or 7×7 convolutions with same-padding, 1×1 shortcuts, the
    /// 3×3 max-pool): the smallest map a BN sees (`batchNormValuesPerImage`). 0 without BatchNorm.
    var batchNormHalvings: Int { get }
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

/// A feature extractor followed by one linear layer, as every model here is. Each model writes its
/// `features` and their backward (`backwardFeatures`); the head, `forward` and the backward forms follow.
public protocol LinearHeadClassifier: FeatureClassifier, Module {
    /// The last layer: features `(N, D)` → logits.
    var classifierLayer: Linear { get }
    /// Accumulates the gradients of `features`' trainable parameters given `∂L/∂features`; returns
    /// `∂L/∂x` when asked.
    func backwardFeatures(_ dFeatures: Tensor, needInputGradient: Bool) -> Tensor?
}

extension LinearHeadClassifier {
    public var featureCount: Int { classifierLayer.inputFeatures }

    public func head(_ features: Tensor, _ ctx: ForwardContext) -> Tensor { classifierLayer.forward(features, ctx) }

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor { head(features(x, ctx), ctx) }

    public func backward(_ dLogits: Tensor) { _ = backward(dLogits, needInputGradient: false) }

    public func backward(dLogits: Tensor, dFeatures: Tensor) {
        _ = backwardFeatures(add(classifierLayer.backward(dLogits, needInputGradient: true)!, dFeatures), needInputGradient: false)
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        backwardFeatures(classifierLayer.backward(dy, needInputGradient: true)!, needInputGradient: needInputGradient)
    }
}

extension ImageClassifier {
    public var requiredImageSize: (height: Int, width: Int)? { nil }

    /// The values per channel that one `height × width` image gives the BatchNorm2d with the smallest
    /// feature map: batch statistics need more than one in all (PyTorch: "Expected more than 1 value per
    /// channel when training"). nil for a model without BatchNorm.
    public func batchNormValuesPerImage(height: Int, width: Int) -> Int? {
        guard !batchNorms.isEmpty else { return nil }
        var (h, w) = (height, width)
        for _ in 0..<batchNormHalvings { (h, w) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1) }
        return h * w
    }

    /// Gives `copy`, a fresh model of the same shape, this model's values, input normalisation, BN
    /// modes and momenta, and copies of its BNs' per-sample statistics providers: everything but the structure.
    public func copyState(to copy: Self) -> Self {
        copy.store.copyValues(from: store)
        copy.inputNormalization = inputNormalization
        for (a, b) in zip(copy.batchNorms, batchNorms) { (a.mode, a.momentum, a.sampleStatistics) = (b.mode, b.momentum, b.sampleStatistics?.copy()) }
        return copy
    }

    /// Sets every BatchNorm2d to `mode`.
    public func setBatchNormMode(_ mode: BatchNormMode) {
        for bn in batchNorms { bn.mode = mode }
    }

    /// What is wrong with `inputNormalization` for this model, or nil (also when there is none): it needs one mean and
    /// one standard deviation per input channel, the means finite, the standard deviations positive and finite with a
    /// finite reciprocal (the input is divided by them). `inputNormalization` is a plain property, and `forward` cannot
    /// throw: entry points that can (`Adaptor`) ask this before running the model.
    public var inputNormalizationProblem: String? {
        guard let (mean, std) = inputNormalization else { return nil }
        let prefix = "input normalisation of \(architecture): "
        guard mean.count == inputChannels && std.count == inputChannels else {
            return prefix + "\(mean.count) mean(s) and \(std.count) standard deviation(s) for \(inputChannels) input channel(s); "
                + "expected one of each per channel"
        }
        if let c = mean.indices.first(where: { !mean[$0].isFinite }) {
            return prefix + "the mean of channel \(c) is \(mean[c]); expected a finite number"
        }
        if let c = std.indices.first(where: { !isUsableStandardDeviation(std[$0]) }) {
            return prefix + "the standard deviation of channel \(c) is \(std[c]); expected a positive finite number with a finite "
                + "reciprocal (the input is divided by it)"
        }
        return nil
    }

    /// Applies `inputNormalization` (if any) to `x`.
    public func normalizeInput(_ x: Tensor) -> Tensor {
        guard let (mean, std) = inputNormalization else { return x }
        precondition(x.rank == 4 && x.shape[1] == mean.count && std.count == mean.count,
                     "input normalisation has \(mean.count) means and \(std.count) standard deviations, got a batch of shape \(x.shape)")
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
