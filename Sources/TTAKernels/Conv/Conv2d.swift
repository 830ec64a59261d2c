/// 2-D convolution (cross-correlation, as PyTorch's `Conv2d`), NCHW, with stride, zero padding and groups.
///
/// Shapes: `x: (N, C, H, W)`, `weight: (O, C/groups, KH, KW)` (OIHW, as in PyTorch checkpoints),
/// `y: (N, O, HO, WO)` with `HO = (H + 2·padH − KH)/strideH + 1`. No bias (none of the CNNs we load
/// has one on a convolution). The fast path lowers images to GEMMs through `im2col` (pointwise
/// convolutions use the input as it is); `conv2dForwardReference` and friends are the direct loops
/// it is tested against.
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

/// Lowers channels `c0 + channels` of one image `x: (C, H, W)` into rows `channels·KH·KW` of
/// `col: (cg·KH·KW, HO·WO)`, whose rows are `ld` floats apart (`ld > HO·WO` when several images sit
/// side by side).
@inline(__always)
private func im2col(_ x: UnsafePointer<Float>, _ g: Conv2dGeometry, c0: Int, channels: Range<Int>,
                    _ col: UnsafeMutablePointer<Float>, ld: Int) {
    let (ho, wo) = (g.ho, g.wo)
    var row = channels.lowerBound * g.kh * g.kw
    for ci in channels {
        let plane = x + (c0 + ci) * g.h * g.w
        for ky in 0..<g.kh {
            for kx in 0..<g.kw {
                let dst = col + row * ld
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

/// Adds `col: (cg·KH·KW, HO·WO)`, rows `ld` floats apart, back into channels `[c0, c0+cg)` of one
/// image `dx: (C, H, W)`.
@inline(__always)
private func col2imAdd(_ col: UnsafePointer<Float>, ld: Int, _ g: Conv2dGeometry, c0: Int, _ dx: UnsafeMutablePointer<Float>) {
    let (ho, wo) = (g.ho, g.wo)
    var row = 0
    for ci in 0..<g.cg {
        let plane = dx + (c0 + ci) * g.h * g.w
        for ky in 0..<g.kh {
            for kx in 0..<g.kw {
                let srcRow = col + row * ld
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

/// How many images one lowered GEMM takes. A GEMM's pixel dimension is `images·HO·WO`; a late
/// WideResNet layer has only 8x8 = 64 pixels per image. Measured on one core at WRN-28-10 shapes
/// (`gemmSIMD` in isolation, GFLOP per CPU-second on a loaded machine):
/// - forward, `y_g (og, HW) = W_g (og, kdim) · col`: one image per GEMM. The weights are read in place
///   and only the small col is packed; one 640 x 64 x 5760 GEMM is as fast per core as 640 x 512.
/// - backward to the input, `col = W_gᵀ · dy_g`: the weights are the transposed A, packed per GEMM,
///   so a GEMM of one 8x8 image repacks 640 x 5760 weights for 64 columns; with 512 columns
///   (8 images) the GEMM runs about 17 % faster per core.
/// - backward to the weights, `dW_g += dy_g · colᵀ`: the pixels are the GEMM's depth; 1024 of them
///   per GEMM (16 images of 8x8) read and write dW 16 times less often, in fewer, larger
///   multi-threaded GEMMs.
enum ConvBatching {
    static let inputColumns = 512
    static let weightDepth = 1024

    /// Images per GEMM so that it has about `pixels` pixels (at least one image).
    static func images(_ g: Conv2dGeometry, pixels: Int) -> Int { max(1, min(g.n, pixels / (g.ho * g.wo))) }
}

/// `y = conv(x, weight)`. y is overwritten. With `inference` (no backward pass follows), 3x3 stride-1
/// layers go through Winograd F(4x4) (`conv2dForwardWinograd`; see `takesWinograd`); all others, and
/// every recorded forward pass, through `conv2dForwardLowered`.
package func conv2dForward(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                           _ g: Conv2dGeometry, inference: Bool = false) {
    if g.takesWinograd(inference ? .inference : .recordedForward) {
        conv2dForwardWinograd(x: x, weight: weight, y: y, g)
    } else {
        conv2dForwardLowered(x: x, weight: weight, y: y, g)
    }
}

/// `y = conv(x, weight)` through im2col and GEMM. Images run in parallel (see `forEachImageRun`), one
/// GEMM per image and group.
package func conv2dForwardLowered(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                                  _ g: Conv2dGeometry) {
    let hwo = g.ho * g.wo, chw = g.c * g.h * g.w
    let scratch = g.isPointwise ? 0 : g.kdim * hwo
    forEachImageRun(g.n, imagesPerCall: 1, scratch: scratch, inParallel: true) { images, col, threads in
        let i = images.lowerBound, xi = x + i * chw
        for gr in 0..<g.groups {
            let b: UnsafePointer<Float>
            if g.isPointwise {
                b = xi + gr * g.cg * g.h * g.w
            } else {
                im2col(xi, g, c0: gr * g.cg, channels: 0..<g.cg, col, ld: hwo)
                b = UnsafePointer(col)
            }
            gemm(transA: false, transB: false, m: g.og, n: hwo, k: g.kdim, alpha: 1,
                 a: weight + gr * g.og * g.kdim, lda: g.kdim, b: b, ldb: hwo,
                 beta: 0, c: y + (i * g.o + gr * g.og) * hwo, ldc: hwo, threads: threads)
        }
    }
}

/// `dx += ∂L/∂x` given `dy = ∂L/∂y`. The caller zeroes `dx` first if it wants the gradient alone.
/// 3x3 stride-1 layers go through Winograd F(4x4) (`conv2dBackwardInputWinograd`, see `takesWinograd`),
/// all others through `conv2dBackwardInputLowered`.
package func conv2dBackwardInput(dy: UnsafePointer<Float>, weight: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                                 _ g: Conv2dGeometry) {
    if g.takesWinograd(.backwardInput) {
        conv2dBackwardInputWinograd(dy: dy, weight: weight, dx: dx, g)
    } else {
        conv2dBackwardInputLowered(dy: dy, weight: weight, dx: dx, g)
    }
}

/// `dx += ∂L/∂x` through GEMM and col2im. Runs of images go in parallel, each writing only its own
/// images of `dx`; within a run, images of up to `ConvBatching.inputColumns` pixels go through one GEMM
/// whose columns are their `dy` side by side, then `col2imAdd` per image.
package func conv2dBackwardInputLowered(dy: UnsafePointer<Float>, weight: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                                        _ g: Conv2dGeometry) {
    let hwo = g.ho * g.wo, chw = g.c * g.h * g.w
    if g.isPointwise {
        // dx_g (cg, HW) += W_gᵀ (cg, og) · dy_g (og, HW), straight into dx.
        forEachImageRun(g.n, imagesPerCall: 1, scratch: 0, inParallel: true) { images, _, threads in
            let i = images.lowerBound
            for gr in 0..<g.groups {
                gemm(transA: true, transB: false, m: g.kdim, n: hwo, k: g.og, alpha: 1,
                     a: weight + gr * g.og * g.kdim, lda: g.kdim, b: dy + (i * g.o + gr * g.og) * hwo, ldb: hwo,
                     beta: 1, c: dx + i * chw + gr * g.cg * g.h * g.w, ldc: hwo, threads: threads)
            }
        }
        return
    }
    let most = ConvBatching.images(g, pixels: ConvBatching.inputColumns)
    let scratch = (g.kdim + g.og) * most * hwo
    forEachImageRun(g.n, imagesPerCall: most, scratch: scratch, inParallel: true) { images, buffer, threads in
        let cols = images.count * hwo
        let col = buffer, gathered = buffer + g.kdim * cols
        for gr in 0..<g.groups {
            // col (kdim, images·HW) = W_gᵀ (kdim, og) · [dy_g of each image] (og, images·HW)
            let b = gatherOutputs(dy, g, group: gr, images: images, into: gathered)
            gemm(transA: true, transB: false, m: g.kdim, n: cols, k: g.og, alpha: 1,
                 a: weight + gr * g.og * g.kdim, lda: g.kdim, b: b, ldb: cols,
                 beta: 0, c: col, ldc: cols, threads: threads)
            for (j, i) in images.enumerated() {
                col2imAdd(col + j * hwo, ld: cols, g, c0: gr * g.cg, dx + i * chw)
            }
        }
    }
}

/// `dWeight += ∂L/∂weight` given `dy`. The caller zeroes `dWeight` first if it wants the gradient alone.
/// Groups of images (up to `ConvBatching.weightDepth` pixels) go one after the other, each lowered
/// side by side (by all threads) and multiplied in one multi-threaded GEMM whose depth is their
/// pixels, so the sum is taken in the same order whatever the thread count.
package func conv2dBackwardWeight(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dWeight: UnsafeMutablePointer<Float>,
                                  _ g: Conv2dGeometry) {
    let hwo = g.ho * g.wo, chw = g.c * g.h * g.w
    let most = g.isPointwise ? 1 : ConvBatching.images(g, pixels: ConvBatching.weightDepth)
    let scratch = g.isPointwise ? 0 : (g.kdim + g.og) * most * hwo
    forEachImageRun(g.n, imagesPerCall: most, scratch: scratch, inParallel: false) { images, buffer, threads in
        let depth = images.count * hwo
        let col = SendablePointer(buffer), gathered = buffer + g.kdim * depth
        for gr in 0..<g.groups {
            let a: UnsafePointer<Float>, b: UnsafePointer<Float>
            if g.isPointwise {
                let i = images.lowerBound
                a = dy + (i * g.o + gr * g.og) * hwo
                b = x + i * chw + gr * g.cg * g.h * g.w
            } else {
                // Each image fills its own columns; fewer images than threads are split by channels.
                let parts = images.count >= threads ? 1 : min(g.cg, (threads + images.count - 1) / images.count)
                let channelRanges = splitRange(g.cg, parts: parts)
                parallelFor(images.count * channelRanges.count) { task in
                    let j = task / channelRanges.count
                    im2col(x + (images.lowerBound + j) * chw, g, c0: gr * g.cg,
                           channels: channelRanges[task % channelRanges.count], col.base + j * hwo, ld: depth)
                }
                a = gatherOutputs(dy, g, group: gr, images: images, into: gathered)
                b = UnsafePointer(col.base)
            }
            // dW_g (og, kdim) += dy_g (og, images·HW) · colᵀ (images·HW, kdim)
            gemm(transA: false, transB: true, m: g.og, n: g.kdim, k: depth, alpha: 1,
                 a: a, lda: depth, b: b, ldb: depth,
                 beta: 1, c: dWeight + gr * g.og * g.kdim, ldc: g.kdim, threads: threads)
        }
    }
}

/// Group `group` of the output gradients `dy` of `images` as one (og, images·HO·WO) matrix: for one
/// image, `dy` itself; for several, copied side by side into `buffer`.
@inline(__always)
private func gatherOutputs(_ dy: UnsafePointer<Float>, _ g: Conv2dGeometry, group: Int, images: Range<Int>,
                           into buffer: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
    let hwo = g.ho * g.wo
    if images.count == 1 { return dy + (images.lowerBound * g.o + group * g.og) * hwo }
    let cols = images.count * hwo
    for (j, i) in images.enumerated() {
        let src = dy + (i * g.o + group * g.og) * hwo
        for oc in 0..<g.og { (buffer + oc * cols + j * hwo).update(from: src + oc * hwo, count: hwo) }
    }
    return UnsafePointer(buffer)
}

/// Calls `body(images, scratch, gemmThreads)` on consecutive ranges of at most `imagesPerCall`
/// images that cover the batch in order, with a scratch buffer of `scratch` floats owned by the
/// calling worker.
///
/// In parallel, with at least as many images as threads, the batch is cut into contiguous runs of
/// images that the threads take dynamically, each running single-threaded GEMMs: one image of a late
/// WideResNet layer (8x8 outputs) is too small a GEMM to keep two cores busy, a batch of them is not.
/// Otherwise the ranges go one by one through GEMMs that use all the threads. A GEMM computes every
/// element in the same order whatever its thread count and however many columns it has, so neither
/// the split nor the ranges change a result.
@inline(__always)
private func forEachImageRun(_ n: Int, imagesPerCall: Int, scratch: Int, inParallel: Bool,
                             _ body: (Range<Int>, UnsafeMutablePointer<Float>, Int) -> Void) {
    let threads = KernelThreads.count
    func walk(_ run: Range<Int>, _ buffer: UnsafeMutablePointer<Float>, _ gemmThreads: Int) {
        var i = run.lowerBound
        while i < run.upperBound {
            let next = min(run.upperBound, i + imagesPerCall)
            body(i..<next, buffer, gemmThreads)
            i = next
        }
    }
    if inParallel && threads > 1 && n >= threads {
        let runs = splitRange(n, parts: min(n, 4 * threads))
        parallelFor(runs.count) { r in
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(1, scratch))
            defer { buffer.deallocate() }
            walk(runs[r], buffer, 1)
        }
    } else {
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(1, scratch))
        defer { buffer.deallocate() }
        walk(0..<n, buffer, threads)
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
