// The register-tiled micro-kernels of `gemmSIMD`. Every build compiles all three, so the tests run the
// portable ones on an FMA machine too; `BuildGemmKernel` is the one the build's `gemm` uses.

/// C[MR x NR] = alpha * (A panel x B panel) + beta * C for one tile (MR = `GemmTile.mr`), accumulated in
/// SIMD8 registers over the panels' depth `kc`.
package protocol GemmMicroKernel: Sendable {
    /// Columns of C per tile, a multiple of 8: the width of the packed B panels.
    static var nr: Int { get }
    /// "6x16 FMA" and the like, for benchmark reports.
    static var name: String { get }
    /// `a`: element (i, p) of the A panel at `i * rowStride + p * step` (a packed panel, or A read in place);
    /// `b`: kc groups of `nr` floats, 32-byte aligned; `c`: rows `ldc` apart. beta == 0 does not read C.
    static func multiply(kc: Int, a: UnsafePointer<Float>, rowStride: Int, step: Int, b: UnsafePointer<Float>,
                         c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float)
}

/// The micro-kernel `gemm` uses in this build: fused multiply-add where the build targets a CPU that has
/// it (`TTA_FMA`); otherwise separate multiply and add, 6 x 8 on x86-64 (the baseline has only 128-bit
/// SSE registers, so a SIMD8 takes two) and 6 x 16 elsewhere (arm64: 32 NEON registers).
#if TTA_FMA
package typealias BuildGemmKernel = GemmKernel6x16Fused
#elseif arch(x86_64)
package typealias BuildGemmKernel = GemmKernel6x8
#else
package typealias BuildGemmKernel = GemmKernel6x16
#endif

/// 6 x 16 with `M`'s multiply-add: fused (`addProduct`: one `vfmadd231ps` when the build targets a CPU with FMA, a
/// call to `fmaf` otherwise), or separate (the portable arm64 kernel). 12 ymm accumulators, 2 B vectors and 1
/// broadcast A value: 15 of the 16 AVX registers.
package enum GemmKernel6x16Of<M: MultiplyAdd>: GemmMicroKernel {
    package static var nr: Int { 16 }
    package static var name: String { "6x16 \(M.name)" }

    @inline(__always)
    package static func multiply(kc: Int, a: UnsafePointer<Float>, rowStride: Int, step: Int, b: UnsafePointer<Float>,
                                 c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float) {
        var t = Tile6x16<M>()
        t.run(kc: kc, a: a, rowStride: rowStride, step: step, b: b, c: c, ldc: ldc, alpha: alpha, beta: beta)
    }
}

package typealias GemmKernel6x16Fused = GemmKernel6x16Of<FusedMultiplyAdd>
package typealias GemmKernel6x16 = GemmKernel6x16Of<SeparateMultiplyAdd>

/// 6 x 8 with separate multiply and add: 6 SIMD8 accumulators (12 SSE registers), the portable x86-64
/// kernel.
package enum GemmKernel6x8: GemmMicroKernel {
    package static var nr: Int { 8 }
    package static var name: String { "6x8 \(SeparateMultiplyAdd.name)" }

    @inline(__always)
    package static func multiply(kc: Int, a: UnsafePointer<Float>, rowStride rs: Int, step: Int, b: UnsafePointer<Float>,
                                 c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float) {
        typealias M = SeparateMultiplyAdd
        var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), c2 = SIMD8<Float>()
        var c3 = SIMD8<Float>(), c4 = SIMD8<Float>(), c5 = SIMD8<Float>()
        let a0 = a, a1 = a + rs, a2 = a + 2 * rs, a3 = a + 3 * rs, a4 = a + 4 * rs, a5 = a + 5 * rs
        var p = 0
        var pb = UnsafeRawPointer(b)
        for _ in 0..<kc {
            let b0 = pb.load(as: SIMD8<Float>.self)
            M.madd(&c0, SIMD8(repeating: a0[p]), b0)
            M.madd(&c1, SIMD8(repeating: a1[p]), b0)
            M.madd(&c2, SIMD8(repeating: a2[p]), b0)
            M.madd(&c3, SIMD8(repeating: a3[p]), b0)
            M.madd(&c4, SIMD8(repeating: a4[p]), b0)
            M.madd(&c5, SIMD8(repeating: a5[p]), b0)
            p += step
            pb += 32
        }
        var row = c
        storeRow(M.self, row, c0, alpha: alpha, beta: beta); row += ldc
        storeRow(M.self, row, c1, alpha: alpha, beta: beta); row += ldc
        storeRow(M.self, row, c2, alpha: alpha, beta: beta); row += ldc
        storeRow(M.self, row, c3, alpha: alpha, beta: beta); row += ldc
        storeRow(M.self, row, c4, alpha: alpha, beta: beta); row += ldc
        storeRow(M.self, row, c5, alpha: alpha, beta: beta)
    }
}

// MARK: - Arithmetic

/// acc += x * y, as one kernel computes it.
package protocol MultiplyAdd: Sendable {
    /// "FMA" or "mul+add", for the kernel's name.
    static var name: String { get }
    static func madd(_ acc: inout SIMD8<Float>, _ x: SIMD8<Float>, _ y: SIMD8<Float>)
}

/// Fused: one rounding.
package enum FusedMultiplyAdd: MultiplyAdd {
    package static var name: String { "FMA" }
    @inline(__always)
    package static func madd(_ acc: inout SIMD8<Float>, _ x: SIMD8<Float>, _ y: SIMD8<Float>) { acc.addProduct(x, y) }
}

