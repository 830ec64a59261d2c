import Foundation
import Testing
import TTAAugment
import TTAData
import TTATensor
import TTATestSupport

// Fixtures in Tests/Fixtures/augment/ are written by scripts/make_augmentation_fixtures.py: `rgb_cases`
// writes rgb32_a, rgb32_b, rgb8_c, rgb8_d and rgb16_e (3 channels; the five jitter orders are the cyclic
// shifts of 0…4, so each colour op runs at each position once), `gray_cases` writes gray32 (1 channel,
// reversed order). Each file holds torchvision's output after every stage for hand-fixed parameters
// (noise std 0). The stage tests feed each op the fixture's previous stage, so a failure names the op.

typealias Params = CoTTAAugmentationParameters

/// One fixture case: its tensors, its parameter set and torchvision's inverse affine matrix.
struct AugmentCase {
    let file: SafeTensorsFile
    let params: Params
    let matrix: [Double]
    var size: Int { (try? file.entry("input").shape[3]) ?? 0 }

    init(_ name: String) throws {
        file = try fixture("augment/\(name).safetensors")
        params = try JSONDecoder().decode(Params.self, from: Data((file.metadata["params"] ?? "").utf8))
        matrix = try JSONDecoder().decode([Double].self, from: Data((file.metadata["matrix"] ?? "").utf8))
    }

    func stage(_ name: String) throws -> Tensor { try file.tensor(name) }
}

/// Cases written by `rgb_cases` and `gray_cases` in scripts/make_augmentation_fixtures.py.
let augmentCases = ["rgb32_a", "rgb32_b", "rgb8_c", "rgb8_d", "rgb16_e", "gray32"]

/// The stage tolerance: max abs error relative to the largest magnitude (images in [0, 1], so ≈ absolute).
let stageTolerance = 1e-4

/// `expectClose`, also printing the achieved error when the environment sets `TTA_PRINT_ERRORS`.
func expectStage(_ actual: Tensor, _ expected: Tensor, tolerance: Double, _ label: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    if ProcessInfo.processInfo.environment["TTA_PRINT_ERRORS"] != nil, actual.count == expected.count {
        print("error \(label): \(relativeError(actual.storage, expected.storage))")
    }
    expectClose(actual, expected, tolerance: tolerance, label, sourceLocation: sourceLocation)
}

