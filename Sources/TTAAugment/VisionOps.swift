import Foundation
import TTATensor

/// Torchvision's tensor image operations (`torchvision/transforms/_functional_tensor.py` and
/// `functional.py`) on float32 NCHW batches in [0, 1], reimplemented op for op: the same parameters give
/// the same pixels, up to float32 rounding (the parity tests bound the difference by 1e-4; it is ~1e-6).
///
/// Colour operations work in place (`inout Tensor`); geometric ones return a new tensor. Colour ops accept
/// 1 or 3 channels, as torchvision does. The CoTTA pipeline (`CoTTAAugmentation`) calls the colour ops
/// directly and fuses pad → affine → blur → crop → flip plane by plane, through the same plane kernels
/// (`AffineTaps`, `blurWindow`) the stand-alone geometric ops below use.
public enum VisionOps {

    // MARK: - Colour

    /// `torch.clip(img, lo, hi)`, in place.
    public static func clip(_ x: inout Tensor, _ lo: Float, _ hi: Float) {
        x.withUnsafeMutableBufferPointer { p in
            for i in p.indices { p[i] = min(max(p[i], lo), hi) }
        }
    }

    /// `adjust_brightness`: `_blend(img, zeros, factor)`, i.e. `clamp(factor·img, 0, 1)`.
    public static func adjustBrightness(_ x: inout Tensor, _ factor: Double) {
        precondition(factor >= 0, "adjustBrightness: negative factor \(factor)")
        _ = colourDims(x)
        let r = Float(factor)
        x.withUnsafeMutableBufferPointer { p in
            for i in p.indices { p[i] = clamp01(r * p[i]) }
        }
    }

    /// `adjust_contrast`: `_blend(img, mean, factor)` where `mean` is the mean of `rgb_to_grayscale(img)` over
    /// one image (C = 3), or of the image itself (C = 1). The mean is per image, not per batch.
    public static func adjustContrast(_ x: inout Tensor, _ factor: Double) {
        precondition(factor >= 0, "adjustContrast: negative factor \(factor)")
        let (n, c, hw) = colourDims(x)
        let r = Float(factor), r1 = Float(1 - factor)
        x.withUnsafeMutableBufferPointer { p in
            for i in 0..<n {
                let base = i * c * hw
                var sum = 0.0
                if c == 3 {
                    for j in 0..<hw { sum += Double(grayscale(p[base + j], p[base + hw + j], p[base + 2 * hw + j])) }
                } else {
                    for j in 0..<hw { sum += Double(p[base + j]) }
                }
                let blendedMean = r1 * Float(sum / Double(hw))
                for j in base..<(base + c * hw) { p[j] = clamp01(r * p[j] + blendedMean) }
            }
        }
    }

    /// `adjust_saturation`: `_blend(img, rgb_to_grayscale(img), factor)` per pixel. The identity on 1 channel.
    public static func adjustSaturation(_ x: inout Tensor, _ factor: Double) {
        precondition(factor >= 0, "adjustSaturation: negative factor \(factor)")
        let (n, c, hw) = colourDims(x)
        guard c == 3 else { return }
        let r = Float(factor), r1 = Float(1 - factor)
        x.withUnsafeMutableBufferPointer { p in
            for i in 0..<n {
                let base = i * 3 * hw
                for j in base..<(base + hw) {
                    let g = r1 * grayscale(p[j], p[j + hw], p[j + 2 * hw])
                    p[j] = clamp01(r * p[j] + g)
                    p[j + hw] = clamp01(r * p[j + hw] + g)
                    p[j + 2 * hw] = clamp01(r * p[j + 2 * hw] + g)
                }
            }
        }
    }

    /// `adjust_hue`: `_rgb2hsv`, `h ← (h + hueFactor) mod 1` (`torch.remainder`), `_hsv2rgb`, per pixel.
    /// The identity on 1 channel.
    public static func adjustHue(_ x: inout Tensor, _ hueFactor: Double) {
        precondition((-0.5...0.5).contains(hueFactor), "adjustHue: factor \(hueFactor) is not in [-0.5, 0.5]")
        let (n, c, hw) = colourDims(x)
        guard c == 3 else { return }
        let shift = Float(hueFactor)
        x.withUnsafeMutableBufferPointer { p in
            for i in 0..<n {
                let base = i * 3 * hw
                for j in base..<(base + hw) {
                    var (h, s, v) = rgbToHSV(p[j], p[j + hw], p[j + 2 * hw])
                    h = remainder1(h + shift)
                    (p[j], p[j + hw], p[j + 2 * hw]) = hsvToRGB(h, s, v)
                }
            }
        }
    }

