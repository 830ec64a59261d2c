import Foundation
import TTATensor

/// Every random value one call of CoTTA's test-time augmentation draws. torchvision draws one set per call
/// for the whole batch, so every image of a batch shares these; only the additive noise is per element
/// (and is drawn separately, see `CoTTAAugmentation.apply(_:_:noise:)`).
///
/// The JSON form (`Codable`) is the one `scripts/make_augmentation_fixtures.py` writes.
public struct CoTTAAugmentationParameters: Sendable, Equatable, Codable {
    /// The five ColorJitterPro operations, numbered as its `fn_id` (the values of `torch.randperm(5)`).
    public enum JitterOp: Int, Sendable, Equatable, Codable, CaseIterable {
        case brightness = 0, contrast = 1, saturation = 2, hue = 3, gamma = 4
    }

    /// The order the colour operations are applied in: a permutation of all five (all are always applied).
    public var jitterOrder: [JitterOp]
    /// `adjust_brightness` factor.
    public var brightness: Double
    /// `adjust_contrast` factor.
    public var contrast: Double
    /// `adjust_saturation` factor.
    public var saturation: Double
    /// `adjust_hue` shift, in turns (fractions of the hue circle).
    public var hue: Double
    /// `adjust_gamma` exponent (applied after clamping to [1e-8, 1]).
    public var gamma: Double
    /// RandomAffine rotation in degrees.
    public var angle: Double
    /// RandomAffine translation in whole pixels of the padded canvas, as torchvision rounds it
    /// (`int(round(U(-max, max)))`, Python's round-half-to-even).
    public var translateX: Int
    public var translateY: Int
    /// RandomAffine scale.
    public var scale: Double
    /// GaussianBlur sigma (the same in x and y).
    public var blurSigma: Double
    /// RandomHorizontalFlip decision.
    public var flip: Bool

    public init(jitterOrder: [JitterOp], brightness: Double, contrast: Double, saturation: Double, hue: Double,
                gamma: Double, angle: Double, translateX: Int, translateY: Int, scale: Double, blurSigma: Double,
                flip: Bool) {
        self.jitterOrder = jitterOrder
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue
        self.gamma = gamma
        self.angle = angle
        self.translateX = translateX
        self.translateY = translateY
        self.scale = scale
        self.blurSigma = blurSigma
        self.flip = flip
    }

    /// Parameters under which every stage is (numerically) the identity: factors 1, no hue shift, no
    /// rotation, translation or scaling, a blur sigma so small the kernel is a delta, no flip. The output
    /// is then the clipped input plus noise.
    public static let identity = CoTTAAugmentationParameters(
        jitterOrder: JitterOp.allCases, brightness: 1, contrast: 1, saturation: 1, hue: 0, gamma: 1, angle: 0,
        translateX: 0, translateY: 0, scale: 1, blurSigma: 0.001, flip: false)

    /// The inverse affine matrix torchvision computes for these parameters (see
    /// `VisionOps.inverseAffineMatrix`).
    public var affineMatrix: [Double] {
        VisionOps.inverseAffineMatrix(angle: angle, translate: (translateX, translateY), scale: scale)
    }
}