@Suite("CoTTA augmentation parity with torchvision")
struct AugmentationParityTests {
    /// `rgb_cases` / `gray_cases`: `_get_inverse_affine_matrix` (Double; metadata `matrix`).
    @Test(arguments: augmentCases)
    func inverseAffineMatrix(_ name: String) throws {
        let c = try AugmentCase(name)
        let m = c.params.affineMatrix
        #expect(m.count == 6)
        for (a, e) in zip(m, c.matrix) { #expect(abs(a - e) <= 1e-12, "\(name): matrix \(m) vs \(c.matrix)") }
    }

    /// `rgb_cases` / `gray_cases`: the first Clip(0, 1) (`input` → `clip`), exact.
    @Test(arguments: augmentCases)
    func clipStage(_ name: String) throws {
        let c = try AugmentCase(name)
        var x = try c.stage("input")
        VisionOps.clip(&x, 0, 1)
        expectStage(x, try c.stage("clip"), tolerance: 0, "\(name) clip")
    }

    /// `rgb_cases` / `gray_cases`: each ColorJitterPro op in the drawn order (`clip` → `jitter0` → … → `jitter4`).
    @Test(arguments: augmentCases)
    func colourJitterSteps(_ name: String) throws {
        let c = try AugmentCase(name)
        #expect(c.params.jitterOrder.count == 5)
        var previous = try c.stage("clip")
        for (k, op) in c.params.jitterOrder.enumerated() {
            var x = previous
            CoTTAAugmentation.colorJitterStep(&x, op, c.params)
            let expected = try c.stage("jitter\(k)")
            expectStage(x, expected, tolerance: stageTolerance, "\(name) jitter step \(k) (\(op))")
            previous = expected
        }
        // The whole jitter from the clipped input, errors compounding through the five ops.
        var x = try c.stage("clip")
        CoTTAAugmentation.colorJitter(&x, c.params)
        expectStage(x, try c.stage("jitter4"), tolerance: stageTolerance, "\(name) colour jitter")
    }

    /// `rgb_cases` / `gray_cases`: Pad(size/2, edge) (`jitter4` → `pad`), exact.
    @Test(arguments: augmentCases)
    func padStage(_ name: String) throws {
        let c = try AugmentCase(name)
        let x = VisionOps.padEdge(try c.stage("jitter4"), c.size / 2)
        expectStage(x, try c.stage("pad"), tolerance: 0, "\(name) pad")
    }

    /// `rgb_cases` / `gray_cases`: RandomAffine's F.affine, bilinear, fill [0]·C (`pad` → `affine`).
    @Test(arguments: augmentCases)
    func affineStage(_ name: String) throws {
        let c = try AugmentCase(name)
        let x = VisionOps.affineBilinear(try c.stage("pad"), matrix: c.matrix)
        expectStage(x, try c.stage("affine"), tolerance: stageTolerance, "\(name) affine")
    }

    /// `rgb_cases` / `gray_cases`: GaussianBlur(5, σ), reflect padding (`affine` → `blur`).
    @Test(arguments: augmentCases)
    func blurStage(_ name: String) throws {
        let c = try AugmentCase(name)
        let x = VisionOps.gaussianBlur(try c.stage("affine"), kernelSize: 5, sigma: c.params.blurSigma)
        expectStage(x, try c.stage("blur"), tolerance: stageTolerance, "\(name) blur")
    }

    /// `rgb_cases` / `gray_cases`: CenterCrop(size) (`blur` → `crop`), exact.
    @Test(arguments: augmentCases)
    func cropStage(_ name: String) throws {
        let c = try AugmentCase(name)
        let x = VisionOps.centerCrop(try c.stage("blur"), c.size)
        expectStage(x, try c.stage("crop"), tolerance: 0, "\(name) crop")
    }

    /// `rgb_cases` / `gray_cases`: flip decision, zero noise and the last Clip (`crop` → `output`), exact.
    @Test(arguments: augmentCases)
    func flipAndClipStage(_ name: String) throws {
        let c = try AugmentCase(name)
        var x = try c.stage("crop")
        if c.params.flip { x = VisionOps.hflip(x) }
        VisionOps.clip(&x, 0, 1)
        expectStage(x, try c.stage("output"), tolerance: 0, "\(name) flip + clip")
    }

    /// `rgb_cases` / `gray_cases`: the whole fused pipeline, `input` → `output`, with noise std 0.
    @Test(arguments: augmentCases)
    func endToEnd(_ name: String) throws {
        let c = try AugmentCase(name)
        var aug = CoTTAAugmentation(imageSize: c.size)
        aug.noiseStd = 0
        var g = SeededGenerator(seed: 1)
        let y = aug.apply(try c.stage("input"), c.params, noise: &g)
        #expect(g == SeededGenerator(seed: 1), "noise std 0 must not draw")
        expectStage(y, try c.stage("output"), tolerance: stageTolerance, "\(name) end to end")
    }
}

/// A seeded batch with values slightly outside [0, 1].
func randomImages(_ shape: [Int], seed: UInt64) -> Tensor {
    var g = SeededGenerator(seed: seed)
    var t = Tensor(shape: shape)
    for i in 0..<t.count { t.storage[i] = g.nextUniform() * 1.2 - 0.1 }
    return t
}

/// The pipeline composed from the stand-alone stage functions (no fusion), noise std 0.
func stagedPipeline(_ x: Tensor, _ p: Params, imageSize: Int) -> Tensor {
    var y = x
    VisionOps.clip(&y, 0, 1)
    CoTTAAugmentation.colorJitter(&y, p)
    y = VisionOps.padEdge(y, imageSize / 2)
    y = VisionOps.affineBilinear(y, matrix: p.affineMatrix)
    y = VisionOps.gaussianBlur(y, kernelSize: 5, sigma: p.blurSigma)
    y = VisionOps.centerCrop(y, imageSize)
    if p.flip { y = VisionOps.hflip(y) }
    VisionOps.clip(&y, 0, 1)
    return y
}

func maxAbsDiff(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.shape == b.shape)
    return zip(a.storage, b.storage).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

@Suite("CoTTA augmentation pipeline")
struct AugmentationPipelineTests {
    /// No fixture: the fused pad → affine → blur → crop → flip path equals the composition of the stage
    /// functions the parity tests check, for drawn parameters, on 3- and 1-channel CIFAR batches and a
    /// 224-px (ImageNet-sized) image.
    @Test func fusedGeometryMatchesStagedOps() {
        var g = SeededGenerator(seed: 7)
        for (shape, draws) in [([2, 3, 32, 32], 24), ([2, 1, 32, 32], 8), ([1, 3, 224, 224], 2)] {
            var aug = CoTTAAugmentation(imageSize: shape[2])
            aug.noiseStd = 0
            let x = randomImages(shape, seed: UInt64(shape[1] * 1000 + shape[2]))
            for _ in 0..<draws {
                let p = aug.drawParameters(using: &g)
                var unused = SeededGenerator(seed: 0)
                let fused = aug.apply(x, p, noise: &unused)
                let staged = stagedPipeline(x, p, imageSize: shape[2])
                #expect(maxAbsDiff(fused, staged) <= 1e-6, "\(shape) \(p)")
            }
        }
    }

