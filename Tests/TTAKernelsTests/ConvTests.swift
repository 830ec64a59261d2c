import Testing
import TTAKernels
import TTATestSupport

/// The im2col + GEMM convolution against its direct-loop reference twin on many geometries.
@Suite struct ConvKernelTests {
    static let geometries: [Conv2dGeometry] = [
        Conv2dGeometry(n: 2, c: 3, h: 8, w: 8, o: 5, kh: 3, kw: 3, strideH: 1, strideW: 1, padH: 1, padW: 1),
        Conv2dGeometry(n: 1, c: 4, h: 9, w: 7, o: 6, kh: 3, kw: 3, strideH: 2, strideW: 2, padH: 1, padW: 1),
        Conv2dGeometry(n: 3, c: 8, h: 6, w: 6, o: 4, kh: 1, kw: 1),
        Conv2dGeometry(n: 2, c: 8, h: 6, w: 5, o: 16, kh: 1, kw: 1, strideH: 2, strideW: 2),
        Conv2dGeometry(n: 2, c: 8, h: 5, w: 5, o: 8, kh: 3, kw: 3, strideH: 1, strideW: 1, padH: 1, padW: 1, groups: 4),
        Conv2dGeometry(n: 1, c: 6, h: 7, w: 4, o: 9, kh: 3, kw: 2, strideH: 1, strideW: 2, padH: 0, padW: 1, groups: 3),
        Conv2dGeometry(n: 2, c: 16, h: 8, w: 8, o: 32, kh: 3, kw: 3, strideH: 1, strideW: 1, padH: 1, padW: 1),
        Conv2dGeometry(n: 1, c: 2, h: 5, w: 5, o: 3, kh: 5, kw: 5, strideH: 1, strideW: 1, padH: 2, padW: 2),
        // Enough images that the backward passes put several side by side in one GEMM (per run of
        // images in parallel, and per group of 2).
        Conv2dGeometry(n: 12, c: 8, h: 7, w: 7, o: 12, kh: 3, kw: 3, strideH: 2, strideW: 2, padH: 1, padW: 1, groups: 2),
    ]

    @Test(arguments: geometries)
    func forwardAndBackwardMatchReference(_ g: Conv2dGeometry) {
        let x = randomFloats(g.inputCount, seed: 1)
        let w = randomFloats(g.weightCount, seed: 2)
        let dy = randomFloats(g.outputCount, seed: 3)
        var y = [Float](repeating: .nan, count: g.outputCount), yRef = y, yLowered = y
        var yInference = y
        conv2dForward(x: x, weight: w, y: &y, g)
        conv2dForward(x: x, weight: w, y: &yInference, g, inference: true)
        conv2dForwardLowered(x: x, weight: w, y: &yLowered, g)
        conv2dForwardReference(x: x, weight: w, y: &yRef, g)
        expectClose(yInference, yRef, tolerance: 3e-5, "forward, inference \(g)")
        expectClose(y, yRef, "forward \(g)")
        expectClose(yLowered, yRef, "forward, im2col + GEMM \(g)")

        var dx = [Float](repeating: 0.5, count: g.inputCount), dxRef = dx, dxLowered = dx   // all accumulate onto 0.5
        conv2dBackwardInput(dy: dy, weight: w, dx: &dx, g)
        conv2dBackwardInputLowered(dy: dy, weight: w, dx: &dxLowered, g)
        conv2dBackwardInputReference(dy: dy, weight: w, dx: &dxRef, g)
        expectClose(dx, dxRef, "backward input \(g)")
        expectClose(dxLowered, dxRef, "backward input, GEMM + col2im \(g)")

        var dw = [Float](repeating: -0.25, count: g.weightCount), dwRef = dw
        conv2dBackwardWeight(x: x, dy: dy, dWeight: &dw, g)
        conv2dBackwardWeightReference(x: x, dy: dy, dWeight: &dwRef, g)
        expectClose(dw, dwRef, "backward weight \(g)")
    }

