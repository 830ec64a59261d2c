// The pixel reconstruction steps of a baseline JPEG decoder, written to give the same integers as
// libjpeg / libjpeg-turbo with their default settings (what Pillow uses): the accurate integer IDCT,
// its range limiting, "fancy" (triangle-filter) chroma upsampling and the fixed-point YCbCr → RGB tables.

/// The zigzag scan order (T.81 Figure A.6): `zigzag[k]` is the row-major index of the k-th coefficient.
let jpegZigzag: [Int] = {
    var order: [Int] = []
    for s in 0...14 {
        let rows = max(0, s - 7)...min(s, 7)
        // Even diagonals run up and to the right (row decreasing), odd ones down and to the left.
        for row in (s % 2 == 0 ? Array(rows.reversed()) : Array(rows)) { order.append(row * 8 + s - row) }
    }
    return order
}()

/// The accurate ("islow") separable integer 8×8 inverse DCT.
///
/// It follows the Loeffler–Ligtenberg–Moschytz factorisation as used by the IJG library: 12
/// multiplications per 1-D pass, constants scaled by 2^13, a first (column) pass that keeps 2 extra
/// bits of precision, and a second (row) pass that removes those, the 2^13 scale and the factor 8 of
/// the 2-D DCT normalisation with round-half-up shifts. The result is centred on 128 and limited to
/// 0...255 after wrapping to a signed 10-bit value, exactly as libjpeg's range-limit table does.
enum JPEGIDCT {
    private static let constBits = 13
    private static let pass1Bits = 2

    // cos-based rotation constants of the factorisation, each round(c * 2^13).
    private static let c0_298631336: Int32 = 2446   // sqrt(2) * (-c1 + c3 + c5 - c7)
    private static let c0_390180644: Int32 = 3196   // sqrt(2) * (c5 - c3)
    private static let c0_541196100: Int32 = 4433   // sqrt(2) * c6
    private static let c0_765366865: Int32 = 6270   // sqrt(2) * (c2 - c6)
    private static let c0_899976223: Int32 = 7373   // sqrt(2) * (c7 - c3)
    private static let c1_175875602: Int32 = 9633   // sqrt(2) * c3
    private static let c1_501321110: Int32 = 12299  // sqrt(2) * (c1 + c3 - c5 - c7)
    private static let c1_847759065: Int32 = 15137  // sqrt(2) * (c2 + c6)
    private static let c1_961570560: Int32 = 16069  // sqrt(2) * (c5 + c3)
    private static let c2_053119869: Int32 = 16819  // sqrt(2) * (c1 + c3 - c5 + c7)
    private static let c2_562915447: Int32 = 20995  // sqrt(2) * (c1 + c3)
    private static let c3_072711026: Int32 = 25172  // sqrt(2) * (c1 + c3 + c5 - c7)

    /// Shift right by `n` rounding half up.
    @inline(__always)
    private static func descale(_ x: Int32, _ n: Int32) -> Int32 { (x &+ (1 &<< (n - 1))) &>> n }

    /// One 1-D pass over 8 values `v[0..<8]` (already multiplied out); returns the 8 outputs before
    /// the final descale, in the order 0...7.
    @inline(__always)
    private static func butterfly(_ v0: Int32, _ v1: Int32, _ v2: Int32, _ v3: Int32, _ v4: Int32, _ v5: Int32,
                                  _ v6: Int32, _ v7: Int32)
        -> (Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32)
    {
        // Even part: the 4-point IDCT of inputs 0, 2, 4, 6.
        let z1 = (v2 &+ v6) &* c0_541196100
        let t2 = z1 &+ v6 &* (-c1_847759065)
        let t3 = z1 &+ v2 &* c0_765366865
        let t0 = (v0 &+ v4) &<< Int32(constBits)
        let t1 = (v0 &- v4) &<< Int32(constBits)
        let t10 = t0 &+ t3, t13 = t0 &- t3, t11 = t1 &+ t2, t12 = t1 &- t2

        // Odd part: inputs 7, 5, 3, 1.
        var o0 = v7, o1 = v5, o2 = v3, o3 = v1
        var y1 = o0 &+ o3, y2 = o1 &+ o2, y3 = o0 &+ o2, y4 = o1 &+ o3
        let y5 = (y3 &+ y4) &* c1_175875602
        o0 = o0 &* c0_298631336
        o1 = o1 &* c2_053119869
        o2 = o2 &* c3_072711026
        o3 = o3 &* c1_501321110
        y1 = y1 &* (-c0_899976223)
        y2 = y2 &* (-c2_562915447)
        y3 = y3 &* (-c1_961570560) &+ y5
        y4 = y4 &* (-c0_390180644) &+ y5
        o0 = o0 &+ y1 &+ y3
        o1 = o1 &+ y2 &+ y4
        o2 = o2 &+ y2 &+ y3
        o3 = o3 &+ y1 &+ y4
        return (t10 &+ o3, t11 &+ o2, t12 &+ o1, t13 &+ o0, t13 &- o0, t12 &- o1, t11 &- o2, t10 &- o3)
    }

