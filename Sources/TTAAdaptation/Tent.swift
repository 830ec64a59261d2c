import TTAModels
import TTANN
import TTATensor

/// TENT (Wang et al., ICLR 2021, arXiv 2006.10726): minimise the mean softmax entropy of each batch over
/// the BN affine parameters, with batch statistics and no running statistics. One forward, backward,
/// optimizer step per step. Output: the logits of the forward pass, before the update.
public final class TentMethod: AdaptationMethod {
    public let name = "tent"
    public var needsBatchStatistics: Bool { true }
    public let steps: Int
    public let configuration: MethodConfiguration
    private var update: GradientUpdate?

    public init(_ configuration: MethodConfiguration) {
        self.configuration = configuration
        steps = configuration.steps
    }

    public func configure(_ model: any ImageClassifier) throws {
        model.setBatchNormMode(.batchStatistics)
        model.store.setTrainable(.normAffine)
        update = GradientUpdate(configuration.makeOptimizer(model.store))
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        guard let update else { throw AdaptationError("tent: step before configure") }
        return entropyMinimizationStep(x, model: model, update: update, timer: &timer)
    }

    public func reset() { update?.optimizer.reset() }

    public func captureState() -> MethodState {
        var s = MethodState()
        if let update { s.store(update.optimizer.state, as: "optimizer") }
        return s
    }

    public func restoreState(_ state: MethodState) throws {
        guard let update else { throw AdaptationError("tent: state restored before configure") }
        try state.restore(update.optimizer, from: "optimizer", of: name)
    }
}
