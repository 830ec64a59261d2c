import TTAModels
import TTANN
import TTATensor

/// `norm_test` (BN-1, AdaBN, Tent's `norm.py`): BN layers in train mode normalise each batch with its own
/// statistics; the running buffers are still updated with momentum 0.1 but never used. No gradients.
public final class NormTestMethod: AdaptationMethod {
    public let name = "norm_test"
    public let steps = 1
    public init() {}

    public func configure(_ model: any ImageClassifier) throws {
        model.setBatchNormMode(.batchStatisticsUpdatingRunning)
        model.store.setTrainable(.none)
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        timer.measure(.forward) { model.forward(x, .inference) }
    }

    public func reset() {}
}
