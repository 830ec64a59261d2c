/// 2-D convolution (cross-correlation, as PyTorch's `Conv2d`), NCHW, with stride, zero padding and groups.
///
/// Shapes: `x: (N, C, H, W)`, `weight: (O, C/groups, KH, KW)` (OIHW, as in PyTorch checkpoints),
/// `y: (N, O, HO, WO)` with `HO = (H + 2·padH − KH)/strideH + 1`. No bias (none of the CNNs we load
/// has one on a convolution). The fast path lowers each image and group to a GEMM through `im2col`;
/// `conv2dForwardReference` and friends are the direct loops it is tested against.
package struct Conv2dGeometry: Sendable, Equatable, CustomStringConvertible {
    package var n, c, h, w: Int
    package var o, kh, kw: Int
    package var strideH, strideW, padH, padW, groups: Int

    package init(n: Int, c: Int, h: Int, w: Int, o: Int, kh: Int, kw: Int,
                 strideH: Int = 1, strideW: Int = 1, padH: Int = 0, padW: Int = 0, groups: Int = 1) {
        precondition(groups >= 1 && c % groups == 0 && o % groups == 0, "conv2d: channels \(c)→\(o) not divisible by groups \(groups)")
        precondition(strideH >= 1 && strideW >= 1 && padH >= 0 && padW >= 0 && kh >= 1 && kw >= 1)
        (self.n, self.c, self.h, self.w, self.o, self.kh, self.kw) = (n, c, h, w, o, kh, kw)
        (self.strideH, self.strideW, self.padH, self.padW, self.groups) = (strideH, strideW, padH, padW, groups)
        precondition(h + 2 * padH >= kh && w + 2 * padW >= kw, "conv2d: kernel \(kh)x\(kw) larger than padded input \(h)x\(w)")
    }
    package var ho: Int { (h + 2 * padH - kh) / strideH + 1 }
    package var wo: Int { (w + 2 * padW - kw) / strideW + 1 }
    /// Input channels per group.
    package var cg: Int { c / groups }
    /// Output channels per group.
    package var og: Int { o / groups }
    /// Rows of the lowered matrix per group: `cg·KH·KW`.
    package var kdim: Int { cg * kh * kw }
    package var inputCount: Int { n * c * h * w }
    package var outputCount: Int { n * o * ho * wo }
    package var weightCount: Int { o * cg * kh * kw }
    /// True when the lowered matrix is the input itself (1×1, stride 1, no padding).
    package var isPointwise: Bool { kh == 1 && kw == 1 && strideH == 1 && strideW == 1 && padH == 0 && padW == 0 }
    package var description: String {
        "conv(n:\(n) c:\(c) \(h)x\(w) → o:\(o) k:\(kh)x\(kw) s:\(strideH),\(strideW) p:\(padH),\(padW) g:\(groups))"
    }
}

/// Lowers channels `[c0, c0+cg)` of one image `x: (C, H, W)` into `col: (cg·KH·KW, HO·WO)`.
@inline(__always)
private func im2col(_ x: UnsafePointer<Float>, _ g: Conv2dGeometry, c0: Int, _ col: UnsafeMutablePointer<Float>) {
    let (ho, wo) = (g.ho, g.wo)
    var row = 0
    for ci in 0..<g.cg {
        let plane = x + (c0 + ci) * g.h * g.w
        for ky in 0..<g.kh {
            for kx in 0..<g.kw {
                let dst = col + row * ho * wo
                for oy in 0..<ho {
                    let iy = oy * g.strideH - g.padH + ky
                    let d = dst + oy * wo
                    if iy < 0 || iy >= g.h {
                        d.update(repeating: 0, count: wo)
                        continue
                    }
                    let src = plane + iy * g.w
                    if g.strideW == 1 {
                        // Contiguous run: ix = ox - padW + kx.
                        let off = kx - g.padW
                        let lo = max(0, -off), hi = min(wo, g.w - off)
                        if lo > 0 { d.update(repeating: 0, count: min(lo, wo)) }
                        if hi > lo { (d + lo).update(from: src + lo + off, count: hi - lo) }
                        if hi < wo { (d + max(hi, 0)).update(repeating: 0, count: wo - max(hi, 0)) }
                    } else {
                        for ox in 0..<wo {
                            let ix = ox * g.strideW - g.padW + kx
                            d[ox] = (ix >= 0 && ix < g.w) ? src[ix] : 0
                        }
                    }
                }
                row += 1
            }
        }
    }
}

