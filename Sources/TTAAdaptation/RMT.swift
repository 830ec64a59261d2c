import Foundation
import TTAModels
import TTANN
import TTATensor

/// RMT, robust mean teacher (Döbler et al., CVPR 2023, arXiv 2211.13081): a mean teacher trained with
/// symmetric cross-entropy, a contrastive term that pulls test features towards their nearest source
/// class prototype, and replay of labelled source batches; warmed up on source data before adapting.
///
/// Set-up (`configure`): batch-statistics BN and every parameter trainable (student and teacher); class
/// prototypes = mean source feature per class (one pass over the source data, stopping after more than
/// 100,000 features); a projector `Linear(D → p) → ReLU → Linear(p → p)` trained with the student at the
/// same learning rate; warm-up: `warmupSamples / batch` steps of SCE(student, teacher) on unlabelled
/// source batches with the learning rate ramped `lr·(i+1)/steps`, teacher EMA after each.
///
/// Per test batch `x`: `z = feat(x)`, `s = head(z)`; `zₐ = feat(aug(x))`, `sₐ = head(zₐ)`; `t = teacher(x)`;
/// loss `λ_trg·mean(½SCE(s, t) + ½SCE(sₐ, t)) + λ_cont·SupCon([proto(z), z, zₐ]) + λ_src·CE(src batch)`;
/// one step; teacher EMA over every parameter. Output: `s + t`, from before the update.
/// `proto(z)` is the prototype with the largest cosine similarity to `z` (no gradient).
///
/// The student runs `feat(x)` twice per batch (once to compute the loss, once recorded for backward),
/// because the contrastive term couples the two views and a model keeps one recorded forward at a time.
public final class RMTMethod: AugmentingMethod {
    public let name = "rmt"
    public var needsBatchStatistics: Bool { true }
    /// The teacher: copies of the model.
    public var copiesTheModel: Bool { true }
    public let steps: Int
    public let configuration: MethodConfiguration
    /// CoTTA's augmentation, drawn once per batch (nil: the augmented view is `x` itself).
    public let augment: BatchAugmentation?
    public let augmentImageSize: Int?   // see `AugmentingMethod`

    /// Where labelled source batches come from (prototypes, warm-up, replay). Runs on across resets, as the
    /// reference's source iterator does.
    public private(set) var source: SourceSampler
    /// Prototypes and warm-up results kept between runs, when given.
    public let cache: PreparationCache?
    /// Class prototypes `(K, D)`, set in `configure`.
    public private(set) var prototypes: Tensor?
    public private(set) var teacher: (any FeatureClassifier)?
    /// The projector's parameters under `nn.Sequential` names (`0.weight`, `0.bias`, `2.weight`, `2.bias`).
    public private(set) var projectorStore = ParameterStore()
    private var projector: Sequential?
    private var studentOptimizer: Optimizer?
    private var projectorOptimizer: Optimizer?
    /// Warm-up steps taken in `configure` (0 when loaded from the cache or disabled).
    public private(set) var warmupStepsRun = 0
    /// The state `reset()` returns to: teacher, projector and both optimizers just after warm-up.
    private var initial: (teacher: ParameterStore.Snapshot, projector: ParameterStore.Snapshot,
                          studentOptimizer: OptimizerState, projectorOptimizer: OptimizerState)?
    private let projectorSeed: UInt64
    private let initialProjector: [String: Tensor]?

    /// - Parameters:
    ///   - source: labelled source images; the sampler's batch size is the replay and warm-up batch size.
    ///   - projectorSeed: seeds the projector's initialisation (PyTorch's default for `nn.Linear`:
    ///     uniform in ±1/√fan_in for weights and biases).
    ///   - initialProjector: given projector weights instead (by `nn.Sequential` name), e.g. a PyTorch run's.
    ///   - augmentImageSize: the side of the square images `augment` was built for, when known.
    public init(_ configuration: MethodConfiguration, augment: BatchAugmentation?, source: SourceSampler,
                cache: PreparationCache? = nil, projectorSeed: UInt64 = 0, initialProjector: [String: Tensor]? = nil,
                augmentImageSize: Int? = nil) throws {
        guard source.labels != nil else {
            throw AdaptationError("rmt needs labelled source data (class prototypes and source replay); the source images have no labels")
        }
        (self.configuration, self.augment, self.source, self.cache) = (configuration, augment, source, cache)
        (self.projectorSeed, self.initialProjector, self.augmentImageSize) = (projectorSeed, initialProjector, augmentImageSize)
        steps = configuration.steps
    }