/// CoTTA's test-time augmentation, `get_tta_transforms` from KATANA (qinenergy/cotta `cotta.py` +
/// `my_transforms.py`; mariodoebler/test-time-adaptation `augmentations/transforms_cotta.py`), on NCHW
/// batches in [0, 1] with 1 or 3 channels:
///
/// 1. clip to [0, 1];
/// 2. ColorJitterPro: brightness, contrast, saturation, hue and gamma (after clamping to [1e-8, 1]), all
///    five, in a random order;
/// 3. pad by `imageSize / 2` on every side, replicating edges;
/// 4. RandomAffine: rotation, integer translation of up to `translate` × the padded size, scale, no shear,
///    bilinear, fill 0;
/// 5. GaussianBlur, kernel `blurKernelSize`, reflect padding;
/// 6. CenterCrop back to `imageSize`;
/// 7. RandomHorizontalFlip with probability `flipProbability`;
/// 8. additive N(0, `noiseStd`²) noise, independent per element;
/// 9. clip to [0, 1].
///
/// As with torchvision on a batch tensor, one parameter set is drawn per call and shared by all images.
/// Each stage matches torchvision's functional op for the same parameters to ~1e-6 (see the parity tests);
/// the random draws themselves come from `SeededGenerator`, not from torch's generator.
public struct CoTTAAugmentation: Sendable, Equatable {
    /// Side of the (square) images: 32 for CIFAR, 224 for ImageNet. The pad is `imageSize / 2` and the
    /// crop is back to `imageSize`; inputs must be imageSize × imageSize.
    public var imageSize: Int
    public var brightness: ClosedRange<Double>
    public var contrast: ClosedRange<Double>
    public var saturation: ClosedRange<Double>
    public var hue: ClosedRange<Double>
    public var gamma: ClosedRange<Double>
    /// Rotation range in degrees.
    public var degrees: ClosedRange<Double>
    /// Maximum translation as a fraction of the padded width/height (1/16: ±4 px on the 64-px CIFAR canvas).
    public var translate: Double
    public var scale: ClosedRange<Double>
    public var blurKernelSize: Int
    public var blurSigma: ClosedRange<Double>
    public var flipProbability: Double
    /// Standard deviation of the additive Gaussian noise (0 disables it and draws nothing).
    public var noiseStd: Float
    /// Stage 3's padding: replicated edges (CoTTA) or a mirror without the edge (`padding_mode="reflect"`, ROID).
    public var reflectPadding = false
    /// Whether stage 5 (the Gaussian blur) runs; ROID's variant leaves it out (its sigma is still drawn).
    public var blur = true

    /// The non-soft parameters CoTTA uses, or (`soft: true`) KATANA's unused soft variant.
    public init(imageSize: Int = 32, soft: Bool = false) {
        self.imageSize = imageSize
        brightness = soft ? 0.8...1.2 : 0.6...1.4
        contrast = soft ? 0.85...1.15 : 0.7...1.3
        saturation = soft ? 0.75...1.25 : 0.5...1.5
        hue = soft ? -0.03...0.03 : -0.06...0.06
        gamma = soft ? 0.85...1.15 : 0.7...1.3
        degrees = soft ? -8...8 : -15...15
        translate = 1.0 / 16
        scale = soft ? 0.95...1.05 : 0.9...1.1
        blurKernelSize = 5
        blurSigma = soft ? 0.001...0.25 : 0.001...0.5
        flipProbability = 0.5
        noiseStd = 0.005
    }

    /// ROID's consistency augmentation (`get_tta_transforms(padding_mode="reflect", cotta_augs=False)`):
    /// CoTTA's colour jitter and affine on a reflect-padded canvas, crop and flip; no blur, no noise.
    public static func roid(imageSize: Int = 32) -> CoTTAAugmentation {
        var a = CoTTAAugmentation(imageSize: imageSize)
        (a.reflectPadding, a.blur, a.noiseStd) = (true, false, 0)
        return a
    }

    /// CoTTA's CIFAR augmentation (32 × 32, non-soft).
    public static let cifar = CoTTAAugmentation()
    /// The soft variant for CIFAR (defined by KATANA, unused by CoTTA).
    public static let soft = CoTTAAugmentation(soft: true)

    /// Padding on each side (`int(n_pixels / 2)`).
    public var padding: Int { imageSize / 2 }
    /// Side of the padded canvas the affine transform and blur work on.
    public var canvasSize: Int { imageSize + 2 * padding }

    // MARK: - Drawing

