import TTAModels
import TTANN
import TTATensor

/// `norm_ema` (BN-EMA): pass 1 in train mode updates every BN's running statistics with the batch
/// (momentum 0.1, unbiased variance; output discarded); pass 2 in eval mode predicts with them.
/// The statistics persist across batches and domains until `reset()`.
public final class NormEMAMethod: AdaptationMethod {
    public let name = "norm_ema"
    public var needsBatchStatistics: Bool { true }
    public let steps = 1
    public init() {}

    public func configure(_ model: any ImageClassifier) throws {
        model.setBatchNormMode(.runningStatistics)
        model.store.setTrainable(.none)
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        timer.measure(.forward) { Self.updateAndPredict(x, model) }
    }

    /// A sliding window's predictions between updates update the statistics too: the reference's EMA BatchNorm does
    /// both passes on every call of the model (`forward_sliding_window` included).
    public func predict(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator) throws -> Tensor { Self.updateAndPredict(x, model) }

    private static func updateAndPredict(_ x: Tensor, _ model: any ImageClassifier) -> Tensor {
        model.setBatchNormMode(.batchStatisticsUpdatingRunning)
        _ = model.forward(x, .inference)
        model.setBatchNormMode(.runningStatistics)
        return model.forward(x, .inference)
    }

    public func reset() {}

    /// Nothing persists in the method (the BN statistics live in the model).
    public func captureState() -> MethodState { MethodState() }
    public func restoreState(_ state: MethodState) throws {}
}
