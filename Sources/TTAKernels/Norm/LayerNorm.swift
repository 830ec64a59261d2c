import Foundation

/// Layer normalisation over the last dimension of `x: (R, D)` (`F.layer_norm(x, (D,), γ, β, eps)`):
///
///     y = γ·(x − μ)·invStd + β,   μ, σ² = mean and biased variance of the row,   invStd = 1/√(σ² + eps)
///
/// Row statistics are accumulated in Double (as `batchNormStatistics`), so they match PyTorch's to float precision.

/// Normalises every row of `x` into `y` and writes each row's `mean` and `invStd` (kept for backward).
/// `y` may alias `x`. Parallel over rows.
package func layerNormForward(x: UnsafePointer<Float>, rows: Int, dim: Int,
                              gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float,
                              y: UnsafeMutablePointer<Float>,
                              mean: UnsafeMutablePointer<Float>, invStd: UnsafeMutablePointer<Float>) {
    let xs = SendablePointer(x), ys = SendablePointer(y), ms = SendablePointer(mean), ss = SendablePointer(invStd)
    let gs = SendablePointer(gamma), bs = SendablePointer(beta)
    let ranges = splitRange(rows, parts: KernelThreads.count)
    parallelFor(ranges.count) { r in
        for row in ranges[r] {
            let src = xs.base + row * dim, dst = ys.base + row * dim
            let mu = Double(vectorSum(src, dim)) / Double(dim)
            let v = Double(vectorSumSquaredDeviation(src, dim, from: Float(mu))) / Double(dim)
            let istd = Float(1 / (v + Double(eps)).squareRoot()), m = Float(mu)
            ms.base[row] = m
            ss.base[row] = istd
            for j in 0..<dim { dst[j] = (src[j] - m) * istd * gs.base[j] + bs.base[j] }
        }
    }
}

/// Backward of `layerNormForward`, with `x̂ = (x − μ)·invStd` and `g = γ ⊙ dy` per row:
///
///     dβ += Σ_rows dy,   dγ += Σ_rows dy ⊙ x̂
///     dx  = invStd · (g − mean(g) − x̂·mean(g ⊙ x̂))
///
/// `dx` is overwritten (parallel over rows); `dGamma`, `dBeta` are accumulated. Any output may be nil.
package func layerNormBackward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int, dim: Int,
                               mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
                               dx: UnsafeMutablePointer<Float>?, dGamma: UnsafeMutablePointer<Float>?,
                               dBeta: UnsafeMutablePointer<Float>?) {
    if dGamma != nil || dBeta != nil {
        var sg = [Double](repeating: 0, count: dim), sb = [Double](repeating: 0, count: dim)
        for row in 0..<rows {
            let m = mean[row], istd = invStd[row], d = dy + row * dim, xr = x + row * dim
            for j in 0..<dim {
                sb[j] += Double(d[j])
                sg[j] += Double(d[j] * ((xr[j] - m) * istd))
            }
        }
        if let dGamma { for j in 0..<dim { dGamma[j] += Float(sg[j]) } }
        if let dBeta { for j in 0..<dim { dBeta[j] += Float(sb[j]) } }
    }
    guard let dx else { return }
    let xs = SendablePointer(x), dys = SendablePointer(dy), dxs = SendablePointer(dx)
    let ms = SendablePointer(mean), ss = SendablePointer(invStd), gs = SendablePointer(gamma)
    let ranges = splitRange(rows, parts: KernelThreads.count)
    parallelFor(ranges.count) { r in
        for row in ranges[r] {
            let d = dys.base + row * dim, xr = xs.base + row * dim, out = dxs.base + row * dim
            let m = ms.base[row], istd = ss.base[row]
            var sumG = 0.0, sumGX = 0.0
            for j in 0..<dim {
                let g = Double(gs.base[j] * d[j])
                sumG += g
                sumGX += g * Double((xr[j] - m) * istd)
            }
            let a = Float(sumG / Double(dim)), b = Float(sumGX / Double(dim))
            for j in 0..<dim { out[j] = istd * (gs.base[j] * d[j] - a - (xr[j] - m) * istd * b) }
        }
    }
}

// MARK: - Reference twins (Double, direct formulas)

/// Mean and `1/√(biased variance + eps)` of one row, in Double.
private func layerNormRowStatisticsReference(_ row: UnsafePointer<Float>, _ dim: Int, _ eps: Float) -> (mean: Double, invStd: Double) {
    var s = 0.0
    for j in 0..<dim { s += Double(row[j]) }
    let mu = s / Double(dim)
    var q = 0.0
    for j in 0..<dim { let d = Double(row[j]) - mu; q += d * d }
    return (mu, 1 / (q / Double(dim) + Double(eps)).squareRoot())
}

/// Reference of `layerNormForward`, one row at a time in Double.
package func layerNormForwardReference(x: UnsafePointer<Float>, rows: Int, dim: Int,
                                       gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float,
                                       y: UnsafeMutablePointer<Float>) {
    for row in 0..<rows {
        let (mu, istd) = layerNormRowStatisticsReference(x + row * dim, dim, eps)
        for j in 0..<dim {
            y[row * dim + j] = Float((Double(x[row * dim + j]) - mu) * istd * Double(gamma[j]) + Double(beta[j]))
        }
    }
}

/// Reference of `layerNormBackward`: recomputes the row statistics and applies the chain rule in Double.
package func layerNormBackwardReference(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int, dim: Int,
                                        gamma: UnsafePointer<Float>, eps: Float, dx: UnsafeMutablePointer<Float>,
                                        dGamma: UnsafeMutablePointer<Float>, dBeta: UnsafeMutablePointer<Float>) {
    for row in 0..<rows {
        let (mu, istd) = layerNormRowStatisticsReference(x + row * dim, dim, eps)
        let xh = (0..<dim).map { (Double(x[row * dim + $0]) - mu) * istd }
        let g = (0..<dim).map { Double(gamma[$0]) * Double(dy[row * dim + $0]) }
        let meanG = g.reduce(0, +) / Double(dim)
        let meanGX = zip(g, xh).reduce(0) { $0 + $1.0 * $1.1 } / Double(dim)
        for j in 0..<dim {
            dx[row * dim + j] = Float(istd * (g[j] - meanG - xh[j] * meanGX))
            dGamma[j] += Float(Double(dy[row * dim + j]) * xh[j])
            dBeta[j] += dy[row * dim + j]
        }
    }
}