    /// Images are spread over threads (each with single-threaded GEMMs) when the batch has at least as
    /// many images as threads, and go one by one through multi-threaded GEMMs otherwise: both must give
    /// the same bits. 1 thread, 3 threads (5 images: runs of unequal length), 8 threads (fewer images).
    /// The backward passes also put different images side by side in one GEMM at each thread count
    /// (12x12 outputs: 3 images per GEMM to the input, all 5 to the weights).
    @Test func resultsDoNotDependOnTheThreadCount() {
        let g = Conv2dGeometry(n: 5, c: 16, h: 12, w: 12, o: 24, kh: 3, kw: 3, strideH: 1, strideW: 1, padH: 1, padW: 1)
        let x = randomFloats(g.inputCount, seed: 5), w = randomFloats(g.weightCount, seed: 6)
        let dy = randomFloats(g.outputCount, seed: 7)
        func run(_ threads: Int) -> (y: [Float], dx: [Float], dw: [Float]) {
            withKernelThreads(threads) {
                var y = [Float](repeating: .nan, count: g.outputCount)
                var dx = [Float](repeating: 0, count: g.inputCount), dw = [Float](repeating: 0, count: g.weightCount)
                conv2dForward(x: x, weight: w, y: &y, g)
                conv2dBackwardInput(dy: dy, weight: w, dx: &dx, g)
                conv2dBackwardWeight(x: x, dy: dy, dWeight: &dw, g)
                return (y, dx, dw)
            }
        }
        let one = run(1)
        var yRef = [Float](repeating: .nan, count: g.outputCount)
        conv2dForwardReference(x: x, weight: w, y: &yRef, g)
        expectClose(one.y, yRef, "forward, 1 thread")
        for threads in [3, 8] {
            let r = run(threads)
            #expect(r.y == one.y, "forward, \(threads) threads")
            #expect(r.dx == one.dx, "backward input, \(threads) threads")
            #expect(r.dw == one.dw, "backward weight, \(threads) threads")
        }
    }
}

/// Winograd F(2x2, 3x3) and F(4x4, 3x3) against the direct loops: paddings 0, 1 and 2; sizes that are
/// not multiples of the tile (partial tiles at the bottom and right); channel counts that are not
/// multiples of the 8 tiles or channels per vector; batches run image by image (1 image,
/// multi-threaded GEMMs), in runs spread over the threads, and in runs of several images per GEMM.
/// F(4x4) carries up to ~20x the direct sum's rounding (a few 1e-6 of the output's magnitude), hence
/// the tolerance.
@Suite struct WinogradKernelTests {
    static let geometries: [Conv2dGeometry] = [
        Conv2dGeometry(n: 1, c: 8, h: 8, w: 8, o: 8, kh: 3, kw: 3, padH: 1, padW: 1),
        Conv2dGeometry(n: 3, c: 12, h: 7, w: 5, o: 9, kh: 3, kw: 3, padH: 1, padW: 1),
        Conv2dGeometry(n: 2, c: 5, h: 9, w: 11, o: 3, kh: 3, kw: 3, padH: 0, padW: 0),
        Conv2dGeometry(n: 2, c: 16, h: 6, w: 6, o: 24, kh: 3, kw: 3, padH: 2, padW: 2),
        Conv2dGeometry(n: 70, c: 17, h: 8, w: 8, o: 20, kh: 3, kw: 3, padH: 1, padW: 1),
        Conv2dGeometry(n: 2, c: 64, h: 32, w: 32, o: 48, kh: 3, kw: 3, padH: 1, padW: 1),
    ]
    static let tolerance = 3e-5

    @Test(arguments: geometries)
    func forwardAndBackwardToInputMatchReference(_ g: Conv2dGeometry) {
        let x = randomFloats(g.inputCount, seed: 11)
        let w = randomFloats(g.weightCount, seed: 12)
        let dy = randomFloats(g.outputCount, seed: 13)
        var y = [Float](repeating: .nan, count: g.outputCount), yRef = y
        conv2dForwardWinograd(x: x, weight: w, y: &y, g)
        conv2dForwardReference(x: x, weight: w, y: &yRef, g)
        expectClose(y, yRef, tolerance: Self.tolerance, "forward \(g)")

        var dx = [Float](repeating: -0.75, count: g.inputCount), dxRef = dx   // both accumulate onto -0.75
        conv2dBackwardInputWinograd(dy: dy, weight: w, dx: &dx, g)
        conv2dBackwardInputReference(dy: dy, weight: w, dx: &dxRef, g)
        expectClose(dx, dxRef, tolerance: Self.tolerance, "backward input \(g)")
    }

