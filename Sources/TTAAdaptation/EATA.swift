import Foundation
import TTAModels
import TTANN
import TTATensor

/// EATA's anti-forgetting term: the diagonal Fisher information `F` of the adapted parameters on
/// source data and the anchor `θ0`; the penalty is `β·Σ F ⊙ (θ − θ0)²`.
public struct FisherRegularizer: Sendable, Equatable {
    /// `F`, one value per float of the model's `ParameterStore` arena (zero outside the trainable parameters).
    public let fisher: [Float]
    /// `θ0`, the arena's values when `F` was computed.
    public let anchor: [Float]

    public init(fisher: [Float], anchor: [Float]) {
        precondition(fisher.count == anchor.count, "FisherRegularizer: fisher and anchor differ in size")
        (self.fisher, self.anchor) = (fisher, anchor)
    }

    /// Adds `∂/∂θ β·Σ F (θ − θ0)² = 2β·F·(θ − θ0)` to the gradients of `store`'s trainable parameters.
    public func addGradient(to store: ParameterStore, weight beta: Float) {
        precondition(fisher.count == store.totalCount, "FisherRegularizer: computed for another model")
        let v = store.allValues, g = store.allGrads
        for (i, e) in store.entries.enumerated() where store.trainable[i] {
            for j in e.offset..<(e.offset + e.count) { g[j] += 2 * beta * fisher[j] * (v[j] - anchor[j]) }
        }
    }
}

/// ETA and EATA (Niu et al., ICML 2022, arXiv 2204.02610): entropy minimisation over the BN affine
/// parameters (batch statistics, as TENT) on the reliable, non-redundant samples only, each weighted
/// by `exp(E0 − H_i)`; EATA adds a Fisher-weighted pull towards the source parameters.
///
/// Per batch: entropies `H_i`; reliable `S1 = {H_i < E0}` with `E0 = 0.4·ln C`; once the moving
/// average `m` of the kept samples' probabilities exists, non-redundant `S2 = {i ∈ S1 : |cos(m, p_i)| < ε}`
/// (else `S2 = S1`); `m ← 0.9·m + 0.1·mean(p over S2)` (or the mean, the first time); loss
/// `mean over S2 of exp(E0 − H_i)·H_i` (+ `β·Σ F (θ − θ0)²` for EATA); backward and step only when
/// `S2` is not empty. Output: the logits of the forward pass, before the update.
public final class EATAMethod: AdaptationMethod {
    /// `eta` or `eata`.
    public let name: String
    public var needsBatchStatistics: Bool { true }
    public let steps: Int
    public let configuration: MethodConfiguration
    /// The Fisher penalty, once known (given, or computed in `configure` from `sourceBatches`); nil for ETA.
    public private(set) var regularizer: FisherRegularizer?
    /// Source images the Fisher information is computed from in `configure` (EATA only).
    public let sourceBatches: [Tensor]
    /// Moving average `m` of the probabilities of the samples used for updates.
    public private(set) var meanProbabilities: [Double]?
    /// Samples that passed the reliability filter, and both filters, since the last reset
    /// (the reference's `num_samples_update_1` / `_2`, which its reset does not clear; these are diagnostics).
    public private(set) var reliableSampleCount = 0, updateSampleCount = 0

    private let wantsFisher: Bool
    private var update: GradientUpdate?
    private var margin: Float = 0
    /// The model's class count: the length of `meanProbabilities`.
    private var numClasses = 0

    /// ETA: EATA without the Fisher regulariser.
    public init(eta configuration: MethodConfiguration) {
        (name, self.configuration, steps, sourceBatches, wantsFisher) = ("eta", configuration, configuration.steps, [], false)
    }

    /// EATA with the Fisher information computed in `configure` from `sourceBatches` (the reference uses
    /// 2000 source-training images in test-sized batches). With `fisherAlpha` 0 it is ETA, as in the reference.
    public init(eata configuration: MethodConfiguration, sourceBatches: [Tensor]) throws {
        if configuration.fisherAlpha > 0 && sourceBatches.isEmpty {
            throw AdaptationError("eata needs source images for its Fisher information (fisherAlpha \(configuration.fisherAlpha) > 0) "
                                  + "and none were given; give source batches, a fisherAlpha of 0, or use eta (EATA without its Fisher term)")
        }
        (name, self.configuration, steps, self.sourceBatches) = ("eata", configuration, configuration.steps, sourceBatches)
        wantsFisher = configuration.fisherAlpha > 0
    }

    /// EATA with a Fisher regulariser computed beforehand (by `fisher(model:sourceBatches:)` on this model).
    public init(eata configuration: MethodConfiguration, regularizer: FisherRegularizer) {
        (name, self.configuration, steps, sourceBatches) = ("eata", configuration, configuration.steps, [])
        self.regularizer = regularizer
        wantsFisher = configuration.fisherAlpha > 0
    }