    /// `adjust_gamma` with gain 1: `clamp(img^gamma, 0, 1)` (float32 `pow`). ColorJitterPro clamps the image
    /// to [1e-8, 1] before calling it; that clamp is not part of this function.
    public static func adjustGamma(_ x: inout Tensor, _ gamma: Double) {
        precondition(gamma >= 0, "adjustGamma: negative gamma \(gamma)")
        _ = colourDims(x)
        let e = Float(gamma)
        x.withUnsafeMutableBufferPointer { p in
            for i in p.indices { p[i] = clamp01(powf(p[i], e)) }
        }
    }

    /// `rgb_to_grayscale` for one pixel: `0.2989·r + 0.587·g + 0.114·b` in float32.
    @inline(__always)
    static func grayscale(_ r: Float, _ g: Float, _ b: Float) -> Float {
        0.2989 * r + 0.587 * g + 0.114 * b
    }

    /// `_rgb2hsv` for one pixel (Pillow's algorithm as torchvision vectorises it, including its handling of
    /// grey pixels and of ties between channels).
    @inline(__always)
    static func rgbToHSV(_ r: Float, _ g: Float, _ b: Float) -> (Float, Float, Float) {
        let maxc = max(max(r, g), b), minc = min(min(r, g), b)  // (not the variadic max: it allocates)
        let eqc = maxc == minc
        let cr = maxc - minc
        let s = cr / (eqc ? 1 : maxc)
        let divisor: Float = eqc ? 1 : cr
        let rc = (maxc - r) / divisor, gc = (maxc - g) / divisor, bc = (maxc - b) / divisor
        let h: Float
        if maxc == r {
            h = bc - gc
        } else if maxc == g {
            h = 2.0 + rc - bc
        } else {
            h = 4.0 + gc - rc
        }
        return (fractionalPart(h / 6.0 + 1.0), s, maxc)
    }

    /// `_hsv2rgb` for one pixel.
    @inline(__always)
    static func hsvToRGB(_ h: Float, _ s: Float, _ v: Float) -> (Float, Float, Float) {
        let h6 = h * 6.0
        let i = floorSmall(h6)
        let f = h6 - i
        let p = min(max(v * (1.0 - s), 0), 1)
        let q = min(max(v * (1.0 - s * f), 0), 1)
        let t = min(max(v * (1.0 - s * (1.0 - f)), 0), 1)
        switch Int(i) {  // h ∈ [0, 1], so i ∈ 0…6 and `i % 6` only maps 6 to 0
        case 0, 6: return (v, t, p)
        case 1: return (q, v, p)
        case 2: return (p, v, t)
        case 3: return (p, q, v)
        case 4: return (t, p, v)
        default: return (v, p, q)
        }
    }

    /// `torch.remainder(a, 1.0)` for float32 with |a| < 2 (hue + shift ∈ [-0.5, 1.5)): `fmod(a, 1)`, plus 1
    /// when negative. For |a| < 2 that is `a - floor(a)`, with the same rounding (`a - floor(a)` is exact
    /// for a ≥ 0, and for a < 0 both round a + 1).
    @inline(__always)
    static func remainder1(_ a: Float) -> Float {
        a - floorSmall(a)
    }

    /// `torch.fmod(a, 1.0)` for 0 ≤ a < 2 (where it is exact and equals `a - floor(a)`).
    @inline(__always)
    static func fractionalPart(_ a: Float) -> Float {
        a - floorSmall(a)
    }

    @inline(__always)
    static func clamp01(_ v: Float) -> Float { min(max(v, 0), 1) }

