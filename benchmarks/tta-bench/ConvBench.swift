import Foundation
import TTAKernels
import TTATensor

/// One convolution layer shape of WideResNet-28-10 on 32x32 inputs, without the batch size.
struct ConvLayer {
    let name: String
    let c: Int, h: Int, o: Int, k: Int, stride: Int

    func geometry(batch: Int) -> Conv2dGeometry {
        Conv2dGeometry(n: batch, c: c, h: h, w: h, o: o, kh: k, kw: k, strideH: stride, strideW: stride,
                       padH: k / 2, padW: k / 2)
    }

    /// The distinct convolutions of WRN-28-10 (RobustBench `Standard`): the stem, then per group its
    /// first 3x3 (which changes the width, stride 2 in groups 2 and 3), the 1x1 shortcut beside it,
    /// and the 3x3 that the other convolutions of the group repeat.
    static let wrn28x10: [ConvLayer] = [
        ConvLayer(name: "stem", c: 3, h: 32, o: 16, k: 3, stride: 1),
        ConvLayer(name: "g1.first", c: 16, h: 32, o: 160, k: 3, stride: 1),
        ConvLayer(name: "g1.short", c: 16, h: 32, o: 160, k: 1, stride: 1),
        ConvLayer(name: "g1.conv", c: 160, h: 32, o: 160, k: 3, stride: 1),
        ConvLayer(name: "g2.first", c: 160, h: 32, o: 320, k: 3, stride: 2),
        ConvLayer(name: "g2.short", c: 160, h: 32, o: 320, k: 1, stride: 2),
        ConvLayer(name: "g2.conv", c: 320, h: 16, o: 320, k: 3, stride: 1),
        ConvLayer(name: "g3.first", c: 320, h: 16, o: 640, k: 3, stride: 2),
        ConvLayer(name: "g3.short", c: 320, h: 16, o: 640, k: 1, stride: 2),
        ConvLayer(name: "g3.conv", c: 640, h: 8, o: 640, k: 3, stride: 1),
    ]
}

/// What `tta-bench conv --json` writes per (layer, direction); benchmarks/conv_torch.py writes the
/// same fields for PyTorch.
struct ConvResult: Codable {
    let layer: String
    let direction: String
    let batch: Int
    let threads: Int
    let runs: Int
    let secondsMin: Double
    let secondsMedian: Double
    let gflopsMinTime: Double
    let maxRelativeError: Double
    let torchSecondsMin: Double?
    let ratioToTorch: Double?
    /// Where the direction takes Winograd: the fastest run of the im2col + GEMM lowering of the same
    /// call, timed right after it.
    let loweredSecondsMin: Double?

    enum CodingKeys: String, CodingKey {
        case layer, direction, batch, threads, runs
        case secondsMin = "seconds_min", secondsMedian = "seconds_median", gflopsMinTime = "gflops_min_time"
        case maxRelativeError = "max_relative_error"
        case torchSecondsMin = "torch_seconds_min", ratioToTorch = "ratio_to_torch"
        case loweredSecondsMin = "lowered_seconds_min"
    }
}

private struct ConvReport: Codable {
    let benchmark: String
    let batch: Int
    let threads: Int
    let results: [ConvResult]
}

/// The PyTorch side, as written by benchmarks/conv_torch.py.
private struct TorchConvReport: Decodable {
    struct Entry: Decodable {
        let layer: String
        let direction: String
        let seconds_min: Double
    }
    let results: [Entry]
}

/// `tta-bench conv`: each WRN-28-10 convolution forward, backward to the input and backward to the
/// weights at one batch size. Each direction is first checked against its direct-loop reference on
/// two images, then timed on the whole batch. `forward` is a recorded forward pass (the lowered GEMM),
/// `inference` one that no backward pass follows (Winograd F(4x4) on 3x3 stride-1 layers), `input`
/// the backward pass to the input (also Winograd F(4x4) there); where a direction takes Winograd, the
/// lowered GEMM of the same call is timed right after it, for the speed-up in the same run.
struct ConvBench {
    static let directions = ["forward", "inference", "input", "weight"]
    /// Largest error tolerated against the reference, relative to the largest reference magnitude.
    static let tolerance = 1e-4