/// Separate multiply and add: two roundings, plain SIMD instructions on any CPU.
package enum SeparateMultiplyAdd: MultiplyAdd {
    package static var name: String { "mul+add" }
    @inline(__always)
    package static func madd(_ acc: inout SIMD8<Float>, _ x: SIMD8<Float>, _ y: SIMD8<Float>) { acc = acc + x * y }
}

/// One output row of a tile: row = alpha * acc (beta == 0, C not read) or alpha * acc + beta * row.
@inline(__always)
private func storeRow<M: MultiplyAdd>(_ arithmetic: M.Type, _ row: UnsafeMutablePointer<Float>, _ acc: SIMD8<Float>,
                                      alpha: Float, beta: Float) {
    let p = UnsafeMutableRawPointer(row)
    var v = acc * alpha
    if beta != 0 {
        let old = p.loadUnaligned(as: SIMD8<Float>.self)
        M.madd(&v, old, SIMD8(repeating: beta))
    }
    p.storeBytes(of: v, as: SIMD8<Float>.self)
}

// MARK: - 6 x 16

/// The 6 x 16 accumulators of one tile; after inlining they stay in 12 ymm registers for the whole
/// k loop.
private struct Tile6x16<M: MultiplyAdd> {
    var c00 = SIMD8<Float>(), c01 = SIMD8<Float>(), c10 = SIMD8<Float>(), c11 = SIMD8<Float>()
    var c20 = SIMD8<Float>(), c21 = SIMD8<Float>(), c30 = SIMD8<Float>(), c31 = SIMD8<Float>()
    var c40 = SIMD8<Float>(), c41 = SIMD8<Float>(), c50 = SIMD8<Float>(), c51 = SIMD8<Float>()

    /// Accumulates the tile and stores it to C.
    @inline(__always)
    mutating func run(kc: Int, a: UnsafePointer<Float>, rowStride: Int, step: Int, b: UnsafePointer<Float>,
                      c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float) {
        // Constant steps, so the unrolled loop addresses A with fixed displacements: a panel packed row by
        // row (step 1), or column by column (row stride 1, step MR).
        if step == 1 {
            accumulate(kc: kc, a: a, rowStride: rowStride, step: 1, b: b)
        } else {
            accumulate(kc: kc, a: a, rowStride: 1, step: GemmTile.mr, b: b)
        }
        storeRow(M.self, c, c00, alpha: alpha, beta: beta); storeRow(M.self, c + 8, c01, alpha: alpha, beta: beta)
        var row = c + ldc
        storeRow(M.self, row, c10, alpha: alpha, beta: beta); storeRow(M.self, row + 8, c11, alpha: alpha, beta: beta)
        row += ldc
        storeRow(M.self, row, c20, alpha: alpha, beta: beta); storeRow(M.self, row + 8, c21, alpha: alpha, beta: beta)
        row += ldc
        storeRow(M.self, row, c30, alpha: alpha, beta: beta); storeRow(M.self, row + 8, c31, alpha: alpha, beta: beta)
        row += ldc
        storeRow(M.self, row, c40, alpha: alpha, beta: beta); storeRow(M.self, row + 8, c41, alpha: alpha, beta: beta)
        row += ldc
        storeRow(M.self, row, c50, alpha: alpha, beta: beta); storeRow(M.self, row + 8, c51, alpha: alpha, beta: beta)
    }

    /// Adds the products of k steps, unrolled by 4. Rows 0-2 and 3-5 of A are read at 0, rs and
    /// 2 rs from two pointers (base + index * scale + displacement addressing, no extra arithmetic).
    @inline(__always)
    mutating func accumulate(kc: Int, a: UnsafePointer<Float>, rowStride rs: Int, step: Int,
                             b: UnsafePointer<Float>) {
        var top = a
        var bottom = a + 3 * rs
        var pb = UnsafeRawPointer(b)
        var left = kc
        while left >= 4 {
            update(top, bottom, rs, 0, pb, 0)
            update(top, bottom, rs, step, pb, 64)
            update(top, bottom, rs, 2 * step, pb, 128)
            update(top, bottom, rs, 3 * step, pb, 192)
            top += 4 * step
            bottom += 4 * step
            pb += 256
            left -= 4
        }
        while left > 0 {
            update(top, bottom, rs, 0, pb, 0)
            top += step
            bottom += step
            pb += 64
            left -= 1
        }
    }

    /// One k step: the 16 B values at byte offset `bo` times the 6 A values at offset `o`.
    @inline(__always)
    mutating func update(_ top: UnsafePointer<Float>, _ bottom: UnsafePointer<Float>, _ rs: Int, _ o: Int,
                         _ pb: UnsafeRawPointer, _ bo: Int) {
        let b0 = pb.load(fromByteOffset: bo, as: SIMD8<Float>.self)
        let b1 = pb.load(fromByteOffset: bo + 32, as: SIMD8<Float>.self)
        var x = SIMD8<Float>(repeating: top[o])
        M.madd(&c00, x, b0); M.madd(&c01, x, b1)
        x = SIMD8<Float>(repeating: top[rs + o])
        M.madd(&c10, x, b0); M.madd(&c11, x, b1)
        x = SIMD8<Float>(repeating: top[2 * rs + o])
        M.madd(&c20, x, b0); M.madd(&c21, x, b1)
        x = SIMD8<Float>(repeating: bottom[o])
        M.madd(&c30, x, b0); M.madd(&c31, x, b1)
        x = SIMD8<Float>(repeating: bottom[rs + o])
        M.madd(&c40, x, b0); M.madd(&c41, x, b1)
        x = SIMD8<Float>(repeating: bottom[2 * rs + o])
        M.madd(&c50, x, b0); M.madd(&c51, x, b1)
    }
}
