import TTAModels
import TTANN
import TTATensor

/// `source` (BN-0): the unadapted model, BN with its source running statistics. Nothing is updated.
public final class SourceMethod: AdaptationMethod {
    public let name = "source"
    public let steps = 1
    public init() {}

    public func configure(_ model: any ImageClassifier) throws {
        model.setBatchNormMode(.runningStatistics)
        model.store.setTrainable(.none)
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        timer.measure(.forward) { model.forward(x, .inference) }
    }

    public func reset() {}
}
