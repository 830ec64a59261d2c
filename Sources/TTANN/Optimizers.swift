import Foundation
import TTATensor

/// An optimizer over the trainable entries of a `ParameterStore`, with PyTorch's update rules.
/// `step()` reads the gradient arena and updates the values; it does not zero the gradients.
public protocol Optimizer: AnyObject {
    /// Applies one update to every trainable parameter.
    func step()
    /// Forgets all state (momentum buffers, Adam moments, step count).
    func reset()
    /// The optimizer's state, for snapshots and checkpoints.
    var state: OptimizerState { get set }
    /// The store whose trainable entries it updates.
    var store: ParameterStore { get }
    /// Whether it keeps a second buffer per parameter (Adam's second moments).
    var keepsSecondBuffers: Bool { get }
}

/// Per-parameter optimizer buffers, keyed by entry index, and the step count.
public struct OptimizerState: Sendable, Equatable {
    public var step: Int = 0
    public var buffers: [Int: [Float]] = [:]
    public var secondBuffers: [Int: [Float]] = [:]
    public init() {}

    /// What is wrong with this state as the state of `optimizer` (a state read from a file), or nil: every
    /// buffer must be for an entry it updates and hold that entry's number of values, and second buffers
    /// only where it keeps them. Entries are named `<prefix>.buffers.<i>`, as `MethodState` stores them.
    public func problem(for optimizer: any Optimizer, prefix: String) -> String? {
        let store = optimizer.store
        for (kind, table) in [("buffers", buffers), ("secondBuffers", secondBuffers)] {
            for (i, values) in table.sorted(by: { $0.key < $1.key }) {
                let key = "\(prefix).\(kind).\(i)"
                if kind == "secondBuffers" && !optimizer.keepsSecondBuffers {
                    return "'\(key)' is not used: this optimizer keeps one buffer per parameter"
                }
                guard store.entries.indices.contains(i), store.trainable[i] else {
                    return "'\(key)' is for entry \(i), which is not a parameter this optimizer updates"
                }
                let e = store.entries[i]
                guard values.count == e.count else {
                    return "'\(key)' holds \(values.count) values; parameter \(i) (\(e.name), shape \(e.shape)) has \(e.count)"
                }
            }
        }
        return nil
    }
}

/// `torch.optim.SGD(lr, momentum, dampening, weight_decay, nesterov)`:
///
///     g = ∇ + wd·p
///     buf = g                                  (first step)
///     buf = momentum·buf + (1 − dampening)·g   (later steps)
///     g = nesterov ? g + momentum·buf : buf    (when momentum ≠ 0)
///     p -= lr·g
public final class SGD: Optimizer {
    public let store: ParameterStore
    public var lr, momentum, dampening, weightDecay: Float
    public var nesterov: Bool
    public var state = OptimizerState()
    public var keepsSecondBuffers: Bool { false }

    public init(_ store: ParameterStore, lr: Float, momentum: Float = 0, dampening: Float = 0,
                weightDecay: Float = 0, nesterov: Bool = false) {
        precondition(!nesterov || (momentum > 0 && dampening == 0), "SGD: Nesterov momentum requires a momentum and zero dampening")
        self.store = store
        (self.lr, self.momentum, self.dampening, self.weightDecay, self.nesterov) = (lr, momentum, dampening, weightDecay, nesterov)
    }

    public func reset() { state = OptimizerState() }

    public func step() {
        state.step += 1
        for (i, e) in store.entries.enumerated() where store.trainable[i] {
            let p = store.allValuesMutable.baseAddress! + e.offset
            let gp = store.allGrads.baseAddress! + e.offset
            var buf = momentum != 0 ? (state.buffers[i] ?? []) : []
            let first = buf.isEmpty
            if momentum != 0 && first { buf = [Float](repeating: 0, count: e.count) }
            for j in 0..<e.count {
                var g = gp[j]
                if weightDecay != 0 { g += weightDecay * p[j] }
                if momentum != 0 {
                    buf[j] = first ? g : momentum * buf[j] + (1 - dampening) * g
                    g = nesterov ? g + momentum * buf[j] : buf[j]
                }
                p[j] -= lr * g
            }
            if momentum != 0 { state.buffers[i] = buf }
        }
    }
}

/// `torch.optim.Adam(lr, betas=(β1, β2), eps, weight_decay)` (L2 added to the gradient, not AdamW):
///
///     g = ∇ + wd·p;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
///     p -= lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)
public final class Adam: Optimizer {
    public let store: ParameterStore
    public var lr, beta1, beta2, eps, weightDecay: Float
    public var state = OptimizerState()
    public var keepsSecondBuffers: Bool { true }

    public init(_ store: ParameterStore, lr: Float, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8,
                weightDecay: Float = 0) {
        self.store = store
        (self.lr, self.beta1, self.beta2, self.eps, self.weightDecay) = (lr, beta1, beta2, eps, weightDecay)
    }

    public func reset() { state = OptimizerState() }

    public func step() {
        state.step += 1
        let t = Double(state.step)
        let bc1 = 1 - Foundation.pow(Double(beta1), t), bc2 = 1 - Foundation.pow(Double(beta2), t)
        let stepSize = Float(Double(lr) / bc1)
        let bc2Sqrt = Float(bc2.squareRoot())
        for (i, e) in store.entries.enumerated() where store.trainable[i] {
            let p = store.allValuesMutable.baseAddress! + e.offset
            let gp = store.allGrads.baseAddress! + e.offset
            var m = state.buffers[i] ?? [Float](repeating: 0, count: e.count)
            var v = state.secondBuffers[i] ?? [Float](repeating: 0, count: e.count)
            for j in 0..<e.count {
                var g = gp[j]
                if weightDecay != 0 { g += weightDecay * p[j] }
                m[j] += (g - m[j]) * (1 - beta1)      // torch: exp_avg.lerp_(grad, 1 - beta1)
                v[j] = v[j] * beta2 + (1 - beta2) * g * g
                let denom = v[j].squareRoot() / bc2Sqrt + eps
                p[j] -= stepSize * m[j] / denom
            }
            state.buffers[i] = m
            state.secondBuffers[i] = v
        }
    }
}
