import TTAModels
import TTANN
import TTATensor

/// Wraps a model and a method for online adaptation on a stream of batches.
///
/// ```swift
/// let model = try ModelZoo.load(SafeTensorsFile.read(weightsURL))
/// let adaptor = try Adaptor(model: model, method: MethodRegistry.make("tent"), seed: 1)
/// for batch in myBatches {                 // (N, C, H, W) floats in [0, 1]
///     let logits = try adaptor.adapt(batch) // prediction first, then the update
///     use(logits.argmaxRows())
/// }
/// adaptor.reset()                           // back to the source model, bit for bit
/// ```
public final class Adaptor {
    public let model: any ImageClassifier
    public let method: any AdaptationMethod
    /// The generator every stochastic step draws from (augmentations, restore masks).
    public var rng: SeededGenerator
    /// Accumulated wall time per phase.
    public var timer = PhaseTimer()
    /// Batches adapted since the last reset.
    public private(set) var batchesSinceReset = 0
    private let source: ParameterStore.Snapshot
    /// The store entries a step can change (trainable parameters and buffers), saved before each step.
    private let adaptable: [Int]

    /// Configures `model` for `method` and takes the source snapshot that `reset()` returns to.
    public init(model: any ImageClassifier, method: any AdaptationMethod, seed: UInt64) throws {
        self.model = model
        self.method = method
        rng = SeededGenerator(seed: seed)
        try method.configure(model)
        source = model.store.snapshot()
        adaptable = model.store.adaptableEntries
    }

    /// The source state (after configuration), as restored by `reset()`.
    public var sourceSnapshot: ParameterStore.Snapshot { source }

    /// What became of a batch given to `process`.
    public enum Outcome: String, Sendable, Codable {
        /// The method adapted on it.
        case adapted
        /// It held NaN or infinity: the model never saw it and nothing changed.
        case rejectedInput
        /// The step left a non-finite value in the output, the adapted model or the method's state: the
        /// model, the method's state and the random generator were restored to before the batch.
        case rolledBack
    }

    /// The output of a batch and what became of it. `output` is nil for a rejected batch; after a
    /// rollback it is what the step returned, computed before its update, and may hold non-finite rows.
    public struct StepResult {
        public let output: Tensor?
        public let outcome: Outcome
    }

    /// Batches refused for NaN or infinity, and steps rolled back, since the adaptor was made
    /// (`reset()` keeps them).
    public private(set) var rejectedBatches = 0, rolledBackSteps = 0

    /// Runs the method on one batch `(N, C, H, W)`, guarded: a batch with NaN or infinity is refused
    /// before any work, and a step that leaves NaN or infinity in the output, in the trainable
    /// parameters, BN buffers or counters, or in the method's state is undone (model, method state and
    /// random generator restored bit for bit). Only the trainable parameters and buffers are saved
    /// before the step, not the whole model. A batch of the wrong shape is an error.
    public func process(_ x: Tensor) throws -> StepResult {
        guard x.rank == 4, x.shape[1] == model.inputChannels, x.shape[0] > 0 else {
            throw AdaptationError("batch has shape \(x.shape); \(model.architecture) expects (N, \(model.inputChannels), H, W) with N ≥ 1")
        }
        if let (h, w) = model.requiredImageSize, x.shape[2] != h || x.shape[3] != w {
            throw AdaptationError("batch has \(x.shape[2])×\(x.shape[3]) images; \(model.architecture) expects \(h)×\(w)")
        }
        guard x.isFinite else {
            rejectedBatches += 1
            return StepResult(output: nil, outcome: .rejectedInput)
        }
        let savedModel = model.store.snapshot(entries: adaptable)
        let savedMethod = method.captureState()
        let savedRNG = rng
        var out = x
        for _ in 0..<method.steps {
            out = try method.step(x, model: model, rng: &rng, timer: &timer)
        }
        guard out.isFinite, model.store.isFinite(entries: adaptable), method.captureState().isFinite else {
            model.store.restore(savedModel)
            model.store.zeroGrads()
            try method.restoreState(savedMethod)
            rng = savedRNG
            rolledBackSteps += 1
            return StepResult(output: out, outcome: .rolledBack)
        }
        batchesSinceReset += 1
        return StepResult(output: out, outcome: .adapted)
    }

    /// Runs the method on one batch `(N, C, H, W)` and returns its output (N, classes), as `process`
    /// does. A batch with NaN or infinity, or of the wrong shape, is refused with an error before the
    /// model sees it; after a rolled-back step the output is returned as computed (check `lastOutcome`).
    public func adapt(_ x: Tensor) throws -> Tensor {
        let r = try process(x)
        lastOutcome = r.outcome
        guard let out = r.output else {
            throw AdaptationError("batch \(batchesSinceReset + 1) contains NaN or infinity; it was not used and the model is unchanged")
        }
        return out
    }

    /// What became of the last batch given to `adapt`.
    public private(set) var lastOutcome: Outcome?

    /// Everything that changes as the adaptor runs: the model's values and counters, the method's
    /// state, the random generator and the batch count since the last reset. Restoring it into an
    /// adaptor built the same way (same model weights, method, configuration) continues bit for bit.
    public struct State: Sendable, Equatable {
        public var model: ParameterStore.Snapshot
        public var method: MethodState
        public var rng: SeededGenerator
        public var batchesSinceReset: Int
        public init(model: ParameterStore.Snapshot, method: MethodState, rng: SeededGenerator, batchesSinceReset: Int) {
            (self.model, self.method, self.rng, self.batchesSinceReset) = (model, method, rng, batchesSinceReset)
        }
    }

    public func captureState() -> State {
        State(model: model.store.snapshot(), method: method.captureState(), rng: rng, batchesSinceReset: batchesSinceReset)
    }

    /// Restores `state`; throws when it does not fit this model or method (nothing is changed then
    /// unless the method's own restore failed half-way, which only a corrupt state can cause).
    public func restoreState(_ state: State) throws {
        guard state.model.values.count == model.store.totalCount, Set(state.model.counters.keys) == Set(model.store.counterNames) else {
            throw AdaptationError("the saved model state has \(state.model.values.count) values, \(model.architecture) has \(model.store.totalCount)")
        }
        try method.restoreState(state.method)
        model.store.restore(state.model)
        model.store.zeroGrads()
        rng = state.rng
        batchesSinceReset = state.batchesSinceReset
    }

    /// Restores the model's parameters, BN buffers and counters to the source snapshot and the
    /// method's optimizer and internal state to their initial values. The random generator runs on,
    /// as in the reference code.
    public func reset() {
        model.store.restore(source)
        model.store.zeroGrads()
        method.reset()
        batchesSinceReset = 0
    }
}