    /// The diagonal Fisher information of `model`'s trainable parameters, as EATA estimates it: for each
    /// batch the gradient of the batch-mean cross-entropy against the model's own argmax predictions,
    /// squared; averaged over the batches. `θ0` is the current values. The model must already be
    /// configured (BN modes, trainable selection); its values do not change and its gradients end zeroed.
    public static func fisher(model: any ImageClassifier, sourceBatches: [Tensor]) -> FisherRegularizer {
        precondition(!sourceBatches.isEmpty, "EATAMethod.fisher: no source batches")
        let store = model.store
        var fisher = [Float](repeating: 0, count: store.totalCount)
        store.zeroGrads()
        for x in sourceBatches {
            let logits = model.forward(x, .training)
            model.backward(Loss.crossEntropy(logits, labels: logits.argmaxRows()).gradient)
            let g = store.allGrads
            for (i, e) in store.entries.enumerated() where store.trainable[i] {
                for j in e.offset..<(e.offset + e.count) { fisher[j] += g[j] * g[j] }
            }
            store.zeroGrads()
        }
        let n = Float(sourceBatches.count)
        return FisherRegularizer(fisher: fisher.map { $0 / n }, anchor: Array(store.allValues))
    }

    public func configure(_ model: any ImageClassifier) throws {
        model.setBatchNormMode(.batchStatistics)
        model.store.setTrainable(.normAffine)
        update = GradientUpdate(configuration.makeOptimizer(model.store))
        margin = entropyMargin(factor: configuration.entropyMarginFactor, numClasses: model.numClasses)
        numClasses = model.numClasses
        if wantsFisher && regularizer == nil {
            // The source batches go through the model as they are: its channels and image size, finite pixels (NaN
            // would make the Fisher term NaN), and more than one value per BN channel.
            for (i, x) in sourceBatches.enumerated() {
                try requireImageBatch(x, for: model, "\(name): source batch \(i)")
                guard x.isFinite else {
                    throw AdaptationError("\(name): source batch \(i) contains NaN or infinity; the Fisher information needs finite pixels")
                }
                try requireSeveralValuesPerChannel(images: x.shape[0], height: x.shape[2], width: x.shape[3], in: model,
                                                   "\(name): a source batch for the Fisher information")
            }
            regularizer = Self.fisher(model: model, sourceBatches: sourceBatches)
        }
        if let regularizer, regularizer.fisher.count != model.store.totalCount {
            throw AdaptationError("eata: the Fisher information was computed for another model")
        }
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        guard let update else { throw AdaptationError("\(name): step before configure") }
        let logits = timer.measure(.forward) { model.forward(x, .training) }
        let entropies = softmaxEntropies(logits)
        let reliable = reliableSamples(entropies, below: margin)
        let probs = logits.softmaxRows()
        let c = logits.shape[1]
        func row(_ i: Int) -> ArraySlice<Float> { probs.storage[(i * c)..<((i + 1) * c)] }
        var kept = reliable
        if let m = meanProbabilities {
            kept = reliable.filter { abs(cosineSimilarity(m, row($0))) < Double(configuration.redundancyMargin) }
        }
        if !kept.isEmpty {
            var mean = [Double](repeating: 0, count: c)
            for i in kept { for (k, p) in row(i).enumerated() { mean[k] += Double(p) } }
            mean = mean.map { $0 / Double(kept.count) }
            meanProbabilities = meanProbabilities.map { m in zip(m, mean).map { 0.9 * $0 + (1 - 0.9) * $1 } } ?? mean
        }
        reliableSampleCount += reliable.count
        updateSampleCount += kept.count
        guard !kept.isEmpty else { return logits }   // everything filtered: no update, as the reference
        let weights = kept.map { Float(Foundation.exp(Double(margin) - Double(entropies[$0]))) }
        let loss = subsetEntropyLoss(logits, samples: kept, weights: weights)
        let penalty = regularizer.map { r in { (store: ParameterStore) in r.addGradient(to: store, weight: self.configuration.fisherAlpha) } }
        update.apply(loss.gradient, model: model, timer: &timer, regularize: penalty)
        return logits
    }

    public func reset() {
        update?.optimizer.reset()
        meanProbabilities = nil
        (reliableSampleCount, updateSampleCount) = (0, 0)
    }

    /// The optimizer, the moving mean of the probabilities and the sample counters; the Fisher
    /// regulariser is fixed by `configure`.
    public func captureState() -> MethodState {
        var s = MethodState()
        if let update { s.store(update.optimizer.state, as: "optimizer") }
        if let meanProbabilities { s.numbers["meanProbabilities"] = meanProbabilities }
        s.numbers["reliableSampleCount"] = [Double(reliableSampleCount)]
        s.numbers["updateSampleCount"] = [Double(updateSampleCount)]
        return s
    }

    public func restoreState(_ state: MethodState) throws {
        guard let update else { throw AdaptationError("\(name): state restored before configure") }
        // The moving mean of the probabilities, absent before the first update, is one finite value per class (the
        // redundancy filter's cosine similarity would read a shorter or longer one only up to the shorter length).
        let m = state.numbers["meanProbabilities"]
        if let m, m.count != numClasses || !m.allSatisfy(\.isFinite) {
            throw AdaptationError("\(name): state 'meanProbabilities' holds \(m.count) values"
                                  + (m.allSatisfy(\.isFinite) ? "" : ", not all finite") + "; expected \(numClasses) finite values, one per class")
        }
        let reliable = try state.count("reliableSampleCount", of: name)
        let updates = try state.count("updateSampleCount", of: name)
        try state.restore(update.optimizer, from: "optimizer", of: name)
        meanProbabilities = m
        (reliableSampleCount, updateSampleCount) = (reliable, updates)
    }
}