    /// Inverse-transforms `block` (dequantized coefficients in row-major order; used as scratch) and
    /// writes the 8×8 samples to `plane` at `offset` with row stride `stride`.
    static func transform(_ block: inout [Int32], into plane: inout [UInt8], offset: Int, stride: Int) {
        let pass1Shift = Int32(constBits - pass1Bits)
        let pass2Shift = Int32(constBits + pass1Bits + 3)
        // Pass 1: columns, results scaled up by 2^pass1Bits, stored back in place.
        for c in 0..<8 {
            let r = butterfly(block[c], block[8 + c], block[16 + c], block[24 + c], block[32 + c], block[40 + c],
                              block[48 + c], block[56 + c])
            block[c] = descale(r.0, pass1Shift)
            block[8 + c] = descale(r.1, pass1Shift)
            block[16 + c] = descale(r.2, pass1Shift)
            block[24 + c] = descale(r.3, pass1Shift)
            block[32 + c] = descale(r.4, pass1Shift)
            block[40 + c] = descale(r.5, pass1Shift)
            block[48 + c] = descale(r.6, pass1Shift)
            block[56 + c] = descale(r.7, pass1Shift)
        }
        // Pass 2: rows, then level shift and range limit.
        for row in 0..<8 {
            let b = row * 8
            let r = butterfly(block[b], block[b + 1], block[b + 2], block[b + 3], block[b + 4], block[b + 5],
                              block[b + 6], block[b + 7])
            let o = offset + row * stride
            plane[o] = limit(descale(r.0, pass2Shift))
            plane[o + 1] = limit(descale(r.1, pass2Shift))
            plane[o + 2] = limit(descale(r.2, pass2Shift))
            plane[o + 3] = limit(descale(r.3, pass2Shift))
            plane[o + 4] = limit(descale(r.4, pass2Shift))
            plane[o + 5] = limit(descale(r.5, pass2Shift))
            plane[o + 6] = limit(descale(r.6, pass2Shift))
            plane[o + 7] = limit(descale(r.7, pass2Shift))
        }
    }

    /// libjpeg's post-IDCT range limit: wrap to a signed 10-bit value, add 128, clamp to 0...255.
    @inline(__always)
    static func limit(_ x: Int32) -> UInt8 {
        let wrapped = ((x &+ 512) & 1023) - 512
        return UInt8(clamping: wrapped + 128)
    }
}

/// Chroma upsampling to the full image size, as libjpeg does it with its default "fancy" upsampling.
enum JPEGUpsample {
    /// Expands a `width`×`height` component (row stride `stride`) by integer factors `hr`×`vr`, keeping
    /// the top-left `outWidth`×`outHeight` samples.
    ///
    /// 2×1 and 2×2 (when the component is wider than 2 samples) and 1×2 use the triangle filter: each
    /// output sample is 3/4 of its nearest input plus 1/4 of the next nearest, per direction, computed
    /// in integers with libjpeg's alternating rounding biases (1 and 2 of 4 in one direction; 8 and 7 of
    /// 16 in two) so rounding errors do not drift one way. Missing neighbours at the image edges
    /// repeat the edge sample. Every other factor replicates samples (a box filter).
    static func upsample(_ plane: [UInt8], width: Int, height: Int, stride: Int, hr: Int, vr: Int,
                         outWidth: Int, outHeight: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: outWidth * outHeight)
        @inline(__always) func at(_ x: Int, _ y: Int) -> Int32 { Int32(plane[y * stride + x]) }
        @inline(__always) func clampRow(_ y: Int) -> Int { min(max(y, 0), height - 1) }

