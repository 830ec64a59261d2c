import Foundation

/// Multi-head scaled dot-product self-attention on packed projections, as timm's `Attention`:
///
///     qkv: (B, N, 3·D), each row [q | k | v], each of q, k, v split into H heads of hd = D/H columns
///     P_bh = softmax(scale · Q_bh K_bhᵀ)   (N × N, softmax over keys)
///     out[b, :, h·hd ..< (h+1)·hd] = P_bh V_bh,   out: (B, N, D)
///
/// The products go through `gemm` on strided views of `qkv` (no transposes are materialised); the
/// (b, h) pairs are split across threads, each running single-threaded GEMMs.

/// Writes `out (B, N, D)` and the attention probabilities `probs (B, H, N, N)` (kept for backward).
package func attentionForward(qkv: UnsafePointer<Float>, batch: Int, tokens n: Int, heads: Int, headDim hd: Int,
                              scale: Float, probs: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
    let d = heads * hd, ld = 3 * d
    let qs = SendablePointer(qkv), ps = SendablePointer(probs), os = SendablePointer(out)
    let ranges = splitRange(batch * heads, parts: KernelThreads.count)
    parallelFor(ranges.count) { r in
        for bh in ranges[r] {
            let (b, h) = bh.quotientAndRemainder(dividingBy: heads)
            let q = qs.base + b * n * ld + h * hd, p = ps.base + bh * n * n
            gemm(transA: false, transB: true, m: n, n: n, k: hd, alpha: scale, a: q, lda: ld, b: q + d, ldb: ld,
                 beta: 0, c: p, ldc: n, threads: 1)
            for row in 0..<n { softmaxInPlace(p + row * n, n) }
            gemm(transA: false, transB: false, m: n, n: hd, k: n, alpha: 1, a: p, lda: n, b: q + 2 * d, ldb: ld,
                 beta: 0, c: os.base + b * n * d + h * hd, ldc: d, threads: 1)
        }
    }
}

/// Backward of `attentionForward` given `dOut (B, N, D)`; overwrites `dqkv (B, N, 3·D)`:
///
///     dV = Pᵀ dO,   dP = dO Vᵀ,   dS = P ⊙ (dP − rowsum(dP ⊙ P)),   dQ = scale·dS K,   dK = scale·dSᵀ Q
package func attentionBackward(dOut: UnsafePointer<Float>, qkv: UnsafePointer<Float>, probs: UnsafePointer<Float>,
                               batch: Int, tokens n: Int, heads: Int, headDim hd: Int, scale: Float,
                               dqkv: UnsafeMutablePointer<Float>) {
    let d = heads * hd, ld = 3 * d
    let qs = SendablePointer(qkv), ps = SendablePointer(probs), dos = SendablePointer(dOut), dqs = SendablePointer(dqkv)
    let ranges = splitRange(batch * heads, parts: KernelThreads.count)
    parallelFor(ranges.count) { r in
        let ds = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        defer { ds.deallocate() }
        for bh in ranges[r] {
            let (b, h) = bh.quotientAndRemainder(dividingBy: heads)
            let q = qs.base + b * n * ld + h * hd, k = q + d, v = q + 2 * d
            let dq = dqs.base + b * n * ld + h * hd, dk = dq + d, dv = dq + 2 * d
            let p = ps.base + bh * n * n, dO = dos.base + b * n * d + h * hd
            gemm(transA: true, transB: false, m: n, n: hd, k: n, alpha: 1, a: p, lda: n, b: dO, ldb: d,
                 beta: 0, c: dv, ldc: ld, threads: 1)
            gemm(transA: false, transB: true, m: n, n: n, k: hd, alpha: 1, a: dO, lda: d, b: v, ldb: ld,
                 beta: 0, c: ds, ldc: n, threads: 1)
            for row in 0..<n {
                let pr = p + row * n, sr = ds + row * n
                let dot = vectorDot(pr, sr, n)
                for j in 0..<n { sr[j] = pr[j] * (sr[j] - dot) }
            }
            gemm(transA: false, transB: false, m: n, n: hd, k: n, alpha: scale, a: ds, lda: n, b: k, ldb: ld,
                 beta: 0, c: dq, ldc: ld, threads: 1)
            gemm(transA: true, transB: false, m: n, n: hd, k: n, alpha: scale, a: ds, lda: n, b: q, ldb: ld,
                 beta: 0, c: dk, ldc: ld, threads: 1)
        }
    }
}

