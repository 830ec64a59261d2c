import Foundation

/// Losses on logits `(B, C)` used by the adaptation methods, each returning its value and writing its
/// gradient with respect to the (student) logits into `grad` (overwritten). All are means over the batch,
/// computed in Double from a numerically stable log-softmax.

/// Per-row log-softmax in Double.
@inline(__always)
private func logSoftmaxRow(_ z: UnsafePointer<Float>, _ c: Int) -> [Double] {
    var mx = z[0]
    for j in 1..<c { mx = max(mx, z[j]) }
    var s = 0.0
    for j in 0..<c { s += Foundation.exp(Double(z[j] - mx)) }
    let lse = Double(mx) + Foundation.log(s)
    return (0..<c).map { Double(z[$0]) - lse }
}

/// Mean softmax entropy (TENT): `L = (1/B) Σ_i −Σ_c p_ic log p_ic`.
/// `∂L/∂z_ij = −p_ij (log p_ij + H_i) / B`. When `rowWeights` is given, `L = (1/B) Σ_i w_i H_i`.
package func softmaxEntropyLoss(logits: UnsafePointer<Float>, b: Int, c: Int, grad: UnsafeMutablePointer<Float>?,
                                rowWeights: UnsafePointer<Float>? = nil) -> Float {
    var total = 0.0
    for i in 0..<b {
        let lp = logSoftmaxRow(logits + i * c, c)
        var h = 0.0
        for j in 0..<c { h -= Foundation.exp(lp[j]) * lp[j] }
        let w = rowWeights.map { Double($0[i]) } ?? 1
        total += w * h
        if let grad {
            for j in 0..<c { grad[i * c + j] = Float(-w * Foundation.exp(lp[j]) * (lp[j] + h) / Double(b)) }
        }
    }
    return Float(total / Double(b))
}

/// Per-row softmax entropies `H_i` (no gradient), e.g. for EATA/SAR-style filtering.
package func softmaxEntropies(logits: UnsafePointer<Float>, b: Int, c: Int) -> [Float] {
    (0..<b).map { i in
        let lp = logSoftmaxRow(logits + i * c, c)
        var h = 0.0
        for j in 0..<c { h -= Foundation.exp(lp[j]) * lp[j] }
        return Float(h)
    }
}

/// Cross-entropy with hard labels: `L = (1/B) Σ −log p_i,y_i`; `∂L/∂z = (p − onehot(y)) / B`.
package func crossEntropyLoss(logits: UnsafePointer<Float>, labels: UnsafePointer<Int>, b: Int, c: Int,
                              grad: UnsafeMutablePointer<Float>?) -> Float {
    var total = 0.0
    for i in 0..<b {
        let lp = logSoftmaxRow(logits + i * c, c)
        let y = labels[i]
        precondition(y >= 0 && y < c, "crossEntropyLoss: label \(y) out of range 0..<\(c)")
        total -= lp[y]
        if let grad {
            for j in 0..<c { grad[i * c + j] = Float((Foundation.exp(lp[j]) - (j == y ? 1 : 0)) / Double(b)) }
        }
    }
    return Float(total / Double(b))
}

/// Cross-entropy against soft targets `q` (rows of probabilities, held constant):
/// `L = (1/B) Σ_i −Σ_c q_ic log p_ic`; `∂L/∂z_ij = (p_ij Σ_c q_ic − q_ij) / B`.
package func softCrossEntropyLoss(logits: UnsafePointer<Float>, targets q: UnsafePointer<Float>, b: Int, c: Int,
                                  grad: UnsafeMutablePointer<Float>?) -> Float {
    var total = 0.0
    for i in 0..<b {
        let lp = logSoftmaxRow(logits + i * c, c)
        var sq = 0.0
        for j in 0..<c { total -= Double(q[i * c + j]) * lp[j]; sq += Double(q[i * c + j]) }
        if let grad {
            for j in 0..<c { grad[i * c + j] = Float((Foundation.exp(lp[j]) * sq - Double(q[i * c + j])) / Double(b)) }
        }
    }
    return Float(total / Double(b))
}

/// Symmetric cross-entropy between student logits `s` and constant teacher logits `t` (CoTTA ImageNet, RMT):
/// `L = (1/B) Σ_i [−½ Σ_c softmax(t)_ic log softmax(s)_ic − ½ Σ_c softmax(s)_ic log softmax(t)_ic]`.
/// Gradient w.r.t. `s` only (the teacher is detached):
/// term 1: `½ (p_s − p_t) / B`; term 2: `−½ p_s,j (log p_t,j − Σ_c p_s,c log p_t,c) / B`.
package func symmetricCrossEntropyLoss(logits s: UnsafePointer<Float>, teacherLogits t: UnsafePointer<Float>, b: Int, c: Int,
                                       grad: UnsafeMutablePointer<Float>?) -> Float {
    var total = 0.0
    for i in 0..<b {
        let ls = logSoftmaxRow(s + i * c, c), lt = logSoftmaxRow(t + i * c, c)
        var ce1 = 0.0, ce2 = 0.0
        for j in 0..<c {
            ce1 -= Foundation.exp(lt[j]) * ls[j]
            ce2 -= Foundation.exp(ls[j]) * lt[j]
        }
        total += 0.5 * ce1 + 0.5 * ce2
        if let grad {
            let mean = -ce2 // Σ_c p_s,c log p_t,c
            for j in 0..<c {
                let ps = Foundation.exp(ls[j]), pt = Foundation.exp(lt[j])
                let term1 = 0.5 * (ps - pt)
                let term2 = -0.5 * ps * (lt[j] - mean)
                grad[i * c + j] = Float((term1 + term2) / Double(b))
            }
        }
    }
    return Float(total / Double(b))
}
