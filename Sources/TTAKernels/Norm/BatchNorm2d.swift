import Foundation

/// Batch normalisation over `x: (N, C, HW)` (NCHW with H·W flattened), PyTorch semantics:
///
///     y = γ·(x − μ)·invStd + β,   invStd = 1/√(σ² + eps)
///
/// In batch-statistics modes μ and σ² are the batch mean and the **biased** batch variance over
/// (N, H, W); the running-variance update (done by the layer) uses the unbiased one, σ²·M/(M−1).
/// Statistics are accumulated in Double so that they match PyTorch's to float precision.

/// Per-channel batch mean and biased variance of `x: (N, C, HW)`. Two passes (mean, then squared
/// deviations), parallel over channels.
package func batchNormStatistics(x: UnsafePointer<Float>, n: Int, c: Int, hw: Int,
                                 mean: UnsafeMutablePointer<Float>, variance: UnsafeMutablePointer<Float>) {
    let xs = SendablePointer(x), ms = SendablePointer(mean), vs = SendablePointer(variance)
    let ranges = splitRange(c, parts: KernelThreads.count)
    parallelFor(ranges.count) { r in
        for ch in ranges[r] {
            var s = 0.0
            for i in 0..<n { s += Double(vectorSum(xs.base + (i * c + ch) * hw, hw)) }
            let m = s / Double(n * hw)
            var q = 0.0
            for i in 0..<n { q += Double(vectorSumSquaredDeviation(xs.base + (i * c + ch) * hw, hw, from: Float(m))) }
            ms.base[ch] = Float(m)
            vs.base[ch] = Float(q / Double(n * hw))
        }
    }
}

/// `y = (x − mean)·invStd·γ + β`, then `max(y, 0)` when `relu`. `y` may alias `x`.
///
/// In PyTorch's order of operations, whose float rounding decides the sign of values near 0 and so which a ReLU
/// after the layer passes: `nn.BatchNorm2d`'s CPU kernel folds the mean into the shift, `x·s + (β − mean·s)` with
/// `s = invStd·γ`; the references' BN written in Python (RoTTA's robust BN) compute `(x − mean) / sd · γ + β`, taken
/// when `standardDeviation` (`sd = √(σ² + eps)`, per channel) is given.
package func batchNormApply(x: UnsafePointer<Float>, n: Int, c: Int, hw: Int,
                            mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>,
                            gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                            y: UnsafeMutablePointer<Float>, relu: Bool = false, standardDeviation: UnsafePointer<Float>? = nil) {
    let xs = SendablePointer(x), ys = SendablePointer(y)
    let rows = n * c
    let ranges = splitRange(rows, parts: KernelThreads.count)
    parallelFor(ranges.count) { r in
        for row in ranges[r] {
            let ch = row % c
            if let sd = standardDeviation {
                normalizeRow(xs.base + row * hw, ys.base + row * hw, hw, mean[ch], sd[ch], gamma[ch], beta[ch], relu)
            } else {
                let scale = invStd[ch] * gamma[ch]
                affineRow(xs.base + row * hw, ys.base + row * hw, hw, scale, beta[ch] - mean[ch] * scale, relu)
            }
        }
    }
}