    /// Warm-up steps for this source batch size (`NUM_SAMPLES_WARM_UP // batch_size`).
    public var warmupSteps: Int { configuration.rmtWarmupSamples / source.batchSize }

    public func configure(_ model: any ImageClassifier) throws {
        guard let model = model as? any FeatureClassifier else {
            throw AdaptationError("rmt needs a model split into features and head; \(model.architecture) is not")
        }
        // The source images are fed to the model as they are (prototypes, warm-up, replay): the model's channels and
        // image size, and finite pixels (NaN would make NaN prototypes).
        try requireImageBatch(source.images, for: model, "rmt: the source data")
        guard source.images.isFinite else {
            throw AdaptationError("rmt: the source images contain NaN or infinity; its prototypes, warm-up and replay need finite pixels")
        }
        if let bad = source.labels?.first(where: { $0 < 0 || $0 >= model.numClasses }) {
            throw AdaptationError("rmt: source label \(bad) is outside 0..<\(model.numClasses)")
        }
        model.setBatchNormMode(.batchStatistics)
        // Prototypes, warm-up and replay normalise source batches of `batchSize` images and, at the end of each
        // pass, the remainder.
        let remainder = source.count % source.batchSize
        try requireSeveralValuesPerChannel(images: remainder == 0 ? source.batchSize : remainder,
                                           height: source.images.shape[2], width: source.images.shape[3], in: model, "rmt: a source batch")
        // The reference's RMT keeps the base class's collect_params: every `weight` and `bias` (a ViT's class token and
        // position embedding stay, as in CoTTA). On a timm ViT its split into features and classifier then classifies
        // with a copy of `head` that no optimizer holds (model.py's split_up_model replaces `head` after the optimizer
        // was built), so the head stays at its source weights, the teacher's too; a CNN's `fc` is shared and trains.
        if model is VisionTransformer {
            model.store.setTrainable(.names(Set(model.store.entries.filter { e in
                e.kind == .parameter && ParameterSelection.weightsAndBiases.selects(e) && !e.name.hasPrefix("head.")
            }.map(\.name))))
        } else {
            model.store.setTrainable(.weightsAndBiases)
        }
        studentOptimizer = configuration.makeOptimizer(model.store)
        let teacher = model.copy()
        self.teacher = teacher
        let prototypes = try cachedPrototypes(model)
        self.prototypes = prototypes
        try makeProjector(features: prototypes.shape[1])
        warmupStepsRun = 0
        if warmupSteps > 0 { warmUp(model, teacher: teacher) }
        initial = (teacher.store.snapshot(), projectorStore.snapshot(), studentOptimizer!.state, projectorOptimizer!.state)
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        guard let model = model as? any FeatureClassifier, let teacher, let prototypes, let projector,
              let studentOptimizer, let projectorOptimizer else { throw AdaptationError("rmt: step before configure") }
        let c = configuration
        let n = x.shape[0]
        let xAug = augment?(x, &rng) ?? x
        let (z, s, t, zAug, sAug) = timer.measure(.forward) {
            let z = model.features(x, .inference)
            let s = model.head(z, .inference)
            let t = teacher.forward(x, .inference)
            let zAug = model.features(xAug, .training)
            return (z, s, t, zAug, model.head(zAug, .training))
        }
        timer.measure(.backward) {
            let nearest = nearestPrototypes(z, prototypes)
            let views = stackRows([gatherRows(prototypes, nearest), z, zAug])
            let projected = projector.forward(views, .training)
            let contrast = contrastiveLoss(projected, views: 3, temperature: c.contrastTemperature)
            let dViews = projector.backward(scaled(contrast.gradient, c.rmtLambdaContrast), needInputGradient: true)!
            let selfTraining = 0.5 * c.rmtLambdaTarget
            // Augmented view (the recorded forward), then the original view, recorded again.
            model.backward(dLogits: scaled(Loss.symmetricCrossEntropy(sAug, teacher: t).gradient, selfTraining),
                           dFeatures: dViews.slice((2 * n)..<(3 * n)))
            _ = model.head(model.features(x, .training), .training)
            model.backward(dLogits: scaled(Loss.symmetricCrossEntropy(s, teacher: t).gradient, selfTraining),
                           dFeatures: dViews.slice(n..<(2 * n)))
            if c.rmtLambdaSource > 0 {
                let batch = source.next()
                let logits = model.forward(batch.images, .training)
                model.backward(scaled(Loss.crossEntropy(logits, labels: batch.labels!).gradient, c.rmtLambdaSource))
            }
        }
        timer.measure(.update) {
            studentOptimizer.step()
            projectorOptimizer.step()
            model.store.zeroGrads()
            projectorStore.zeroGrads()
            updateMeanTeacher(teacher.store, from: model.store, momentum: c.teacherMomentum)
        }
        return Self.sum(s, t)
    }

