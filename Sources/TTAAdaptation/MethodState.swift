import TTANN
import TTATensor

/// The mutable state a method keeps between batches, by name: what `AdaptationMethod.captureState()`
/// returns and `restoreState(_:)` takes back. One mechanism serves the adaptor's rollback of a
/// diverged step and the checkpoints of a long run.
///
/// - `tensors`: float arrays saved as F32 (optimizer moments, teacher weights).
/// - `numbers`: numbers kept exactly, each a short `[Double]` (step counts, sample counters, an EMA of
///   the loss, EATA's moving mean of the probabilities, which it keeps in Double). A value that is
///   absent (`nil` in the method) is simply not stored.
///
/// Keys are free-form; by convention `optimizer.*`, `teacher.*`, and the method's field names.
public struct MethodState: Sendable, Equatable {
    public var tensors: [String: [Float]] = [:]
    public var numbers: [String: [Double]] = [:]
    /// Where the entries are stored, to name them in errors (`RunCheckpoint` stores them as tensors `method.<key>`
    /// and sets `method.`); not part of the state: `==` ignores it, and `inner(_:)` extends it.
    public var keyPrefix = ""
    public init() {}

    public static func == (a: MethodState, b: MethodState) -> Bool { a.tensors == b.tensors && a.numbers == b.numbers }

    /// True when every stored float and number is finite.
    public var isFinite: Bool {
        tensors.values.allSatisfy { $0.allSatisfy(\.isFinite) } && numbers.values.allSatisfy { $0.allSatisfy(\.isFinite) }
    }

    /// The single number under `key`, or nil when absent.
    public func number(_ key: String) -> Double? { numbers[key]?.first }

    /// The number under `key` as a count; throws when it is missing or not a non-negative integer.
    public func count(_ key: String, of method: String) throws -> Int {
        guard let x = number(key), x >= 0, x == x.rounded(), x < 9.0e15 else {
            throw AdaptationError("\(method): state '\(key)' is missing or not a count")
        }
        return Int(x)
    }

    /// Adds every entry of `inner` under `prefix.` (the state of a method this one wraps).
    public mutating func store(_ inner: MethodState, as prefix: String) {
        for (k, v) in inner.tensors { tensors["\(prefix).\(k)"] = v }
        for (k, v) in inner.numbers { numbers["\(prefix).\(k)"] = v }
    }

    /// The entries stored under `prefix.` by `store(_:as:)`, without the prefix.
    public func inner(_ prefix: String) -> MethodState {
        var s = MethodState()
        let p = prefix + "."
        s.keyPrefix = keyPrefix + p
        for (k, v) in tensors where k.hasPrefix(p) { s.tensors[String(k.dropFirst(p.count))] = v }
        for (k, v) in numbers where k.hasPrefix(p) { s.numbers[String(k.dropFirst(p.count))] = v }
        return s
    }

    // MARK: Optimizers

    /// Stores `state` under `prefix`: `<prefix>.step`, and `<prefix>.buffers.<entry index>` and
    /// `<prefix>.secondBuffers.<entry index>` for the per-parameter buffers.
    public mutating func store(_ state: OptimizerState, as prefix: String) {
        numbers["\(prefix).step"] = [Double(state.step)]
        for (i, b) in state.buffers { tensors["\(prefix).buffers.\(i)"] = b }
        for (i, b) in state.secondBuffers { tensors["\(prefix).secondBuffers.\(i)"] = b }
    }

    /// The optimizer state stored under `prefix` by `store(_:as:)`.
    public func optimizerState(_ prefix: String, of method: String) throws -> OptimizerState {
        var s = OptimizerState()
        s.step = try count("\(prefix).step", of: method)
        for (key, values) in tensors where key.hasPrefix(prefix + ".") {
            let parts = key.dropFirst(prefix.count + 1).split(separator: ".", omittingEmptySubsequences: false)
            // The index as `store(_:as:)` writes it: `buffers.3`, not `buffers.03` or `buffers.+3`, which would stand for the same entry.
            guard parts.count == 2, let i = Int(parts[1]), i >= 0, String(i) == parts[1] else {
                throw AdaptationError("\(method): unknown optimizer state '\(key)'")
            }
            switch parts[0] {
            case "buffers": s.buffers[i] = values
            case "secondBuffers": s.secondBuffers[i] = values
            default: throw AdaptationError("\(method): unknown optimizer state '\(key)'")
            }
        }
        return s
    }

    /// Gives `optimizer` the state stored under `prefix`, after checking that it fits: each buffer for a
    /// parameter the optimizer updates, of that parameter's length (`OptimizerState.problem`). A state read
    /// from a file that does not fit is an error naming the entry, not a step indexing past a short buffer.
    public func restore(_ optimizer: any Optimizer, from prefix: String, of method: String) throws {
        let s = try optimizerState(prefix, of: method)
        if let problem = s.problem(for: optimizer, prefix: keyPrefix + prefix) {
            throw AdaptationError("\(method): the saved optimizer state does not fit: \(problem)")
        }
        optimizer.state = s
    }

    // MARK: Model copies

    /// Stores every value and counter of `store` (a teacher model) under `prefix`: `<prefix>.values`
    /// and `<prefix>.counter.<name>`.
    public mutating func store(_ store: ParameterStore, as prefix: String) {
        tensors["\(prefix).values"] = Array(store.allValues)
        for (name, c) in store.counters { numbers["\(prefix).counter.\(name)"] = [Double(c)] }
    }

    /// Writes what `store(_:as:)` saved under `prefix` back into `target`; the layout must match.
    public func restore(_ target: ParameterStore, from prefix: String, of method: String) throws {
        guard let values = tensors["\(prefix).values"], values.count == target.totalCount else {
            throw AdaptationError("\(method): state '\(prefix).values' is missing or has the wrong size for \(target.totalCount) values")
        }
        var counters: [String: Int64] = [:]
        for name in target.counterNames { counters[name] = Int64(try count("\(prefix).counter.\(name)", of: method)) }
        target.restore(ParameterStore.Snapshot(values: values, counters: counters))
    }
}
