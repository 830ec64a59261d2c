import Foundation
import TTAAdaptation
import TTAKernels
import TTAModels
import TTARuntime
import TTATensor

/// One model configuration of `tta-bench steps`: an architecture and the batch size it is timed at.
struct StepConfig {
    let model: String
    let batch: Int

    /// The configurations timed when no `--model` is given: the CIFAR-10 `Standard` model at the
    /// reference batch size, and a small model.
    static let defaults = [StepConfig(model: "wideresnet-28-10", batch: 200), StepConfig(model: "wideresnet-16-2", batch: 64)]

    /// `--model A,B,...` with `--batch N` (all) or `--batch N1,N2,...` (one per model). A model without
    /// a batch size takes its default one (200 for WRN-28-10, 64 otherwise).
    static func parse(models: String?, batches: String?) throws -> [StepConfig] {
        let sizes = try batches.map { text in
            try text.split(separator: ",").map { item -> Int in
                guard let n = Int(item), n > 0 else { throw BenchError.usage("--batch needs positive integers, got '\(text)'") }
                return n
            }
        }
        guard let models else {
            guard let sizes else { return defaults }
            guard sizes.count == 1 || sizes.count == defaults.count else {
                throw BenchError.usage("--batch: give one size or one per default model (\(defaults.count))")
            }
            return defaults.enumerated().map { StepConfig(model: $1.model, batch: sizes.count == 1 ? sizes[0] : sizes[$0]) }
        }
        let names = models.split(separator: ",").map { $0.lowercased() }
        guard !names.isEmpty else { throw BenchError.usage("--model needs at least one name") }
        if let sizes, sizes.count != 1 && sizes.count != names.count {
            throw BenchError.usage("--batch: give one size or one per model (\(names.count))")
        }
        return try names.enumerated().map { i, given in
            // Checked here, built later (ModelZoo.make would allocate the whole model).
            let parts = given.split(separator: "-")
            guard parts.count == 3, ["wideresnet", "wrn"].contains(parts[0]), let d = Int(parts[1]), let w = Int(parts[2]),
                  d >= 10, (d - 4) % 6 == 0, w >= 1 else {
                throw BenchError.usage("--model: expected wideresnet-<depth>-<widen> with depth 6n+4, got '\(given)'")
            }
            let name = "wideresnet-\(d)-\(w)"
            let fallback = defaults.first { $0.model == name }?.batch ?? 64
            return StepConfig(model: name, batch: sizes.map { $0.count == 1 ? $0[0] : $0[i] } ?? fallback)
        }
    }
}

/// What `tta-bench steps --json` writes per (model, batch, method). `benchmarks/pytorch_reference.py`
/// writes the same fields.
struct StepResult: Codable {
    let model: String
    let batch: Int
    let method: String
    let warmup: Int
    let runs: Int
    let secondsMin: Double
    let secondsMedian: Double
    /// Images per second of the fastest run and of the median run.
    let imagesPerSecondMinTime: Double
    let imagesPerSecondMedian: Double
    /// Mean seconds per step in each phase (forward, backward, update) over the timed runs; `other` is
    /// what the phases do not cover (loss, output checks, bookkeeping).
    let phaseSeconds: [String: Double]
    /// Peak resident set size while this method ran (model built, warm-up and timed runs).
    let peakMemoryBytes: Int
    /// Resident set size just before the model was built.
    let residentBeforeBytes: Int
    /// Whether the peak is this method's own (the peak was reset before it) or the process's so far.
    let peakScope: String
    /// Teacher forwards on augmented inputs per step (CoTTA).
    let augmentedPasses: Int

    enum CodingKeys: String, CodingKey {
        case model, batch, method, warmup, runs
        case secondsMin = "seconds_min", secondsMedian = "seconds_median"
        case imagesPerSecondMinTime = "images_per_second_min_time", imagesPerSecondMedian = "images_per_second_median"
        case phaseSeconds = "phase_seconds", peakMemoryBytes = "peak_memory_bytes"
        case residentBeforeBytes = "resident_before_bytes", peakScope = "peak_scope"
        case augmentedPasses = "augmented_passes"
    }
}

struct StepReport: Codable {
    let benchmark: String
    let implementation: String
    let threads: Int
    let kernel: String
    let augmentation: String
    let seed: Int
    let results: [StepResult]
}

/// `tta-bench steps`: the time of one adaptation step (one batch through `Adaptor.adapt`) per method,
/// on a seeded random-initialised WideResNet and seeded CIFAR-shaped inputs (3×32×32, 10 classes).
struct StepBench {
    static let methods = ["source", "norm_test", "tent", "cotta", "cotta-noaug"]
    static let augmentation = "CoTTA pipeline (TTAAugment.CoTTAAugmentation: torchvision semantics, noise std 0.005)"

    let configs: [StepConfig]
    let methods: [String]
    let warmup: Int
    let runs: Int
    let threads: Int
    let seed: UInt64
    let jsonPath: String?

