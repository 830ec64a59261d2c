/// Winograd convolution for 3x3, stride-1, ungrouped layers: the forward pass and the backward pass
/// to the input (a 3x3 stride-1 convolution of `dy` with the weights flipped and transposed). Lavin &
/// Gray, "Fast Algorithms for Convolutional Neural Networks" (2016).
///
/// F(4x4, 3x3) (`WinogradF4`, points 0, ±1, ±2, ∞): each 4x4 output tile comes from a 6x6 input
/// window, `Y = Aᵀ [ Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B) ] A`. The sum over channels is 36 GEMMs, one per
/// position ξ of the transformed tile, `M_ξ (O, tiles) = U_ξ (O, C) · V_ξ (C, tiles)`: 36 multiply-adds
/// per 16 outputs instead of 144 (4x fewer). The transforms scale by up to 8 and 1/24, and the outputs
/// carry about 10-20x the direct sum's rounding: a few 1e-6 of their magnitude. The transforms are
/// vectorised over eight tiles at a time.
///
/// Where it goes (`Conv2dGeometry.takesWinograd`): forward passes that no backward pass will follow
/// (predictions, CoTTA's augmented teacher passes) and the backward pass to the input; a recorded
/// forward pass keeps the lowered GEMM. Why: gradients of batch-statistics models magnify the rounding
/// of the forward pass through the ReLUs it switches. A pre-activation within rounding of zero flips
/// its ReLU, and the BN backward spreads that flip over the whole channel: on the WRN-16 fixtures,
/// PyTorch's own float32 gradients are 6e-6 from float64, 1e-6 relative noise on each 3x3
/// convolution's output moves them 2e-5, 1e-5 noise 6 %, and Winograd in the recorded forward (F(2x2)
/// as well as F(4x4)) 1-2 %. The backward pass has no such switch: its errors stay linear, and with
/// F(4x4) there the fixture gradients are within 1.1e-5 of PyTorch's (6.5e-6 with the GEMM). A
/// prediction's rounding moves its logits by about 1e-6. `ConvAlgorithm.winograd = false` turns it off.
package enum ConvAlgorithm {
    nonisolated(unsafe) private static var _winograd = true
    /// Whether eligible 3x3 convolutions take a Winograd path (default: yes).
    package static var winograd: Bool {
        get { _winograd }
        set { _winograd = newValue }
    }
    /// Tiles (columns) per Winograd GEMM: enough for the packed kernel to run near its peak, few enough
    /// that a worker's transformed tiles ((m+2)²·C·tiles floats) stay a few MB.
    static let tilesPerGemm = 256
}

/// A convolution pass, for the choice of algorithm.
package enum ConvPass: Sendable {
    /// A forward pass no backward pass follows.
    case inference
    /// A forward pass whose activations a backward pass will use.
    case recordedForward
    /// The backward pass to the input.
    case backwardInput
}

extension Conv2dGeometry {
    /// 3x3, stride 1, one group, equal padding of at most 2 (so the backward pass's padding `2 − p`
    /// is valid).
    package var winogradApplies: Bool {
        kh == 3 && kw == 3 && strideH == 1 && strideW == 1 && groups == 1 && padH == padW && padH <= 2
    }
    /// Whether `pass` takes Winograd rather than the lowered GEMM: a forward pass no backward pass
    /// follows and the backward pass to the input do, a recorded forward pass does not. Only where
    /// Winograd applies, is on, and the layer has at least 8 channels in and out (a first layer of 3
    /// channels gains nothing).
    package func takesWinograd(_ pass: ConvPass) -> Bool {
        guard ConvAlgorithm.winograd && winogradApplies && c >= 8 && o >= 8 else { return false }
        return pass != .recordedForward
    }
}

/// `y = conv(x, weight)` by Winograd. Requires `g.winogradApplies`.
package func conv2dForwardWinograd(x: UnsafePointer<Float>, weight: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                                   _ g: Conv2dGeometry) {
    precondition(g.winogradApplies, "conv2dForwardWinograd: \(g) is not a 3x3 stride-1 convolution")
    winograd(input: x, weight: weight, g.n, channels: g.c, g.h, g.w, pad: g.padH,
             outputs: g.o, flipped: false, output: y, accumulate: false)
}

