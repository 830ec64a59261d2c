import Foundation
import TTAAdaptation
import TTAData
import TTANN
import TTATensor

/// The full state of a benchmark run between two batches, to resume it later with results
/// bit-identical to an uninterrupted run (the measured times and memory aside).
///
/// A run is a list of methods run one after the other on the same stream (`tta compare`; `tta run`
/// has one). The checkpoint holds the results of the methods already finished, which method is in
/// progress, and for that method the runner's progress (`RunProgress`) and the adaptor's state
/// (model values and counters, method state, random generator).
///
/// File format: a safetensors file. Tensors: `adaptor.model`, the model's whole value arena as one flat
/// F32 tensor (in `ParameterStore` order), `method.<key>` for each of the method state's tensors, and
/// `adaptor.window`, the sliding window's images, when the run has one.
/// Metadata key `swifttta.checkpoint`: a JSON object with everything else (`Header`), numbers kept
/// exactly. It is written atomically (`writeAtomically`).
public struct RunCheckpoint: Sendable {
    public static let formatVersion = 1
    static let metadataKey = "swifttta.checkpoint"

    /// What must be the same to resume: the benchmark, stream, model weights, methods and their
    /// settings, seed and collapse policy. File paths and thread counts may differ.
    public struct Identity: Sendable, Codable, Equatable {
        public var dataset: String
        public var model: String
        /// SHA-256 of the weights (`InputFingerprint.weights`).
        public var weightsFingerprint: String
        /// SHA-256 over the benchmark files the stream reads (`InputFingerprint.dataSHA256`).
        public var dataFingerprint: String
        public var stream: StreamConfiguration
        public var methods: [String]
        public var methodConfigurations: [MethodConfiguration]
        /// The seed of the methods' random generator.
        public var seed: UInt64
        public var collapse: CollapsePolicy

        public init(dataset: String, model: String, weightsFingerprint: String, dataFingerprint: String,
                    stream: StreamConfiguration, methods: [String], methodConfigurations: [MethodConfiguration],
                    seed: UInt64, collapse: CollapsePolicy) {
            (self.dataset, self.model, self.weightsFingerprint, self.dataFingerprint) = (dataset, model, weightsFingerprint, dataFingerprint)
            (self.stream, self.methods, self.methodConfigurations, self.seed, self.collapse) = (stream, methods, methodConfigurations, seed, collapse)
        }

        /// The first difference from `other`, as "what (checkpoint: x, now: y)", or nil when they match.
        public func difference(from other: Identity) -> String? {
            func text<T: Encodable>(_ v: T) -> String {
                let e = JSONEncoder()
                e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                return (try? e.encode(v)).map { String(decoding: $0, as: UTF8.self) } ?? "\(v)"
            }
            let fields: [(String, String, String)] = [
                ("dataset", dataset, other.dataset), ("model", model, other.model),
                ("weights (content fingerprint)", weightsFingerprint, other.weightsFingerprint),
                ("data (content fingerprint)", dataFingerprint, other.dataFingerprint),
                ("stream", text(stream), text(other.stream)), ("methods", methods.joined(separator: ","), other.methods.joined(separator: ",")),
                ("method settings", text(methodConfigurations), text(other.methodConfigurations)),
                ("seed", "\(seed)", "\(other.seed)"), ("collapse policy", text(collapse), text(other.collapse)),
            ]
            return fields.first { $0.1 != $0.2 }.map { "\($0.0) (checkpoint: \($0.1), now: \($0.2))" }
        }
    }

    public var identity: Identity
    /// Results of the methods finished so far, in order.
    public var finishedRuns: [RunResult]
    /// The method in progress (an index into `identity.methods`); `methods.count` when all are done.
    public var methodIndex: Int
    /// The runner's progress and the adaptor's state in the method in progress; nil when it has not started.
    public var inProgress: (progress: RunProgress, adaptor: Adaptor.State)?

    public init(identity: Identity, finishedRuns: [RunResult], methodIndex: Int,
                inProgress: (progress: RunProgress, adaptor: Adaptor.State)?) {
        (self.identity, self.finishedRuns, self.methodIndex, self.inProgress) = (identity, finishedRuns, methodIndex, inProgress)
    }