    init(arguments: [String]) throws {
        let options = try Options(arguments, known: ["model", "batch", "methods", "warmup", "runs", "threads", "json", "seed"])
        configs = try StepConfig.parse(models: options.string("model"), batches: options.string("batch"))
        methods = (options.string("methods") ?? Self.methods.joined(separator: ",")).split(separator: ",").map(String.init)
        for m in methods where !Self.methods.contains(m) {
            throw BenchError.usage("unknown method '\(m)'; known: \(Self.methods.joined(separator: ", "))")
        }
        if let text = options.string("warmup") {
            guard let w = Int(text), w >= 0 else { throw BenchError.usage("--warmup needs a non-negative integer, got '\(text)'") }
            warmup = w
        } else {
            warmup = 1
        }
        runs = try options.int("runs") ?? 3
        threads = try options.int("threads") ?? KernelThreads.count
        seed = UInt64(try options.int("seed") ?? 1)
        jsonPath = options.string("json")
    }

    func run() throws {
        KernelThreads.count = threads
        ProcessMemory.setHeapPolicy(.keepFreed)  // as `tta` runs
        let perMethodPeak = ProcessMemory.resetPeak()
        print("steps: one Adaptor.adapt step per method, random-initialised model (seed \(seed)), inputs 3x32x32, 10 classes;")
        print("       \(threads) thread(s), kernel \(gemmSIMDKernel), heap keeps freed memory, warm-up \(warmup), \(runs) timed run(s);"
              + " img/s from the fastest and the median run; phases in ms per step")
        print("       cotta: \(MethodConfiguration.defaults(for: .cifar).augmentations) augmented teacher passes every batch "
              + "(alwaysAugment); cotta-noaug: none (augmentations = 0)")
        if !perMethodPeak { print("       note: cannot reset the peak RSS (/proc/self/clear_refs); peaks are process-wide") }
        let header = pad("model", 18) + pad("batch", 6) + pad("method", 12) + pad("ms min", 10) + pad("img/s", 9)
            + pad("median", 9) + pad("fwd", 9) + pad("bwd", 9) + pad("upd", 9) + pad("other", 8) + pad("peak MiB", 10)
        var results: [StepResult] = []
        for config in configs {
            try validate(config)
            print(header)
            print(String(repeating: "-", count: header.count))
            for method in methods {
                let r = try measure(config, method: method, perMethodPeak: perMethodPeak)
                results.append(r)
                let ph = r.phaseSeconds
                print(pad(config.model, 18) + pad("\(config.batch)", 6) + pad(method, 12)
                      + pad(fixed(r.secondsMin * 1e3, 1), 10) + pad(fixed(r.imagesPerSecondMinTime, 1), 9)
                      + pad(fixed(r.imagesPerSecondMedian, 1), 9)
                      + pad(fixed((ph["forward"] ?? 0) * 1e3, 1), 9) + pad(fixed((ph["backward"] ?? 0) * 1e3, 1), 9)
                      + pad(fixed((ph["update"] ?? 0) * 1e3, 1), 9) + pad(fixed((ph["other"] ?? 0) * 1e3, 1), 8)
                      + pad(fixed(Double(r.peakMemoryBytes) / 1_048_576, 1), 10))
                fflush(nil)
            }
            print()
        }
        if let jsonPath {
            try writeJSON(StepReport(benchmark: "steps", implementation: "swift", threads: threads, kernel: gemmSIMDKernel,
                                     augmentation: Self.augmentation, seed: Int(seed), results: results), to: jsonPath)
            print("wrote \(jsonPath)")
        }
    }

    /// The method as the CLI builds it (MethodFactory, CIFAR-10 reference defaults), with CoTTA's
    /// augmented passes forced on (`cotta`) or off (`cotta-noaug`).
    static func makeMethod(_ name: String, imageSize: Int) throws -> any AdaptationMethod {
        let base = name == "cotta-noaug" ? "cotta" : name
        var configuration = MethodConfiguration.defaults(for: .cifar, method: base, numClasses: 10)
        if name == "cotta-noaug" { configuration.augmentations = 0 }
        let method = try MethodFactory.make(base, configuration: configuration, imageSize: imageSize)
        if name == "cotta" {
            guard let cotta = method as? CoTTAMethod else { throw BenchError.failed("cotta: unexpected method type") }
            cotta.alwaysAugment = true
        }
        return method
    }

    /// A WideResNet for 3×32×32 inputs and 10 classes with RobustBench's initialisation, seeded:
    /// convolutions N(0, 2 / (k·k·out)) (Kaiming, fan-out), fc weight U(±1/√in), biases 0, BN γ = 1, β = 0,
    /// running mean 0 and variance 1.
    static func makeModel(_ name: String, seed: UInt64) throws -> any ImageClassifier {
        let model = try ModelZoo.make(name, numClasses: 10, inputChannels: 3)
        var g = SeededGenerator(seed: seed)
        for e in model.store.entries where e.kind == .parameter && !e.isNormAffine {
            var t = Tensor(shape: e.shape)
            if e.shape.count == 4 {
                let std = Float((2.0 / Double(e.shape[0] * e.shape[2] * e.shape[3])).squareRoot())
                for i in 0..<t.count { t.storage[i] = g.nextNormal() * std }
            } else if e.shape.count == 2 {
                let bound = 1 / Float(e.shape[1]).squareRoot()
                for i in 0..<t.count { t.storage[i] = (2 * g.nextUniform() - 1) * bound }
            }
            model.store.set(e.name, t)
        }
        return model
    }

