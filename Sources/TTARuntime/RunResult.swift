import Foundation
import TTAAdaptation
import TTAData

/// The error of one domain of a run.
public struct DomainResult: Sendable, Codable, Equatable {
    /// Corruption name (`gaussian_noise`).
    public var name: String
    public var severity: Int
    /// Samples scored in this domain.
    public var samples: Int
    /// Correct predictions among them.
    public var correct: Int
    /// 1 − accuracy, in percent.
    public var error: Double

    public init(name: String, severity: Int, samples: Int, correct: Int) {
        self.name = name
        self.severity = severity
        self.samples = samples
        self.correct = correct
        error = samples == 0 ? 0 : 100 * Double(samples - correct) / Double(samples)
    }
}

/// The running error along the stream: cumulative error after `samples` images.
public struct RunningErrorPoint: Sendable, Codable, Equatable {
    public var samples: Int
    public var error: Double

    /// What is wrong with the first point of `points` read from a file, or nil: each must be an error in 0...100 after
    /// 0...`samples` samples (`total` names that bound in the message, when it is a field).
    static func problem(_ points: [RunningErrorPoint], samples: Int, total: String? = nil) -> String? {
        guard let k = points.firstIndex(where: { !($0.error.isFinite && (0...100).contains($0.error) && (0...samples).contains($0.samples)) })
        else { return nil }
        return "runningError[\(k)] is \(points[k].error)% after \(points[k].samples) samples; expected an error in 0...100 after "
            + "0...\(samples) samples" + (total.map { " (\($0))" } ?? "")
    }
}

/// The outcome of one method on one stream. Encodes to the JSON shape the CLI writes.
public struct RunResult: Sendable, Codable, Equatable {
    public var method: String
    public var setting: String
    /// Plain mean of the per-domain errors, in percent (as the reference reports it); in `mixed_domains`, the
    /// error over each severity's mixed stream, averaged over the severities (the reference's "mean error"
    /// there; the per-domain errors split that stream back).
    public var meanError: Double
    public var domains: [DomainResult]
    /// Images through the method per second of adaptation time.
    public var imagesPerSecond: Double
    /// Wall time of the run (data reading included).
    public var seconds: Double
    /// Peak resident memory of the process during the run.
    public var peakMemoryBytes: Int
    /// Wall time per adaptation phase (`forward`, `backward`, `update`) plus `data`.
    public var phaseSeconds: [String: Double]
    public var runningError: [RunningErrorPoint]
    /// Batches processed and the total in the stream (fewer when interrupted).
    public var batches: Int
    public var totalBatches: Int
    /// False when the run was interrupted: `domains` then holds the domains it finished.
    public var completed: Bool
    /// The method's hyper-parameters.
    public var methodConfiguration: MethodConfiguration
    /// Error over all samples (differs from `meanError` when domains differ in size).
    public var errorOverAllSamples: Double
    /// The peak resident memory estimated before the run (`MemoryEstimate`), beside the measured
    /// `peakMemoryBytes`; nil when no estimate was made.
    public var estimatedPeakMemoryBytes: Int? = nil
    /// Batches the guard rejected or rolled back, and detected collapses.
    public var stability = StabilityReport()
}

extension RunResult {
    /// The mean error over the severity-5 domains, which the reference prints beside the mean ("mean error at 5")
    /// when the stream holds other severities too (`gradual`, `--severity 5,3,1`); nil when it holds only severity 5
    /// or none of it, and in `mixed_domains` (whose per-domain errors split one mixed stream).
    public var meanErrorAtSeverity5: Double? {
        guard setting != "mixed_domains" else { return nil }
        let five = domains.filter { $0.severity == 5 }
        guard !five.isEmpty, five.count < domains.count else { return nil }
        return five.map(\.error).reduce(0, +) / Double(five.count)
    }