/// Softmax of one row in place, max-subtracted, in Float (as PyTorch's float32 softmax).
@inline(__always)
private func softmaxInPlace(_ row: UnsafeMutablePointer<Float>, _ count: Int) {
    var mx = row[0]
    for j in 1..<count { mx = max(mx, row[j]) }
    var s: Float = 0
    for j in 0..<count { let e = exp(row[j] - mx); row[j] = e; s += e }
    let inv = 1 / s
    for j in 0..<count { row[j] *= inv }
}

// MARK: - Reference twins (Double, direct loops)

/// The attention probabilities of head `h` of sample `b`, in Double.
private func attentionProbabilitiesReference(_ qkv: UnsafePointer<Float>, b: Int, h: Int, n: Int, heads: Int, hd: Int,
                                             scale: Float) -> [[Double]] {
    let d = heads * hd, ld = 3 * d
    func at(_ t: Int, _ part: Int, _ j: Int) -> Double { Double(qkv[(b * n + t) * ld + part * d + h * hd + j]) }
    return (0..<n).map { i in
        let s = (0..<n).map { t in Double(scale) * (0..<hd).reduce(0.0) { $0 + at(i, 0, $1) * at(t, 1, $1) } }
        let mx = s.max()!
        let e = s.map { exp($0 - mx) }
        let z = e.reduce(0, +)
        return e.map { $0 / z }
    }
}

/// Reference of `attentionForward` (without the probabilities).
package func attentionForwardReference(qkv: UnsafePointer<Float>, batch: Int, tokens n: Int, heads: Int, headDim hd: Int,
                                       scale: Float, out: UnsafeMutablePointer<Float>) {
    let d = heads * hd, ld = 3 * d
    for b in 0..<batch {
        for h in 0..<heads {
            let p = attentionProbabilitiesReference(qkv, b: b, h: h, n: n, heads: heads, hd: hd, scale: scale)
            for i in 0..<n {
                for j in 0..<hd {
                    var s = 0.0
                    for t in 0..<n { s += p[i][t] * Double(qkv[(b * n + t) * ld + 2 * d + h * hd + j]) }
                    out[(b * n + i) * d + h * hd + j] = Float(s)
                }
            }
        }
    }
}

/// Reference of `attentionBackward`: recomputes the probabilities and applies the chain rule in Double.
package func attentionBackwardReference(dOut: UnsafePointer<Float>, qkv: UnsafePointer<Float>, batch: Int, tokens n: Int,
                                        heads: Int, headDim hd: Int, scale: Float, dqkv: UnsafeMutablePointer<Float>) {
    let d = heads * hd, ld = 3 * d
    for b in 0..<batch {
        for h in 0..<heads {
            let p = attentionProbabilitiesReference(qkv, b: b, h: h, n: n, heads: heads, hd: hd, scale: scale)
            func x(_ t: Int, _ part: Int, _ j: Int) -> Double { Double(qkv[(b * n + t) * ld + part * d + h * hd + j]) }
            func dO(_ t: Int, _ j: Int) -> Double { Double(dOut[(b * n + t) * d + h * hd + j]) }
            // dP[i][t] = Σ_j dO[i][j]·V[t][j];  dS = P ⊙ (dP − Σ_t dP·P)
            var dS = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
            for i in 0..<n {
                let dP = (0..<n).map { t in (0..<hd).reduce(0.0) { $0 + dO(i, $1) * x(t, 2, $1) } }
                let dot = zip(dP, p[i]).reduce(0.0) { $0 + $1.0 * $1.1 }
                for t in 0..<n { dS[i][t] = p[i][t] * (dP[t] - dot) }
            }
            for t in 0..<n {
                for j in 0..<hd {
                    var dq = 0.0, dk = 0.0, dv = 0.0
                    for i in 0..<n {
                        dq += dS[t][i] * x(i, 1, j)
                        dk += dS[i][t] * x(i, 0, j)
                        dv += p[i][t] * dO(i, j)
                    }
                    let row = (b * n + t) * ld + h * hd + j
                    dqkv[row] = Float(Double(scale) * dq)
                    dqkv[row + d] = Float(Double(scale) * dk)
                    dqkv[row + 2 * d] = Float(dv)
                }
            }
        }
    }
}
