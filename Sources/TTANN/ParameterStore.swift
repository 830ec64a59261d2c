import TTATensor

/// A handle to one named tensor in a `ParameterStore`: its offset and count in the arena.
public struct ParameterRef: Sendable, Equatable, Hashable {
    public let index: Int
    public let offset: Int
    public let count: Int
}

/// All state of a model in one flat arena, under PyTorch state-dict names.
///
/// Parameters (`weight`, `bias`) and buffers (BN `running_mean`, `running_var`) live in one contiguous
/// float arena; gradients in a second arena of the same size. `num_batches_tracked` counters are
/// integers kept beside them. Snapshot/restore, EMA teachers and stochastic restore are then single
/// loops over the arena. Layers register their tensors at construction (`add`), the model calls
/// `finalize()`, and from then on layers reach their values through `pointer(_:)`.
public final class ParameterStore {
    /// What a named tensor is.
    public enum Kind: Sendable, Equatable {
        /// Learnable: has a gradient and can be selected as trainable.
        case parameter
        /// Persistent state without a gradient (BN running statistics).
        case buffer
    }

    /// One named tensor.
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let shape: [Int]
        public let kind: Kind
        public let offset: Int
        /// γ or β of a normalisation layer (selected by `ParameterSelection.normAffine`).
        public let isNormAffine: Bool
        public var count: Int { shape.product }
    }

    public private(set) var entries: [Entry] = []
    private var indexByName: [String: Int] = [:]
    /// Integer counters (`…num_batches_tracked`), by full name.
    public var counters: [String: Int64] = [:]
    /// Names of the counters in registration order.
    public private(set) var counterNames: [String] = []
    /// Which entries receive gradients and optimizer updates.
    public private(set) var trainable: [Bool] = []

    private var pending: [Float] = []
    private(set) var values: UnsafeMutablePointer<Float>
    private(set) var grads: UnsafeMutablePointer<Float>
    /// Total number of floats in the arena.
    public private(set) var totalCount = 0
    public private(set) var isFinalized = false

    public init() {
        values = .allocate(capacity: 1)
        grads = .allocate(capacity: 1)
    }

    deinit {
        values.deallocate()
        grads.deallocate()
    }

    /// Registers a tensor with its initial value. Only before `finalize()`.
    @discardableResult
    public func add(_ name: String, shape: [Int], kind: Kind, initial: Float = 0, isNormAffine: Bool = false) -> ParameterRef {
        precondition(!isFinalized, "ParameterStore: add(\(name)) after finalize()")
        precondition(indexByName[name] == nil, "ParameterStore: duplicate name \(name)")
        let e = Entry(name: name, shape: shape, kind: kind, offset: totalCount, isNormAffine: isNormAffine)
        indexByName[name] = entries.count
        entries.append(e)
        trainable.append(false)
        pending.append(contentsOf: repeatElement(initial, count: e.count))
        totalCount += e.count
        return ParameterRef(index: entries.count - 1, offset: e.offset, count: e.count)
    }

    /// Registers an integer counter (`num_batches_tracked`).
    public func addCounter(_ name: String) {
        precondition(counters[name] == nil, "ParameterStore: duplicate counter \(name)")
        counters[name] = 0
        counterNames.append(name)
    }

    /// Allocates the arenas. Called once by the model after all layers registered.
    public func finalize() {
        precondition(!isFinalized)
        values.deallocate()
        grads.deallocate()
        values = .allocate(capacity: max(totalCount, 1))
        grads = .allocate(capacity: max(totalCount, 1))
        pending.withUnsafeBufferPointer { values.update(from: $0.baseAddress!, count: totalCount) }
        grads.update(repeating: 0, count: max(totalCount, 1))
        pending = []
        isFinalized = true
    }

    /// The entry called `name`, if any.
    public func entry(named name: String) -> Entry? { indexByName[name].map { entries[$0] } }
    /// The handle of `name`, if any.
    public func ref(named name: String) -> ParameterRef? {
        indexByName[name].map { ParameterRef(index: $0, offset: entries[$0].offset, count: entries[$0].count) }
    }

    /// Values of `ref` (valid until the store is deinitialised).
    @inline(__always) public func pointer(_ ref: ParameterRef) -> UnsafeMutablePointer<Float> { values + ref.offset }
    /// Gradient buffer of `ref`.
    @inline(__always) public func gradPointer(_ ref: ParameterRef) -> UnsafeMutablePointer<Float> { grads + ref.offset }
    /// Whether `ref` takes part in backward and updates.
    @inline(__always) public func requiresGrad(_ ref: ParameterRef) -> Bool { trainable[ref.index] }
    /// Whether any entry is trainable.
    public var hasTrainable: Bool { trainable.contains(true) }

    /// The whole value arena (parameters and buffers), read-only.
    public var allValues: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: values, count: totalCount) }
    /// The whole value arena, writable (for EMA teachers, stochastic restore).
    public var allValuesMutable: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: values, count: totalCount) }
    /// The gradient arena.
    public var allGrads: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: grads, count: totalCount) }

    /// A copy of the named tensor.
    public func tensor(_ name: String) -> Tensor? {
        guard let e = entry(named: name) else { return nil }
        return Tensor(shape: e.shape, storage: Array(UnsafeBufferPointer(start: values + e.offset, count: e.count)))
    }

    /// A copy of the gradient of the named parameter.
    public func gradient(_ name: String) -> Tensor? {
        guard let e = entry(named: name) else { return nil }
        return Tensor(shape: e.shape, storage: Array(UnsafeBufferPointer(start: grads + e.offset, count: e.count)))
    }

    /// Overwrites the named tensor; the shape must match.
    public func set(_ name: String, _ t: Tensor) {
        guard let e = entry(named: name) else { preconditionFailure("ParameterStore: no tensor \(name)") }
        precondition(e.shape.product == t.count, "ParameterStore: \(name) expects \(e.shape), got \(t.shape)")
        t.withUnsafeBufferPointer { (values + e.offset).update(from: $0.baseAddress!, count: e.count) }
    }

    // MARK: Trainable selection

    /// Marks exactly the parameters (never buffers) selected by `selection` as trainable.
    public func setTrainable(_ selection: ParameterSelection) {
        for (i, e) in entries.enumerated() { trainable[i] = e.kind == .parameter && selection.selects(e) }
    }

    /// Names of the trainable parameters.
    public var trainableNames: [String] { entries.indices.filter { trainable[$0] }.map { entries[$0].name } }
    /// Number of trainable floats.
    public var trainableCount: Int { entries.indices.filter { trainable[$0] }.reduce(0) { $0 + entries[$1].count } }
    /// Number of parameter floats (buffers excluded), as PyTorch's `sum(p.numel() for p in parameters())`.
    public var parameterCount: Int { entries.filter { $0.kind == .parameter }.reduce(0) { $0 + $1.count } }

    /// Zeroes the gradient arena.
    public func zeroGrads() { grads.update(repeating: 0, count: max(totalCount, 1)) }

    // MARK: Snapshot

    /// The full state: every value and counter. Restoring it is bit-exact.
    public struct Snapshot: Sendable, Equatable {
        public let values: [Float]
        public let counters: [String: Int64]
    }

    public func snapshot() -> Snapshot {
        Snapshot(values: Array(allValues), counters: counters)
    }

    public func restore(_ s: Snapshot) {
        precondition(s.values.count == totalCount, "ParameterStore.restore: snapshot of another model")
        s.values.withUnsafeBufferPointer { values.update(from: $0.baseAddress!, count: totalCount) }
        counters = s.counters
    }

    /// Copies every value and counter from `other`, which must have the same layout.
    public func copyValues(from other: ParameterStore) {
        precondition(other.totalCount == totalCount && other.entries.map(\.name) == entries.map(\.name),
                     "ParameterStore.copyValues: layouts differ")
        values.update(from: other.values, count: totalCount)
        counters = other.counters
    }

    /// The state dict: every tensor by name (counters as one-element tensors), in registration order.
    public func stateDict() -> [(name: String, tensor: Tensor)] {
        var out = entries.map { e in
            (name: e.name, tensor: Tensor(shape: e.shape, storage: Array(UnsafeBufferPointer(start: values + e.offset, count: e.count))))
        }
        for c in counterNames { out.append((name: c, tensor: Tensor(shape: [], storage: [Float(counters[c] ?? 0)]))) }
        return out
    }
}

/// Which parameters an adaptation method updates.
public enum ParameterSelection: Sendable, Equatable {
    /// Nothing (source, norm_test, …).
    case none
    /// Every parameter.
    case all
    /// Every parameter named `weight` or `bias` (CoTTA's `collect_params`): all of a CNN's, but not a
    /// ViT's `cls_token` and `pos_embed`.
    case weightsAndBiases
    /// γ and β of every normalisation layer (TENT, EATA, SAR).
    case normAffine
    /// Parameters whose name contains any of these substrings.
    case nameContains([String])
    /// Exactly these names.
    case names(Set<String>)

    /// Whether `entry` is selected.
    public func selects(_ entry: ParameterStore.Entry) -> Bool {
        switch self {
        case .none: return false
        case .all: return true
        case .weightsAndBiases: return entry.name.hasSuffix(".weight") || entry.name.hasSuffix(".bias")
        case .normAffine: return entry.isNormAffine
        case .nameContains(let parts): return parts.contains { entry.name.contains($0) }
        case .names(let set): return set.contains(entry.name)
        }
    }
}