    /// No fixture: with identity parameters the pipeline returns the clipped input (to rounding).
    @Test func identityParametersReturnTheClippedInput() {
        var aug = CoTTAAugmentation.cifar
        aug.noiseStd = 0
        let x = randomImages([2, 3, 32, 32], seed: 3)
        var g = SeededGenerator(seed: 0)
        let y = aug.apply(x, .identity, noise: &g)
        var clipped = x
        VisionOps.clip(&clipped, 0, 1)
        #expect(maxAbsDiff(y, clipped) <= 1e-6)
    }

    /// No fixture: the additive noise is N(0, 0.005²) and independent per element. On 200×3×32×32 a
    /// constant grey batch (614,400 draws) with identity parameters, the residual's mean is within
    /// 5e-5 of 0 (≈ 8 standard errors) and its std within 1% of 0.005 (≈ 11 standard errors); the seed is
    /// fixed, so the check is deterministic. The grey level 0.5 keeps the final clip (±100σ away) inactive.
    @Test func noiseStatistics() {
        let aug = CoTTAAugmentation.cifar
        var quiet = aug
        quiet.noiseStd = 0
        let x = Tensor(shape: [200, 3, 32, 32], repeating: 0.5)
        var g = SeededGenerator(seed: 2024)
        let noisy = aug.apply(x, .identity, noise: &g)
        let clean = quiet.apply(x, .identity, noise: &g)
        let residual = zip(noisy.storage, clean.storage).map { Double($0.0 - $0.1) }
        let n = Double(residual.count)
        let mean = residual.reduce(0, +) / n
        let std = (residual.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1)).squareRoot()
        #expect(abs(mean) < 5e-5, "noise mean \(mean)")
        #expect(abs(std / 0.005 - 1) < 0.01, "noise std \(std)")
        // Per element, not per batch: image 0 and image 1 residuals are uncorrelated.
        let plane = 3 * 32 * 32
        let a = residual[0..<plane], b = residual[plane..<(2 * plane)]
        let corr = zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } / (Double(plane) * 0.005 * 0.005)
        #expect(abs(corr) < 0.1, "correlation between images \(corr)")
        // Different noise on every call from an advancing generator.
        let again = aug.apply(x, .identity, noise: &g)
        #expect(again != noisy)
    }

    /// No fixture: `callAsFunction` is `drawParameters` then `apply` on the same generator, and is a pure
    /// function of the seed.
    @Test func callDrawsThenApplies() {
        let aug = CoTTAAugmentation.cifar
        let x = randomImages([2, 3, 32, 32], seed: 5)
        var g1 = SeededGenerator(seed: 99), g2 = SeededGenerator(seed: 99), g3 = SeededGenerator(seed: 99)
        let a = aug(x, using: &g1)
        let p = aug.drawParameters(using: &g2)
        let b = aug.apply(x, p, noise: &g2)
        let c = aug(x, using: &g3)
        #expect(a == b)
        #expect(a == c)
        #expect(g1 == g2)
        #expect(aug(x, using: &g1) != a, "a second call draws new parameters and noise")
    }
}