/// `dx += ∂L/∂x` by Winograd: `dx` gets `conv(dy, W')` with `W'[c][o] = flip(W[o][c])`
/// and padding `2 − p`, whose output is exactly `H x W`. Requires `g.winogradApplies`.
package func conv2dBackwardInputWinograd(dy: UnsafePointer<Float>, weight: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                                         _ g: Conv2dGeometry) {
    precondition(g.winogradApplies, "conv2dBackwardInputWinograd: \(g) is not a 3x3 stride-1 convolution")
    winograd(input: dy, weight: weight, g.n, channels: g.o, g.ho, g.wo, pad: 2 - g.padH,
             outputs: g.c, flipped: true, output: dx, accumulate: true)
}

/// Transforms the weights into `U (36, outputs, channels)`, then convolves.
private func winograd(input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                      _ n: Int, channels: Int, _ h: Int, _ w: Int, pad: Int, outputs: Int,
                      flipped: Bool, output: UnsafeMutablePointer<Float>, accumulate: Bool) {
    typealias F = WinogradF4
    ScratchPool.withBuffer { buffer in
        let u = buffer.floats(F.positions * outputs * channels)
        winogradWeights(F.self, weight, outputs: outputs, inputs: channels, flipped: flipped, into: u)
        winogradConvolve(F.self, input: input, n: n, channels: channels, h: h, w: w, pad: pad,
                         u: u, outputs: outputs, output: output, accumulate: accumulate)
    }
}

/// The transforms of a tile size (`m` outputs from `α = m + 2` inputs), each on `α` (`m`) vectors of
/// eight tiles or channels, `stride` apart.
private protocol WinogradTransforms {
    /// Output tile side.
    static var m: Int { get }
    /// Input window side, `m + 2`.
    static var alpha: Int { get }
    /// `G g`: the α transformed kernel taps of 3.
    static func kernel(_ g: UnsafePointer<SIMD8<Float>>, _ stride: Int, _ out: UnsafeMutablePointer<SIMD8<Float>>, _ outStride: Int)
    /// `Bᵀ d` of α inputs.
    static func input(_ d: UnsafePointer<SIMD8<Float>>, _ stride: Int, _ out: UnsafeMutablePointer<SIMD8<Float>>, _ outStride: Int)
    /// `Aᵀ M`: m outputs of α products.
    static func output(_ m: UnsafePointer<SIMD8<Float>>, _ stride: Int, _ out: UnsafeMutablePointer<SIMD8<Float>>, _ outStride: Int)
}

extension WinogradTransforms {
    static var alpha: Int { m + 2 }
    static var positions: Int { alpha * alpha }
}

/// `U_ξ[o][c] = (G g G ᵀ)_ξ` for the 3x3 kernel `g` that maps input channel `c` to output channel `o`:
/// `weight[o][c]` itself, or with `flipped`, `weight[c][o]` rotated by 180° (weight stored
/// (inputs, outputs, 3, 3)). `u` is (α², outputs, inputs). Eight input channels at a time.
private func winogradWeights<F: WinogradTransforms>(_: F.Type, _ weight: UnsafePointer<Float>, outputs: Int, inputs: Int,
                                                    flipped: Bool, into u: UnsafeMutablePointer<Float>) {
    let alpha = F.alpha
    let plane = outputs * inputs
    let out = SendablePointer(u)
    let parts = splitRange(outputs, parts: 4 * KernelThreads.count)
    parallelFor(parts.count) { part in
        // g (3x3), then t = G g (α x 3), then the α columns of t Gᵀ for one row at a time.
        let g = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: 9 + 3 * alpha + alpha)
        g.initialize(repeating: .zero, count: 9 + 3 * alpha + alpha)
        defer { g.deallocate() }
        let t = g + 9, r = g + 9 + 3 * alpha
        for o in parts[part] {
            var c0 = 0
            while c0 < inputs {
                let lanes = min(8, inputs - c0)
                // Lane l is input channel min(c0 + l, last).
                for l in 0..<8 {
                    let c = c0 + min(l, lanes - 1)
                    let kernel = flipped ? weight + (c * outputs + o) * 9 : weight + (o * inputs + c) * 9
                    for k in 0..<9 { g[k][l] = kernel[flipped ? 8 - k : k] }
                }
                for j in 0..<3 { F.kernel(g + j, 3, t + j, 3) }          // t[a][j] = Σ_i G[a][i] g[i][j]
                for a in 0..<alpha {
                    F.kernel(t + a * 3, 1, r, 1)                            // U[a][b] = Σ_j t[a][j] G[b][j]
                    for b in 0..<alpha {
                        let dst = out.base + (a * alpha + b) * plane + o * inputs + c0
                        if lanes == 8 {
                            UnsafeMutableRawPointer(dst).storeBytes(of: r[b], as: SIMD8<Float>.self)
                        } else {
                            for l in 0..<lanes { dst[l] = r[b][l] }
                        }
                    }
                }
                c0 += 8
            }
        }
    }
}

