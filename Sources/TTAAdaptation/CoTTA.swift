import TTAModels
import TTANN
import TTATensor

/// Draws one augmentation of a whole batch `(N, C, H, W)` (one parameter draw shared by the batch).
public typealias BatchAugmentation = @Sendable (Tensor, inout SeededGenerator) -> Tensor

/// CoTTA (Wang et al., CVPR 2022, arXiv 2203.13591): a mean teacher with augmentation-averaged pseudo-labels
/// when the source anchor is unconfident, a student updated on every weight and bias, and stochastic restore.
///
/// Per batch: student logits `s`; anchor confidence `c` = mean max-softmax of the frozen source copy;
/// teacher logits `t` = mean over N augmentations of the teacher (logit space) if `c < ap`, else the
/// teacher on `x`; loss = soft-target CE (CIFAR) or symmetric CE (ImageNet) of `s` against `t`;
/// update; teacher EMA; stochastic restore of every trainable element with probability `p`.
/// Output: `t`, computed before the update. All three models use batch-statistics BN.
public final class CoTTAMethod: AugmentingMethod {
    public let name = "cotta"
    public var needsBatchStatistics: Bool { true }
    /// The teacher and anchor: copies of the model.
    public var copiesTheModel: Bool { true }
    public let steps: Int
    public let configuration: MethodConfiguration
    /// Draws one augmentation of a batch (CoTTA's pipeline; one parameter draw shared by the batch).
    public let augment: BatchAugmentation?
    public let augmentImageSize: Int?   // see `AugmentingMethod`
    /// When true, all N augmented passes run every batch, as the official CIFAR code does (the extra
    /// passes only cost time; the random draws then match that code's consumption).
    public var alwaysAugment = false

    private var update: GradientUpdate?
    private(set) public var teacher: (any ImageClassifier)?
    private(set) public var anchor: (any ImageClassifier)?
    private var sourceState: ParameterStore.Snapshot?

    public init(_ configuration: MethodConfiguration, augment: BatchAugmentation?, augmentImageSize: Int? = nil) {
        self.configuration = configuration
        self.augment = augment
        self.augmentImageSize = augmentImageSize
        steps = configuration.steps
    }

    public func configure(_ model: any ImageClassifier) throws {
        model.setBatchNormMode(.batchStatistics)
        model.store.setTrainable(.weightsAndBiases)
        update = GradientUpdate(configuration.makeOptimizer(model.store))
        teacher = model.copy()
        anchor = model.copy()
        sourceState = model.store.snapshot()
    }

    /// The teacher's prediction (the reference's `forward_sliding_window`).
    public func predict(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator) throws -> Tensor {
        guard let teacher else { throw AdaptationError("cotta: predict before configure") }
        return teacher.forward(x, .inference)
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        guard let update, let teacher, let anchor, let sourceState else { throw AdaptationError("cotta: step before configure") }
        let student = timer.measure(.forward) { model.forward(x, .training) }
        let teacherLogits: Tensor = timer.measure(.forward) {
            let probs = anchor.forward(x, .inference).softmaxRows()
            let c = probs.shape[1]
            var conf = 0.0
            for i in 0..<probs.shape[0] { conf += Double(probs.storage[(i * c)..<((i + 1) * c)].max()!) }
            conf /= Double(probs.shape[0])
            // The teacher's plain pass only where its output is used (the reference runs either the plain
            // pass or the augmented ones; the official CIFAR code, `alwaysAugment`, the plain pass first, then
            // all augmented ones). Passes cost time, and under UnMix-TNS each one moves the teacher's components.
            let augmenting = augment != nil && configuration.augmentations > 0
            let wantAugmented = augmenting && conf < Double(configuration.confidenceThreshold)
            let standard = !wantAugmented || alwaysAugment ? teacher.forward(x, .inference) : nil
            guard let augment, augmenting, wantAugmented || alwaysAugment else { return standard! }
            var sum = teacher.forward(augment(x, &rng), .inference)
            for _ in 1..<configuration.augmentations {
                let out = teacher.forward(augment(x, &rng), .inference)
                for i in 0..<sum.count { sum.storage[i] += out.storage[i] }
            }
            guard wantAugmented else { return standard! }
            let inv = 1 / Float(configuration.augmentations)
            return Tensor(shape: sum.shape, storage: sum.storage.map { $0 * inv })
        }
        let loss = configuration.symmetricLoss
            ? Loss.symmetricCrossEntropy(student, teacher: teacherLogits)
            : Loss.softCrossEntropy(student, targets: teacherLogits.softmaxRows())
        update.apply(loss.gradient, model: model, timer: &timer)
        timer.measure(.update) {
            updateMeanTeacher(teacher.store, from: model.store, momentum: configuration.teacherMomentum)
            stochasticRestore(model.store, source: sourceState, probability: configuration.restoreProbability, using: &rng)
        }
        return teacherLogits
    }

    public func reset() {
        update?.optimizer.reset()
        if let sourceState {
            teacher?.store.restore(sourceState)
            anchor?.store.restore(sourceState)
        }
    }

    /// The optimizer and the teacher; the anchor never changes after `configure`.
    public func captureState() -> MethodState {
        var s = MethodState()
        if let update { s.store(update.optimizer.state, as: "optimizer") }
        if let teacher { s.store(teacher.store, as: "teacher") }
        return s
    }

    public func restoreState(_ state: MethodState) throws {
        guard let update, let teacher else { throw AdaptationError("cotta: state restored before configure") }
        try state.restore(update.optimizer, from: "optimizer", of: name)
        try state.restore(teacher.store, from: "teacher", of: name)
    }
}
