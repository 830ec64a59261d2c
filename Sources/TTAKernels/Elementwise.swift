import Foundation

/// Element-wise and pooling kernels, each forward beside its backward.

// MARK: ReLU

/// `y = max(x, 0)`. `y` may alias `x`.
package func reluForward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count: Int) {
    let zero = SIMD8<Float>()
    let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
    var i = 0
    while i + 8 <= count {
        let v = rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        ry.storeBytes(of: v.replacing(with: zero, where: v .< zero), toByteOffset: i * 4, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count { y[i] = max(x[i], 0); i += 1 }
}

/// `y = max(x, 0)` (NaN stays NaN) and `mask[i] = 1` where `y > 0`, else 0 (NaN included): the byte per
/// element that `reluBackward(dy:mask:)` needs, a quarter of the output's size. `y` may alias `x`.
/// Plain loops: LLVM vectorises them (Swift's SIMD lane-width conversions between Float, Int32 and
/// UInt8 vectors do not, and ran 10x slower).
package func reluForward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<UInt8>, count: Int) {
    for i in 0..<count {
        let v = x[i]
        y[i] = v < 0 ? 0 : v
        mask[i] = v > 0 ? 1 : 0
    }
}

/// `dx = dy` where `mask` (from `reluForward(x:y:mask:count:)`) is 1, else 0. `dx` may alias `dy`.
package func reluBackward(dy: UnsafePointer<Float>, mask: UnsafePointer<UInt8>, dx: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count { dx[i] = mask[i] != 0 ? dy[i] : 0 }
}

// MARK: Add

/// `out = a + b` (residual add). `out` may alias `a` or `b`.
package func addForward(a: UnsafePointer<Float>, b: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, count: Int) {
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b), ro = UnsafeMutableRawPointer(out)
    var i = 0
    while i + 8 <= count {
        let v = ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) +
            rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        ro.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count { out[i] = a[i] + b[i]; i += 1 }
}
// The backward of `add` is the identity on both inputs: callers pass `dy` on to both branches.

// MARK: Global average pooling

/// `y[n, c] = mean over HW of x[n, c, :]`, `x: (N·C, HW)`, `y: (N·C)`.
package func globalAvgPoolForward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, rows: Int, hw: Int) {
    let inv = 1 / Float(hw)
    for r in 0..<rows { y[r] = vectorSum(x + r * hw, hw) * inv }
}

/// `dx[n, c, :] = dy[n, c] / HW` (overwrites `dx`).
package func globalAvgPoolBackward(dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, hw: Int) {
    let inv = 1 / Float(hw)
    for r in 0..<rows { (dx + r * hw).update(repeating: dy[r] * inv, count: hw) }
}

// MARK: Average pooling (no padding, count over the full window, as F.avg_pool2d defaults)

/// `x: (R, H, W)` → `y: (R, HO, WO)` with `HO = (H − k)/s + 1`.
package func avgPool2dForward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, rows: Int, h: Int, w: Int,
                              kernel k: Int, stride s: Int) {
    let ho = (h - k) / s + 1, wo = (w - k) / s + 1
    let inv = 1 / Float(k * k)
    for r in 0..<rows {
        for oy in 0..<ho {
            for ox in 0..<wo {
                var acc: Float = 0
                for ky in 0..<k { for kx in 0..<k { acc += x[(r * h + oy * s + ky) * w + ox * s + kx] } }
                y[(r * ho + oy) * wo + ox] = acc * inv
            }
        }
    }
}

/// Backward of `avgPool2dForward` (overwrites `dx`).
package func avgPool2dBackward(dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, rows: Int, h: Int, w: Int,
                               kernel k: Int, stride s: Int) {
    let ho = (h - k) / s + 1, wo = (w - k) / s + 1
    let inv = 1 / Float(k * k)
    dx.update(repeating: 0, count: rows * h * w)
    for r in 0..<rows {
        for oy in 0..<ho {
            for ox in 0..<wo {
                let g = dy[(r * ho + oy) * wo + ox] * inv
                for ky in 0..<k { for kx in 0..<k { dx[(r * h + oy * s + ky) * w + ox * s + kx] += g } }
            }
        }
    }
}

