import Foundation
import TTAAdaptation
import TTAData
import TTAModels
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
/// File format: a safetensors file. Tensors: the model, `method.<key>` for each of the method state's
/// tensors, and `adaptor.window`, the sliding window's images, when the run has one. The model is stored
/// one of two ways:
/// - against the source (`encoded(source:)`, what `tta` writes): `adaptor.model.<name>` for each
///   parameter or buffer, under its PyTorch name, whose values differ from the adaptor's source state,
///   which a resumed run rebuilds from the same weights (the identity checks them); the header lists
///   their names. A TENT checkpoint of a WRN-28-10 is then its BN parameters: about 0.2 MB, not 146 MB.
/// - whole (`encoded()`): `adaptor.model`, the model's value arena as one flat F32 tensor, in
///   `ParameterStore` order; the only form of format version 1.
/// Metadata key `swifttta.checkpoint`: a JSON object with everything else (`Header`), numbers kept
/// exactly. It is written atomically (`writeAtomically`).
public struct RunCheckpoint: Sendable {
    /// 2: the model stored against the source; a whole model is written as version 1, which any version reads.
    public static let formatVersion = 2
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

        /// The first difference from `other` (the run asked to continue), as "what (checkpoint: x, now: y)", or nil
        /// when they match. The stream, the method settings and the collapse policy list only the settings that
        /// differ: "method settings (lr 0.001 in the checkpoint, 0.01 now)", each method named when there are several.
        public func difference(from other: Identity) -> String? {
            func plain(_ a: String, _ b: String) -> String? { a == b ? nil : "checkpoint: \(a), now: \(b)" }
            var methodSettings: String?
            if methodConfigurations.count == other.methodConfigurations.count {
                let parts = methodConfigurations.indices.compactMap { i -> String? in
                    guard let d = Self.settingsDifference(methodConfigurations[i], other.methodConfigurations[i]) else { return nil }
                    return methods.count > 1 && i < methods.count ? "\(methods[i]): \(d)" : d
                }
                methodSettings = parts.isEmpty ? nil : parts.joined(separator: "; ")
            } else {
                methodSettings = Self.settingsDifference(methodConfigurations, other.methodConfigurations)
            }
            let fields: [(String, String?)] = [
                ("dataset", plain(dataset, other.dataset)), ("model", plain(model, other.model)),
                ("weights (content fingerprint)", plain(weightsFingerprint, other.weightsFingerprint)),
                ("data (content fingerprint)", plain(dataFingerprint, other.dataFingerprint)),
                ("stream", Self.settingsDifference(stream, other.stream)),
                ("methods", plain(methods.joined(separator: ","), other.methods.joined(separator: ","))),
                ("method settings", methodSettings),
                ("seed", plain("\(seed)", "\(other.seed)")), ("collapse policy", Self.settingsDifference(collapse, other.collapse)),
            ]
            for case let (what, detail?) in fields { return "\(what) (\(detail))" }
            return nil
        }