    /// In `mixed_domains` with several severities: each corruption's error over all its severities, in order of first
    /// appearance, as the reference's `eval_domain_dict` splits the results by domain (the corruption name, severities
    /// merged), and their plain average ("Average error across all domains"); nil otherwise (with one severity the
    /// domains already are the corruptions). The error over all samples is `errorOverAllSamples`.
    public var mixedErrorsByCorruption: (errors: [(name: String, error: Double)], average: Double)? {
        guard setting == "mixed_domains", Set(domains.map(\.severity)).count > 1 else { return nil }
        var names: [String] = []
        var counts: [String: (samples: Int, correct: Int)] = [:]
        for d in domains {
            if counts[d.name] == nil { names.append(d.name) }
            counts[d.name, default: (0, 0)].samples += d.samples
            counts[d.name, default: (0, 0)].correct += d.correct
        }
        let errors = names.map { n in
            (name: n, error: DomainResult(name: n, severity: 0, samples: counts[n]!.samples, correct: counts[n]!.correct).error)
        }
        return (errors, errors.map(\.error).reduce(0, +) / Double(errors.count))
    }

    /// The result with its measured fields (times, throughput, peak memory) zeroed: what two runs of the
    /// same configuration, or a run and its resumption from a checkpoint, have bit for bit in common.
    public var withoutMeasurements: RunResult {
        var r = self
        (r.seconds, r.imagesPerSecond, r.peakMemoryBytes, r.phaseSeconds) = (0, 0, 0, [:])
        r.estimatedPeakMemoryBytes = nil
        return r
    }
}

extension RunResult {
    /// The mean error of a run's reported `domains` (those with samples, in stream order): the plain mean of their
    /// errors, as the reference reports it; in `mixed_domains`, the error over each severity's mixed stream, averaged
    /// over the severities (the reference's "mean error" there). `BenchmarkRunner` computes it so; a checkpoint's
    /// finished runs are checked against it.
    public static func averageError(of domains: [DomainResult], mixedDomains: Bool) -> Double {
        if mixedDomains {
            // As the reference (test_time.py scores one "mixed" domain per severity).
            let bySeverity = Dictionary(grouping: domains, by: \.severity).sorted { $0.key < $1.key }
            let perSeverity: [Double] = bySeverity.map { entry in
                let wrong = entry.value.reduce(0) { $0 + $1.samples - $1.correct }
                let samples = entry.value.reduce(0) { $0 + $1.samples }
                return 100 * Double(wrong) / Double(samples)
            }
            return perSeverity.isEmpty ? 0 : perSeverity.reduce(0, +) / Double(perSeverity.count)
        }
        return domains.isEmpty ? 0 : domains.map(\.error).reduce(0, +) / Double(domains.count)
    }