/// F(4x4, 3x3), points 0, ±1, ±2, ∞:
/// `Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]`,
/// `G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1]`,
/// `Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]`.
private enum WinogradF4: WinogradTransforms {
    static var m: Int { 4 }

    @inline(__always)
    static func kernel(_ g: UnsafePointer<SIMD8<Float>>, _ stride: Int, _ out: UnsafeMutablePointer<SIMD8<Float>>, _ outStride: Int) {
        let g0 = g[0], g1 = g[stride], g2 = g[2 * stride]
        let q = g0 * (1 / 24) + g2 * (1 / 6), e = g1 * (1 / 12)
        let s = (g0 + g2) * (-1 / 6)
        out[0] = g0 * (1 / 4)
        out[outStride] = s - g1 * (1 / 6)
        out[2 * outStride] = s + g1 * (1 / 6)
        out[3 * outStride] = q + e
        out[4 * outStride] = q - e
        out[5 * outStride] = g2
    }

    @inline(__always)
    static func input(_ d: UnsafePointer<SIMD8<Float>>, _ stride: Int, _ out: UnsafeMutablePointer<SIMD8<Float>>, _ outStride: Int) {
        let d0 = d[0], d1 = d[stride], d2 = d[2 * stride], d3 = d[3 * stride], d4 = d[4 * stride], d5 = d[5 * stride]
        let a = d4 - 4 * d2, b = d3 - 4 * d1        // rows 1, 2: a ± b
        let e = d4 - d2, f = 2 * (d3 - d1)          // rows 3, 4: e ± f
        out[0] = 4 * d0 - 5 * d2 + d4
        out[outStride] = a + b
        out[2 * outStride] = a - b
        out[3 * outStride] = e + f
        out[4 * outStride] = e - f
        out[5 * outStride] = 4 * d1 - 5 * d3 + d5
    }

    @inline(__always)
    static func output(_ m: UnsafePointer<SIMD8<Float>>, _ stride: Int, _ out: UnsafeMutablePointer<SIMD8<Float>>, _ outStride: Int) {
        let m0 = m[0], m1 = m[stride], m2 = m[2 * stride], m3 = m[3 * stride], m4 = m[4 * stride], m5 = m[5 * stride]
        let p = m1 + m2, q = m1 - m2, r = m3 + m4, s = m3 - m4
        out[0] = m0 + p + r
        out[outStride] = q + 2 * s
        out[2 * outStride] = p + 4 * r
        out[3 * outStride] = q + 8 * s + m5
    }
}