    /// `floor` via truncation for |a| < 2^23 (baseline x86-64 has no floor instruction, so `rounded(.down)`
    /// is a libm call in the per-pixel hue loop); other values (and NaN) take `rounded(.down)`.
    @inline(__always)
    static func floorSmall(_ a: Float) -> Float {
        guard abs(a) < 8_388_608 else { return a.rounded(.down) }
        let t = Float(Int32(a))
        return t > a ? t - 1 : t
    }

    /// (N, C, H·W) of an NCHW image batch with 1 or 3 channels.
    static func colourDims(_ x: Tensor) -> (Int, Int, Int) {
        precondition(x.rank == 4, "VisionOps: expected an NCHW batch, got shape \(x.shape)")
        precondition(x.shape[1] == 1 || x.shape[1] == 3, "VisionOps: colour ops need 1 or 3 channels, got \(x.shape)")
        return (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
    }

    static func planeDims(_ x: Tensor) -> (planes: Int, h: Int, w: Int) {
        precondition(x.rank == 4, "VisionOps: expected an NCHW batch, got shape \(x.shape)")
        return (x.shape[0] * x.shape[1], x.shape[2], x.shape[3])
    }

    // MARK: - Geometry

    /// `pad(img, pad, padding_mode="edge")` (`torch.nn.functional.pad(mode="replicate")`) on all four sides.
    public static func padEdge(_ x: Tensor, _ pad: Int) -> Tensor {
        precondition(pad >= 0)
        let (planes, h, w) = planeDims(x)
        let (ph, pw) = (h + 2 * pad, w + 2 * pad)
        var out = Tensor(shape: [x.shape[0], x.shape[1], ph, pw])
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for plane in 0..<planes {
                    let s = plane * h * w, d = plane * ph * pw
                    for r in 0..<ph {
                        let sr = s + min(max(r - pad, 0), h - 1) * w
                        for c in 0..<pw { dst[d + r * pw + c] = src[sr + min(max(c - pad, 0), w - 1)] }
                    }
                }
            }
        }
        return out
    }

    /// `pad(img, pad, padding_mode="reflect")` on all four sides (the edge row/column is not repeated); `pad` < H, W.
    public static func padReflect(_ x: Tensor, _ pad: Int) -> Tensor {
        let (planes, h, w) = planeDims(x)
        precondition(pad >= 0 && pad < h && pad < w, "padReflect: reflect padding needs pad < H, W")
        let (ph, pw) = (h + 2 * pad, w + 2 * pad)
        var out = Tensor(shape: [x.shape[0], x.shape[1], ph, pw])
        for plane in 0..<planes {
            for r in 0..<ph {
                let sr = plane * h * w + reflectIndex(r - pad, h) * w
                for c in 0..<pw { out.storage[plane * ph * pw + r * pw + c] = x.storage[sr + reflectIndex(c - pad, w)] }
            }
        }
        return out
    }

    /// Index `i` of a length-`n` axis mirrored at both ends without repeating the edge (`-1 → 1`, `n → n − 2`).
    static func reflectIndex(_ i: Int, _ n: Int) -> Int { i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i) }

    /// `functional._get_inverse_affine_matrix` as `functional.affine` calls it for tensors: center (0, 0)
    /// (the image centre, in the centred coordinates of `_gen_affine_grid`), no shear. Computed in Double,
    /// like Python; `angle` in degrees (counter-clockwise positive on screen), `translate` in pixels.
    public static func inverseAffineMatrix(angle: Double, translate: (x: Int, y: Int), scale: Double) -> [Double] {
        precondition(scale > 0, "inverseAffineMatrix: scale must be positive")
        let rot = angle * (Double.pi / 180)
        let (sx, sy) = (0.0, 0.0)
        let a = cos(rot - sy) / cos(sy)
        let b = -cos(rot - sy) * tan(sx) / cos(sy) - sin(rot)
        let c = sin(rot - sy) / cos(sy)
        let d = -sin(rot - sy) * tan(sx) / cos(sy) + cos(rot)
        var m = [d, -b, 0.0, -c, a, 0.0].map { $0 / scale }
        let (tx, ty) = (Double(translate.x), Double(translate.y))
        m[2] += m[0] * (-0.0 - tx) + m[1] * (-0.0 - ty)
        m[5] += m[3] * (-0.0 - tx) + m[4] * (-0.0 - ty)
        return m
    }

    /// `_functional_tensor.affine(img, matrix, "bilinear", fill=[0.0] * C)`, as `RandomAffine` calls it: the
    /// output has the input's size; samples outside the image count as 0 and the result is multiplied by
    /// the bilinearly sampled coverage mask torchvision appends for the fill colour.
    public static func affineBilinear(_ x: Tensor, matrix: [Double]) -> Tensor {
        let (planes, h, w) = planeDims(x)
        let taps = AffineTaps(matrix: matrix, sourceH: h, sourceW: w, pad: 0, rows: 0..<h, cols: 0..<w)
        var out = Tensor(shape: x.shape)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for plane in 0..<planes {
                    taps.sample(src.baseAddress! + plane * h * w, into: dst.baseAddress! + plane * h * w, rowStride: w)
                }
            }
        }
        return out
    }

    /// `_get_gaussian_kernel1d(kernelSize, sigma)` in float32: `exp(-0.5·(x/σ)²)` on
    /// `linspace(-(k-1)/2, (k-1)/2, k)`, normalised to sum 1.
    public static func gaussianKernel1D(size: Int, sigma: Double) -> [Float] {
        precondition(size > 0 && size % 2 == 1, "gaussianKernel1D: kernel size must be odd and positive")
        precondition(sigma > 0, "gaussianKernel1D: sigma must be positive")
        let half = Float(size - 1) * 0.5
        let s = Float(sigma)
        var pdf = [Float](repeating: 0, count: size)
        for i in 0..<size {
            // torch.linspace: from the start for the first half, from the end for the second.
            let step = size > 1 ? (half - -half) / Float(size - 1) : 0
            let x = i < size / 2 ? -half + step * Float(i) : half - step * Float(size - 1 - i)
            let z = x / s
            pdf[i] = expf(-0.5 * (z * z))
        }
        let sum = pdf.reduce(0, +)
        return pdf.map { $0 / sum }
    }

    /// `gaussian_blur(img, [k, k], [σ, σ])`: a depthwise k×k convolution with the outer product of
    /// `gaussianKernel1D`, after reflect padding by k/2 (applied separably here).
    public static func gaussianBlur(_ x: Tensor, kernelSize: Int, sigma: Double) -> Tensor {
        let (planes, h, w) = planeDims(x)
        precondition(kernelSize / 2 < h && kernelSize / 2 < w, "gaussianBlur: reflect padding needs k/2 < H, W")
        let kernel = gaussianKernel1D(size: kernelSize, sigma: sigma)
        var out = Tensor(shape: x.shape)
        var tmp = [Float](repeating: 0, count: (h + kernelSize - 1) * w)
        let window = BlurWindow(kernel: kernel, h: h, w: w, rows: 0..<h, cols: 0..<w)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                tmp.withUnsafeMutableBufferPointer { t in
                    for plane in 0..<planes {
                        window.apply(src.baseAddress! + plane * h * w, tmp: t.baseAddress!,
                                     into: dst.baseAddress! + plane * h * w, flip: false)
                    }
                }
            }
        }
        return out
    }

    /// The top-left corner `center_crop` uses: `int(round((H - size) / 2))` (Python rounds halves to even).
    public static func centerCropOrigin(_ extent: Int, _ size: Int) -> Int {
        Int((Double(extent - size) / 2).rounded(.toNearestOrEven))
    }

    /// `center_crop(img, [size, size])` for size ≤ H, W.
    public static func centerCrop(_ x: Tensor, _ size: Int) -> Tensor {
        let (planes, h, w) = planeDims(x)
        precondition(size <= h && size <= w, "centerCrop: crop \(size) larger than \(h)×\(w)")
        let (top, left) = (centerCropOrigin(h, size), centerCropOrigin(w, size))
        var out = Tensor(shape: [x.shape[0], x.shape[1], size, size])
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for plane in 0..<planes {
                    for r in 0..<size {
                        let s = plane * h * w + (top + r) * w + left, d = (plane * size + r) * size
                        for c in 0..<size { dst[d + c] = src[s + c] }
                    }
                }
            }
        }
        return out
    }

    /// `hflip`: `img.flip(-1)`.
    public static func hflip(_ x: Tensor) -> Tensor {
        let (planes, h, w) = planeDims(x)
        var out = Tensor(shape: x.shape)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for row in 0..<(planes * h) {
                    for c in 0..<w { dst[row * w + c] = src[row * w + w - 1 - c] }
                }
            }
        }
        return out
    }
}