/// Adds `col: (cg·KH·KW, HO·WO)` back into channels `[c0, c0+cg)` of one image `dx: (C, H, W)`.
@inline(__always)
private func col2imAdd(_ col: UnsafePointer<Float>, _ g: Conv2dGeometry, c0: Int, _ dx: UnsafeMutablePointer<Float>) {
    let (ho, wo) = (g.ho, g.wo)
    var row = 0
    for ci in 0..<g.cg {
        let plane = dx + (c0 + ci) * g.h * g.w
        for ky in 0..<g.kh {
            for kx in 0..<g.kw {
                let srcRow = col + row * ho * wo
                for oy in 0..<ho {
                    let iy = oy * g.strideH - g.padH + ky
                    if iy < 0 || iy >= g.h { continue }
                    let s = srcRow + oy * wo
                    let d = plane + iy * g.w
                    if g.strideW == 1 {
                        // Contiguous run, as in im2col: ix = ox + off for ox in [lo, hi).
                        let off = kx - g.padW
                        let lo = max(0, -off), hi = min(wo, g.w - off)
                        if hi > lo { addInPlace(d + lo + off, s + lo, count: hi - lo) }
                    } else {
                        for ox in 0..<wo {
                            let ix = ox * g.strideW - g.padW + kx
                            if ix >= 0 && ix < g.w { d[ix] += s[ox] }
                        }
                    }
                }
                row += 1
            }
        }
    }
}

/// `d[i] += s[i]` for `i < count`, eight lanes at a time.
@inline(__always)
private func addInPlace(_ d: UnsafeMutablePointer<Float>, _ s: UnsafePointer<Float>, count: Int) {
    var i = 0
    let rd = UnsafeMutableRawPointer(d), rs = UnsafeRawPointer(s)
    while i + 8 <= count {
        let v = rd.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) + rs.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        rd.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
        i += 8
    }
    while i < count { d[i] += s[i]; i += 1 }
}

/// `y = conv(x, weight)`. y is overwritten. Images run in parallel (see `forEachImage`).
package func conv2dForward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                           _ g: Conv2dGeometry) {
    let hwo = g.ho * g.wo
    forEachLoweredInput(x, g, imagesInParallel: true) { i, gr, b, threads in
        gemm(transA: false, transB: false, m: g.og, n: hwo, k: g.kdim, alpha: 1,
             a: weight + gr * g.og * g.kdim, lda: g.kdim, b: b, ldb: hwo,
             beta: 0, c: y + (i * g.o + gr * g.og) * hwo, ldc: hwo, threads: threads)
    }
}

/// `dx += ∂L/∂x` given `dy = ∂L/∂y`. The caller zeroes `dx` first if it wants the gradient alone.
/// Images run in parallel: each writes only its own slice of `dx`.
package func conv2dBackwardInput(dy: UnsafePointer<Float>, weight: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                                 _ g: Conv2dGeometry) {
    let hwo = g.ho * g.wo, chw = g.c * g.h * g.w
    forEachImage(g.n, scratch: g.isPointwise ? 0 : g.kdim * hwo, inParallel: true) { i, col, threads in
        for gr in 0..<g.groups {
            let dyi = dy + (i * g.o + gr * g.og) * hwo
            let wg = weight + gr * g.og * g.kdim
            if g.isPointwise {
                // dx_g (cg, HW) += W_gᵀ (cg, og) · dy_g (og, HW)
                gemm(transA: true, transB: false, m: g.kdim, n: hwo, k: g.og, alpha: 1, a: wg, lda: g.kdim,
                     b: dyi, ldb: hwo, beta: 1, c: dx + i * chw + gr * g.cg * g.h * g.w, ldc: hwo, threads: threads)
            } else {
                gemm(transA: true, transB: false, m: g.kdim, n: hwo, k: g.og, alpha: 1, a: wg, lda: g.kdim,
                     b: dyi, ldb: hwo, beta: 0, c: col, ldc: hwo, threads: threads)
                col2imAdd(col, g, c0: gr * g.cg, dx + i * chw)
            }
        }
    }
}

/// `dWeight += ∂L/∂weight` given `dy`. The caller zeroes `dWeight` first if it wants the gradient alone.
/// Images run one after the other (they all add into `dWeight`), each through a multi-threaded GEMM,
/// so the sum is taken in image order whatever the thread count.
package func conv2dBackwardWeight(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dWeight: UnsafeMutablePointer<Float>,
                                  _ g: Conv2dGeometry) {
    let hwo = g.ho * g.wo
    forEachLoweredInput(x, g, imagesInParallel: false) { i, gr, b, threads in
        // dW_g (og, kdim) += dy_g (og, HW) · colᵀ (HW, kdim)
        gemm(transA: false, transB: true, m: g.og, n: g.kdim, k: hwo, alpha: 1,
             a: dy + (i * g.o + gr * g.og) * hwo, lda: hwo, b: b, ldb: hwo,
             beta: 1, c: dWeight + gr * g.og * g.kdim, ldc: g.kdim, threads: threads)
    }
}

/// Calls `body(image, group, col, gemmThreads)` with the lowered input `col: (cg·KH·KW, HO·WO)` of every
/// image and group: `im2col` into the worker's scratch buffer, or the input itself for pointwise
/// convolutions.
@inline(__always)
private func forEachLoweredInput(_ x: UnsafePointer<Float>, _ g: Conv2dGeometry, imagesInParallel: Bool,
                                 _ body: (Int, Int, UnsafePointer<Float>, Int) -> Void) {
    let chw = g.c * g.h * g.w
    forEachImage(g.n, scratch: g.isPointwise ? 0 : g.kdim * g.ho * g.wo, inParallel: imagesInParallel) { i, col, threads in
        let xi = x + i * chw
        for gr in 0..<g.groups {
            if g.isPointwise {
                body(i, gr, xi + gr * g.cg * g.h * g.w, threads)
            } else {
                im2col(xi, g, c0: gr * g.cg, col)
                body(i, gr, UnsafePointer(col), threads)
            }
        }
    }
}