/// `output (n, outputs, HO, WO) (+)= conv(input (n, channels, h, w), U)`, stride 1, zero padding
/// `pad`, `HO = h + 2·pad − 2`. Runs of images go to the threads, each run through α² single-threaded
/// GEMMs of about `ConvAlgorithm.tilesPerGemm` tiles; with fewer images than threads, the GEMMs take
/// all the threads. Every output is the same sum in the same order whatever the split.
private func winogradConvolve<F: WinogradTransforms>(_: F.Type, input: UnsafePointer<Float>, n: Int, channels: Int, h: Int, w: Int, pad: Int,
                              u: UnsafePointer<Float>, outputs: Int, output: UnsafeMutablePointer<Float>,
                              accumulate: Bool) {
    let ho = h + 2 * pad - 2, wo = w + 2 * pad - 2
    let tiles = WinogradTiling(m: F.m, h: h, w: w, pad: pad, ho: ho, wo: wo)
    let threads = KernelThreads.count
    // The scratch is sized for the most images a call can take whatever the batch size, so that its
    // memory is a fixed cost of the layer, not a cost per image (see `MemoryEstimate`).
    let most = max(1, ConvAlgorithm.tilesPerGemm / tiles.perImage)
    var perCall = min(n, most)
    let parallel = threads > 1 && n >= threads
    if parallel {
        // A multiple of `threads` calls of near-equal size: the workers take every threads-th call.
        let calls = (n + perCall - 1) / perCall
        let balanced = (calls + threads - 1) / threads * threads
        perCall = (n + balanced - 1) / balanced
    }
    let calls = (n + perCall - 1) / perCall
    let input = SendablePointer(input), output = SendablePointer(output)
    func run(_ callIndices: StrideTo<Int>, gemmThreads: Int) {
        ScratchPool.withBuffer { buffer in
            let scratch = WinogradScratch<F>(tiling: tiles, images: most, channels: channels, outputs: outputs, buffer: buffer)
            defer { scratch.deallocate() }
            for call in callIndices {
                let images = (call * perCall)..<min(n, (call + 1) * perCall)
                scratch.transformInput(UnsafePointer(input.base), images: images, channels: channels)
                let tp = scratch.paddedTiles(images.count)
                // gemmSIMD even for tiny problems (`gemm` would take its reference loop there): every
                // element is then the same sum whatever the number of tiles per call, which the
                // thread count sets.
                for xi in 0..<F.positions {
                    gemmSIMD(transA: false, transB: false, m: outputs, n: tp, k: channels, alpha: 1,
                             a: u + xi * outputs * channels, lda: channels, b: scratch.v + xi * channels * tp, ldb: tp,
                             beta: 0, c: scratch.m + xi * outputs * tp, ldc: tp, threads: gemmThreads)
                }
                scratch.transformOutput(output.base, images: images, outputs: outputs, accumulate: accumulate)
            }
        }
    }
    if parallel {
        parallelFor(threads) { worker in run(stride(from: worker, to: calls, by: threads), gemmThreads: 1) }
    } else {
        run(stride(from: 0, to: calls, by: 1), gemmThreads: threads)
    }
}

/// Where the m x m output tiles of one image sit: `th x tw` tiles, read from a zero-padded copy of each
/// input plane of `(m·th + 2) x (m·tw + 2)` floats.
private struct WinogradTiling {
    let m, h, w, pad, ho, wo, th, tw: Int
    var perImage: Int { th * tw }
    var paddedH: Int { m * th + 2 }
    var paddedW: Int { m * tw + 2 }
    var paddedPlane: Int { paddedH * paddedW }

    init(m: Int, h: Int, w: Int, pad: Int, ho: Int, wo: Int) {
        (self.m, self.h, self.w, self.pad, self.ho, self.wo) = (m, h, w, pad, ho, wo)
        (th, tw) = ((ho + m - 1) / m, (wo + m - 1) / m)
    }
}

/// One worker's buffers: the padded input planes of a run of images (one channel at a time), the
/// transformed tiles `V (α², C, tiles)`, the GEMM results `M (α², O, tiles)` (these three in a pooled
/// `ScratchBuffer`), and the window offset of each tile. Tiles are padded to a multiple of 8 (the extra
/// lanes repeat the last tile).
private struct WinogradScratch<F: WinogradTransforms> {
    let tiling: WinogradTiling
    let planes, v, m: UnsafeMutablePointer<Float>
    let offsets: UnsafeMutablePointer<Int>
    let lanes: UnsafeMutablePointer<SIMD8<Float>>

    /// Room for up to `images` images; the padded planes are zeroed (their borders stay zero).
    init(tiling: WinogradTiling, images: Int, channels: Int, outputs: Int, buffer: ScratchBuffer) {
        self.tiling = tiling
        let tp = (images * tiling.perImage + 7) / 8 * 8
        let planeFloats = (images * tiling.paddedPlane + 7) / 8 * 8
        planes = buffer.floats(planeFloats + F.positions * (channels + outputs) * tp)
        v = planes + planeFloats
        m = v + F.positions * channels * tp
        offsets = .allocate(capacity: tp)
        lanes = .allocate(capacity: 2 * F.positions)
        planes.update(repeating: 0, count: images * tiling.paddedPlane)
    }

