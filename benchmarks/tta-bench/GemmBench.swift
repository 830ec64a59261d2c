import Foundation
import TTAKernels
import TTATensor

/// One GEMM problem: C[m, n] = op(A)[m, k] op(B)[k, n].
struct GemmShape: Hashable, Codable {
    let m: Int, n: Int, k: Int
    let transA: Bool, transB: Bool

    var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
    var trans: String { (transA ? "T" : "N") + (transB ? "T" : "N") }
    var name: String { "\(m)x\(n)x\(k)" }

    /// Square problems, then the im2col GEMMs of WideResNet-28-10's 3x3 convolutions on 32x32 inputs:
    /// m = output channels, n = output pixels (per image, then for 8 images), k = input channels * 9.
    static func standard(_ set: String, transA: Bool, transB: Bool) throws -> [GemmShape] {
        let square = [256, 512, 1024, 2048].map { ($0, $0, $0) }
        let conv = [(160, 1024, 144), (160, 1024, 1440), (320, 256, 1440),
                    (320, 256, 2880), (640, 64, 2880), (640, 64, 5760)]
        let batched = conv.map { ($0.0, $0.1 * 8, $0.2) }
        let dims: [(Int, Int, Int)]
        switch set {
        case "square": dims = square
        case "conv": dims = conv + batched
        case "all": dims = square + conv + batched
        default:
            dims = try set.split(separator: ",").map { item in
                let parts = item.split(separator: "x").compactMap { Int($0) }
                guard parts.count == 3, parts.allSatisfy({ $0 > 0 }) else {
                    throw BenchError.usage("bad shape '\(item)': expected MxNxK")
                }
                return (parts[0], parts[1], parts[2])
            }
        }
        return dims.map { GemmShape(m: $0.0, n: $0.1, k: $0.2, transA: transA, transB: transB) }
    }
}

/// What `tta-bench gemm --json` writes: one record per shape.
struct GemmResult: Codable {
    let m: Int, n: Int, k: Int
    let trans: String
    let threads: Int
    let kernel: String
    let runs: Int
    let secondsMin: Double
    let secondsMedian: Double
    let gflopsMinTime: Double
    let gflopsMedian: Double
    /// Largest |C - reference| / (sum over p of |a_ip b_pj|) over the checked rows.
    let maxRelativeError: Double
    let checkedRows: Int
    let numpyGflopsMinTime: Double?
    let ratioToNumpy: Double?

    enum CodingKeys: String, CodingKey {
        case m, n, k, trans, threads, kernel, runs
        case secondsMin = "seconds_min", secondsMedian = "seconds_median"
        case gflopsMinTime = "gflops_min_time", gflopsMedian = "gflops_median"
        case maxRelativeError = "max_relative_error", checkedRows = "checked_rows"
        case numpyGflopsMinTime = "numpy_gflops_min_time", ratioToNumpy = "ratio_to_numpy"
    }
}

struct GemmReport: Codable {
    let benchmark: String
    let threads: Int
    let kernel: String
    /// `fmaPeakGFLOPS` before and after the shapes.
    let fmaPeakGflops: [Double]
    let results: [GemmResult]

    enum CodingKeys: String, CodingKey {
        case benchmark, threads, kernel, results
        case fmaPeakGflops = "fma_peak_gflops"
    }
}

/// The numpy side, as written by benchmarks/gemm_numpy.py.
private struct NumpyReport: Decodable {
    struct Entry: Decodable {
        let m: Int, n: Int, k: Int
        let trans: String
        let gflops_min_time: Double
    }
    let results: [Entry]
}

/// `tta-bench gemm`: checks gemmSIMD against gemmReference on each shape, then times it.
struct GemmBench {
    let shapes: [GemmShape]
    let threads: Int
    let runs: Int?
    let jsonPath: String?
    let numpy: [String: Double]

    /// Largest error tolerated against the reference, relative to sum |a||b| (fp32, any k).
    static let tolerance = 1e-4
    /// Multiply-adds the reference may spend per shape on checking (it runs at about 1 GFLOP/s).
    static let referenceBudget = 24_000_000