/// The bilinear taps of `grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)` on the grid
/// `_gen_affine_grid` builds for an inverse affine matrix, for a window of output pixels.
///
/// The canvas being transformed is a source plane edge-padded by `pad` on every side (`pad` 0: the plane
/// itself); taps index the source plane directly, so the padded canvas is never materialised. The grid is
/// the same for every plane of a batch, so the taps are computed once per call. Each output pixel gets four
/// (index, weight) taps — weight 0 for corners outside the canvas, which `grid_sample` skips — and the
/// coverage mask (the sampled all-ones channel `_apply_grid_transform` appends when a fill is given).
struct AffineTaps {
    let rows: Range<Int>
    let cols: Range<Int>
    private var index: [Int32]
    private var weight: [Float]
    private var mask: [Float]

    init(matrix: [Double], sourceH: Int, sourceW: Int, pad: Int, reflect: Bool = false, rows: Range<Int>, cols: Range<Int>) {
        precondition(!reflect || (pad < sourceH && pad < sourceW), "AffineTaps: reflect padding needs pad < H, W")
        precondition(matrix.count == 6, "AffineTaps: the matrix has 6 entries")
        let (ch, cw) = (sourceH + 2 * pad, sourceW + 2 * pad)  // canvas = output size
        precondition(rows.lowerBound >= 0 && rows.upperBound <= ch && cols.lowerBound >= 0 && cols.upperBound <= cw)
        self.rows = rows
        self.cols = cols
        let count = rows.count * cols.count
        index = [Int32](repeating: 0, count: 4 * count)
        weight = [Float](repeating: 0, count: 4 * count)
        mask = [Float](repeating: 0, count: count)

        // _gen_affine_grid, in float32: theta as float32, theta^T divided by (w/2, h/2), base grid of
        // pixel centres in centred coordinates, then grid_sample's unnormalisation (align_corners=False).
        let t = matrix.map { Float($0) }
        let (halfW, halfH) = (Float(cw) * 0.5, Float(ch) * 0.5)
        let (ax, bx, cx) = (t[0] / halfW, t[1] / halfW, t[2] / halfW)
        let (ay, by, cy) = (t[3] / halfH, t[4] / halfH, t[5] / halfH)
        var k = 0
        for r in rows {
            let baseY = -Float(ch) * 0.5 + 0.5 + Float(r)
            for c in cols {
                let baseX = -Float(cw) * 0.5 + 0.5 + Float(c)
                let gx = baseX * ax + baseY * bx + cx
                let gy = baseX * ay + baseY * by + cy
                let ix = (gx + 1) * halfW - 0.5
                let iy = (gy + 1) * halfH - 0.5
                let x0 = ix.rounded(.down), y0 = iy.rounded(.down)
                let wE = ix - x0, wW = 1 - wE
                let wS = iy - y0, wN = 1 - wS
                let (xi, yi) = (Int(x0), Int(y0))
                // Corners in grid_sample's order: north-west, north-east, south-west, south-east.
                var m: Float = 0
                for q in 0..<4 {
                    let (y, x) = (yi + q / 2, xi + q % 2)
                    guard y >= 0 && y < ch && x >= 0 && x < cw else { continue }
                    let wt = (q / 2 == 0 ? wN : wS) * (q % 2 == 0 ? wW : wE)
                    let sy = reflect ? VisionOps.reflectIndex(y - pad, sourceH) : min(max(y - pad, 0), sourceH - 1)
                    let sx = reflect ? VisionOps.reflectIndex(x - pad, sourceW) : min(max(x - pad, 0), sourceW - 1)
                    index[4 * k + q] = Int32(sy * sourceW + sx)
                    weight[4 * k + q] = wt
                    m += wt
                }
                mask[k] = m
                k += 1
            }
        }
    }

