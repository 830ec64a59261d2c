import Foundation
import TTAModels
import TTANN
import TTATensor

/// ROID (Marsden, Döbler, Yang, WACV 2024, arXiv 2306.00650): certainty- and diversity-weighted soft
/// likelihood ratio loss, augmentation consistency, weight ensembling with the source and prior
/// correction, over the BN affine parameters with batch statistics.
///
/// Per batch, from the logits `o` (probabilities `p`) of the model before the update:
/// 1. weights (no gradient): `w_div,i = 1 − cos(π̄, p_i)` and `w_cert,i = −H(p_i)`, each min-max
///    normalised over the batch; the samples with `w_div,i` below its batch mean are masked out; the
///    others get `w_i = exp(w_div,i·w_cert,i / T)`. Then `π̄ ← m·π̄ + (1−m)·mean_i p_i` (π̄ starts uniform).
/// 2. loss `Σ_{i unmasked} w_i·SLR(o_i) / B` with the soft likelihood ratio
///    `SLR = −Σ_c q_c·log(q_c/(1−q_c) + 1e-5)`, `q = min(p, 0.99)`, and `B` the configured batch size;
/// 3. consistency: `+ Σ_{i unmasked} w_i·SCE(o′_i, o_i) / B`, `o′` the logits of the augmented unmasked
///    images (batch statistics of those images), SCE the symmetric cross-entropy (½, ½) with gradients
///    to both sides, as the reference does not detach `o`;
/// 4. an optimizer step, then weight ensembling `θ ← m_src·θ + (1−m_src)·θ_source` of the trainable parameters;
/// 5. output: `o` scaled per class by the smoothed prior `(π + s)/(1 + s·C)`, `π = mean_i p_i`,
///    `s = max(1/N, 1/C)/max(π)` (logits times the prior, as the reference).
///
/// The weights are normalised over the batch, so a batch of one image (or one whose samples all have the
/// same weight) has none: with the weighting on, such a batch is predicted (the model's logits, no prior
/// correction) without adapting and counted in `skippedBatches`, where the reference would turn the model
/// into NaN. At batch size 1 the CLI refuses it up front (`run` and `compare` unless `--window-length`
/// is given, `predict` always) and names the fallbacks.
public final class ROIDMethod: AugmentingMethod {
    public let name = "roid"
    public var needsBatchStatistics: Bool { true }
    public let steps: Int
    public let configuration: MethodConfiguration
    /// The consistency loss's augmentation (the reference: CoTTA's colour jitter and affine with reflect
    /// padding, no blur or noise); nil leaves the images as they are.
    public let augment: BatchAugmentation?
    public let augmentImageSize: Int?   // see `AugmentingMethod`
    /// The moving average π̄ of the class probabilities; nil until configured.
    public private(set) var classProbabilities: [Double]?
    /// Batches predicted without adapting because their sample weights are undefined (one image, or all equal).
    public private(set) var skippedBatches = 0

    private var update: GradientUpdate?
    private var sourceState: ParameterStore.Snapshot?

    public init(_ configuration: MethodConfiguration, augment: BatchAugmentation?, augmentImageSize: Int? = nil) throws {
        if configuration.roidConsistency && !configuration.roidWeighting {
            throw AdaptationError("roid: the consistency loss uses the weighting's mask and weights; "
                                  + "turn the weighting on or the consistency off (the reference fails on this combination too)")
        }
        self.configuration = configuration
        self.augment = augment
        self.augmentImageSize = augmentImageSize
        steps = configuration.steps
    }