    init(arguments: [String]) throws {
        let options = try Options(arguments, known: ["threads", "runs", "shapes", "trans", "json", "numpy"])
        threads = try options.int("threads") ?? KernelThreads.count
        runs = try options.int("runs")
        jsonPath = options.string("json")
        let trans = options.string("trans") ?? "NN"
        guard ["NN", "NT", "TN", "TT"].contains(trans) else {
            throw BenchError.usage("--trans must be NN, NT, TN or TT, got '\(trans)'")
        }
        shapes = try GemmShape.standard(options.string("shapes") ?? "all",
                                        transA: trans.first == "T", transB: trans.last == "T")
        var numpy: [String: Double] = [:]
        if let path = options.string("numpy") {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw BenchError.failed("cannot read \(path)")
            }
            let report = try JSONDecoder().decode(NumpyReport.self, from: data)
            for e in report.results { numpy["\(e.m)x\(e.n)x\(e.k)/\(e.trans)"] = e.gflops_min_time }
        }
        self.numpy = numpy
    }

    func run() throws {
        KernelThreads.count = threads
        print("gemm: gemmSIMD, kernel \(gemmSIMDKernel), \(threads) thread(s); GFLOP/s from the fastest and the median run")
        let peakBefore = fmaPeakGFLOPS(threads: threads)
        print("FMA peak now (independent vfmadd231ps chains, \(threads) thread(s)): \(fixed(peakBefore, 1)) GFLOP/s")
        let hasNumpy = !numpy.isEmpty
        var header = pad("shape MxNxK", 16) + pad("op", 4) + pad("runs", 6) + pad("ms min", 10)
            + pad("GFLOP/s", 10) + pad("median", 10) + pad("max err", 10)
        if hasNumpy { header += pad("numpy", 10) + pad("ratio", 8) }
        print(header)
        print(String(repeating: "-", count: header.count))

        var results: [GemmResult] = []
        for shape in shapes {
            let result = try measure(shape)
            results.append(result)
            var line = pad(shape.name, 16) + pad(shape.trans, 4) + pad("\(result.runs)", 6)
                + pad(fixed(result.secondsMin * 1e3, 3), 10) + pad(fixed(result.gflopsMinTime, 1), 10)
                + pad(fixed(result.gflopsMedian, 1), 10)
                + pad(String(format: "%.1e", result.maxRelativeError), 10)
            if hasNumpy {
                line += pad(result.numpyGflopsMinTime.map { fixed($0, 1) } ?? "-", 10)
                    + pad(result.ratioToNumpy.map { fixed($0, 2) + "x" } ?? "-", 8)
            }
            print(line)
            fflush(nil)
        }
        let peakAfter = fmaPeakGFLOPS(threads: threads)
        print("FMA peak after the shapes: \(fixed(peakAfter, 1)) GFLOP/s")
        if let jsonPath {
            try writeJSON(GemmReport(benchmark: "gemm", threads: threads, kernel: gemmSIMDKernel,
                                     fmaPeakGflops: [peakBefore, peakAfter], results: results),
                          to: jsonPath)
            print("wrote \(jsonPath)")
        }
    }

    private func measure(_ shape: GemmShape) throws -> GemmResult {
        let (m, n, k) = (shape.m, shape.n, shape.k)
        // Stored layouts: A is m x k (or k x m when transposed), B is k x n (or n x k).
        let lda = shape.transA ? m : k, ldb = shape.transB ? k : n, ldc = n
        var rng = SeededGenerator(seed: UInt64(truncatingIfNeeded: m &* 1_000_003 &+ n &* 1009 &+ k))
        let a = Matrix(count: m * k) { _ in 2 * rng.nextUniform() - 1 }
        let b = Matrix(count: k * n) { _ in 2 * rng.nextUniform() - 1 }
        let c = Matrix(count: m * n) { _ in .nan }
        defer { a.free(); b.free(); c.free() }

        gemmSIMD(transA: shape.transA, transB: shape.transB, m: m, n: n, k: k, alpha: 1,
                 a: a.base, lda: lda, b: b.base, ldb: ldb, beta: 0, c: c.base, ldc: ldc)
        let (error, checked) = check(shape, a: a, b: b, c: c)
        guard error <= Self.tolerance else {
            throw BenchError.failed("gemm \(shape.name) \(shape.trans): relative error \(error) > \(Self.tolerance)")
        }

        let timing = Timing(minRuns: runs ?? 5, fixedRuns: runs != nil) {
            gemmSIMD(transA: shape.transA, transB: shape.transB, m: m, n: n, k: k, alpha: 1,
                     a: a.base, lda: lda, b: b.base, ldb: ldb, beta: 0, c: c.base, ldc: ldc)
        }
        let best = shape.flops / timing.min * 1e-9
        let numpyBest = numpy["\(shape.name)/\(shape.trans)"]
        return GemmResult(m: m, n: n, k: k, trans: shape.trans, threads: threads, kernel: gemmSIMDKernel,
                          runs: timing.runs.count, secondsMin: timing.min, secondsMedian: timing.median,
                          gflopsMinTime: best, gflopsMedian: shape.flops / timing.median * 1e-9,
                          maxRelativeError: error, checkedRows: checked,
                          numpyGflopsMinTime: numpyBest, ratioToNumpy: numpyBest.map { best / $0 })
    }

    /// Recomputes up to three bands of rows (top, middle, bottom) of C with gemmReference, within
    /// the reference budget, and returns the largest error relative to sum |a||b|.
    private func check(_ shape: GemmShape, a: Matrix, b: Matrix, c: Matrix) -> (Double, Int) {
        let (m, n, k) = (shape.m, shape.n, shape.k)
        let lda = shape.transA ? m : k, ldb = shape.transB ? k : n
        let rows = max(3, min(m, Self.referenceBudget / max(1, n * k)))
        let band = min(m, max(1, rows / 3))
        let starts = Array(Set([0, (m - band) / 2, m - band])).sorted()
        let absA = Matrix(count: m * k) { abs(a.base[$0]) }
        let absB = Matrix(count: k * n) { abs(b.base[$0]) }
        let ref = Matrix(count: band * n) { _ in 0 }
        let mag = Matrix(count: band * n) { _ in 0 }
        defer { absA.free(); absB.free(); ref.free(); mag.free() }

        var worst = 0.0
        for i0 in starts {
            // Row i0 of op(A) starts at row i0 of A, or at column i0 of the stored Aᵀ.
            let offset = shape.transA ? i0 : i0 * lda
            gemmReference(transA: shape.transA, transB: shape.transB, m: band, n: n, k: k, alpha: 1,
                          a: a.base + offset, lda: lda, b: b.base, ldb: ldb, beta: 0, c: ref.base, ldc: n)
            gemmReference(transA: shape.transA, transB: shape.transB, m: band, n: n, k: k, alpha: 1,
                          a: absA.base + offset, lda: lda, b: absB.base, ldb: ldb, beta: 0, c: mag.base, ldc: n)
            for i in 0..<band {
                for j in 0..<n {
                    let got = Double(c.base[(i0 + i) * n + j]), want = Double(ref.base[i * n + j])
                    let scale = max(Double(mag.base[i * n + j]), Double.leastNormalMagnitude)
                    let e = abs(got - want) / scale
                    worst = e.isNaN ? .infinity : max(worst, e)
                }
            }
        }
        return (worst, band * starts.count)
    }
}