    /// Writes the window of the transformed canvas of `src` (a sourceH × sourceW plane) to
    /// `dst[r * rowStride + c]` for (r, c) in rows × cols (canvas coordinates).
    func sample(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, rowStride: Int) {
        index.withUnsafeBufferPointer { idx in
            weight.withUnsafeBufferPointer { wt in
                mask.withUnsafeBufferPointer { mk in
                    var k = 0
                    for r in rows {
                        let row = dst + r * rowStride
                        for c in cols {
                            let j = 4 * k
                            let v = src[Int(idx[j])] * wt[j] + src[Int(idx[j + 1])] * wt[j + 1]
                                + src[Int(idx[j + 2])] * wt[j + 2] + src[Int(idx[j + 3])] * wt[j + 3]
                            row[c] = v * mk[k]
                            k += 1
                        }
                    }
                }
            }
        }
    }
}

/// A separable Gaussian blur of one window of a plane with torchvision's reflect padding
/// (`gaussian_blur` → `torch_pad(mode="reflect")` → depthwise conv2d), optionally mirroring each output row
/// (`hflip` fused in). Reads only the plane rows/cols `rowMap`/`colMap` name.
struct BlurWindow {
    let kernel: [Float]
    let h: Int, w: Int
    let rows: Range<Int>, cols: Range<Int>
    /// Reflected source row (col) of each padded row (col) the window reads.
    let rowMap: [Int], colMap: [Int]
    /// True when no column is reflected (the window's columns read one contiguous run).
    let colsContiguous: Bool