    public func configure(_ model: any ImageClassifier) throws {
        model.setBatchNormMode(.batchStatistics)
        model.store.setTrainable(.normAffine)
        update = GradientUpdate(configuration.makeOptimizer(model.store))
        sourceState = model.store.snapshot()
        classProbabilities = uniform(model.numClasses)
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        guard let update, let sourceState, let ema = classProbabilities else { throw AdaptationError("roid: step before configure") }
        let n = x.shape[0]
        // The loss needs the augmented pass's logits before the backward of the first pass, and a model
        // records one forward at a time: this first pass only predicts; it is recorded again below
        // (where per-sample statistics move with each pass, UnMix-TNS's, the recording repeats these).
        let repeatable = model.batchNorms.compactMap { $0.sampleStatistics as? RepeatablePass }
        repeatable.forEach { $0.keepNextPass() }
        let logits = timer.measure(.forward) { model.forward(x, .inference) }
        let (probs, c) = (logits.softmaxRows(), logits.shape[1])
        func row(_ t: Tensor, _ i: Int) -> ArraySlice<Float> { t.storage[(i * c)..<((i + 1) * c)] }
        let batchSize = Double(configuration.batchSize ?? n)

        var kept = Array(0..<n), weights = [Double](repeating: 1, count: n)
        if configuration.roidWeighting {
            guard n >= 2, let diversity = minMaxNormalized((0..<n).map { 1 - cosineSimilarity(ema, row(probs, $0)) }),
                  let certainty = minMaxNormalized(softmaxEntropies(logits).map { -Double($0) }) else {
                skippedBatches += 1
                return logits
            }
            let mean = diversity.reduce(0, +) / Double(n)
            kept = (0..<n).filter { !(diversity[$0] < mean) }
            weights = (0..<n).map { Foundation.exp(diversity[$0] * certainty[$0] / Double(configuration.roidTemperature)) }
        }
        // The augmented pass normalises the kept images with their own statistics (checked before any state changes).
        if configuration.roidConsistency {
            try requireSeveralValuesPerChannel(images: kept.count, height: x.shape[2], width: x.shape[3], in: model,
                                               "roid: the augmented view of the \(kept.count) image(s) its certainty filter kept")
        }
        let m = Double(configuration.roidMomentumProbabilities)
        classProbabilities = (0..<c).map { k in
            m * ema[k] + (1 - m) * (0..<n).reduce(0.0) { $0 + Double(probs.storage[$1 * c + k]) } / Double(n)
        }

        var gradient = Tensor(shape: logits.shape)
        for i in kept {
            let g = softLikelihoodRatioGradient(row(logits, i))
            for k in 0..<c { gradient.storage[i * c + k] = Float(weights[i] / batchSize * g[k]) }
        }
        if configuration.roidConsistency {
            let images = gather(x, kept)
            let augmented = augment.map { $0(images, &rng) } ?? images
            let augLogits = timer.measure(.forward) { model.forward(augmented, .training) }
            var augGradient = Tensor(shape: augLogits.shape)
            for (j, i) in kept.enumerated() {
                let (ga, gb) = symmetricCrossEntropyGradients(row(augLogits, j), row(logits, i))
                for k in 0..<c {
                    augGradient.storage[j * c + k] = Float(weights[i] / batchSize * ga[k])
                    gradient.storage[i * c + k] += Float(weights[i] / batchSize * gb[k])
                }
            }
            timer.measure(.backward) { model.backward(augGradient) }
        }
        repeatable.forEach { $0.repeatKeptPass() }
        _ = timer.measure(.forward) { model.forward(x, .training) }
        update.apply(gradient, model: model, timer: &timer)
        timer.measure(.update) { ensembleWithSource(model.store, source: sourceState, momentum: configuration.roidMomentumSource) }
        return configuration.roidPriorCorrection ? priorCorrected(logits, probs) : logits
    }

    public func reset() {
        update?.optimizer.reset()
        classProbabilities = classProbabilities.map { uniform($0.count) }
    }

    public func captureState() -> MethodState {
        var s = MethodState()
        if let update { s.store(update.optimizer.state, as: "optimizer") }
        if let classProbabilities { s.numbers["classProbabilities"] = classProbabilities }
        s.numbers["skippedBatches"] = [Double(skippedBatches)]
        return s
    }

    public func restoreState(_ state: MethodState) throws {
        guard let update, let c = classProbabilities?.count else { throw AdaptationError("roid: state restored before configure") }
        try state.restore(update.optimizer, from: "optimizer", of: name)
        guard let p = state.numbers["classProbabilities"], p.count == c, p.allSatisfy(\.isFinite) else {
            throw AdaptationError("roid: state 'classProbabilities' is missing or not \(c) finite values")
        }
        classProbabilities = p
        skippedBatches = try state.count("skippedBatches", of: name)
    }