    /// Everything but the tensors.
    struct Header: Codable {
        var formatVersion: Int
        var identity: Identity
        var finishedRuns: [RunResult]
        var methodIndex: Int
        var progress: RunProgress?
        var modelCounters: [String: Int64]?
        var methodNumbers: [String: [Double]]?
        /// The generator's state as decimal text (exact whatever the JSON reader does with large integers).
        var rngState: String?
        var batchesSinceReset: Int?
        /// The sliding window's next slot (the window's images are the tensor `adaptor.window`).
        var windowPointer: Int?
    }

    /// The file image.
    public func encoded() throws -> Data {
        var tensors: [(name: String, tensor: Tensor)] = []
        var header = Header(formatVersion: Self.formatVersion, identity: identity, finishedRuns: finishedRuns, methodIndex: methodIndex)
        if let (progress, a) = inProgress {
            tensors.append((name: "adaptor.model", tensor: Tensor(shape: [a.model.values.count], storage: a.model.values)))
            for (key, values) in a.method.tensors { tensors.append((name: "method.\(key)", tensor: Tensor(shape: [values.count], storage: values))) }
            header.progress = progress
            header.modelCounters = a.model.counters
            header.methodNumbers = a.method.numbers
            header.rngState = String(a.rng.state)
            header.batchesSinceReset = a.batchesSinceReset
            if let w = a.window {
                tensors.append((name: "adaptor.window", tensor: w))
                header.windowPointer = a.windowPointer
            }
        }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let json = String(decoding: try e.encode(header), as: UTF8.self)
        return try SafeTensorsFile.encode(tensors, metadata: [Self.metadataKey: json], name: "checkpoint")
    }

    /// Writes the checkpoint to `url` atomically.
    public func write(to url: URL) throws {
        try writeAtomically(try encoded(), to: url)
    }

    /// Reads a checkpoint; errors name the file and what is wrong.
    public static func read(_ url: URL) throws -> RunCheckpoint {
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile.read(url) } catch let e as DataError {
            throw RuntimeError("\(url.path) is not a SwiftTTA checkpoint: \(e.message)")
        }
        func fail(_ m: String) -> RuntimeError { RuntimeError("\(url.path) is not a usable SwiftTTA checkpoint: \(m)") }
        guard let json = file.metadata[metadataKey] else { throw fail("no '\(metadataKey)' metadata") }
        let d = JSONDecoder()
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let header: Header
        do { header = try d.decode(Header.self, from: Data(json.utf8)) } catch {
            throw fail("its metadata does not decode (\(error))")
        }
        guard header.formatVersion == formatVersion else {
            throw fail("format version \(header.formatVersion); this SwiftTTA reads version \(formatVersion)")
        }
        guard (0...header.identity.methods.count).contains(header.methodIndex), header.finishedRuns.count == header.methodIndex else {
            throw fail("method index \(header.methodIndex) does not fit \(header.finishedRuns.count) finished runs of \(header.identity.methods.count) methods")
        }
        var inProgress: (RunProgress, Adaptor.State)?
        if let progress = header.progress {
            guard let counters = header.modelCounters, let numbers = header.methodNumbers, let rngText = header.rngState,
                  let rng = UInt64(rngText), let batches = header.batchesSinceReset, file.contains("adaptor.model") else {
                throw fail("the adaptor state is incomplete")
            }
            do {
                var method = MethodState()
                method.numbers = numbers
                for name in file.names where name.hasPrefix("method.") {
                    method.tensors[String(name.dropFirst("method.".count))] = try file.tensor(name).storage
                }
                let model = ParameterStore.Snapshot(values: try file.tensor("adaptor.model").storage, counters: counters)
                let window = file.contains("adaptor.window") ? try file.tensor("adaptor.window") : nil
                inProgress = (progress, Adaptor.State(model: model, method: method, rng: SeededGenerator(seed: rng), batchesSinceReset: batches,
                                                      window: window, windowPointer: header.windowPointer ?? 0))
            } catch let e as DataError { throw fail(e.description) }
        }
        return RunCheckpoint(identity: header.identity, finishedRuns: header.finishedRuns, methodIndex: header.methodIndex,
                             inProgress: inProgress)
    }
}
