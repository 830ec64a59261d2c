import TTAKernels
import TTATensor

/// A loss value and its gradient with respect to the logits it was computed from.
public struct LossResult: Sendable {
    public let value: Float
    public let gradient: Tensor
}

/// Losses on `(B, C)` logits, each with its gradient (see `TTAKernels/Loss.swift` for the formulas).
public enum Loss {
    /// Mean softmax entropy over the batch (TENT).
    public static func softmaxEntropy(_ logits: Tensor) -> LossResult {
        let (b, c) = dims(logits)
        var g = Tensor(shape: logits.shape)
        let v = logits.withUnsafeBufferPointer { lp in
            g.withUnsafeMutableBufferPointer { gp in softmaxEntropyLoss(logits: lp.baseAddress!, b: b, c: c, grad: gp.baseAddress!) }
        }
        return LossResult(value: v, gradient: g)
    }

    /// Cross-entropy with hard labels.
    public static func crossEntropy(_ logits: Tensor, labels: [Int]) -> LossResult {
        let (b, c) = dims(logits)
        precondition(labels.count == b, "crossEntropy: \(labels.count) labels for \(b) rows")
        var g = Tensor(shape: logits.shape)
        let v = logits.withUnsafeBufferPointer { lp in
            labels.withUnsafeBufferPointer { yp in
                g.withUnsafeMutableBufferPointer { gp in crossEntropyLoss(logits: lp.baseAddress!, labels: yp.baseAddress!, b: b, c: c, grad: gp.baseAddress!) }
            }
        }
        return LossResult(value: v, gradient: g)
    }

    /// Cross-entropy against soft target probabilities (CoTTA on CIFAR: `softmax(teacher)`).
    public static func softCrossEntropy(_ logits: Tensor, targets: Tensor) -> LossResult {
        let (b, c) = dims(logits)
        precondition(targets.shape == logits.shape, "softCrossEntropy: targets \(targets.shape) vs logits \(logits.shape)")
        var g = Tensor(shape: logits.shape)
        let v = logits.withUnsafeBufferPointer { lp in
            targets.withUnsafeBufferPointer { tp in
                g.withUnsafeMutableBufferPointer { gp in softCrossEntropyLoss(logits: lp.baseAddress!, targets: tp.baseAddress!, b: b, c: c, grad: gp.baseAddress!) }
            }
        }
        return LossResult(value: v, gradient: g)
    }

    /// Symmetric cross-entropy between student logits and detached teacher logits (CoTTA ImageNet, RMT).
    public static func symmetricCrossEntropy(_ logits: Tensor, teacher: Tensor) -> LossResult {
        let (b, c) = dims(logits)
        precondition(teacher.shape == logits.shape, "symmetricCrossEntropy: teacher \(teacher.shape) vs logits \(logits.shape)")
        var g = Tensor(shape: logits.shape)
        let v = logits.withUnsafeBufferPointer { lp in
            teacher.withUnsafeBufferPointer { tp in
                g.withUnsafeMutableBufferPointer { gp in symmetricCrossEntropyLoss(logits: lp.baseAddress!, teacherLogits: tp.baseAddress!, b: b, c: c, grad: gp.baseAddress!) }
            }
        }
        return LossResult(value: v, gradient: g)
    }

    private static func dims(_ t: Tensor) -> (Int, Int) {
        precondition(t.rank == 2 && t.shape[1] > 0, "loss: expected (B, C) logits, got \(t.shape)")
        return (t.shape[0], t.shape[1])
    }
}

extension Tensor {
    /// Row-wise softmax of `(N, C)` logits.
    public func softmaxRows() -> Tensor {
        precondition(rank == 2)
        var y = Tensor(shape: shape)
        withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in TTAKernels.softmaxRows(x: xp.baseAddress!, y: yp.baseAddress!, n: shape[0], c: shape[1]) }
        }
        return y
    }

    /// Row-wise log-softmax of `(N, C)` logits.
    public func logSoftmaxRows() -> Tensor {
        precondition(rank == 2)
        var y = Tensor(shape: shape)
        withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in TTAKernels.logSoftmaxRows(x: xp.baseAddress!, y: yp.baseAddress!, n: shape[0], c: shape[1]) }
        }
        return y
    }
}