/// `out[i] = in[i]·scale + shift` (clamped at 0 when `relu`).
@inline(__always)
private func affineRow(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ count: Int,
                       _ scale: Float, _ shift: Float, _ relu: Bool) {
    let sv = SIMD8<Float>(repeating: scale), bv = SIMD8<Float>(repeating: shift), zero = SIMD8<Float>()
    let rs = UnsafeRawPointer(src), rd = UnsafeMutableRawPointer(dst)
    var i = 0
    if relu {
        while i + 8 <= count {
            let v = rs.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) * sv + bv
            rd.storeBytes(of: v.replacing(with: zero, where: v .< zero), toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count { dst[i] = max(src[i] * scale + shift, 0); i += 1 }
    } else {
        while i + 8 <= count {
            let v = rs.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) * sv + bv
            rd.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count { dst[i] = src[i] * scale + shift; i += 1 }
    }
}

/// `out[i] = (in[i] − mean) / sd · γ + β` (clamped at 0 when `relu`): the Python references' order of operations.
@inline(__always)
private func normalizeRow(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ count: Int,
                          _ mean: Float, _ sd: Float, _ gamma: Float, _ beta: Float, _ relu: Bool) {
    let mv = SIMD8<Float>(repeating: mean), dv = SIMD8<Float>(repeating: sd)
    let gv = SIMD8<Float>(repeating: gamma), bv = SIMD8<Float>(repeating: beta), zero = SIMD8<Float>()
    let rs = UnsafeRawPointer(src), rd = UnsafeMutableRawPointer(dst)
    var i = 0
    while i + 8 <= count {
        var v = (rs.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - mv) / dv * gv + bv
        if relu { v = v.replacing(with: zero, where: v .< zero) }
        rd.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count {
        let v = (src[i] - mean) / sd * gamma + beta
        dst[i] = relu ? max(v, 0) : v
        i += 1
    }
}

/// Backward of batch normalisation.
///
/// With `batchStatistics` (μ, σ² computed from this batch, M = N·HW per channel):
///
///     x̂ = (x − μ)·invStd
///     dβ += Σ dy                         // term 1
///     dγ += Σ dy·x̂                       // term 2
///     dx  = γ·invStd/M · (M·dy − Σdy − x̂·Σ dy·x̂)
///
/// Otherwise μ and invStd are constants (running statistics) and `dx = dy·γ·invStd`.
///
/// With a `batchWeight` α < 1 (RoTTA's robust BN: μ = (1−α)·μ_run + α·μ_B, σ² = (1−α)·σ²_run + α·σ²_B,
/// `batchMean` = μ_B) only the batch part depends on x:
///
///     dx = γ·invStd · (dy − α·Σdy/M − α·invStd²·(x − μ_B)·Σ dy·(x − μ)/M)
///
/// which is the formula above at α = 1, μ_B = μ.
/// `dx` is overwritten; `dGamma` and `dBeta` are accumulated. Any output may be nil to skip it.
package func batchNormBackward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, n: Int, c: Int, hw: Int,
                               mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
                               batchStatistics: Bool, batchWeight: Float = 1, batchMean: UnsafePointer<Float>? = nil,
                               dx: UnsafeMutablePointer<Float>?, dGamma: UnsafeMutablePointer<Float>?,
                               dBeta: UnsafeMutablePointer<Float>?) {
    let batchMeanS = batchMean.map(SendablePointer.init)
    let xs = SendablePointer(x), dys = SendablePointer(dy)
    let dxs = dx.map(SendablePointer.init), dgs = dGamma.map(SendablePointer.init), dbs = dBeta.map(SendablePointer.init)
    let ranges = splitRange(c, parts: KernelThreads.count)
    parallelFor(ranges.count) { r in
        for ch in ranges[r] {
            let mu = mean[ch], istd = invStd[ch]
            // Σ dy and Σ dy·(x − μ), per channel.
            var sdy = 0.0, sdyx = 0.0
            for i in 0..<n {
                let off = (i * c + ch) * hw
                sdy += Double(vectorSum(dys.base + off, hw))
                sdyx += Double(vectorDotCentered(dys.base + off, xs.base + off, hw, from: mu))
            }
            let sdyxhat = sdyx * Double(istd)
            dbs?.base[ch] += Float(sdy)
            dgs?.base[ch] += Float(sdyxhat)
            guard let dxp = dxs?.base else { continue }
            let g = gamma[ch]
            if batchStatistics {
                let m = Double(n * hw)
                // dx = k·(dy − a − x̂·b), k = γ·invStd, a = Σdy/M, b = Σdy·x̂/M
                let k = g * istd
                let a = Float(sdy / m), b = Float(sdyxhat / m)
                // x̂·b = (x − μ)·istd·b → dx = k·dy − α·k·a − α·k·istd·b·(x − μ_B)
                let muB = batchMeanS?.base[ch] ?? mu
                let c1 = k, c2 = -batchWeight * k * istd * b, c0 = -batchWeight * k * a
                for i in 0..<n {
                    let off = (i * c + ch) * hw
                    combineRow(dys.base + off, xs.base + off, dxp + off, hw, c1, c2, c0, center: muB)
                }
            } else {
                let k = g * istd
                for i in 0..<n {
                    let off = (i * c + ch) * hw
                    combineRow(dys.base + off, xs.base + off, dxp + off, hw, k, 0, 0, center: 0)
                }
            }
        }
    }
}

/// `out = c1·dy + c2·(x − center) + c0`. The centre is subtracted first: with x's offset large against its spread,
/// `c2·x` and `c2·center` would cancel, and their difference keep few digits.
@inline(__always)
private func combineRow(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                        _ count: Int, _ c1: Float, _ c2: Float, _ c0: Float, center: Float) {
    let v1 = SIMD8<Float>(repeating: c1), v2 = SIMD8<Float>(repeating: c2), v0 = SIMD8<Float>(repeating: c0)
    let vc = SIMD8<Float>(repeating: center)
    let rd = UnsafeRawPointer(dy), rx = UnsafeRawPointer(x), ro = UnsafeMutableRawPointer(out)
    var i = 0
    while i + 8 <= count {
        let a = rd.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        let b = rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        ro.storeBytes(of: a * v1 + (b - vc) * v2 + v0, toByteOffset: i * 4, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count { out[i] = c1 * dy[i] + c2 * (x[i] - center) + c0; i += 1 }
}

// MARK: - Reference twins (Double, direct formulas)

/// Reference of `batchNormStatistics` + `batchNormApply`: normalises with the given or the batch statistics.
/// When `mean`/`variance` are nil the batch's are used (and returned through `batchMean`/`batchVariance`).
package func batchNormForwardReference(x: UnsafePointer<Float>, n: Int, c: Int, hw: Int,
                                       mean: UnsafePointer<Float>?, variance: UnsafePointer<Float>?,
                                       gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float,
                                       y: UnsafeMutablePointer<Float>,
                                       batchMean: UnsafeMutablePointer<Float>?, batchVariance: UnsafeMutablePointer<Float>?) {
    for ch in 0..<c {
        var mu: Double, v: Double
        if let mean, let variance {
            mu = Double(mean[ch]); v = Double(variance[ch])
        } else {
            var s = 0.0
            for i in 0..<n { for j in 0..<hw { s += Double(x[(i * c + ch) * hw + j]) } }
            mu = s / Double(n * hw)
            var q = 0.0
            for i in 0..<n { for j in 0..<hw { let d = Double(x[(i * c + ch) * hw + j]) - mu; q += d * d } }
            v = q / Double(n * hw)
            batchMean?[ch] = Float(mu); batchVariance?[ch] = Float(v)
        }
        let istd = 1 / (v + Double(eps)).squareRoot()
        for i in 0..<n {
            for j in 0..<hw {
                let idx = (i * c + ch) * hw + j
                y[idx] = Float((Double(x[idx]) - mu) * istd * Double(gamma[ch]) + Double(beta[ch]))
            }
        }
    }
}

/// Reference of `batchNormBackward`, straight from the chain rule in Double.
package func batchNormBackwardReference(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, n: Int, c: Int, hw: Int,
                                        mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
                                        batchStatistics: Bool, batchWeight: Float = 1, batchMean: UnsafePointer<Float>? = nil,
                                        dx: UnsafeMutablePointer<Float>,
                                        dGamma: UnsafeMutablePointer<Float>, dBeta: UnsafeMutablePointer<Float>) {
    for ch in 0..<c {
        let mu = Double(mean[ch]), istd = Double(invStd[ch]), g = Double(gamma[ch])
        let m = Double(n * hw)
        var sdy = 0.0, sdyxh = 0.0
        for i in 0..<n {
            for j in 0..<hw {
                let idx = (i * c + ch) * hw + j
                sdy += Double(dy[idx]); sdyxh += Double(dy[idx]) * (Double(x[idx]) - mu) * istd
            }
        }
        dBeta[ch] += Float(sdy); dGamma[ch] += Float(sdyxh)
        for i in 0..<n {
            for j in 0..<hw {
                let idx = (i * c + ch) * hw + j
                // The batch part of μ and σ² (weight α) depends on x: ∂μ/∂x = α/M, ∂σ²/∂x = 2α(x − μ_B)/M.
                let a = Double(batchWeight), muB = batchMean.map { Double($0[ch]) } ?? mu
                let xhB = (Double(x[idx]) - muB) * istd
                dx[idx] = batchStatistics
                    ? Float(g * istd / m * (m * Double(dy[idx]) - a * sdy - a * xhB * sdyxh))
                    : Float(Double(dy[idx]) * g * istd)
            }
        }
    }
}

// MARK: - Per-sample statistics (UnMix-TNS)
//
// Each row r = (sample, channel) of `x: (N, C, HW)` is normalised with its own statistics μ_r, σ²_r,
// which are functions of the row's instance mean m_r and biased variance v_r (and of constants: the
// UnMix-TNS components and the detached component assignments):
//
//     y = γ_c·(x − μ_r)·invStd_r + β_c,   invStd_r = 1/√(σ²_r + eps)
//
// The caller gives the slopes a_r = ∂μ/∂m, b_r = ∂σ²/∂m, c_r = ∂σ²/∂v (μ does not depend on v). With
// S1 = Σ dy, S2 = Σ dy·(x − μ) over the row's HW values and M = HW:
//
//     ∂L/∂μ  = −γ·invStd·S1              ∂L/∂σ² = −½·γ·invStd³·S2
//     ∂L/∂m  = a·∂L/∂μ + b·∂L/∂σ²        ∂L/∂v  = c·∂L/∂σ²
//     dx     = γ·invStd·dy + ∂L/∂m/M + ∂L/∂v·2(x − m)/M     (∂m/∂x = 1/M, ∂v/∂x = 2(x − m)/M)
//     dγ_c  += Σ_rows of c invStd·S2,    dβ_c += Σ_rows of c S1
//
// Batch statistics are the special case of one "row" per channel spanning the batch, a = c = 1, b = 0.

/// `y = (x − mean_r) / sd_r · γ_c + β_c` with per-row statistics (`mean`, `standardDeviation` = √(σ²_r + eps): N·C
/// each), in the order of operations of the reference's UnMix-TNS layer (Python; see `batchNormApply`). `y` may alias `x`.
package func sampleNormApply(x: UnsafePointer<Float>, n: Int, c: Int, hw: Int,
                             mean: UnsafePointer<Float>, standardDeviation: UnsafePointer<Float>,
                             gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
    let xs = SendablePointer(x), ys = SendablePointer(y)
    let ranges = splitRange(n * c, parts: KernelThreads.count)
    parallelFor(ranges.count) { r in
        for row in ranges[r] {
            let ch = row % c
            normalizeRow(xs.base + row * hw, ys.base + row * hw, hw, mean[row], standardDeviation[row], gamma[ch], beta[ch], false)
        }
    }
}

/// Backward of `sampleNormApply` when the per-row statistics depend on the row's instance statistics
/// (see the section comment): `instanceMean` m_r, and the slopes `meanByMean` a_r, `varianceByMean` b_r,
/// `varianceByVariance` c_r (N·C each). `dx` is overwritten; `dGamma` and `dBeta` are accumulated; any
/// output may be nil to skip it. Parallel over channels.
package func sampleNormBackward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, n: Int, c: Int, hw: Int,
                                mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
                                instanceMean: UnsafePointer<Float>, meanByMean: UnsafePointer<Float>,
                                varianceByMean: UnsafePointer<Float>, varianceByVariance: UnsafePointer<Float>,
                                dx: UnsafeMutablePointer<Float>?, dGamma: UnsafeMutablePointer<Float>?,
                                dBeta: UnsafeMutablePointer<Float>?) {
    let xs = SendablePointer(x), dys = SendablePointer(dy)
    let dxs = dx.map(SendablePointer.init), dgs = dGamma.map(SendablePointer.init), dbs = dBeta.map(SendablePointer.init)
    let m = Double(hw)
    let ranges = splitRange(c, parts: KernelThreads.count)
    parallelFor(ranges.count) { r in
        for ch in ranges[r] {
            let g = Double(gamma[ch])
            var sumDy = 0.0, sumDyXhat = 0.0
            for i in 0..<n {
                let row = i * c + ch, off = row * hw
                let s = Double(invStd[row])
                let s1 = Double(vectorSum(dys.base + off, hw))
                let s2 = Double(vectorDotCentered(dys.base + off, xs.base + off, hw, from: mean[row]))
                sumDy += s1
                sumDyXhat += s * s2
                guard let dxp = dxs?.base else { continue }
                let dMu = -g * s * s1, dVar = -0.5 * g * s * s * s * s2
                let dm = Double(meanByMean[row]) * dMu + Double(varianceByMean[row]) * dVar
                let dv = Double(varianceByVariance[row]) * dVar
                // dx = c1·dy + c2·(x − m_b) + c0
                let c2 = 2 * dv / m
                combineRow(dys.base + off, xs.base + off, dxp + off, hw, Float(g * s), Float(c2), Float(dm / m), center: instanceMean[row])
            }
            dbs?.base[ch] += Float(sumDy)
            dgs?.base[ch] += Float(sumDyXhat)
        }
    }
}

/// Reference of `sampleNormApply`, in Double.
package func sampleNormForwardReference(x: UnsafePointer<Float>, n: Int, c: Int, hw: Int,
                                        mean: UnsafePointer<Float>, variance: UnsafePointer<Float>, eps: Float,
                                        gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
    for row in 0..<(n * c) {
        let ch = row % c
        let istd = 1 / (Double(variance[row]) + Double(eps)).squareRoot()
        for j in 0..<hw {
            let idx = row * hw + j
            y[idx] = Float((Double(x[idx]) - Double(mean[row])) * istd * Double(gamma[ch]) + Double(beta[ch]))
        }
    }
}

/// Reference of `sampleNormBackward`, straight from the chain rule in Double: the gradients of μ_r and
/// σ²_r, then through m_r and v_r (recomputed here from `x`) to every input value.
package func sampleNormBackwardReference(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, n: Int, c: Int, hw: Int,
                                         mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
                                         meanByMean: UnsafePointer<Float>, varianceByMean: UnsafePointer<Float>,
                                         varianceByVariance: UnsafePointer<Float>,
                                         dx: UnsafeMutablePointer<Float>, dGamma: UnsafeMutablePointer<Float>,
                                         dBeta: UnsafeMutablePointer<Float>) {
    for row in 0..<(n * c) {
        let ch = row % c
        let g = Double(gamma[ch]), mu = Double(mean[row]), s = Double(invStd[row])
        var instance = 0.0
        for j in 0..<hw { instance += Double(x[row * hw + j]) }
        instance /= Double(hw)
        var dMu = 0.0, dVar = 0.0, db = 0.0, dg = 0.0
        for j in 0..<hw {
            let idx = row * hw + j, d = Double(dy[idx]), xc = Double(x[idx]) - mu
            db += d
            dg += d * xc * s
            dMu += -d * g * s                        // ∂y/∂μ = −γ·invStd
            dVar += d * g * xc * (-0.5) * s * s * s  // ∂y/∂σ² = −½·γ·(x − μ)·invStd³
        }
        dBeta[ch] += Float(db)
        dGamma[ch] += Float(dg)
        let dm = Double(meanByMean[row]) * dMu + Double(varianceByMean[row]) * dVar
        let dv = Double(varianceByVariance[row]) * dVar
        for j in 0..<hw {
            let idx = row * hw + j
            let direct = Double(dy[idx]) * g * s
            dx[idx] = Float(direct + dm / Double(hw) + dv * 2 * (Double(x[idx]) - instance) / Double(hw))
        }
    }
}
