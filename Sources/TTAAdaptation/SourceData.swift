import TTAData
import TTANN
import TTATensor

/// Source-domain images (and labels, where known) that a method draws batches from: RMT's warm-up and
/// replay, as the reference's source `DataLoader` (`shuffle=True`, `drop_last=False`).
///
/// The images are held as one pool; each pass ("epoch") visits every image once, in a fresh seeded
/// permutation when `shuffle` is on, cut into batches of `batchSize` (the last one may be smaller).
/// A new pass starts when one ends, as the reference restarts its iterator on `StopIteration`.
public struct SourceSampler: Sendable {
    /// All images `(N, C, H, W)` in [0, 1].
    public let images: Tensor
    /// One class index per image, or nil for unlabelled data.
    public let labels: [Int]?
    public let batchSize: Int
    public let shuffle: Bool
    /// The order of the current pass and the position in it.
    public private(set) var order: [Int]
    public private(set) var position = 0
    /// Draws the permutations.
    public private(set) var generator: SeededGenerator

    /// - Parameters:
    ///   - batches: source images in batches `(n, C, H, W)`; the first batch's `n` is the batch size.
    ///   - labels: one label list per batch, or empty for unlabelled data.
    public init(batches: [Tensor], labels: [[Int]] = [], shuffle: Bool, seed: UInt64 = 0) throws {
        guard let first = batches.first, first.rank == 4, first.shape[0] > 0 else {
            throw AdaptationError("source data: no source images given")
        }
        guard batches.allSatisfy({ $0.rank == 4 && Array($0.shape.dropFirst()) == Array(first.shape.dropFirst()) }) else {
            throw AdaptationError("source data: batches differ in image shape (first \(first.shape))")
        }
        for (i, b) in batches.enumerated() where checkedProduct(b.shape) != b.storage.count {
            throw AdaptationError("source data: batch \(i) has shape \(b.shape) but holds \(b.storage.count) values")
        }
        if !labels.isEmpty {
            guard labels.count == batches.count, zip(labels, batches).allSatisfy({ $0.count == $1.shape[0] }) else {
                throw AdaptationError("source data: \(labels.count) label lists for \(batches.count) batches, or a batch with a different count of labels")
            }
        }
        var storage: [Float] = []
        storage.reserveCapacity(batches.reduce(0) { $0 + $1.count })
        for b in batches { storage += b.storage }
        let n = batches.reduce(0) { $0 + $1.shape[0] }
        images = Tensor(shape: [n] + Array(first.shape.dropFirst()), storage: storage)
        self.labels = labels.isEmpty ? nil : labels.flatMap { $0 }
        batchSize = first.shape[0]
        self.shuffle = shuffle
        generator = SeededGenerator(seed: seed)
        order = Array(0..<n)
        if shuffle { order.shuffle(using: &generator) }
    }

    public var count: Int { images.shape[0] }

    /// Where the sampler is (the pass's order, the position in it, the generator), for a method's state.
    public func capture(into s: inout MethodState, as prefix: String) {
        s.numbers["\(prefix).order"] = order.map(Double.init)
        s.numbers["\(prefix).position"] = [Double(position)]
        // The generator's 64 bits as two exact 32-bit halves (a raw bit pattern could read as NaN).
        s.numbers["\(prefix).generator"] = [Double(generator.state >> 32), Double(generator.state & 0xFFFF_FFFF)]
    }

    /// Puts back what `capture(into:as:)` stored; the order must be a permutation of this sampler's images.
    public mutating func restore(from s: MethodState, as prefix: String, of method: String) throws {
        guard let o = s.numbers["\(prefix).order"], o.count == count, Set(o) == Set((0..<count).map(Double.init)),
              let g = s.numbers["\(prefix).generator"], g.count == 2,
              g.allSatisfy({ $0 >= 0 && $0 < 4_294_967_296 && $0 == $0.rounded() }) else {
            throw AdaptationError("\(method): state '\(prefix)' is missing or not a permutation of \(count) source images")
        }
        order = o.map { Int($0) }
        position = try s.count("\(prefix).position", of: method)
        generator = SeededGenerator(seed: UInt64(g[0]) << 32 | UInt64(g[1]))
    }

    /// The next batch (images, and labels when known).
    public mutating func next() -> (images: Tensor, labels: [Int]?) {
        let rows = nextIndices()
        let inner = images.count / count
        var storage: [Float] = []
        storage.reserveCapacity(rows.count * inner)
        for r in rows { storage += images.storage[(r * inner)..<((r + 1) * inner)] }
        return (Tensor(shape: [rows.count] + Array(images.shape.dropFirst()), storage: storage), labels.map { l in rows.map { l[$0] } })
    }

    /// Advances past `batches` batches without building them (what `next()` would have drawn).
    public mutating func skip(_ batches: Int) {
        for _ in 0..<batches { _ = nextIndices() }
    }

    /// Every image once, in stored order, in batches of `batchSize` (RMT's prototype pass).
    public func inOrder() -> [(images: Tensor, labels: [Int]?)] {
        stride(from: 0, to: count, by: batchSize).map { start in
            let r = start..<min(start + batchSize, count)
            return (images.slice(r), labels.map { Array($0[r]) })
        }
    }

    private mutating func nextIndices() -> [Int] {
        if position >= count {
            position = 0
            if shuffle { order.shuffle(using: &generator) }
        }
        let end = min(position + batchSize, count)
        defer { position = end }
        return Array(order[position..<end])
    }
}

/// Keeps the results of expensive source-data preparation (RMT's prototypes and warm-up) between runs.
/// The runtime's implementation stores them on disk, keyed by the model and the source data; `item`
/// names what is stored and the settings it depends on.
public protocol PreparationCache: AnyObject {
    func load(_ item: String) -> [String: Tensor]?
    func store(_ item: String, _ tensors: [String: Tensor])
}

extension OptimizerState {
    /// The state as named tensors (`<prefix>step`, `<prefix>m.<entry>`, `<prefix>v.<entry>`), for caches.
    public func tensors(prefix: String) -> [String: Tensor] {
        var out = ["\(prefix)step": Tensor(shape: [1], storage: [Float(step)])]
        for (i, b) in buffers { out["\(prefix)m.\(i)"] = Tensor(shape: [b.count], storage: b) }
        for (i, b) in secondBuffers { out["\(prefix)v.\(i)"] = Tensor(shape: [b.count], storage: b) }
        return out
    }

    /// The inverse of `tensors(prefix:)`; nil when the step is missing or not a count (negative, fractional, NaN,
    /// past 2^53), which a cache read from disk may hold. (Whether the buffers fit an optimizer is
    /// `problem(for:prefix:)`'s to say.)
    public init?(tensors: [String: Tensor], prefix: String) {
        guard let t = tensors["\(prefix)step"], t.storage.count == 1, let step = t.storage.first,
              step >= 0, step == step.rounded(), step < 9.0e15 else { return nil }
        self.init()
        self.step = Int(step)
        for (key, t) in tensors where key.hasPrefix(prefix) {
            let rest = key.dropFirst(prefix.count)
            if rest.hasPrefix("m."), let i = Int(rest.dropFirst(2)) { buffers[i] = t.storage }
            if rest.hasPrefix("v."), let i = Int(rest.dropFirst(2)) { secondBuffers[i] = t.storage }
        }
    }
}