    let layers: [ConvLayer]
    let directions: [String]
    let batch: Int
    let threads: Int
    let runs: Int
    let jsonPath: String?
    let torch: [String: Double]

    init(arguments: [String]) throws {
        let options = try Options(arguments, known: ["batch", "threads", "runs", "layers", "directions", "json", "torch"])
        batch = try options.int("batch") ?? 200
        threads = try options.int("threads") ?? KernelThreads.count
        runs = try options.int("runs") ?? 2
        jsonPath = options.string("json")
        if let names = options.string("layers") {
            layers = try names.split(separator: ",").map { name in
                guard let layer = ConvLayer.wrn28x10.first(where: { $0.name == name }) else {
                    let known = ConvLayer.wrn28x10.map(\.name).joined(separator: ",")
                    throw BenchError.usage("--layers: unknown layer '\(name)' (known: \(known))")
                }
                return layer
            }
        } else {
            layers = ConvLayer.wrn28x10
        }
        directions = try (options.string("directions")?.split(separator: ",").map(String.init) ?? Self.directions).map {
            guard Self.directions.contains($0) else {
                throw BenchError.usage("--directions: expected forward, inference, input or weight, got '\($0)'")
            }
            return $0
        }
        var torch: [String: Double] = [:]
        if let path = options.string("torch") {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw BenchError.failed("cannot read \(path)")
            }
            for e in try JSONDecoder().decode(TorchConvReport.self, from: data).results {
                torch["\(e.layer)/\(e.direction)"] = e.seconds_min
            }
        }
        self.torch = torch
    }

    func run() throws {
        KernelThreads.count = threads
        print("conv: WRN-28-10 convolutions at batch \(batch), \(threads) thread(s), GEMM kernel \(gemmSIMDKernel); "
              + "warm-up 1, \(runs) timed run(s)")
        var header = pad("layer", 10) + pad("geometry", 34) + pad("dir", 8) + pad("ms min", 10) + pad("GFLOP/s", 9)
            + pad("max err", 9) + pad("gemm ms", 10) + pad("speed-up", 9)
        if !torch.isEmpty { header += pad("torch ms", 10) + pad("ratio", 7) }
        print(header)
        print(String(repeating: "-", count: header.count))
        var results: [ConvResult] = []
        for layer in layers {
            for direction in directions {
                let r = try measure(layer, direction)
                results.append(r)
                let g = layer.geometry(batch: batch)
                var line = pad(layer.name, 10)
                    + pad("\(g.c)->\(g.o) \(g.kh)x\(g.kw)/\(g.strideH) \(g.h)x\(g.w)->\(g.ho)x\(g.wo)", 34)
                    + pad(direction, 8) + pad(fixed(r.secondsMin * 1e3, 1), 10) + pad(fixed(r.gflopsMinTime, 1), 9)
                    + pad(String(format: "%.0e", r.maxRelativeError), 9)
                    + pad(r.loweredSecondsMin.map { fixed($0 * 1e3, 1) } ?? "-", 10)
                    + pad(r.loweredSecondsMin.map { fixed($0 / r.secondsMin, 2) + "x" } ?? "-", 9)
                if !torch.isEmpty {
                    line += pad(r.torchSecondsMin.map { fixed($0 * 1e3, 1) } ?? "-", 10)
                        + pad(r.ratioToTorch.map { fixed($0, 2) + "x" } ?? "-", 7)
                }
                print(line)
                fflush(nil)
            }
        }
        let total = results.reduce(0) { $0 + $1.secondsMin }
        let torchTotal = results.compactMap(\.torchSecondsMin).reduce(0, +)
        print("sum of the fastest runs: \(fixed(total, 3)) s" + (torch.isEmpty ? "" : ", PyTorch \(fixed(torchTotal, 3)) s"))
        if let jsonPath {
            try writeJSON(ConvReport(benchmark: "conv", batch: batch, threads: threads, results: results), to: jsonPath)
            print("wrote \(jsonPath)")
        }
    }

    /// A convolution call on (x, weight, dy, out, geometry): forward overwrites `out`, the backward
    /// directions accumulate into it.
    private typealias Call = (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>,
                              UnsafeMutablePointer<Float>, Conv2dGeometry) -> Void

    /// The fast kernel of `direction` and its direct-loop reference.
    private static func kernels(_ direction: String) -> (fast: Call, reference: Call) {
        switch direction {
        case "forward":
            return ({ x, w, _, y, g in conv2dForward(x: x, weight: w, y: y, g) },
                    { x, w, _, y, g in conv2dForwardReference(x: x, weight: w, y: y, g) })
        case "inference":
            return ({ x, w, _, y, g in conv2dForward(x: x, weight: w, y: y, g, inference: true) },
                    { x, w, _, y, g in conv2dForwardReference(x: x, weight: w, y: y, g) })
        case "input":
            return ({ _, w, dy, dx, g in conv2dBackwardInput(dy: dy, weight: w, dx: dx, g) },
                    { _, w, dy, dx, g in conv2dBackwardInputReference(dy: dy, weight: w, dx: dx, g) })
        default:
            return ({ x, _, dy, dw, g in conv2dBackwardWeight(x: x, dy: dy, dWeight: dw, g) },
                    { x, _, dy, dw, g in conv2dBackwardWeightReference(x: x, dy: dy, dWeight: dw, g) })
        }
    }

    private static func outputCount(_ direction: String, _ g: Conv2dGeometry) -> Int {
        switch direction {
        case "forward", "inference": g.outputCount
        case "input": g.inputCount
        default: g.weightCount
        }
    }

    private func measure(_ layer: ConvLayer, _ direction: String) throws -> ConvResult {
        let g = layer.geometry(batch: batch)
        var rng = SeededGenerator(seed: UInt64(g.c &* 7919 &+ g.o &* 31 &+ g.kh))
        let x = Matrix(count: g.inputCount) { _ in 2 * rng.nextUniform() - 1 }
        let w = Matrix(count: g.weightCount) { _ in 0.1 * (2 * rng.nextUniform() - 1) }
        let dy = Matrix(count: g.outputCount) { _ in 2 * rng.nextUniform() - 1 }
        let out = Matrix(count: Self.outputCount(direction, g)) { _ in 0 }
        defer { x.free(); w.free(); dy.free(); out.free() }

        // Check on two images (x and dy are laid out image by image, so their first two images are
        // the inputs of the small problem).
        var small = g
        small.n = min(2, g.n)
        let count = Self.outputCount(direction, small)
        let got = Matrix(count: count) { _ in 0 }, want = Matrix(count: count) { _ in 0 }
        defer { got.free(); want.free() }
        let (fast, reference) = Self.kernels(direction)
        fast(x.base, w.base, dy.base, got.base, small)
        reference(x.base, w.base, dy.base, want.base, small)
        var worst = 0.0, scale = Double.leastNormalMagnitude
        for i in 0..<count { scale = max(scale, abs(Double(want.base[i]))) }
        for i in 0..<count {
            let e = abs(Double(got.base[i]) - Double(want.base[i])) / scale
            worst = e.isNaN ? .infinity : max(worst, e)
        }
        guard worst <= Self.tolerance else {
            throw BenchError.failed("conv \(layer.name) \(direction): relative error \(worst) > \(Self.tolerance)")
        }

        let timing = Timing(minRuns: runs, fixedRuns: true) {
            fast(x.base, w.base, dy.base, out.base, g)
        }
        var lowered: Double?
        let pass: ConvPass? = direction == "inference" ? .inference : direction == "input" ? .backwardInput : nil
        if let pass, g.takesWinograd(pass) {
            ConvAlgorithm.winograd = false
            defer { ConvAlgorithm.winograd = true }
            lowered = Timing(minRuns: runs, fixedRuns: true) { fast(x.base, w.base, dy.base, out.base, g) }.min
        }
        let flops = 2 * Double(g.n) * Double(g.o) * Double(g.ho * g.wo) * Double(g.kdim)
        // PyTorch's forward is one and the same call whether or not a backward pass follows.
        let torchSeconds = torch["\(layer.name)/\(direction == "inference" ? "forward" : direction)"]
        return ConvResult(layer: layer.name, direction: direction, batch: batch, threads: threads,
                          runs: timing.runs.count, secondsMin: timing.min, secondsMedian: timing.median,
                          gflopsMinTime: flops / timing.min * 1e-9, maxRelativeError: worst,
                          torchSecondsMin: torchSeconds, ratioToTorch: torchSeconds.map { $0 / timing.min },
                          loweredSecondsMin: lowered)
    }
}