        /// The settings that differ between `old` (the checkpoint's) and `new`, compared key by key in their JSON
        /// form: "lr 0.001 in the checkpoint, 0.01 now; steps 1 in the checkpoint, 2 now" (keys in words, at most
        /// six listed), or nil when they encode alike.
        static func settingsDifference<T: Encodable>(_ old: T, _ new: T) -> String? {
            guard let a = SettingValue(encoding: old), let b = SettingValue(encoding: new) else {
                let (x, y) = ("\(old)", "\(new)")
                return x == y ? nil : "checkpoint: \(x), now: \(y)"
            }
            let lines = a.differences(now: b, path: "")
            guard !lines.isEmpty else { return nil }
            return lines.prefix(6).joined(separator: "; ") + (lines.count > 6 ? "; … \(lines.count - 6) more" : "")
        }
    }

    public var identity: Identity
    /// Results of the methods finished so far, in order.
    public var finishedRuns: [RunResult]
    /// The method in progress (an index into `identity.methods`); `methods.count` when all are done.
    public var methodIndex: Int
    /// The runner's progress and the adaptor's state in the method in progress; nil when it has not started.
    /// Read from a file that stores the model against the source, its model values are empty and
    /// `changedModelEntries` holds what differs: resume with `resumeState(for:)`, which handles both (and
    /// `encoded` writes such a checkpoint back as it was read).
    public var inProgress: (progress: RunProgress, adaptor: Adaptor.State)?
    /// The model entries, by name, that differ from the source state, when the file stored the model that way.
    public private(set) var changedModelEntries: [String: Tensor]?

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
        /// The model stored against the source: the names of the entries stored (`adaptor.model.<name>`);
        /// nil for a whole model (`adaptor.model`).
        var changedModelEntries: [String]?
    }

    /// The file image, with the whole model.
    public func encoded() throws -> Data { try encoded(source: nil) }

    /// The file image, with the model stored against `source`'s source state when given: only the entries
    /// whose values differ from it (bit for bit). `source` is the adaptor the run in progress uses (or one
    /// built the same way); `resumeState(for:)` then needs such an adaptor too. A checkpoint read from such
    /// a file is written back in that form.
    public func encoded(source: Adaptor?) throws -> Data {
        var tensors: [(name: String, tensor: Tensor)] = []
        var header = Header(formatVersion: 1, identity: identity, finishedRuns: finishedRuns, methodIndex: methodIndex)
        if let (progress, a) = inProgress {
            var changed: [(name: String, tensor: Tensor)]?
            if let read = changedModelEntries, a.model.values.isEmpty {
                changed = read.sorted { $0.key < $1.key }.map { (name: $0.key, tensor: $0.value) }
            } else if let source, source.sourceSnapshot.values.count == a.model.values.count {
                changed = Self.changedEntries(a.model.values, from: source.sourceSnapshot.values, entries: source.model.store.entries)
                    .map { (name: $0.entry.name, tensor: Tensor(shape: $0.entry.shape, storage: $0.values)) }
            }
            if let changed {
                for (name, t) in changed { tensors.append((name: "adaptor.model.\(name)", tensor: t)) }
                header.changedModelEntries = changed.map(\.name)
                header.formatVersion = Self.formatVersion
            } else {
                tensors.append((name: "adaptor.model", tensor: Tensor(shape: [a.model.values.count], storage: a.model.values)))
            }
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

    /// Writes the checkpoint to `url` atomically, the model stored against `source` when given (`encoded(source:)`).
    public func write(to url: URL, source: Adaptor? = nil) throws {
        try writeAtomically(try encoded(source: source), to: url)
    }

    /// The entries of `entries` whose values in `values` differ, bit for bit, from those in `base`.
    static func changedEntries(_ values: [Float], from base: [Float], entries: [ParameterStore.Entry])
        -> [(entry: ParameterStore.Entry, values: [Float])] {
        values.withUnsafeBytes { v in
            base.withUnsafeBytes { b in
                entries.compactMap { e in
                    let bytes = e.offset * MemoryLayout<Float>.stride..<(e.offset + e.count) * MemoryLayout<Float>.stride
                    guard !v[bytes].elementsEqual(b[bytes]) else { return nil }
                    return (entry: e, values: Array(values[e.offset..<e.offset + e.count]))
                }
            }
        }
    }

    /// The progress and adaptor state to resume the method in progress with on `adaptor`, built as the run
    /// that wrote the checkpoint built it (same weights, method and settings); nil when the method had not
    /// started. A model stored against the source is written over `adaptor`'s source state.
    public func resumeState(for adaptor: Adaptor) throws -> (progress: RunProgress, adaptor: Adaptor.State)? {
        guard let (progress, saved) = inProgress else { return nil }
        var state = saved
        guard let changed = changedModelEntries else { return (progress, state) }
        var values = adaptor.sourceSnapshot.values
        let store = adaptor.model.store
        for (name, t) in changed.sorted(by: { $0.key < $1.key }) {
            guard let e = store.entry(named: name), e.shape == t.shape else {
                throw RuntimeError("the checkpoint's model entry '\(name)' (shape \(t.shape)) is not one of \(adaptor.model.architecture)'s")
            }
            values.replaceSubrange(e.offset..<e.offset + e.count, with: t.storage)
        }
        state.model = ParameterStore.Snapshot(values: values, counters: state.model.counters)
        return (progress, state)
    }

    /// Why a non-finite value in a checkpoint is refused.
    static let finiteNote = "a checkpoint holds only finite values (the guard undoes any step that leaves NaN or infinity before it is saved)"

    /// What is wrong with the finished runs against `stream`, the stream of the run that resumes them, or nil: each run
    /// scored every batch and reports the stream's domains that hold samples, in stream order, each with its sample
    /// count. (`read` checks them in themselves: method, errors recomputed from the counts, measured fields.)
    public func finishedRunsProblem(on stream: BenchmarkStream) -> String? {
        let expected = stream.domains.filter { $0.sampleCount > 0 }
        for (i, run) in finishedRuns.enumerated() {
            let label = "finished run \(i) (\(run.method))"
            guard run.totalBatches == stream.batchCount, run.batches == stream.batchCount else {
                return "\(label): batches is \(run.batches) of totalBatches \(run.totalBatches); the stream has \(stream.batchCount) batches"
            }
            guard run.domains.count == expected.count else {
                return "\(label): domains holds \(run.domains.count) results; the stream has \(expected.count) domains with samples"
            }
            for (k, (d, e)) in zip(run.domains, expected).enumerated() where d.name != e.name || d.severity != e.severity || d.samples != e.sampleCount {
                return "\(label): domains[\(k)] is \(d.name)\(d.severity) with \(d.samples) samples; the stream's domain \(k) is \(e) "
                    + "with \(e.sampleCount) samples"
            }
            if let point = run.runningError.first(where: { $0.samples > stream.totalSamples }) {
                return "\(label): a runningError point is at sample \(point.samples); the stream has \(stream.totalSamples) samples"
            }
        }
        return nil
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
        guard (1...formatVersion).contains(header.formatVersion) else {
            throw fail("format version \(header.formatVersion); this SwiftTTA reads versions 1 to \(formatVersion)")
        }
        guard (0...header.identity.methods.count).contains(header.methodIndex), header.finishedRuns.count == header.methodIndex else {
            throw fail("method index \(header.methodIndex) does not fit \(header.finishedRuns.count) finished runs of \(header.identity.methods.count) methods")
        }
        // The finished runs in themselves: their results are printed and written as they are read (`finishedRunsProblem(on:)`
        // checks them against the stream too).
        for (i, run) in header.finishedRuns.enumerated() {
            let configuration = i < header.identity.methodConfigurations.count ? header.identity.methodConfigurations[i] : nil
            if let problem = run.problem(method: header.identity.methods[i], configuration: configuration,
                                         setting: header.identity.stream.setting.rawValue) {
                throw fail("finished run \(i) (\(header.identity.methods[i])): \(problem)")
            }
        }
        var inProgress: (RunProgress, Adaptor.State)?
        var changedModel: [String: Tensor]?
        if let progress = header.progress {
            // The progress record in itself (the run checks it against its stream too: `BenchmarkRunner.run`).
            if let problem = progress.problem(on: nil) { throw fail("its progress: \(problem)") }
            let changedNames = header.changedModelEntries
            guard let counters = header.modelCounters, let numbers = header.methodNumbers, let rngText = header.rngState,
                  let rng = UInt64(rngText), let batches = header.batchesSinceReset else {
                throw fail("the adaptor state is incomplete")
            }
            // BatchNorm adds 1 to a counter per training batch: a negative one, or one that addition would overflow, is
            // no count a run writes (as `ImageClassifier.load` refuses in a state dict).
            if let (name, v) = counters.sorted(by: { $0.key < $1.key }).first(where: { !(0...maxBatchCounter).contains($0.value) }) {
                throw fail("model counter '\(name)' (modelCounters) is \(v); expected a count of batches in 0...\(maxBatchCounter) (2^53)")
            }
            // No value a run saves is NaN or infinite (the adaptor's guard undoes a step that leaves one, before any save):
            // one read here would be restored and go on silently.
            for (key, values) in numbers.sorted(by: { $0.key < $1.key }) {
                if let k = values.firstIndex(where: { !$0.isFinite }) {
                    throw fail("method number '\(key)' (methodNumbers) holds \(values[k]) at index \(k); \(Self.finiteNote)")
                }
            }
            // The model: whole (`adaptor.model`), or the entries the header lists (`adaptor.model.<name>`), one form only.
            let stored = file.names.filter { $0.hasPrefix("adaptor.model.") }.map { String($0.dropFirst("adaptor.model.".count)) }
            if let changedNames {
                if file.contains("adaptor.model") { throw fail("it holds both a whole model (adaptor.model) and changed model entries") }
                if let twice = Dictionary(changedNames.map { ($0, 1) }, uniquingKeysWith: +).first(where: { $0.value > 1 })?.key {
                    throw fail("model entry '\(twice)' is listed twice")
                }
                if let missing = changedNames.first(where: { !file.contains("adaptor.model.\($0)") }) {
                    throw fail("model entry 'adaptor.model.\(missing)', listed in its metadata, is missing")
                }
            } else if !file.contains("adaptor.model") {
                throw fail("the adaptor state is incomplete (no model)")
            }
            let listed = Set(changedNames ?? [])
            if let unlisted = stored.first(where: { !listed.contains($0) }) {
                throw fail("tensor 'adaptor.model.\(unlisted)' is not listed in its metadata")
            }
            do {
                var method = MethodState()
                method.keyPrefix = "method."   // to name the file's tensors in errors
                method.numbers = numbers
                for name in file.names where name.hasPrefix("method.") {
                    method.tensors[String(name.dropFirst("method.".count))] = try file.tensor(name).storage
                }
                if let changedNames {
                    changedModel = try Dictionary(uniqueKeysWithValues: changedNames.map { ($0, try file.tensor("adaptor.model.\($0)")) })
                }
                let model = ParameterStore.Snapshot(values: changedNames == nil ? try file.tensor("adaptor.model").storage : [],
                                                    counters: counters)
                let window = file.contains("adaptor.window") ? try file.tensor("adaptor.window") : nil
                var floats: [(name: String, values: [Float])] = method.tensors.map { (name: "method.\($0.key)", values: $0.value) }
                floats += (changedModel ?? [:]).map { (name: "adaptor.model.\($0.key)", values: $0.value.storage) }
                floats.append((name: "adaptor.model", values: model.values))
                if let window { floats.append((name: "adaptor.window", values: window.storage)) }
                for (name, values) in floats.sorted(by: { $0.name < $1.name }) {
                    if let k = values.firstIndex(where: { !$0.isFinite }) {
                        throw fail("tensor '\(name)' holds \(values[k]) at index \(k); \(Self.finiteNote)")
                    }
                }
                inProgress = (progress, Adaptor.State(model: model, method: method, rng: SeededGenerator(seed: rng), batchesSinceReset: batches,
                                                      window: window, windowPointer: header.windowPointer ?? 0))
            } catch let e as DataError { throw fail(e.description) }
        }
        var checkpoint = RunCheckpoint(identity: header.identity, finishedRuns: header.finishedRuns, methodIndex: header.methodIndex,
                                       inProgress: inProgress)
        checkpoint.changedModelEntries = changedModel
        return checkpoint
    }
}

/// A setting in its JSON form, read back to compare two settings key by key (`Identity.difference(from:)`).
/// Numbers, strings and booleans are kept as the text they print as.
private enum SettingValue: Decodable, Equatable {
    case object([String: SettingValue])
    case array([SettingValue])
    case scalar(String)
    case null

    /// `value` encoded as JSON (non-finite numbers as "inf", "-inf", "nan") and read back; nil if it does not encode.
    init?<T: Encodable>(encoding value: T) {
        let e = JSONEncoder()
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard let data = try? e.encode(value), let v = try? JSONDecoder().decode(SettingValue.self, from: data) else { return nil }
        self = v
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .scalar(b ? "true" : "false")
        } else if let u = try? c.decode(UInt64.self) {   // integers first: seeds beyond 2^53 stay exact
            self = .scalar("\(u)")
        } else if let i = try? c.decode(Int64.self) {
            self = .scalar("\(i)")
        } else if let d = try? c.decode(Double.self) {
            self = .scalar("\(d)")
        } else if let s = try? c.decode(String.self) {
            self = .scalar(s)
        } else if let items = try? c.decode([SettingValue].self) {
            self = .array(items)
        } else {
            self = .object(try c.decode([String: SettingValue].self))
        }
    }

    /// How the value reads in a message: `0.001`, `[5, 4]`, `none`.
    var text: String {
        switch self {
        case .scalar(let s): s
        case .null: "none"
        case .array(let items): "[" + items.map(\.text).joined(separator: ", ") + "]"
        case .object(let members): "{" + members.sorted { $0.key < $1.key }.map { "\(Self.words($0.key)) \($0.value.text)" }.joined(separator: ", ") + "}"
        }
    }

    /// The settings under `path` whose values differ from `now`'s, one line each:
    /// `["batch size 4 in the checkpoint, 8 now"]`; empty when they are equal.
    func differences(now: SettingValue, path: String) -> [String] {
        if case .object(let old) = self, case .object(let new) = now {
            return Set(old.keys).union(new.keys).sorted().flatMap { key -> [String] in
                let name = path.isEmpty ? Self.words(key) : path + " " + Self.words(key)
                switch (old[key], new[key]) {
                case let (a?, b?): return a.differences(now: b, path: name)
                case let (a?, nil): return ["\(name) \(a.text) in the checkpoint, not set now"]
                case let (nil, b?): return ["\(name) not set in the checkpoint, \(b.text) now"]
                case (nil, nil): return []
                }
            }
        }
        guard self != now else { return [] }
        return ["\(path.isEmpty ? "" : path + " ")\(text) in the checkpoint, \(now.text) now"]
    }

    /// A coding key in words: `samplesPerDomain` → `samples per domain`.
    static func words(_ key: String) -> String {
        var out = ""
        for c in key {
            if c.isUppercase { out += " " + c.lowercased() } else { out.append(c) }
        }
        return out
    }
}