    /// A NaN input pixel reaches every output whose window covers it, and no output outside the tiles
    /// whose input window holds it (the transforms mix a pixel into its whole tile; a wrong padding or
    /// lane would lose it or spread it further). Pixel (4, 6) with padding 1 is at (5, 7) of the padded
    /// plane: the windows (6 wide, every 4) of tile rows 0-1 and tile column 1 hold it, outputs rows
    /// 0-7 and columns 4-7; the last tile row (outputs row 8) must stay finite.
    @Test func aNaNInputReachesItsTilesOnly() {
        let poisonedRows = 0...7
        let g = Conv2dGeometry(n: 1, c: 8, h: 9, w: 9, o: 8, kh: 3, kw: 3, padH: 1, padW: 1)
        var x = randomFloats(g.inputCount, seed: 14)
        x[3 * 81 + 4 * 9 + 6] = .nan          // channel 3, row 4, column 6
        let w = randomFloats(g.weightCount, seed: 15)
        var y = [Float](repeating: 0, count: g.outputCount)
        conv2dForwardWinograd(x: x, weight: w, y: &y, g)
        for o in 0..<g.o {
            for r in 0..<9 {
                for c in 0..<9 {
                    let v = y[(o * 9 + r) * 9 + c]
                    if abs(r - 4) <= 1 && abs(c - 6) <= 1 { #expect(v.isNaN, "output \(o),\(r),\(c) covers the NaN") }
                    if !(poisonedRows.contains(r) && (4...7).contains(c)) {
                        #expect(v.isFinite, "output \(o),\(r),\(c) is outside the NaN's tiles")
                    }
                }
            }
        }
    }

    /// 1, 2 and 3 threads give the same bits (the split never changes a sum). The thread
    /// count sets the tiles per GEMM; the small layer's GEMMs (8 x tiles x 8) are below the size where
    /// `gemm` would switch to its reference loop, which sums in another order.
    @Test(arguments: [
        Conv2dGeometry(n: 7, c: 24, h: 10, w: 10, o: 16, kh: 3, kw: 3, padH: 1, padW: 1),
        Conv2dGeometry(n: 7, c: 8, h: 8, w: 8, o: 8, kh: 3, kw: 3, padH: 1, padW: 1),
    ])
    func resultsDoNotDependOnTheThreadCount(_ g: Conv2dGeometry) {
        let x = randomFloats(g.inputCount, seed: 16), w = randomFloats(g.weightCount, seed: 17)
        let dy = randomFloats(g.outputCount, seed: 18)
        func run(_ threads: Int) -> ([Float], [Float]) {
            withKernelThreads(threads) {
                var y = [Float](repeating: .nan, count: g.outputCount), dx = [Float](repeating: 0, count: g.inputCount)
                conv2dForwardWinograd(x: x, weight: w, y: &y, g)
                conv2dBackwardInputWinograd(dy: dy, weight: w, dx: &dx, g)
                return (y, dx)
            }
        }
        let one = run(1)
        for threads in [2, 3] {
            let r = run(threads)
            #expect(r.0 == one.0, "forward, \(threads) threads")
            #expect(r.1 == one.1, "backward input, \(threads) threads")
        }
    }

    /// The dispatch: a forward pass that no backward follows and the backward pass to the input take
    /// Winograd, a recorded forward pass the lowered GEMM; 1x1, strided, grouped and 3-channel layers
    /// always the GEMM.
    @Test func algorithmChoice() {
        let g = Conv2dGeometry(n: 2, c: 16, h: 8, w: 8, o: 16, kh: 3, kw: 3, padH: 1, padW: 1)
        #expect(g.takesWinograd(.inference))
        #expect(g.takesWinograd(.backwardInput))
        #expect(!g.takesWinograd(.recordedForward))
        for other in [Conv2dGeometry(n: 2, c: 16, h: 8, w: 8, o: 16, kh: 1, kw: 1),
                      Conv2dGeometry(n: 2, c: 16, h: 8, w: 8, o: 16, kh: 3, kw: 3, strideH: 2, strideW: 2, padH: 1, padW: 1),
                      Conv2dGeometry(n: 2, c: 16, h: 8, w: 8, o: 16, kh: 3, kw: 3, padH: 1, padW: 1, groups: 2),
                      Conv2dGeometry(n: 2, c: 3, h: 8, w: 8, o: 16, kh: 3, kw: 3, padH: 1, padW: 1)] {
            for pass in [ConvPass.inference, .recordedForward, .backwardInput] {
                #expect(!other.takesWinograd(pass), "\(other) \(pass)")
            }
        }
    }
}

/// Batch-norm kernels against their Double reference twins.
@Suite struct BatchNormKernelTests {
    @Test(arguments: [(2, 3, 25), (4, 5, 1), (1, 2, 37), (3, 16, 64)])
    func statisticsApplyAndBackwardMatchReference(_ dims: (Int, Int, Int)) {
        let (n, c, hw) = dims
        let x = randomFloats(n * c * hw, seed: 4, scale: 2).map { $0 + 0.5 }
        let gamma = randomFloats(c, seed: 5), beta = randomFloats(c, seed: 6)
        let dy = randomFloats(n * c * hw, seed: 7)
        var mean = [Float](repeating: 0, count: c), variance = mean
        batchNormStatistics(x: x, n: n, c: c, hw: hw, mean: &mean, variance: &variance)
        var refMean = mean, refVar = variance, yRef = x
        batchNormForwardReference(x: x, n: n, c: c, hw: hw, mean: nil, variance: nil, gamma: gamma, beta: beta, eps: 1e-5,
                                  y: &yRef, batchMean: &refMean, batchVariance: &refVar)
        expectClose(mean, refMean, tolerance: 1e-5, "mean")
        expectClose(variance, refVar, tolerance: 1e-5, "variance")
        let invStd = variance.map { 1 / ($0 + 1e-5).squareRoot() }
        var y = x
        batchNormApply(x: x, n: n, c: c, hw: hw, mean: mean, invStd: invStd, gamma: gamma, beta: beta, y: &y)
        expectClose(y, yRef, "apply")

        var yRelu = x
        batchNormApply(x: x, n: n, c: c, hw: hw, mean: mean, invStd: invStd, gamma: gamma, beta: beta, y: &yRelu, relu: true)
        expectClose(yRelu, yRef.map { max($0, 0) }, "apply+relu")
        // In the Python references' order of operations, (x − μ) / sd · γ + β (RoTTA's robust BN).
        let sd = variance.map { ($0 + 1e-5).squareRoot() }
        var yPython = x, yPythonRelu = x
        batchNormApply(x: x, n: n, c: c, hw: hw, mean: mean, invStd: invStd, gamma: gamma, beta: beta, y: &yPython, standardDeviation: sd)
        batchNormApply(x: x, n: n, c: c, hw: hw, mean: mean, invStd: invStd, gamma: gamma, beta: beta, y: &yPythonRelu, relu: true,
                       standardDeviation: sd)
        expectClose(yPython, yRef, "apply (x − μ) / sd")
        expectClose(yPythonRelu, yRef.map { max($0, 0) }, "apply (x − μ) / sd + relu")

        for batchStatistics in [true, false] {
            var dx = [Float](repeating: 0, count: x.count), dxRef = dx
            var dg = [Float](repeating: 1, count: c), db = dg, dgRef = dg, dbRef = db
            batchNormBackward(dy: dy, x: x, n: n, c: c, hw: hw, mean: mean, invStd: invStd, gamma: gamma,
                              batchStatistics: batchStatistics, dx: &dx, dGamma: &dg, dBeta: &db)
            batchNormBackwardReference(dy: dy, x: x, n: n, c: c, hw: hw, mean: mean, invStd: invStd, gamma: gamma,
                                       batchStatistics: batchStatistics, dx: &dxRef, dGamma: &dgRef, dBeta: &dbRef)
            expectClose(dx, dxRef, "dx batchStatistics=\(batchStatistics)")
            expectClose(dg, dgRef, "dgamma")
            expectClose(db, dbRef, "dbeta")
        }
        // RoTTA's robust BN: μ, σ² mix the running statistics with weight 1 − α; only the batch part
        // (mean μ_B) carries a gradient to x.
        let mixedMean = mean.indices.map { 0.95 * Float($0) * 0.1 + 0.05 * mean[$0] }
        var dx = [Float](repeating: 0, count: x.count), dxRef = dx
        var dg = [Float](repeating: 0, count: c), db = dg, dgRef = dg, dbRef = db
        batchNormBackward(dy: dy, x: x, n: n, c: c, hw: hw, mean: mixedMean, invStd: invStd, gamma: gamma,
                          batchStatistics: true, batchWeight: 0.05, batchMean: mean, dx: &dx, dGamma: &dg, dBeta: &db)
        batchNormBackwardReference(dy: dy, x: x, n: n, c: c, hw: hw, mean: mixedMean, invStd: invStd, gamma: gamma,
                                   batchStatistics: true, batchWeight: 0.05, batchMean: mean, dx: &dxRef, dGamma: &dgRef, dBeta: &dbRef)
        expectClose(dx, dxRef, "dx robust")
        expectClose(dg, dgRef, "dgamma robust")
        expectClose(db, dbRef, "dbeta robust")
    }
}

/// Per-sample normalisation (UnMix-TNS) kernels against their Double reference twins.
@Suite struct SampleNormKernelTests {
    @Test(arguments: [(2, 3, 25), (4, 5, 1), (1, 2, 37), (3, 16, 64)])
    func applyAndBackwardMatchReference(_ dims: (Int, Int, Int)) {
        let (n, c, hw) = dims
        let rows = n * c
        let x = randomFloats(rows * hw, seed: 4, scale: 2).map { $0 + 0.5 }
        let gamma = randomFloats(c, seed: 5), beta = randomFloats(c, seed: 6), dy = randomFloats(rows * hw, seed: 7)
        // Arbitrary per-row statistics and slopes (the kernels do not care where they come from).
        let mean = randomFloats(rows, seed: 8), variance = randomFloats(rows, seed: 9).map { abs($0) + 0.2 }
        let a = randomFloats(rows, seed: 10), b = randomFloats(rows, seed: 11), cv = randomFloats(rows, seed: 12)
        let instanceMean = (0..<rows).map { r in x[(r * hw)..<((r + 1) * hw)].reduce(0, +) / Float(hw) }
        let invStd = variance.map { 1 / ($0 + 1e-5).squareRoot() }
        var y = x, yRef = x
        sampleNormApply(x: x, n: n, c: c, hw: hw, mean: mean, standardDeviation: variance.map { ($0 + 1e-5).squareRoot() },
                        gamma: gamma, beta: beta, y: &y)
        sampleNormForwardReference(x: x, n: n, c: c, hw: hw, mean: mean, variance: variance, eps: 1e-5, gamma: gamma, beta: beta, y: &yRef)
        expectClose(y, yRef, "apply")
        var dx = [Float](repeating: 0, count: x.count), dxRef = dx
        var dg = [Float](repeating: 1, count: c), db = dg, dgRef = dg, dbRef = db
        sampleNormBackward(dy: dy, x: x, n: n, c: c, hw: hw, mean: mean, invStd: invStd, gamma: gamma, instanceMean: instanceMean,
                           meanByMean: a, varianceByMean: b, varianceByVariance: cv, dx: &dx, dGamma: &dg, dBeta: &db)
        sampleNormBackwardReference(dy: dy, x: x, n: n, c: c, hw: hw, mean: mean, invStd: invStd, gamma: gamma,
                                    meanByMean: a, varianceByMean: b, varianceByVariance: cv, dx: &dxRef, dGamma: &dgRef, dBeta: &dbRef)
        expectClose(dx, dxRef, "dx")
        expectClose(dg, dgRef, "dgamma")
        expectClose(db, dbRef, "dbeta")
        // Batch statistics are the case N = 1 over a channel-major layout with a = c = 1, b = 0: check the
        // per-sample backward against the batch-norm backward on one sample.
        if n == 1 {
            var mu = [Float](repeating: 0, count: c), v = mu
            batchNormStatistics(x: x, n: 1, c: c, hw: hw, mean: &mu, variance: &v)
            let istd = v.map { 1 / ($0 + 1e-5).squareRoot() }, ones = [Float](repeating: 1, count: c), zeros = [Float](repeating: 0, count: c)
            var dxS = [Float](repeating: 0, count: x.count), dxB = dxS
            sampleNormBackward(dy: dy, x: x, n: 1, c: c, hw: hw, mean: mu, invStd: istd, gamma: gamma, instanceMean: mu,
                               meanByMean: ones, varianceByMean: zeros, varianceByVariance: ones, dx: &dxS, dGamma: nil, dBeta: nil)
            batchNormBackward(dy: dy, x: x, n: 1, c: c, hw: hw, mean: mu, invStd: istd, gamma: gamma, batchStatistics: true,
                              dx: &dxB, dGamma: nil, dBeta: nil)
            expectClose(dxS, dxB, "dx as batch norm")
        }
    }
}

/// Vectorised reductions against plain Double sums.
@Suite struct ReduceTests {
    @Test(arguments: [0, 1, 7, 8, 31, 32, 33, 100, 1027])
    func sumsAndDots(_ count: Int) {
        let a = randomFloats(count, seed: 8), b = randomFloats(count, seed: 9)
        let s = a.reduce(0.0) { $0 + Double($1) }
        let d = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        #expect(abs(Double(vectorSum(a, count)) - s) <= 1e-4 * max(1, Double(count)).squareRoot())
        #expect(abs(Double(vectorDot(a, b, count)) - d) <= 1e-4 * max(1, Double(count)).squareRoot())
        let m: Float = 0.3
        let q = a.reduce(0.0) { $0 + Double(($1 - m) * ($1 - m)) }
        #expect(abs(Double(vectorSumSquaredDeviation(a, count, from: m)) - q) <= 1e-4 * max(1, q))
    }
}
