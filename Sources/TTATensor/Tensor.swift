/// A dense float32 tensor: a shape and contiguous row-major (C-order) storage.
///
/// Image batches are NCHW, as in PyTorch checkpoints. `Tensor` is a value type; its storage is a
/// copy-on-write `[Float]`. Kernels never see a `Tensor`: layers hand them raw buffers through
/// `withUnsafeBufferPointer` / `withUnsafeMutableBufferPointer`.
public struct Tensor: Sendable, Equatable {
    /// Dimensions, outermost first. `[]` is a scalar holding one element.
    public var shape: [Int]
    /// `shape.product` elements in C order.
    public var storage: [Float]

    /// A tensor of `shape` filled with `value`.
    public init(shape: [Int], repeating value: Float = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in \(shape)")
        self.shape = shape
        self.storage = [Float](repeating: value, count: shape.reduce(1, *))
    }

    /// Wraps `storage`; its count must equal the product of `shape`.
    public init(shape: [Int], storage: [Float]) {
        precondition(shape.reduce(1, *) == storage.count,
                     "Tensor: shape \(shape) needs \(shape.reduce(1, *)) elements, got \(storage.count)")
        self.shape = shape
        self.storage = storage
    }

    /// Number of elements.
    public var count: Int { storage.count }
    /// Number of dimensions.
    public var rank: Int { shape.count }

    /// The same storage seen with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, storage: storage)
    }

    /// Rows `range` of the outermost dimension, copied.
    public func slice(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0])
        let inner = count / max(shape[0], 1)
        var s = shape
        s[0] = range.count
        return Tensor(shape: s, storage: Array(storage[(range.lowerBound * inner)..<(range.upperBound * inner)]))
    }

    /// Calls `body` with the storage as a read-only buffer.
    @inlinable
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try storage.withUnsafeBufferPointer(body)
    }

    /// Calls `body` with the storage as a mutable buffer.
    @inlinable
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (inout UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        try storage.withUnsafeMutableBufferPointer(body)
    }

    /// True when every element is finite (no NaN, no ±infinity).
    public var isFinite: Bool {
        storage.withUnsafeBufferPointer { p in
            var ok = true
            for v in p where !v.isFinite { ok = false; break }
            return ok
        }
    }

    /// Index of the largest element of each row of a 2-D tensor (first index on ties, like PyTorch).
    public func argmaxRows() -> [Int] {
        precondition(rank == 2, "argmaxRows needs a 2-D tensor, got shape \(shape)")
        let (n, c) = (shape[0], shape[1])
        return (0..<n).map { i in
            var best = 0
            for j in 1..<c where storage[i * c + j] > storage[i * c + best] { best = j }
            return best
        }
    }
}

extension Array where Element == Int {
    /// The product of the elements (1 for an empty array).
    public var product: Int { reduce(1, *) }
}
