import TTAModels
import TTANN
import TTATensor

// The building blocks methods are made of. Each is usable on its own.

/// One gradient update: backward of `∂L/∂logits` through the recorded forward, optimizer step, zero grad.
public struct GradientUpdate {
    public let optimizer: Optimizer
    public init(_ optimizer: Optimizer) { self.optimizer = optimizer }

    public func apply(_ dLogits: Tensor, model: any ImageClassifier, timer: inout PhaseTimer) {
        timer.measure(.backward) { model.backward(dLogits) }
        timer.measure(.update) {
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
/// `update_ema_variables` in CoTTA/RMT iterates `model.parameters()`.
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