        if hr == 2 && vr == 1 && width > 2 {
            for y in 0..<outHeight {
                for ox in 0..<outWidth {
                    let x = ox >> 1
                    let v: Int32
                    if ox & 1 == 0 {
                        v = x == 0 ? at(0, y) : (3 * at(x, y) + at(x - 1, y) + 1) >> 2
                    } else {
                        v = x == width - 1 ? at(x, y) : (3 * at(x, y) + at(x + 1, y) + 2) >> 2
                    }
                    out[y * outWidth + ox] = UInt8(truncatingIfNeeded: v)
                }
            }
        } else if hr == 2 && vr == 2 && width > 2 {
            var sums = [Int32](repeating: 0, count: width)
            for oy in 0..<outHeight {
                let y = oy >> 1
                let other = clampRow(oy & 1 == 0 ? y - 1 : y + 1)
                for x in 0..<width { sums[x] = 3 * at(x, y) + at(x, other) }
                for ox in 0..<outWidth {
                    let x = ox >> 1
                    let v: Int32
                    if ox & 1 == 0 {
                        v = x == 0 ? (4 * sums[0] + 8) >> 4 : (3 * sums[x] + sums[x - 1] + 8) >> 4
                    } else {
                        v = x == width - 1 ? (4 * sums[x] + 7) >> 4 : (3 * sums[x] + sums[x + 1] + 7) >> 4
                    }
                    out[oy * outWidth + ox] = UInt8(truncatingIfNeeded: v)
                }
            }
        } else if hr == 1 && vr == 2 {
            for oy in 0..<outHeight {
                let y = oy >> 1
                let upper = oy & 1 == 0
                let other = clampRow(upper ? y - 1 : y + 1)
                for ox in 0..<outWidth {
                    let v = (3 * at(ox, y) + at(ox, other) + (upper ? 1 : 2)) >> 2
                    out[oy * outWidth + ox] = UInt8(truncatingIfNeeded: v)
                }
            }
        } else {
            for oy in 0..<outHeight {
                let src = (oy / vr) * stride
                for ox in 0..<outWidth { out[oy * outWidth + ox] = plane[src + ox / hr] }
            }
        }
        return out
    }
}

/// YCbCr → RGB with libjpeg's fixed-point tables (JFIF / ITU-R BT.601 full range):
/// R = Y + 1.402 Cr', G = Y − 0.34414 Cb' − 0.71414 Cr', B = Y + 1.772 Cb', where Cb' = Cb − 128 and
/// Cr' = Cr − 128. Coefficients are scaled by 2^16 and rounded; each term is rounded half up before
/// being added to Y (the two green terms are summed first, then rounded once); results are clamped.
enum JPEGColor {
    private static let scaleBits = 16
    private static func fixed(_ x: Double) -> Int { Int(x * Double(1 << scaleBits) + 0.5) }
    private static let half = 1 << (scaleBits - 1)

    static let crToR: [Int32] = (0..<256).map { Int32((fixed(1.40200) * ($0 - 128) + half) >> scaleBits) }
    static let cbToB: [Int32] = (0..<256).map { Int32((fixed(1.77200) * ($0 - 128) + half) >> scaleBits) }
    static let crToG: [Int] = (0..<256).map { -fixed(0.71414) * ($0 - 128) }
    static let cbToG: [Int] = (0..<256).map { -fixed(0.34414) * ($0 - 128) + half }

    /// Interleaves three full-size planes into HWC RGB.
    static func ycbcrToRGB(_ y: [UInt8], _ cb: [UInt8], _ cr: [UInt8]) -> [UInt8] {
        let crToR = Self.crToR, cbToB = Self.cbToB, crToG = Self.crToG, cbToG = Self.cbToG
        var out = [UInt8](repeating: 0, count: y.count * 3)
        for i in 0..<y.count {
            let l = Int32(y[i]), b = Int(cb[i]), r = Int(cr[i])
            out[3 * i] = UInt8(clamping: l + crToR[r])
            out[3 * i + 1] = UInt8(clamping: l + Int32(truncatingIfNeeded: (cbToG[b] + crToG[r]) >> scaleBits))
            out[3 * i + 2] = UInt8(clamping: l + cbToB[b])
        }
        return out
    }

    /// Interleaves three full-size planes that already hold R, G and B.
    static func interleave(_ a: [UInt8], _ b: [UInt8], _ c: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: a.count * 3)
        for i in 0..<a.count {
            out[3 * i] = a[i]
            out[3 * i + 1] = b[i]
            out[3 * i + 2] = c[i]
        }
        return out
    }
}