    /// A sliding window's predictions between updates are the student's plus the teacher's logits, as the step's
    /// (the reference's `forward_sliding_window`).
    public func predict(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator) throws -> Tensor {
        guard let teacher else { throw AdaptationError("rmt: predict before configure") }
        let (s, t) = (model.forward(x, .inference), teacher.forward(x, .inference))
        return Self.sum(s, t)
    }

    /// The student's plus the teacher's logits: what RMT shows.
    private static func sum(_ s: Tensor, _ t: Tensor) -> Tensor {
        Tensor(shape: s.shape, storage: zip(s.storage, t.storage).map { $0 + $1 })
    }

    public func reset() {
        guard let initial else { return }
        teacher?.store.restore(initial.teacher)
        projectorStore.restore(initial.projector)
        projectorStore.zeroGrads()
        studentOptimizer?.state = initial.studentOptimizer
        projectorOptimizer?.state = initial.projectorOptimizer
    }

    /// Teacher, projector, both optimizers and the source sampler's position (the prototypes and the
    /// post-warm-up state `reset()` returns to are rebuilt by `configure`, or read from the cache).
    public func captureState() -> MethodState {
        var s = MethodState()
        if let teacher { s.store(teacher.store, as: "teacher") }
        s.store(projectorStore, as: "projector")
        if let studentOptimizer { s.store(studentOptimizer.state, as: "optimizer") }
        if let projectorOptimizer { s.store(projectorOptimizer.state, as: "projectorOptimizer") }
        source.capture(into: &s, as: "source")
        return s
    }

    public func restoreState(_ state: MethodState) throws {
        guard let teacher, let studentOptimizer, let projectorOptimizer else { throw AdaptationError("rmt: state restored before configure") }
        try state.restore(teacher.store, from: "teacher", of: name)
        try state.restore(projectorStore, from: "projector", of: name)
        try state.restore(studentOptimizer, from: "optimizer", of: name)
        try state.restore(projectorOptimizer, from: "projectorOptimizer", of: name)
        try source.restore(from: state, as: "source", of: name)
    }

    // MARK: set-up

    /// Class-mean features of the source data (batch-statistics BN, no gradient), from the cache when there.
    private func cachedPrototypes(_ model: any FeatureClassifier) throws -> Tensor {
        let item = "rmt-prototypes-batch\(source.batchSize)"
        // A cached entry that does not fit (another shape, storage not matching it, NaN or infinity) is a miss.
        if let p = cache?.load(item)?["prototypes"], p.shape == [model.numClasses, model.featureCount],
           p.storage.count == model.numClasses * model.featureCount, p.isFinite {
            return p
        }
        let p = try Self.prototypes(model: model, source: source)
        cache?.store(item, ["prototypes": p])
        return p
    }

    /// Mean feature per class over one in-order pass of `source` (until more than 100,000 features).
    public static func prototypes(model: any FeatureClassifier, source: SourceSampler) throws -> Tensor {
        let (k, d) = (model.numClasses, model.featureCount)
        var sums = [Double](repeating: 0, count: k * d), counts = [Int](repeating: 0, count: k)
        var seen = 0
        for batch in source.inOrder() {
            let f = model.features(batch.images, .inference)
            for (i, y) in batch.labels!.enumerated() {
                counts[y] += 1
                for j in 0..<d { sums[y * d + j] += Double(f.storage[i * d + j]) }
            }
            seen += batch.images.shape[0]
            if seen > 100_000 { break }
        }
        if let missing = counts.firstIndex(of: 0) {
            throw AdaptationError("rmt: the source data has no image of class \(missing); every class needs a prototype")
        }
        return Tensor(shape: [k, d], storage: (0..<(k * d)).map { Float(sums[$0] / Double(counts[$0 / d])) })
    }

    private func makeProjector(features d: Int) throws {
        let p = configuration.projectionDim
        let store = ParameterStore()
        let first = Linear(store, name: "0", inputFeatures: d, outputFeatures: p)
        let second = Linear(store, name: "2", inputFeatures: p, outputFeatures: p)
        store.finalize()
        var g = SeededGenerator(seed: projectorSeed)
        for e in store.entries {
            let bound = 1 / Float(e.name.hasPrefix("0.") ? d : p).squareRoot()
            if let given = initialProjector {
                guard let t = given[e.name], t.shape == e.shape else {
                    throw AdaptationError("rmt: the given projector has no \(e.name) of shape \(e.shape)")
                }
                store.set(e.name, t)
            } else {
                store.set(e.name, Tensor(shape: e.shape, storage: (0..<e.count).map { _ in (2 * g.nextUniform() - 1) * bound }))
            }
        }
        store.setTrainable(.all)
        projectorStore = store
        projector = Sequential([first, ReLU(), second])
        projectorOptimizer = configuration.makeOptimizer(store)
    }