    init(kernel: [Float], h: Int, w: Int, rows: Range<Int>, cols: Range<Int>) {
        let half = kernel.count / 2
        precondition(half < h && half < w, "BlurWindow: reflect padding needs k/2 < H, W")
        self.kernel = kernel
        self.h = h
        self.w = w
        self.rows = rows
        self.cols = cols
        let reflect = VisionOps.reflectIndex
        rowMap = ((rows.lowerBound - half)..<(rows.upperBound + half)).map { reflect($0, h) }
        let colMap = ((cols.lowerBound - half)..<(cols.upperBound + half)).map { reflect($0, w) }
        self.colMap = colMap
        colsContiguous = colMap.enumerated().allSatisfy { $0.element == colMap[0] + $0.offset }
    }

    /// The plane rows the window reads (what an affine pass must have filled).
    var rowsRead: ClosedRange<Int> { rowMap.min()!...rowMap.max()! }
    var colsRead: ClosedRange<Int> { colMap.min()!...colMap.max()! }

    /// Blurs `src` (h × w) over the window into `dst` (rows.count × cols.count, contiguous), using `tmp`
    /// (≥ rowMap.count × cols.count floats).
    func apply(_ src: UnsafePointer<Float>, tmp: UnsafeMutablePointer<Float>, into dst: UnsafeMutablePointer<Float>,
               flip: Bool) {
        let k = kernel.count, ow = cols.count
        kernel.withUnsafeBufferPointer { kk in
            colMap.withUnsafeBufferPointer { cm in
                // Horizontal pass over every padded row the window needs. Taps are accumulated in kernel
                // order either way; the interior (no reflection) runs tap-major so it vectorises.
                for (pr, sr) in rowMap.enumerated() {
                    let srow = src + sr * w, trow = tmp + pr * ow
                    if colsContiguous {
                        let first = srow + cm[0]
                        for c in 0..<ow { trow[c] = 0 }
                        for j in 0..<k {
                            let kj = kk[j], s = first + j
                            for c in 0..<ow { trow[c] += kj * s[c] }
                        }
                    } else {
                        for c in 0..<ow {
                            var acc: Float = 0
                            for j in 0..<k { acc += kk[j] * srow[cm[c + j]] }
                            trow[c] = acc
                        }
                    }
                }
            }
            // Vertical pass (tmp rows are already padded/reflected), then the optional mirror.
            for r in 0..<rows.count {
                let drow = dst + r * ow
                for c in 0..<ow { drow[c] = 0 }
                for i in 0..<k {
                    let ki = kk[i], trow = tmp + (r + i) * ow
                    for c in 0..<ow { drow[c] += ki * trow[c] }
                }
                if flip {
                    var row = UnsafeMutableBufferPointer(start: drow, count: ow)
                    row.reverse()
                }
            }
        }
    }
}
