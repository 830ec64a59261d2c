import TTAModels
import TTANN
import TTATensor

/// Wraps a model and a method for online adaptation on a stream of batches.
///
/// ```swift
/// let model = try ModelZoo.load(SafeTensorsFile.read(weightsURL))
/// let config = MethodConfiguration.defaults(for: .cifar)
/// let adaptor = try Adaptor(model: model, method: MethodRegistry.make("tent", configuration: config), seed: 1)
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
    /// The buffers among them (BN statistics): all a prediction, which takes no gradient step, can move (norm_ema's).
    private let adaptableBuffers: [Int]
    /// Single-image streams: the length W of the sliding window (the reference's `TEST.WINDOW_LENGTH`);
    /// 1 means none. See `process`.
    public let windowLength: Int
    /// The last images of a single-image stream (up to `windowLength`), and the slot the next one takes.
    private var window: Tensor?
    private var windowPointer = 0

    /// Configures `model` for `method` and takes the source snapshot that `reset()` returns to.
    /// `windowLength` > 1 turns on the sliding window for batches of one image (see `process`).
    public init(model: any ImageClassifier, method: any AdaptationMethod, seed: UInt64, windowLength: Int = 1) throws {
        guard windowLength >= 1 else { throw AdaptationError("window length \(windowLength): expected at least 1") }
        // Configuring may already run the model (EATA's Fisher pass, RMT's prototypes and warm-up).
        if let problem = model.inputNormalizationProblem { throw AdaptationError(problem) }
        self.model = model
        self.method = method
        self.windowLength = windowLength
        rng = SeededGenerator(seed: seed)
        try method.configure(model)
        source = model.store.snapshot()
        adaptable = model.store.adaptableEntries
        adaptableBuffers = adaptable.filter { model.store.entries[$0].kind == .buffer }
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
        /// Sliding window: the image was predicted with the window's other images and not adapted on
        /// (the window adapts when its last slot is written).
        case windowed
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
    ///
    /// With a sliding window (`windowLength` W > 1), a batch of one image is handled as the reference's
    /// single-sample adaptation: the image goes into a buffer of the last W images (appended while it is
    /// not full, else written over slot `p`, with p = 0, 1, …, W−1 in turn). When slot W−1 is written the
    /// method adapts on the whole buffer (guarded as above); otherwise the buffer is predicted without
    /// a gradient update (`AdaptationMethod.predict`; norm_ema's moves its BN statistics and UnMix-TNS its components,
    /// guarded likewise, the image kept in the window),
    /// so that BN statistics come from W images. Either way the output is row `p`. As in the reference, a method
    /// whose configured model has no BN in the reference's sense (RoTTA's robust BNs, a ViT) predicts the image
    /// alone between updates (`AdaptationMethod.predictsWithTheWindow`). Batches of several images are not windowed.
    ///
    /// Refused with an error before any work: a batch that is not `(N, C, H, W)` with the model's C and N, H, W ≥ 1,
    /// whose storage does not hold the values its shape says, of another size than the model requires (a ViT's),
    /// that the method cannot take (`AdaptationMethod.checkBatch`: an augmenting method's square images) or too
    /// small for its batch statistics; and any batch while the model's `inputNormalization` does not fit it.
    public func process(_ x: Tensor) throws -> StepResult {
        try requireImageBatch(x, for: model, "batch")
        if let problem = model.inputNormalizationProblem { throw AdaptationError(problem) }
        try method.checkBatch(shape: x.shape)
        if method.needsBatchStatistics {
            try requireSeveralValuesPerChannel(images: x.shape[0], height: x.shape[2], width: x.shape[3], in: model,
                                               "\(method.name) normalises with the statistics of the batch",
                                               advice: "give batches of at least \(smallestBatch(height: x.shape[2], width: x.shape[3])) images, or larger images")
        }
        guard x.isFinite else {
            rejectedBatches += 1
            return StepResult(output: nil, outcome: .rejectedInput)
        }
        if windowLength > 1 && x.shape[0] == 1 { return try processInWindow(x) }
        return try guardedStep(x)
    }

    /// The fewest images a batch of `height × width` images may hold: 2 when the method normalises with
    /// batch statistics and one image gives the model's smallest BatchNorm feature map a single value
    /// per channel (a ResNet-50's 1×1 layer 4 on 32×32 images), else 1. A sliding window's first
    /// prediction is on one image, so the limit holds there too.
    public func smallestBatch(height: Int, width: Int) -> Int {
        method.needsBatchStatistics ? fewestImagesForBatchStatistics(height: height, width: width, in: model) : 1
    }

    /// `process` for one image under the sliding window.
    private func processInWindow(_ x: Tensor) throws -> StepResult {
        let slot = windowPointer
        if var w = window {
            window = nil   // `w` the only reference: written in place
            guard w.shape.dropFirst() == x.shape.dropFirst() else {
                window = w
                throw AdaptationError("image of shape \(Array(x.shape.dropFirst())) for a sliding window of \(Array(w.shape.dropFirst())) images")
            }
            if w.shape[0] < windowLength {   // still filling: slot == count
                w.storage.append(contentsOf: x.storage)
                w.shape[0] += 1
            } else {
                w.storage.replaceSubrange((slot * x.count)..<((slot + 1) * x.count), with: x.storage)
            }
            window = w
        } else {
            window = x
        }
        windowPointer = (slot + 1) % windowLength
        let buffer = window!
        // Between updates, the window's BN statistics, or the image alone (`predictsWithTheWindow`; a model without BN).
        let predictsAlone = slot != windowLength - 1 && (!method.predictsWithTheWindow || model.batchNorms.isEmpty)
        func row(_ t: Tensor?) -> Tensor? {
            guard let t else { return nil }
            if predictsAlone { return t }
            let c = t.shape[1]
            return Tensor(shape: [1, c], storage: Array(t.storage[(slot * c)..<((slot + 1) * c)]))
        }
        if slot == windowLength - 1 {
            method.stepsOnTheWindow(true)
            defer { method.stepsOnTheWindow(false) }
            let r = try guardedStep(buffer)
            return StepResult(output: row(r.output), outcome: r.outcome)
        }
        // A prediction may move state (norm_ema's statistics, UnMix-TNS's components): NaN or infinity there is undone
        // as a step's is. The image stays in the window, as in the reference's buffer.
        let saved = model.store.snapshot(entries: adaptableBuffers)
        let savedMethod = method.capturePredictionState(), savedRNG = rng
        let out = try timer.measure(.forward) { try method.predict(predictsAlone ? x : buffer, model: model, rng: &rng) }
        guard model.store.isFinite(entries: adaptableBuffers), method.capturePredictionState()?.isFinite ?? true else {
            model.store.restore(saved)
            if let savedMethod { try method.restorePredictionState(savedMethod) }
            rng = savedRNG
            rolledBackSteps += 1
            return StepResult(output: row(out), outcome: .rolledBack)
        }
        return StepResult(output: row(out), outcome: .windowed)
    }

    /// One guarded adaptation step on `x` (see `process`).
    private func guardedStep(_ x: Tensor) throws -> StepResult {
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
            throw AdaptationError("the batch contains NaN or infinity; it was not used and the model is unchanged")
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
        /// The sliding window's images and the slot the next image takes (nil and 0 without a window).
        public var window: Tensor?
        public var windowPointer: Int
        public init(model: ParameterStore.Snapshot, method: MethodState, rng: SeededGenerator, batchesSinceReset: Int,
                    window: Tensor? = nil, windowPointer: Int = 0) {
            (self.model, self.method, self.rng, self.batchesSinceReset) = (model, method, rng, batchesSinceReset)
            (self.window, self.windowPointer) = (window, windowPointer)
        }
    }

    public func captureState() -> State {
        State(model: model.store.snapshot(), method: method.captureState(), rng: rng, batchesSinceReset: batchesSinceReset,
              window: window, windowPointer: windowPointer)
    }

    /// Restores `state`; throws when it does not fit this model or method (nothing is changed then
    /// unless the method's own restore failed half-way, which only a corrupt state can cause).
    public func restoreState(_ state: State) throws {
        guard state.model.values.count == model.store.totalCount, Set(state.model.counters.keys) == Set(model.store.counterNames) else {
            throw AdaptationError("the saved model state has \(state.model.values.count) values, \(model.architecture) has \(model.store.totalCount)")
        }
        if let bad = state.model.counters.sorted(by: { $0.key < $1.key }).first(where: { $0.value < 0 }) {
            throw AdaptationError("the saved model state has counter '\(bad.key)' = \(bad.value); expected a non-negative count")
        }
        if let w = state.window {
            // While the window fills, the next slot is the next free one; once full, any slot.
            guard windowLength > 1, w.rank == 4, (1...windowLength).contains(w.shape[0]), w.shape[1] == model.inputChannels,
                  (0..<windowLength).contains(state.windowPointer), w.shape[0] == windowLength || state.windowPointer == w.shape[0] else {
                throw AdaptationError("the saved sliding window has shape \(w.shape) and slot \(state.windowPointer); "
                                      + "this adaptor's window holds up to \(windowLength) images of \(model.inputChannels) channels, "
                                      + "and while it fills the slot is the number of images in it")
            }
            // Its images are adapted on as a batch: the checks `process` makes of a batch.
            try requireImageBatch(w, for: model, "the saved sliding window")
            guard w.isFinite else { throw AdaptationError("the saved sliding window contains NaN or infinity") }
        } else if state.windowPointer != 0 {
            throw AdaptationError("the saved state has sliding-window slot \(state.windowPointer) but no window")
        }
        let previousMethod: MethodState? = state.window == nil ? nil : method.captureState()
        try method.restoreState(state.method)
        if let w = state.window, let previousMethod {
            // What the method takes may depend on its restored state (RoTTA's memory): asked after the restore, undone on refusal.
            do { try method.checkBatch(shape: w.shape) } catch let e as AdaptationError {
                try? method.restoreState(previousMethod)
                throw AdaptationError("the saved sliding window: \(e.message)")
            }
        }
        model.store.restore(state.model)
        model.store.zeroGrads()
        rng = state.rng
        batchesSinceReset = state.batchesSinceReset
        (window, windowPointer) = (state.window, state.windowPointer)
    }

    /// Restores the model's parameters, BN buffers and counters to the source snapshot and the
    /// method's state as its `reset()` says (its optimizer and internal state to their initial values, but
    /// what the reference keeps: SAR's SGD momentum, RMT's place in its source data, …). The random generator
    /// runs on, as in the reference code, and so does the sliding window (the reference's input buffer).
    public func reset() {
        model.store.restore(source)
        model.store.zeroGrads()
        method.reset()
        batchesSinceReset = 0
    }
}