@Suite("CoTTA augmentation parameters")
struct AugmentationParameterTests {
    func checkRanges(_ aug: CoTTAAugmentation, draws: Int, seed: UInt64) {
        var g = SeededGenerator(seed: seed)
        let maxShift = Int((aug.translate * Double(aug.canvasSize)).rounded())
        var shiftsSeen = Set<Int>(), flips = 0
        var positionCounts = [[Int]](repeating: [Int](repeating: 0, count: 5), count: 5)
        for _ in 0..<draws {
            let p = aug.drawParameters(using: &g)
            #expect(p.jitterOrder.map(\.rawValue).sorted() == [0, 1, 2, 3, 4])
            for (pos, op) in p.jitterOrder.enumerated() { positionCounts[op.rawValue][pos] += 1 }
            #expect(aug.brightness.contains(p.brightness))
            #expect(aug.contrast.contains(p.contrast))
            #expect(aug.saturation.contains(p.saturation))
            #expect(aug.hue.contains(p.hue))
            #expect(aug.gamma.contains(p.gamma))
            #expect(aug.degrees.contains(p.angle))
            #expect(aug.scale.contains(p.scale))
            #expect(aug.blurSigma.contains(p.blurSigma))
            #expect(abs(p.translateX) <= maxShift && abs(p.translateY) <= maxShift)
            shiftsSeen.insert(p.translateX)
            shiftsSeen.insert(p.translateY)
            if p.flip { flips += 1 }
        }
        #expect(shiftsSeen == Set(-maxShift...maxShift), "integer shifts drawn: \(shiftsSeen.sorted())")
        let flipRate = Double(flips) / Double(draws)
        #expect(abs(flipRate - 0.5) < 0.05, "flip rate \(flipRate)")
        // Every op at every position about draws/5 times (a uniform permutation).
        for row in positionCounts { for count in row { #expect(abs(Double(count) / Double(draws) - 0.2) < 0.04) } }
    }

    /// No fixture: CIFAR (±4 px shifts on the 64-px canvas) and soft draws stay in their ranges.
    @Test func drawsStayInRanges() {
        checkRanges(.cifar, draws: 3000, seed: 11)
        checkRanges(.soft, draws: 3000, seed: 12)
        #expect(CoTTAAugmentation.cifar.canvasSize == 64)
        let imagenet = CoTTAAugmentation(imageSize: 224)
        #expect(imagenet.canvasSize == 448)
        checkRanges(imagenet, draws: 3000, seed: 13)  // ±28 px
    }

    /// No fixture: the defaults are the CoTTA (non-soft) and KATANA soft values.
    @Test func defaults() {
        let a = CoTTAAugmentation.cifar, s = CoTTAAugmentation.soft
        #expect(a.brightness == 0.6...1.4 && a.contrast == 0.7...1.3 && a.saturation == 0.5...1.5)
        #expect(a.hue == -0.06...0.06 && a.gamma == 0.7...1.3 && a.degrees == -15...15 && a.scale == 0.9...1.1)
        #expect(a.blurSigma == 0.001...0.5 && a.blurKernelSize == 5 && a.translate == 1.0 / 16)
        #expect(a.flipProbability == 0.5 && a.noiseStd == 0.005 && a.padding == 16)
        #expect(s.brightness == 0.8...1.2 && s.contrast == 0.85...1.15 && s.saturation == 0.75...1.25)
        #expect(s.hue == -0.03...0.03 && s.gamma == 0.85...1.15 && s.degrees == -8...8 && s.scale == 0.95...1.05)
        #expect(s.blurSigma == 0.001...0.25)
    }

    /// No fixture: draws are a pure function of the seed; different seeds differ; JSON round-trips.
    @Test func drawsAreSeededAndCodable() throws {
        let aug = CoTTAAugmentation.cifar
        var g1 = SeededGenerator(seed: 42), g2 = SeededGenerator(seed: 42), g3 = SeededGenerator(seed: 43)
        let a = (0..<32).map { _ in aug.drawParameters(using: &g1) }
        let b = (0..<32).map { _ in aug.drawParameters(using: &g2) }
        let c = (0..<32).map { _ in aug.drawParameters(using: &g3) }
        #expect(a == b)
        #expect(a != c)
        #expect(Set(a.map(\.angle)).count == 32, "each call draws new parameters")
        let decoded = try JSONDecoder().decode([Params].self, from: JSONEncoder().encode(a))
        #expect(decoded == a)
    }
}

/// ROID's consistency augmentation: reflect padding, no blur, no noise.
@Suite("ROID augmentation variant")
struct ROIDAugmentationTests {
    /// `roid_cases` in scripts/make_augmentation_fixtures.py: torchvision's reflect pad, then the whole
    /// fused pipeline `input` → `output`.
    @Test func matchesTorchvision() throws {
        let c = try AugmentCase("roid32_a")
        expectStage(VisionOps.padReflect(try c.stage("jitter4"), 16), try c.stage("pad"), tolerance: 0, "reflect pad")
        var g = SeededGenerator(seed: 1)
        let y = CoTTAAugmentation.roid().apply(try c.stage("input"), c.params, noise: &g)
        #expect(g == SeededGenerator(seed: 1), "the ROID variant draws no noise")
        expectStage(y, try c.stage("output"), tolerance: stageTolerance, "roid32_a end to end")
    }

    /// No fixture: the fused path equals the stage functions composed (reflect pad, affine, crop, flip).
    @Test func fusedGeometryMatchesStagedOps() {
        var g = SeededGenerator(seed: 8)
        let aug = CoTTAAugmentation.roid()
        let x = randomImages([2, 3, 32, 32], seed: 11)
        for _ in 0..<12 {
            let p = aug.drawParameters(using: &g)
            var unused = SeededGenerator(seed: 0)
            let fused = aug.apply(x, p, noise: &unused)
            var y = x
            VisionOps.clip(&y, 0, 1)
            CoTTAAugmentation.colorJitter(&y, p)
            y = VisionOps.centerCrop(VisionOps.affineBilinear(VisionOps.padReflect(y, 16), matrix: p.affineMatrix), 32)
            if p.flip { y = VisionOps.hflip(y) }
            VisionOps.clip(&y, 0, 1)
            #expect(maxAbsDiff(fused, y) <= 1e-6, "\(p)")
        }
    }
}