    /// The reference's `warmup()`: SCE(student, teacher) on unlabelled source batches, lr ramped linearly,
    /// teacher EMA after each step. Loaded from the cache instead when it holds this model's warm-up.
    private func warmUp(_ model: any FeatureClassifier, teacher: any FeatureClassifier) {
        let c = configuration, steps = warmupSteps
        let item = "rmt-warmup-steps\(steps)-batch\(source.batchSize)-\(c.optimizer.rawValue)-lr\(c.lr)-beta\(c.beta1)"
            + "-momentum\(c.momentum)-wd\(c.weightDecay)-ema\(c.teacherMomentum)"
        if let cached = cache?.load(item), restoreWarmUp(cached, model: model, teacher: teacher) {
            source.skip(steps)   // the replay continues where an uncached run's would
            return
        }
        let optimizer = studentOptimizer!
        for i in 0..<steps {
            setLearningRate(optimizer, c.lr * Float(i + 1) / Float(steps))
            let x = source.next().images
            let out = model.forward(x, .training)
            let t = teacher.forward(x, .inference)
            model.backward(Loss.symmetricCrossEntropy(out, teacher: t).gradient)
            optimizer.step()
            model.store.zeroGrads()
            updateMeanTeacher(teacher.store, from: model.store, momentum: c.teacherMomentum)
        }
        setLearningRate(optimizer, c.lr)
        warmupStepsRun = steps
        var saved = optimizer.state.tensors(prefix: "optimizer.")
        for (name, t) in model.store.stateDict() { saved["model.\(name)"] = t }
        for (name, t) in teacher.store.stateDict() { saved["teacher.\(name)"] = t }
        cache?.store(item, saved)
    }

    /// Loads a cached warm-up; false (a cache miss: the warm-up runs) when the entry does not fit this model and
    /// optimizer: a step count that is not a count, an optimizer buffer for another parameter or of another length
    /// (`OptimizerState.problem(for:prefix:)`), a tensor of another shape or whose storage does not match its shape,
    /// NaN or infinity anywhere.
    private func restoreWarmUp(_ saved: [String: Tensor], model: any ImageClassifier, teacher: any ImageClassifier) -> Bool {
        guard let optimizer = studentOptimizer, let state = OptimizerState(tensors: saved, prefix: "optimizer."),
              state.problem(for: optimizer, prefix: "optimizer") == nil,
              state.buffers.values.allSatisfy({ $0.allSatisfy(\.isFinite) }),
              state.secondBuffers.values.allSatisfy({ $0.allSatisfy(\.isFinite) }) else { return false }
        for (prefix, store) in [("model.", model.store), ("teacher.", teacher.store)] {
            for e in store.entries {
                guard let t = saved[prefix + e.name], t.shape == e.shape, t.storage.count == e.count, t.isFinite else { return false }
            }
        }
        for (prefix, store) in [("model.", model.store), ("teacher.", teacher.store)] {
            for e in store.entries { store.set(e.name, saved[prefix + e.name]!) }
        }
        studentOptimizer?.state = state
        return true
    }
}

/// Sets the learning rate of PyTorch-style optimizers (RMT's warm-up ramp).
func setLearningRate(_ optimizer: Optimizer, _ lr: Float) {
    if let adam = optimizer as? Adam { adam.lr = lr }
    if let sgd = optimizer as? SGD { sgd.lr = lr }
}