    /// Draws one parameter set: a uniformly random jitter order (Fisher–Yates), then every factor uniform
    /// in its range (computed in float32, as torch's `uniform_` on a float32 tensor), the translation as
    /// `round(U(-t·canvas, t·canvas))` with ties to even, and the flip as `U[0,1) < p`.
    public func drawParameters(using g: inout SeededGenerator) -> CoTTAAugmentationParameters {
        var order = CoTTAAugmentationParameters.JitterOp.allCases
        for i in stride(from: order.count - 1, to: 0, by: -1) {
            order.swapAt(i, Int(g.next() % UInt64(i + 1)))
        }
        func uniform(_ r: ClosedRange<Double>) -> Double {
            let (lo, hi) = (Float(r.lowerBound), Float(r.upperBound))
            return Double(lo + (hi - lo) * g.nextUniform())
        }
        let maxShift = translate * Double(canvasSize)
        let b = uniform(brightness), c = uniform(contrast), s = uniform(saturation), h = uniform(hue)
        let gm = uniform(gamma), angle = uniform(degrees)
        let tx = Int(uniform(-maxShift...maxShift).rounded(.toNearestOrEven))
        let ty = Int(uniform(-maxShift...maxShift).rounded(.toNearestOrEven))
        let sc = uniform(scale), sigma = uniform(blurSigma)
        let flip = g.nextUniform() < Float(flipProbability)
        return CoTTAAugmentationParameters(jitterOrder: order, brightness: b, contrast: c, saturation: s, hue: h,
                                           gamma: gm, angle: angle, translateX: tx, translateY: ty, scale: sc,
                                           blurSigma: sigma, flip: flip)
    }

    // MARK: - Applying

    /// Draws a parameter set from `g`, then applies it, drawing the noise from `g` too.
    public func callAsFunction(_ x: Tensor, using g: inout SeededGenerator) -> Tensor {
        let p = drawParameters(using: &g)
        return apply(x, p, noise: &g)
    }

    /// Applies the pipeline with the drawn values `p` to `x` ([N, C, imageSize, imageSize], C = 1 or 3),
    /// drawing the per-element noise from `noise` (in NCHW order of the output; nothing is drawn when
    /// `noiseStd` is 0).
    ///
    /// Pad, affine, blur, crop and flip are fused per plane: the affine grid is built once per call, only
    /// the canvas window the blur of the crop reads is resampled (36 × 36 of the 64 × 64 CIFAR canvas), and
    /// the padded canvas is never materialised. Allocations: the working copy, the output and two small
    /// scratch buffers per call.
    public func apply(_ x: Tensor, _ p: CoTTAAugmentationParameters, noise: inout SeededGenerator) -> Tensor {
        precondition(x.rank == 4 && (x.shape[1] == 1 || x.shape[1] == 3),
                     "CoTTAAugmentation: expected [N, 1 or 3, H, W], got \(x.shape)")
        precondition(x.shape[2] == imageSize && x.shape[3] == imageSize,
                     "CoTTAAugmentation: expected \(imageSize)×\(imageSize) images, got \(x.shape)")
        precondition(Set(p.jitterOrder) == Set(CoTTAAugmentationParameters.JitterOp.allCases) && p.jitterOrder.count == 5,
                     "CoTTAAugmentation: jitterOrder must be a permutation of the five colour ops")
        var y = x
        VisionOps.clip(&y, 0, 1)
        Self.colorJitter(&y, p)
        var out = geometry(y, p)
        if noiseStd != 0 { Self.addNoise(&out, std: noiseStd, using: &noise) }
        VisionOps.clip(&out, 0, 1)
        return out
    }

    /// ColorJitterPro's `forward` with drawn values: the five colour ops in `p.jitterOrder`.
    public static func colorJitter(_ x: inout Tensor, _ p: CoTTAAugmentationParameters) {
        for op in p.jitterOrder { colorJitterStep(&x, op, p) }
    }