    /// Seeded uniform [0, 1) images (N, 3, 32, 32).
    static func makeInput(batch: Int, seed: UInt64) -> Tensor {
        var g = SeededGenerator(seed: seed &+ 0x5EED)
        var x = Tensor(shape: [batch, 3, 32, 32])
        for i in 0..<x.count { x.storage[i] = g.nextUniform() }
        return x
    }

    /// Sanity check before timing, on at most 8 images: one `source` step through the Adaptor equals
    /// the plain (eval-mode) forward of the same model.
    private func validate(_ config: StepConfig) throws {
        let x = Self.makeInput(batch: min(config.batch, 8), seed: seed)
        let model = try Self.makeModel(config.model, seed: seed)
        let plain = model.forward(x, .inference)
        let adaptor = try Adaptor(model: model, method: Self.makeMethod("source", imageSize: 32), seed: seed)
        let stepped = try adaptor.adapt(x)
        guard plain.shape == stepped.shape, plain.isFinite else {
            throw BenchError.failed("validation: source step gave shape \(stepped.shape), plain forward \(plain.shape) (finite: \(plain.isFinite))")
        }
        var worst: Float = 0, scale: Float = 1
        for (a, b) in zip(plain.storage, stepped.storage) { worst = max(worst, abs(a - b)); scale = max(scale, abs(a)) }
        guard worst <= 1e-6 * scale else {
            throw BenchError.failed("validation: source step differs from the plain forward by \(worst) (scale \(scale))")
        }
        print("validation \(config.model): source step == plain forward on \(x.shape[0]) images (max |diff| \(worst))")
    }

    /// glibc's `malloc_trim(0)` where there is one (looked up at run time: Glibc's module map does not
    /// export malloc.h); elsewhere nothing.
    static func trimHeap() {
        #if os(Linux)
        typealias Trim = @convention(c) (Int) -> Int32
        if let symbol = dlsym(nil, "malloc_trim") { _ = unsafeBitCast(symbol, to: Trim.self)(0) }
        #endif
    }

    private func measure(_ config: StepConfig, method name: String, perMethodPeak: Bool) throws -> StepResult {
        // Hand the heap the previous method freed back to the kernel, so that its pages do not count
        // in this method's resident size, then start this method's peak from here.
        Self.trimHeap()
        ProcessMemory.resetPeak()
        let residentBefore = ProcessMemory.residentBytes
        let x = Self.makeInput(batch: config.batch, seed: seed)
        let method = try Self.makeMethod(name, imageSize: 32)
        let adaptor = try Adaptor(model: try Self.makeModel(config.model, seed: seed), method: method, seed: seed)

        var phasesPerCall: [[String: Double]] = []
        var failure: Error?
        var finite = true
        let timing = Timing(minRuns: runs, fixedRuns: true, warmup: warmup) {
            guard failure == nil else { return }
            let before = adaptor.timer.seconds
            do {
                let out = try adaptor.adapt(x)
                if finite && !out.isFinite { finite = false }
            } catch {
                failure = error
            }
            var delta: [String: Double] = [:]
            for (k, v) in adaptor.timer.seconds { delta[k] = v - (before[k] ?? 0) }
            phasesPerCall.append(delta)
        }
        if let failure { throw BenchError.failed("\(name) on \(config.model): \(failure)") }
        guard finite else { throw BenchError.failed("\(name) on \(config.model): the output has NaN or infinity") }

        let timed = phasesPerCall.suffix(timing.runs.count)
        var phases: [String: Double] = [:]
        for call in timed { for (k, v) in call { phases[k, default: 0] += v / Double(timed.count) } }
        let meanStep = timing.runs.reduce(0, +) / Double(timing.runs.count)
        phases["other"] = max(0, meanStep - phases.values.reduce(0, +))
        let cotta = method as? CoTTAMethod
        let augmented = cotta.map { $0.alwaysAugment ? $0.configuration.augmentations : 0 } ?? 0
        return StepResult(model: config.model, batch: config.batch, method: name, warmup: warmup, runs: timing.runs.count,
                          secondsMin: timing.min, secondsMedian: timing.median,
                          imagesPerSecondMinTime: Double(config.batch) / timing.min,
                          imagesPerSecondMedian: Double(config.batch) / timing.median,
                          phaseSeconds: phases, peakMemoryBytes: ProcessMemory.peakResidentBytes,
                          residentBeforeBytes: residentBefore, peakScope: perMethodPeak ? "method" : "process",
                          augmentedPasses: augmented)
    }
}
