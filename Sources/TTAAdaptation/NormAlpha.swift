import TTAModels
import TTANN
import TTATensor

/// `norm_alpha` (α-BN): every BN normalises with `(1−α)·source + α·batch` statistics (unbiased batch
/// variance); nothing persists across batches. Reference configs use α = 0.1 at batch size 1.
public final class NormAlphaMethod: AdaptationMethod {
    public let name = "norm_alpha"
    public let steps = 1
    public let alpha: Float
    public init(alpha: Float) { self.alpha = alpha }

    public func configure(_ model: any ImageClassifier) throws {
        model.setBatchNormMode(.alphaMixed(alpha: alpha))
        model.store.setTrainable(.none)
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        timer.measure(.forward) { model.forward(x, .inference) }
    }

    public func reset() {}
}
