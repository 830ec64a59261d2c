import TTAModels
import TTANN
import TTATensor

/// RDumb (Press et al., NeurIPS 2023, arXiv 2306.05401): ETA, fully reset to the source model every
/// `resetAfterUpdates` update steps (1000 in the reference configs), which keeps it from collapsing on
/// long streams.
///
/// As the reference (`MODEL.RESET_AFTER_NUM_UPDATES` with `eata` and `FISHER_ALPHA` 0): every call of the
/// step counts, whether or not ETA's filters left samples to update on; the reset comes after the step,
/// so the batch that triggers it is predicted by the adapted model. A reset restores the parameters,
/// ETA's optimizer and its probability average. The step counter is not cleared by `reset()`: the
/// reference's counter runs on across domain resets, as the random generator does.
public final class RDumbMethod: RestoresSource {
    public let name = "rdumb"
    public var needsBatchStatistics: Bool { true }
    public var steps: Int { eta.steps }
    /// The ETA being reset.
    public let eta: EATAMethod
    /// Update steps between two resets (0: never).
    public let resetInterval: Int
    /// Update steps taken since the method was built.
    public private(set) var performedUpdates = 0
    /// Periodic resets so far.
    public private(set) var periodicResets = 0
    public var sourceRestores: Int { periodicResets }

    private var sourceState: ParameterStore.Snapshot?

    public init(_ configuration: MethodConfiguration) {
        eta = EATAMethod(eta: configuration)
        resetInterval = configuration.resetAfterUpdates
    }

    public func configure(_ model: any ImageClassifier) throws {
        try eta.configure(model)
        sourceState = model.store.snapshot()
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        guard let sourceState else { throw AdaptationError("rdumb: step before configure") }
        let out = try eta.step(x, model: model, rng: &rng, timer: &timer)
        performedUpdates += 1
        if resetInterval > 0 && performedUpdates % resetInterval == 0 {
            model.store.restore(sourceState)
            model.store.zeroGrads()
            eta.reset()
            periodicResets += 1
        }
        return out
    }

    public func reset() {
        eta.reset()
    }

    public func captureState() -> MethodState {
        var s = MethodState()
        s.store(eta.captureState(), as: "eta")
        s.numbers["performedUpdates"] = [Double(performedUpdates)]
        s.numbers["periodicResets"] = [Double(periodicResets)]
        return s
    }

    public func restoreState(_ state: MethodState) throws {
        try eta.restoreState(state.inner("eta"))
        performedUpdates = try state.count("performedUpdates", of: name)
        periodicResets = try state.count("periodicResets", of: name)
    }
}
