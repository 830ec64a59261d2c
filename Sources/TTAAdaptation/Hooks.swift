import Foundation
import TTAModels
import TTANN
import TTATensor

// The building blocks methods are made of. Each is usable on its own.

/// One gradient update: backward of `∂L/∂logits` through the recorded forward, optimizer step, zero grad.
public struct GradientUpdate {
    public let optimizer: Optimizer
    public init(_ optimizer: Optimizer) { self.optimizer = optimizer }

    /// - Parameter regularize: adds the gradient of any loss term that does not go through the logits
    ///   (EATA's Fisher penalty) to the store's gradient arena, after backward and before the step.
    public func apply(_ dLogits: Tensor, model: any ImageClassifier, timer: inout PhaseTimer,
                      regularize: ((ParameterStore) -> Void)? = nil) {
        timer.measure(.backward) { model.backward(dLogits) }
        timer.measure(.update) {
            regularize?(model.store)
            optimizer.step()
            model.store.zeroGrads()
        }
    }
}

/// Entropy minimisation (TENT): forward with recording, mean softmax entropy, gradient update.
/// Returns the logits of the forward pass (before the update).
public func entropyMinimizationStep(_ x: Tensor, model: any ImageClassifier, update: GradientUpdate,
                                    timer: inout PhaseTimer) -> Tensor {
    let logits = timer.measure(.forward) { model.forward(x, .training) }
    update.apply(Loss.softmaxEntropy(logits).gradient, model: model, timer: &timer)
    return logits
}

/// Mean teacher: `θ′ ← m·θ′ + (1 − m)·θ` over every parameter (not the BN buffers), as
/// the reference's `ema_update_model` (`utils/misc.py`, `update_all=True` in CoTTA and RMT) iterates
/// `model.parameters()`.
public func updateMeanTeacher(_ teacher: ParameterStore, from student: ParameterStore, momentum m: Float) {
    precondition(teacher.totalCount == student.totalCount, "updateMeanTeacher: models differ")
    let t = teacher.allValuesMutable.baseAddress!, s = student.allValues.baseAddress!
    for e in student.entries where e.kind == .parameter {
        for i in e.offset..<(e.offset + e.count) { t[i] = m * t[i] + (1 - m) * s[i] }
    }
}

/// Stochastic restore (CoTTA): every element of every trainable parameter goes back to its source
/// value with probability `p` (an element-wise Bernoulli mask, `rand < p`).
public func stochasticRestore(_ store: ParameterStore, source: ParameterStore.Snapshot, probability p: Float,
                              using g: inout SeededGenerator) {
    guard p > 0 else { return }
    let v = store.allValuesMutable.baseAddress!
    for (i, e) in store.entries.enumerated() where store.trainable[i] {
        for j in e.offset..<(e.offset + e.count) where g.nextUniform() < p { v[j] = source.values[j] }
    }
}

/// EATA/ETA/SAR's reliability margin `E0 = factor·ln C` (`EATA.MARGIN_E0 · log(num_classes)`).
public func entropyMargin(factor: Float, numClasses: Int) -> Float {
    Float(Double(factor) * Foundation.log(Double(numClasses)))
}

/// The softmax entropy `H_i = −Σ_c p_ic log p_ic` of every row of `(N, C)` logits, in Double.
public func softmaxEntropies(_ logits: Tensor) -> [Float] {
    (0..<logits.shape[0]).map { i in
        let lp = logSoftmaxRow(logits, i)
        return Float(-lp.reduce(0) { $0 + Foundation.exp($1) * $1 })
    }
}

/// The samples among `candidates` whose entropy is below `margin` (the "reliable" samples of EATA
/// and SAR: `torch.where(entropys < margin)`), in order.
public func reliableSamples(_ entropies: [Float], below margin: Float, among candidates: [Int]? = nil) -> [Int] {
    (candidates ?? Array(entropies.indices)).filter { entropies[$0] < margin }
}

/// Mean entropy over a subset `S` of the rows, optionally weighted:
/// `L = (1/|S|) Σ_{i∈S} w_i H_i`, with `∂L/∂z_ij = −(w_i/|S|) p_ij (log p_ij + H_i)` on the rows of `S`
/// and zero elsewhere. The weights are constants (detached, as EATA's `exp(E0 − H_i)`).
/// An empty `S` gives the value NaN (PyTorch's mean of nothing) and a zero gradient.
/// - Parameters:
///   - samples: row indices `S`, no repeats.
///   - weights: `w_i` for each entry of `samples` (all 1 when nil).
public func subsetEntropyLoss(_ logits: Tensor, samples: [Int], weights: [Float]? = nil) -> (value: Float, gradient: Tensor) {
    precondition(logits.rank == 2, "subsetEntropyLoss: expected (N, C) logits, got \(logits.shape)")
    precondition(weights == nil || weights!.count == samples.count, "subsetEntropyLoss: one weight per sample")
    let c = logits.shape[1]
    var grad = Tensor(shape: logits.shape)
    guard !samples.isEmpty else { return (.nan, grad) }
    let n = Double(samples.count)
    var total = 0.0
    for (k, i) in samples.enumerated() {
        let lp = logSoftmaxRow(logits, i)
        let h = -lp.reduce(0) { $0 + Foundation.exp($1) * $1 }
        let w = weights.map { Double($0[k]) } ?? 1
        total += w * h
        for j in 0..<c { grad.storage[i * c + j] = Float(-w / n * Foundation.exp(lp[j]) * (lp[j] + h)) }
    }
    return (Float(total / n), grad)
}

/// `a·b / √max(‖a‖²‖b‖², 1e-16)`, as `F.cosine_similarity` (EATA's redundancy filter, ROID's diversity weight).
func cosineSimilarity(_ a: [Double], _ b: ArraySlice<Float>) -> Double {
    var (dot, aa, bb) = (0.0, 0.0, 0.0)
    for (x, y) in zip(a, b) { dot += x * Double(y); aa += x * x; bb += Double(y) * Double(y) }
    return dot / max(aa * bb, 1e-16).squareRoot()
}

/// Log-softmax of row `i` of `(N, C)` logits, in Double.
private func logSoftmaxRow(_ logits: Tensor, _ i: Int) -> [Double] {
    let c = logits.shape[1]
    let row = logits.storage[(i * c)..<((i + 1) * c)].map(Double.init)
    let mx = row.max()!
    let lse = mx + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - mx) })
    return row.map { $0 - lse }
}