    private func uniform(_ c: Int) -> [Double] { Array(repeating: 1 / Double(c), count: c) }

    /// `(v − min v)/(max v − min v)`, or nil when every value is the same (the reference divides by 0).
    private func minMaxNormalized(_ v: [Double]) -> [Double]? {
        let (lo, hi) = (v.min()!, v.max()!)
        guard hi > lo else { return nil }
        return v.map { ($0 - lo) / (hi - lo) }
    }

    /// `logits ⊙ (π + s)/(1 + s·C)` per class.
    private func priorCorrected(_ logits: Tensor, _ probs: Tensor) -> Tensor {
        let (n, c) = (logits.shape[0], logits.shape[1])
        let prior = (0..<c).map { k in (0..<n).reduce(0.0) { $0 + Double(probs.storage[$1 * c + k]) } / Double(n) }
        let smooth = max(1 / Double(n), 1 / Double(c)) / prior.max()!
        let factor = prior.map { Float(($0 + smooth) / (1 + smooth * Double(c))) }
        var out = logits
        for i in 0..<(n * c) { out.storage[i] *= factor[i % c] }
        return out
    }
}

/// `∂/∂z` of the soft likelihood ratio `−Σ_c q_c·log(q_c/(1−q_c) + 1e-5)`, `q = min(softmax(z), 0.99)`,
/// for one row of logits (the clipped entries pass no gradient).
func softLikelihoodRatioGradient(_ z: ArraySlice<Float>) -> [Double] {
    let p = softmaxDouble(z)
    let dp = p.map { pc -> Double in
        guard pc <= 0.99 else { return 0 }
        let r = pc / (1 - pc) + 1e-5
        return -(Foundation.log(r) + pc / (r * (1 - pc) * (1 - pc)))
    }
    let s = zip(p, dp).reduce(0) { $0 + $1.0 * $1.1 }
    return zip(p, dp).map { $0 * ($1 - s) }
}

/// Gradients of `SCE(a, b) = −½ Σ softmax(b)·log softmax(a) − ½ Σ softmax(a)·log softmax(b)` with respect
/// to both rows of logits.
func symmetricCrossEntropyGradients(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> (a: [Double], b: [Double]) {
    let (pa, pb) = (softmaxDouble(a), softmaxDouble(b))
    let (la, lb) = (pa.map { Foundation.log($0) }, pb.map { Foundation.log($0) })
    let paLb = zip(pa, lb).reduce(0) { $0 + $1.0 * $1.1 }, pbLa = zip(pb, la).reduce(0) { $0 + $1.0 * $1.1 }
    let ga = pa.indices.map { 0.5 * (pa[$0] - pb[$0]) - 0.5 * pa[$0] * (lb[$0] - paLb) }
    let gb = pb.indices.map { 0.5 * (pb[$0] - pa[$0]) - 0.5 * pb[$0] * (la[$0] - pbLa) }
    return (ga, gb)
}

/// Softmax of one row, in Double.
private func softmaxDouble(_ z: ArraySlice<Float>) -> [Double] {
    let mx = Double(z.max()!)
    let e = z.map { Foundation.exp(Double($0) - mx) }
    let s = e.reduce(0, +)
    return e.map { $0 / s }
}

/// The images `rows` of a batch `(N, …)`, in order.
private func gather(_ x: Tensor, _ rows: [Int]) -> Tensor {
    let size = x.count / x.shape[0]
    var storage: [Float] = []
    storage.reserveCapacity(rows.count * size)
    for i in rows { storage += x.storage[(i * size)..<((i + 1) * size)] }
    return Tensor(shape: [rows.count] + x.shape.dropFirst(), storage: storage)
}

/// Weight ensembling: `θ ← m·θ + (1−m)·θ_source` over the trainable parameters.
private func ensembleWithSource(_ store: ParameterStore, source: ParameterStore.Snapshot, momentum m: Float) {
    let v = store.allValuesMutable
    for (i, e) in store.entries.enumerated() where store.trainable[i] {
        for j in e.offset..<(e.offset + e.count) { v[j] = m * v[j] + (1 - m) * source.values[j] }
    }
}
