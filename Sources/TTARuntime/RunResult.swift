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

    /// The result with its measured fields (times, throughput, peak memory) zeroed: what two runs of the
    /// same configuration, or a run and its resumption from a checkpoint, have bit for bit in common.
    public var withoutMeasurements: RunResult {
        var r = self
        (r.seconds, r.imagesPerSecond, r.peakMemoryBytes, r.phaseSeconds) = (0, 0, 0, [:])
        r.estimatedPeakMemoryBytes = nil
        return r
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
