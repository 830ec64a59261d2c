import Foundation

/// GELU in its exact form (`F.gelu(x)`, `approximate='none'`), forward beside backward:
///
///     y = x·Φ(x),   Φ(x) = ½·(1 + erf(x/√2)),   dy/dx = Φ(x) + x·φ(x),   φ(x) = e^(−x²/2)/√(2π)

/// `y = x·Φ(x)`. `y` may alias `x`. Parallel over contiguous chunks.
package func geluForward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count: Int) {
    let xs = SendablePointer(x), ys = SendablePointer(y)
    let ranges = splitRange(count, parts: count < 1 << 14 ? 1 : KernelThreads.count)
    parallelFor(ranges.count) { r in
        for i in ranges[r] {
            let v = xs.base[i]
            ys.base[i] = 0.5 * v * (1 + erf(v * Float(0.5).squareRoot()))
        }
    }
}

/// `dx = dy·(Φ(x) + x·φ(x))` from the forward input `x` (overwrites `dx`; `dx` may alias `dy`).
package func geluBackward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, count: Int) {
    let xs = SendablePointer(x), dys = SendablePointer(dy), dxs = SendablePointer(dx)
    let invSqrt2 = Float(0.5).squareRoot(), invSqrt2Pi = 1 / Float(2 * Double.pi).squareRoot()
    let ranges = splitRange(count, parts: count < 1 << 14 ? 1 : KernelThreads.count)
    parallelFor(ranges.count) { r in
        for i in ranges[r] {
            let v = xs.base[i]
            let cdf = 0.5 * (1 + erf(v * invSqrt2)), pdf = exp(-0.5 * v * v) * invSqrt2Pi
            dxs.base[i] = dys.base[i] * (cdf + v * pdf)
        }
    }
}

/// Reference of `geluForward` in Double.
package func geluForwardReference(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count {
        let v = Double(x[i])
        y[i] = Float(0.5 * v * (1 + erf(v / 2.0.squareRoot())))
    }
}

/// Reference of `geluBackward` in Double.
package func geluBackwardReference(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count {
        let v = Double(x[i])
        let cdf = 0.5 * (1 + erf(v / 2.0.squareRoot())), pdf = exp(-0.5 * v * v) / (2 * Double.pi).squareRoot()
        dx[i] = Float(Double(dy[i]) * (cdf + v * pdf))
    }
}
