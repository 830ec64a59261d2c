import Dispatch
import Foundation

/// How many threads the kernels may use. Set once at start-up (the CLI's `--threads`);
/// kernels read it when they split work. Defaults to the machine's active core count.
package enum KernelThreads {
    nonisolated(unsafe) private static var _count = max(1, ProcessInfo.processInfo.activeProcessorCount)
    /// The current thread budget (at least 1).
    package static var count: Int {
        get { _count }
        set { _count = max(1, newValue) }
    }
}

/// A raw buffer that may cross into `concurrentPerform` workers. The only place where
/// Sendable is bypassed: each worker writes a disjoint range, which the caller guarantees.
package struct SendablePointer<T>: @unchecked Sendable {
    package let base: UnsafeMutablePointer<T>
    package init(_ base: UnsafeMutablePointer<T>) { self.base = base }
    package init(_ base: UnsafePointer<T>) { self.base = UnsafeMutablePointer(mutating: base) }
}

/// Runs `body(chunk)` for `chunk` in `0..<chunks` on up to `KernelThreads.count` threads.
/// With one chunk or one thread it runs inline, so single-threaded runs are deterministic and cheap.
package func parallelFor(_ chunks: Int, _ body: (Int) -> Void) {
    if chunks <= 0 { return }
    if chunks == 1 || KernelThreads.count == 1 {
        for i in 0..<chunks { body(i) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let box = UncheckedBox(body)
        DispatchQueue.concurrentPerform(iterations: chunks) { i in box.value(i) }
    }
}

private struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Splits `0..<count` into at most `parts` contiguous ranges of near-equal size.
package func splitRange(_ count: Int, parts: Int) -> [Range<Int>] {
    let p = max(1, min(parts, count))
    var out: [Range<Int>] = []
    out.reserveCapacity(p)
    for i in 0..<p {
        let lo = count * i / p, hi = count * (i + 1) / p
        if hi > lo { out.append(lo..<hi) }
    }
    return out
}

/// A grow-only float buffer that kernels borrow from `ScratchPool` for the length of a call. Every
/// float of its capacity is written once when it grows, so its pages are resident from then on and
/// the steady state neither allocates nor faults pages in.
package final class ScratchBuffer: @unchecked Sendable {
    private var base: UnsafeMutablePointer<Float>
    private var capacity = 0

    init() { base = .allocate(capacity: 1) }

    /// At least `count` floats (contents unspecified).
    package func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > capacity {
            base.deallocate()
            base = .allocate(capacity: count)
            base.initialize(repeating: 0, count: count)
            capacity = count
        }
        return base
    }
}

/// The scratch buffers of the kernels, kept across calls. A call takes a buffer no other call holds
/// (one per concurrent worker), so concurrent calls never share one.
package enum ScratchPool {
    nonisolated(unsafe) private static var idle: [ScratchBuffer] = []
    private static let lock = NSLock()

    /// Runs `body` with a buffer of its own, then returns the buffer to the pool.
    package static func withBuffer<T>(_ body: (ScratchBuffer) throws -> T) rethrows -> T {
        lock.lock()
        let buffer = idle.popLast() ?? ScratchBuffer()
        lock.unlock()
        defer {
            lock.lock()
            idle.append(buffer)
            lock.unlock()
        }
        return try body(buffer)
    }
}