/// Calls `body(image, scratch, gemmThreads)` for every image of the batch, with a scratch buffer of
/// `scratch` floats owned by the calling worker.
///
/// In parallel, with at least as many images as threads, the batch is cut into contiguous runs of
/// images that the threads take dynamically, each running single-threaded GEMMs: one image of a late
/// WideResNet layer (8x8 outputs) is too small a GEMM to keep two cores busy, a batch of them is not.
/// Otherwise the images go one by one through GEMMs that use all the threads. A GEMM computes every
/// element in the same order whatever its thread count, so the split never changes a result.
@inline(__always)
private func forEachImage(_ n: Int, scratch: Int, inParallel: Bool,
                          _ body: (Int, UnsafeMutablePointer<Float>, Int) -> Void) {
    let threads = KernelThreads.count
    if inParallel && threads > 1 && n >= threads {
        let runs = splitRange(n, parts: min(n, 4 * threads))
        parallelFor(runs.count) { r in
            let col = UnsafeMutablePointer<Float>.allocate(capacity: max(1, scratch))
            defer { col.deallocate() }
            for i in runs[r] { body(i, col, 1) }
        }
    } else {
        let col = UnsafeMutablePointer<Float>.allocate(capacity: max(1, scratch))
        defer { col.deallocate() }
        for i in 0..<n { body(i, col, threads) }
    }
}

// MARK: - Reference twins (direct loops, accumulated in Double)

/// Direct-loop reference of `conv2dForward`.
package func conv2dForwardReference(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                                    _ g: Conv2dGeometry) {
    for i in 0..<g.n {
        for oc in 0..<g.o {
            let gr = oc / g.og
            for oy in 0..<g.ho {
                for ox in 0..<g.wo {
                    var s = 0.0
                    for ci in 0..<g.cg {
                        for ky in 0..<g.kh {
                            let iy = oy * g.strideH - g.padH + ky
                            if iy < 0 || iy >= g.h { continue }
                            for kx in 0..<g.kw {
                                let ix = ox * g.strideW - g.padW + kx
                                if ix < 0 || ix >= g.w { continue }
                                let xv = x[((i * g.c + gr * g.cg + ci) * g.h + iy) * g.w + ix]
                                let wv = weight[((oc * g.cg + ci) * g.kh + ky) * g.kw + kx]
                                s += Double(xv) * Double(wv)
                            }
                        }
                    }
                    y[((i * g.o + oc) * g.ho + oy) * g.wo + ox] = Float(s)
                }
            }
        }
    }
}

/// Direct-loop reference of `conv2dBackwardInput` (accumulates into `dx`).
package func conv2dBackwardInputReference(dy: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                          dx: UnsafeMutablePointer<Float>, _ g: Conv2dGeometry) {
    for i in 0..<g.n {
        for oc in 0..<g.o {
            let gr = oc / g.og
            for oy in 0..<g.ho {
                for ox in 0..<g.wo {
                    let d = dy[((i * g.o + oc) * g.ho + oy) * g.wo + ox]
                    for ci in 0..<g.cg {
                        for ky in 0..<g.kh {
                            let iy = oy * g.strideH - g.padH + ky
                            if iy < 0 || iy >= g.h { continue }
                            for kx in 0..<g.kw {
                                let ix = ox * g.strideW - g.padW + kx
                                if ix < 0 || ix >= g.w { continue }
                                dx[((i * g.c + gr * g.cg + ci) * g.h + iy) * g.w + ix] +=
                                    d * weight[((oc * g.cg + ci) * g.kh + ky) * g.kw + kx]
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Direct-loop reference of `conv2dBackwardWeight` (accumulates into `dWeight`).
package func conv2dBackwardWeightReference(x: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                           dWeight: UnsafeMutablePointer<Float>, _ g: Conv2dGeometry) {
    for oc in 0..<g.o {
        let gr = oc / g.og
        for ci in 0..<g.cg {
            for ky in 0..<g.kh {
                for kx in 0..<g.kw {
                    var s = 0.0
                    for i in 0..<g.n {
                        for oy in 0..<g.ho {
                            let iy = oy * g.strideH - g.padH + ky
                            if iy < 0 || iy >= g.h { continue }
                            for ox in 0..<g.wo {
                                let ix = ox * g.strideW - g.padW + kx
                                if ix < 0 || ix >= g.w { continue }
                                s += Double(dy[((i * g.o + oc) * g.ho + oy) * g.wo + ox]) *
                                    Double(x[((i * g.c + gr * g.cg + ci) * g.h + iy) * g.w + ix])
                            }
                        }
                    }
                    dWeight[((oc * g.cg + ci) * g.kh + ky) * g.kw + kx] += Float(s)
                }
            }
        }
    }
}
