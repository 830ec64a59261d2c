/// Vectorised reductions. Scalar float loops never vectorise (strict FP order), so we write the
/// vectors: SIMD8 with four independent accumulators.

/// Σ p[i] for i in 0..<count.
@inline(__always)
package func vectorSum(_ p: UnsafePointer<Float>, _ count: Int) -> Float {
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
    var i = 0
    let raw = UnsafeRawPointer(p)
    while i + 32 <= count {
        a0 += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        a1 += raw.loadUnaligned(fromByteOffset: (i + 8) * 4, as: SIMD8<Float>.self)
        a2 += raw.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD8<Float>.self)
        a3 += raw.loadUnaligned(fromByteOffset: (i + 24) * 4, as: SIMD8<Float>.self)
        i += 32
    }
    while i + 8 <= count {
        a0 += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        i += 8
    }
    var s = ((a0 + a1) + (a2 + a3)).sum()
    while i < count { s += p[i]; i += 1 }
    return s
}

/// Σ p[i]·q[i] for i in 0..<count.
@inline(__always)
package func vectorDot(_ p: UnsafePointer<Float>, _ q: UnsafePointer<Float>, _ count: Int) -> Float {
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
    var i = 0
    let rp = UnsafeRawPointer(p), rq = UnsafeRawPointer(q)
    @inline(__always) func ld(_ r: UnsafeRawPointer, _ j: Int) -> SIMD8<Float> {
        r.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
    }
    while i + 32 <= count {
        a0 += ld(rp, i) * ld(rq, i)
        a1 += ld(rp, i + 8) * ld(rq, i + 8)
        a2 += ld(rp, i + 16) * ld(rq, i + 16)
        a3 += ld(rp, i + 24) * ld(rq, i + 24)
        i += 32
    }
    while i + 8 <= count {
        a0 += ld(rp, i) * ld(rq, i)
        i += 8
    }
    var s = ((a0 + a1) + (a2 + a3)).sum()
    while i < count { s += p[i] * q[i]; i += 1 }
    return s
}

/// Σ p[i]·(q[i] − c) for i in 0..<count: the deviation is taken before the product, so that an offset `c` large
/// against q's spread cancels exactly rather than in the sum (Σ p·q − c·Σ p loses those digits).
@inline(__always)
package func vectorDotCentered(_ p: UnsafePointer<Float>, _ q: UnsafePointer<Float>, _ count: Int, from c: Float) -> Float {
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
    let cv = SIMD8<Float>(repeating: c)
    var i = 0
    let rp = UnsafeRawPointer(p), rq = UnsafeRawPointer(q)
    @inline(__always) func ld(_ r: UnsafeRawPointer, _ j: Int) -> SIMD8<Float> {
        r.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
    }
    while i + 32 <= count {
        a0 += ld(rp, i) * (ld(rq, i) - cv)
        a1 += ld(rp, i + 8) * (ld(rq, i + 8) - cv)
        a2 += ld(rp, i + 16) * (ld(rq, i + 16) - cv)
        a3 += ld(rp, i + 24) * (ld(rq, i + 24) - cv)
        i += 32
    }
    while i + 8 <= count {
        a0 += ld(rp, i) * (ld(rq, i) - cv)
        i += 8
    }
    var s = ((a0 + a1) + (a2 + a3)).sum()
    while i < count { s += p[i] * (q[i] - c); i += 1 }
    return s
}

/// Σ (p[i] − c)² for i in 0..<count.
@inline(__always)
package func vectorSumSquaredDeviation(_ p: UnsafePointer<Float>, _ count: Int, from c: Float) -> Float {
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>()
    let cv = SIMD8<Float>(repeating: c)
    var i = 0
    let raw = UnsafeRawPointer(p)
    while i + 16 <= count {
        let d0 = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - cv
        let d1 = raw.loadUnaligned(fromByteOffset: (i + 8) * 4, as: SIMD8<Float>.self) - cv
        a0 += d0 * d0
        a1 += d1 * d1
        i += 16
    }
    var s = (a0 + a1).sum()
    while i < count { let d = p[i] - c; s += d * d; i += 1 }
    return s
}