    /// One colour op of ColorJitterPro. Gamma first clamps to [1e-8, 1], as ColorJitterPro does.
    public static func colorJitterStep(_ x: inout Tensor, _ op: CoTTAAugmentationParameters.JitterOp,
                                       _ p: CoTTAAugmentationParameters) {
        switch op {
        case .brightness: VisionOps.adjustBrightness(&x, p.brightness)
        case .contrast: VisionOps.adjustContrast(&x, p.contrast)
        case .saturation: VisionOps.adjustSaturation(&x, p.saturation)
        case .hue: VisionOps.adjustHue(&x, p.hue)
        case .gamma:
            VisionOps.clip(&x, 1e-8, 1)
            VisionOps.adjustGamma(&x, p.gamma)
        }
    }

    /// `GaussianNoise(0, std)`: adds `N(0, 1) · std + 0` to every element, in storage order.
    ///
    /// The normals come two per 64-bit draw from a Box–Muller pair (both the cosine and the sine half, which
    /// `SeededGenerator.nextNormal` discards): u1 ∈ (0, 1] from the high 32 bits (tails reach 6.7σ),
    /// u2 ∈ [0, 1) from the low 32. This is several times faster than one `nextNormal` per element, and
    /// this noise is most of the pipeline's cost.
    static func addNoise(_ x: inout Tensor, std: Float, using g: inout SeededGenerator) {
        x.withUnsafeMutableBufferPointer { q in
            var i = 0
            let count = q.count
            while i < count {
                let bits = g.next()
                let u1 = (Double(bits >> 32) + 1) * 0x1p-32
                let u2 = Float(UInt32(truncatingIfNeeded: bits) >> 8) * 0x1p-24
                let r = Float((-2 * log(u1)).squareRoot())
                let theta = 2 * Float.pi * u2
                q[i] = q[i] + (r * cosf(theta) * std + 0)
                if i + 1 < count { q[i + 1] = q[i + 1] + (r * sinf(theta) * std + 0) }
                i += 2
            }
        }
    }

    /// Stages 3–7 fused: edge pad, affine, blur, center crop and flip, one plane at a time.
    /// Equal to `hflip?(centerCrop(gaussianBlur(affineBilinear(padEdge(x)))))` on the cropped window.
    func geometry(_ x: Tensor, _ p: CoTTAAugmentationParameters) -> Tensor {
        let (n, c, size) = (x.shape[0], x.shape[1], imageSize)
        let canvas = canvasSize
        let top = VisionOps.centerCropOrigin(canvas, size)
        let kernel: [Float] = blur ? VisionOps.gaussianKernel1D(size: blurKernelSize, sigma: p.blurSigma) : [1]
        let blur = BlurWindow(kernel: kernel, h: canvas, w: canvas, rows: top..<(top + size), cols: top..<(top + size))
        let (rowsRead, colsRead) = (blur.rowsRead, blur.colsRead)
        let taps = AffineTaps(matrix: p.affineMatrix, sourceH: size, sourceW: size, pad: padding, reflect: reflectPadding,
                              rows: rowsRead.lowerBound..<(rowsRead.upperBound + 1),
                              cols: colsRead.lowerBound..<(colsRead.upperBound + 1))
        var out = Tensor(shape: [n, c, size, size])
        var canvasBuffer = [Float](repeating: 0, count: canvas * canvas)
        var tmp = [Float](repeating: 0, count: blur.rowMap.count * size)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                canvasBuffer.withUnsafeMutableBufferPointer { cv in
                    tmp.withUnsafeMutableBufferPointer { t in
                        for plane in 0..<(n * c) {
                            taps.sample(src.baseAddress! + plane * size * size, into: cv.baseAddress!, rowStride: canvas)
                            blur.apply(cv.baseAddress!, tmp: t.baseAddress!, into: dst.baseAddress! + plane * size * size,
                                       flip: p.flip)
                        }
                    }
                }
            }
        }
        return out
    }
}