/// SupCon in SimCLR mode with contrast mode "all" (RMT's `contrastive_loss`, after HobbitLong/SupContrast):
/// `features` `(V·n, p)` holds `V` views of `n` samples, view-major. Each row is L2-normalised
/// (`F.normalize`, eps 1e-12); `A = U·Uᵀ/τ`; for every anchor `i` the positives are the other views of
/// the same sample, the denominator runs over all `k ≠ i`:
/// `L = −(1/Vn) Σ_i mean_{j∈P(i)} [A_ij − log Σ_{k≠i} exp A_ik]` (τ/τ_base = 1).
/// Gradient: `∂L/∂A = (Q − M/|P|)/Vn` with `Q` the row softmax over `k ≠ i` and `M` the positive mask;
/// `∂L/∂U = (G + Gᵀ)·U/τ`; through the normalisation `∂L/∂h = (∂L/∂u − u(u·∂L/∂u))/‖h‖`.
public func contrastiveLoss(_ features: Tensor, views: Int, temperature tau: Float) -> (value: Float, gradient: Tensor) {
    precondition(features.rank == 2 && views >= 2 && features.shape[0] % views == 0, "contrastiveLoss: expected (views·n, p), got \(features.shape)")
    let (m, p) = (features.shape[0], features.shape[1]), n = m / views
    let h = features.storage.map(Double.init)
    var norms = [Double](repeating: 0, count: m), u = [Double](repeating: 0, count: m * p)
    for i in 0..<m {
        norms[i] = (0..<p).reduce(0) { $0 + h[i * p + $1] * h[i * p + $1] }.squareRoot()
        for k in 0..<p { u[i * p + k] = h[i * p + k] / max(norms[i], 1e-12) }
    }
    var a = [Double](repeating: 0, count: m * m)
    for i in 0..<m { for j in 0..<m { a[i * m + j] = (0..<p).reduce(0) { $0 + u[i * p + $1] * u[j * p + $1] } / Double(tau) } }
    var total = 0.0
    var g = [Double](repeating: 0, count: m * m)
    let positives = Double(views - 1)
    for i in 0..<m {
        let row = (0..<m).filter { $0 != i }
        let mx = row.map { a[i * m + $0] }.max()!
        let lse = mx + Foundation.log(row.reduce(0) { $0 + Foundation.exp(a[i * m + $1] - mx) })
        for j in row {
            let positive = j % n == i % n
            if positive { total += (a[i * m + j] - lse) / positives }
            g[i * m + j] = (Foundation.exp(a[i * m + j] - lse) - (positive ? 1 / positives : 0)) / Double(m)
        }
    }
    var dh = [Float](repeating: 0, count: m * p)
    for i in 0..<m {
        var du = [Double](repeating: 0, count: p)
        for j in 0..<m {
            let w = (g[i * m + j] + g[j * m + i]) / Double(tau)
            if w != 0 { for k in 0..<p { du[k] += w * u[j * p + k] } }
        }
        let ud = (0..<p).reduce(0) { $0 + u[i * p + $1] * du[$1] }
        for k in 0..<p {
            dh[i * p + k] = Float(norms[i] > 1e-12 ? (du[k] - u[i * p + k] * ud) / norms[i] : du[k] / 1e-12)
        }
    }
    return (Float(-total / Double(m)), Tensor(shape: features.shape, storage: dh))
}

/// For each row of `features` `(n, D)`, the index of the prototype `(K, D)` with the largest cosine
/// similarity (`F.cosine_similarity`, then `topk(1)`; the first index on ties).
public func nearestPrototypes(_ features: Tensor, _ prototypes: Tensor) -> [Int] {
    let (n, d, k) = (features.shape[0], features.shape[1], prototypes.shape[0])
    func norm(_ t: Tensor, _ i: Int) -> Double { (0..<d).reduce(0) { $0 + Double(t.storage[i * d + $1]) * Double(t.storage[i * d + $1]) }.squareRoot() }
    let pn = (0..<k).map { norm(prototypes, $0) }
    return (0..<n).map { i in
        let fn = norm(features, i)
        var best = 0, bestSim = -Double.infinity
        for c in 0..<k {
            let dot = (0..<d).reduce(0) { $0 + Double(features.storage[i * d + $1]) * Double(prototypes.storage[c * d + $1]) }
            let sim = dot / max(fn * pn[c], 1e-8)
            if sim > bestSim { (best, bestSim) = (c, sim) }
        }
        return best
    }
}

/// Rows `indices` of a `(K, D)` tensor.
func gatherRows(_ t: Tensor, _ indices: [Int]) -> Tensor {
    let d = t.shape[1]
    return Tensor(shape: [indices.count, d], storage: indices.flatMap { t.storage[($0 * d)..<(($0 + 1) * d)] })
}

/// `(n_i, D)` tensors stacked along the rows.
func stackRows(_ parts: [Tensor]) -> Tensor {
    Tensor(shape: [parts.reduce(0) { $0 + $1.shape[0] }, parts[0].shape[1]], storage: parts.flatMap(\.storage))
}

/// `t·factor`.
func scaled(_ t: Tensor, _ factor: Float) -> Tensor {
    Tensor(shape: t.shape, storage: t.storage.map { $0 * factor })
}