    func deallocate() {
        offsets.deallocate(); lanes.deallocate()
    }

    func paddedTiles(_ images: Int) -> Int { (images * tiling.perImage + 7) / 8 * 8 }

    /// `V_ξ[c][t] = (Bᵀ d_{c,t} B)_ξ` for every channel and tile of `images`.
    func transformInput(_ x: UnsafePointer<Float>, images: Range<Int>, channels: Int) {
        let t = tiling, count = images.count * t.perImage, tp = paddedTiles(images.count)
        let alpha = F.alpha, tm = t.m
        for k in 0..<tp {
            let tile = min(k, count - 1), img = tile / t.perImage, r = tile % t.perImage
            offsets[k] = img * t.paddedPlane + tm * (r / t.tw) * t.paddedW + tm * (r % t.tw)
        }
        let d = lanes, rows = lanes + F.positions
        for c in 0..<channels {
            // Copy channel c of each image into its padded plane (the border stays zero).
            for (j, i) in images.enumerated() {
                let src = x + (i * channels + c) * t.h * t.w, dst = planes + j * t.paddedPlane
                for y in 0..<t.h {
                    (dst + (y + t.pad) * t.paddedW + t.pad).update(from: src + y * t.w, count: t.w)
                }
            }
            var k = 0
            while k < tp {
                // Gather the α x α windows of tiles k..<k+8, lane by lane.
                let o = (offsets[k], offsets[k + 1], offsets[k + 2], offsets[k + 3],
                         offsets[k + 4], offsets[k + 5], offsets[k + 6], offsets[k + 7])
                for i in 0..<alpha {
                    for j in 0..<alpha {
                        let p = planes + i * t.paddedW + j
                        d[i * alpha + j] = SIMD8(p[o.0], p[o.1], p[o.2], p[o.3], p[o.4], p[o.5], p[o.6], p[o.7])
                    }
                }
                // Bᵀ along each row, then along each column, written straight to V.
                for i in 0..<alpha { F.input(d + i * alpha, 1, rows + i * alpha, 1) }
                for j in 0..<alpha { F.input(rows + j, alpha, d + j, alpha) }
                let base = v + c * tp + k
                for xi in 0..<F.positions {
                    UnsafeMutableRawPointer(base + xi * channels * tp).storeBytes(of: d[xi], as: SIMD8<Float>.self)
                }
                k += 8
            }
        }
    }

    /// `output[i][o] (+)= Aᵀ M_{o,t} A` for every output channel and tile of `images`.
    func transformOutput(_ output: UnsafeMutablePointer<Float>, images: Range<Int>, outputs: Int, accumulate: Bool) {
        let t = tiling, count = images.count * t.perImage, tp = paddedTiles(images.count)
        let hw = t.ho * t.wo, alpha = F.alpha, tm = t.m
        let mm = lanes, rows = lanes + F.positions
        for o in 0..<outputs {
            var k = 0
            while k < count {
                for xi in 0..<F.positions {
                    mm[xi] = UnsafeRawPointer(m + (xi * outputs + o) * tp + k).load(as: SIMD8<Float>.self)
                }
                for i in 0..<alpha { F.output(mm + i * alpha, 1, rows + i * tm, 1) }   // rows[i][b], b < m
                for b in 0..<tm { F.output(rows + b, tm, mm + b, tm) }                 // mm[a][b], a, b < m
                for l in 0..<min(8, count - k) {
                    let tile = k + l, img = tile / t.perImage, r = tile % t.perImage
                    let y0 = tm * (r / t.tw), x0 = tm * (r % t.tw)
                    let dst = output + ((images.lowerBound + img) * outputs + o) * hw + y0 * t.wo + x0
                    let rowsHere = min(tm, t.ho - y0), colsHere = min(tm, t.wo - x0)
                    for a in 0..<rowsHere {
                        for b in 0..<colsHere {
                            let value = mm[a * tm + b][l]
                            if accumulate { dst[a * t.wo + b] += value } else { dst[a * t.wo + b] = value }
                        }
                    }
                }
                k += 8
            }
        }
    }
}