    /// What is wrong with a finished run read from a checkpoint, as "field: what was expected", or nil: a run of
    /// `method` with `configuration` (when known) on a `setting` stream, completed, whose errors are those its counts
    /// give (each domain's, the mean, the error over all samples, recomputed as the runner computes them), whose
    /// measured times, throughput and memory are finite and not negative, and whose running error and stability
    /// report lie within its batches and samples. The results of a resumed comparison are printed as they are read.
    func problem(method expected: String, configuration: MethodConfiguration?, setting expectedSetting: String) -> String? {
        guard method == expected else { return "method is '\(method)'; the run's method at this place is '\(expected)'" }
        guard completed else { return "completed is false; a finished run scored its whole stream" }
        guard setting == expectedSetting else { return "setting is '\(setting)'; the run's stream is \(expectedSetting)" }
        if let configuration, RunCheckpoint.Identity.settingsDifference(methodConfiguration, configuration) != nil {
            return "its methodConfiguration is not the run's settings for \(expected)"
        }
        var samples = 0, correct = 0
        for (k, d) in domains.enumerated() {
            let label = "domains[\(k)] (\(d.name)\(d.severity))"
            guard d.samples >= 1 else { return "\(label) has \(d.samples) samples; a reported domain has 1 or more" }
            guard (0...d.samples).contains(d.correct) else {
                return "\(label) has \(d.correct) correct of \(d.samples) samples; expected 0...\(d.samples)"
            }
            let (sum, overflow) = samples.addingReportingOverflow(d.samples)
            guard !overflow else { return "the domains' samples add up to more than \(Int.max)" }
            (samples, correct) = (sum, correct + d.correct)
            let error = DomainResult(name: d.name, severity: d.severity, samples: d.samples, correct: d.correct).error
            guard d.error == error else {
                return "\(label) has error \(d.error); \(d.samples - d.correct) wrong of \(d.samples) samples is \(error)"
            }
        }
        let mean = Self.averageError(of: domains, mixedDomains: setting == StreamSetting.mixed_domains.rawValue)
        guard meanError == mean else { return "meanError is \(meanError); its domains' errors give \(mean)" }
        let overall = samples == 0 ? 0 : 100 * Double(samples - correct) / Double(samples)
        guard errorOverAllSamples == overall else {
            return "errorOverAllSamples is \(errorOverAllSamples); \(samples - correct) wrong of its \(samples) samples is \(overall)"
        }
        guard batches >= 0, batches == totalBatches else {
            return "batches is \(batches) of totalBatches \(totalBatches); a finished run scored every batch"
        }
        var measured: [(field: String, value: Double)] = [("imagesPerSecond", imagesPerSecond), ("seconds", seconds),
                                                          ("peakMemoryBytes", Double(peakMemoryBytes))]
        if let e = estimatedPeakMemoryBytes { measured.append(("estimatedPeakMemoryBytes", Double(e))) }
        for (phase, t) in phaseSeconds.sorted(by: { $0.key < $1.key }) { measured.append(("phaseSeconds[\(phase)]", t)) }
        if let bad = measured.first(where: { !($0.value.isFinite && $0.value >= 0) }) {
            return "\(bad.field) is \(bad.value); expected a finite number, 0 or more"
        }
        if let problem = RunningErrorPoint.problem(runningError, samples: samples) { return problem }
        let batchNumbers = [("stability.rejectedBatches", stability.rejectedBatches), ("stability.rolledBackBatches", stability.rolledBackBatches),
                            ("stability.collapses", stability.collapses.map(\.batch))]
        for (field, numbers) in batchNumbers {
            if let b = numbers.first(where: { !(1...max(1, totalBatches)).contains($0) }) {
                return "\(field) lists batch \(b); the run has batches 1...\(totalBatches)"
            }
        }
        guard (0...samples).contains(stability.samplesWithoutPrediction) else {
            return "stability.samplesWithoutPrediction is \(stability.samplesWithoutPrediction); the run scored \(samples) samples"
        }
        if let c = stability.collapses.first(where: { !($0.share.isFinite && $0.share > 0 && $0.share <= 1 && $0.dominantClass >= 0) }) {
            return "stability.collapses holds class \(c.dominantClass) with share \(c.share); expected a class, 0 or more, with a share in (0, 1]"
        }
        return nil
    }
}

/// The whole results file: every run and the configuration that produced them.
public struct ResultsFile: Sendable, Codable, Equatable {
    public var runs: [RunResult]
    public var config: RunConfiguration
    /// SwiftTTA version that wrote the file.
    public var version: String
    public init(runs: [RunResult], config: RunConfiguration, version: String = SwiftTTAVersion.string) {
        self.runs = runs
        self.config = config
        self.version = version
    }
}

/// What was run: dataset, model, stream and method settings.
public struct RunConfiguration: Sendable, Codable, Equatable {
    public var dataset: String
    public var dataDirectory: String
    public var model: String
    public var weights: String
    public var stream: StreamConfiguration
    public var methods: [String]
    public var threads: Int
    /// The SHA-256 of the weights and of every data file read; nil when not computed (library use).
    public var inputs: InputFingerprint? = nil
    public init(dataset: String, dataDirectory: String, model: String, weights: String, stream: StreamConfiguration,
                methods: [String], threads: Int) {
        self.dataset = dataset
        self.dataDirectory = dataDirectory
        self.model = model
        self.weights = weights
        self.stream = stream
        self.methods = methods
        self.threads = threads
    }
}

/// The library's version string.
public enum SwiftTTAVersion {
    public static let string = "0.1.0"
}

extension ResultsFile {
    /// Pretty, key-sorted JSON.
    public func jsonData() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try e.encode(self)
    }
}

/// An error of the runtime; its message names what is wrong.
public struct RuntimeError: Error, CustomStringConvertible, Equatable, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