// MARK: Linear

/// `y = x·Wᵀ + b`, `x: (N, I)`, `weight: (O, I)` (PyTorch layout), `bias: (O)`, `y: (N, O)`.
package func linearForward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                           y: UnsafeMutablePointer<Float>, n: Int, inFeatures i: Int, outFeatures o: Int) {
    gemm(transA: false, transB: true, m: n, n: o, k: i, alpha: 1, a: x, lda: i, b: weight, ldb: i, beta: 0, c: y, ldc: o)
    if let bias { for r in 0..<n { for j in 0..<o { y[r * o + j] += bias[j] } } }
}

/// Backward of `linearForward`: `dx = dy·W` (overwritten), `dWeight += dyᵀ·x`, `dBias += Σ_rows dy`.
package func linearBackward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                            dx: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                            dBias: UnsafeMutablePointer<Float>?, n: Int, inFeatures i: Int, outFeatures o: Int) {
    if let dx { gemm(transA: false, transB: false, m: n, n: i, k: o, alpha: 1, a: dy, lda: o, b: weight, ldb: i, beta: 0, c: dx, ldc: i) }
    if let dWeight { gemm(transA: true, transB: false, m: o, n: i, k: n, alpha: 1, a: dy, lda: o, b: x, ldb: i, beta: 1, c: dWeight, ldc: i) }
    if let dBias { for r in 0..<n { for j in 0..<o { dBias[j] += dy[r * o + j] } } }
}

// MARK: Softmax

/// Row-wise softmax of `x: (N, C)` into `y`, max-subtracted, accumulated in Double.
package func softmaxRows(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, n: Int, c: Int) {
    for r in 0..<n {
        let row = x + r * c
        var mx = row[0]
        for j in 1..<c { mx = max(mx, row[j]) }
        var s = 0.0
        for j in 0..<c { let e = Foundation.exp(Double(row[j] - mx)); y[r * c + j] = Float(e); s += e }
        let inv = 1 / s
        for j in 0..<c { y[r * c + j] = Float(Double(y[r * c + j]) * inv) }
    }
}

/// Row-wise log-softmax of `x: (N, C)` into `y`: `x − max − log Σ exp(x − max)`.
package func logSoftmaxRows(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, n: Int, c: Int) {
    for r in 0..<n {
        let row = x + r * c
        var mx = row[0]
        for j in 1..<c { mx = max(mx, row[j]) }
        var s = 0.0
        for j in 0..<c { s += Foundation.exp(Double(row[j] - mx)) }
        let lse = Double(mx) + Foundation.log(s)
        for j in 0..<c { y[r * c + j] = Float(Double(row[j]) - lse) }
    }
}

/// Backward of softmax: `dx = y ⊙ (dy − Σ dy·y)` per row.
package func softmaxRowsBackward(dy: UnsafePointer<Float>, y: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, n: Int, c: Int) {
    for r in 0..<n {
        var s = 0.0
        for j in 0..<c { s += Double(dy[r * c + j]) * Double(y[r * c + j]) }
        for j in 0..<c { dx[r * c + j] = Float(Double(y[r * c + j]) * (Double(dy[r * c + j]) - s)) }
    }
}

/// Backward of log-softmax: `dx = dy − softmax(x)·Σ dy` per row (`y` is the log-softmax output).
package func logSoftmaxRowsBackward(dy: UnsafePointer<Float>, y: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, n: Int, c: Int) {
    for r in 0..<n {
        var s = 0.0
        for j in 0..<c { s += Double(dy[r * c + j]) }
        for j in 0..<c { dx[r * c + j] = Float(Double(dy[r * c + j]) - Foundation.exp(Double(y[r * c + j])) * s) }
    }
}
