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

    /// Configures `model` for `method` and takes the source snapshot that `reset()` returns to.
    public init(model: any ImageClassifier, method: any AdaptationMethod, seed: UInt64) throws {
        self.model = model
        self.method = method
        rng = SeededGenerator(seed: seed)
        try method.configure(model)
        source = model.store.snapshot()
    }

    /// The source state (after configuration), as restored by `reset()`.
    public var sourceSnapshot: ParameterStore.Snapshot { source }

    /// Runs the method on one batch `(N, C, H, W)` and returns its output (N, classes).
    /// A batch with NaN or infinity, or of the wrong shape, is refused before the model sees it.
    public func adapt(_ x: Tensor) throws -> Tensor {
        guard x.rank == 4, x.shape[1] == model.inputChannels, x.shape[0] > 0 else {
            throw AdaptationError("batch has shape \(x.shape); \(model.architecture) expects (N, \(model.inputChannels), H, W) with N ≥ 1")
        }
        if let (h, w) = model.requiredImageSize, x.shape[2] != h || x.shape[3] != w {
            throw AdaptationError("batch has \(x.shape[2])×\(x.shape[3]) images; \(model.architecture) expects \(h)×\(w)")
        }
        guard x.isFinite else {
            throw AdaptationError("batch \(batchesSinceReset + 1) contains NaN or infinity; it was not used and the model is unchanged")
        }
        var out = x
        for _ in 0..<method.steps {
            out = try method.step(x, model: model, rng: &rng, timer: &timer)
        }
        batchesSinceReset += 1
        return out
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
