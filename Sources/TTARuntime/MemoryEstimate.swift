import Foundation
import TTAAdaptation
import TTATensor

/// A run's peak memory, estimated before it starts.
///
/// The estimate is measured, not modelled: after a warm-up step, the method runs a step on a small batch
/// (`smallProbeBatch`) and one on a larger batch (doubled while steps are cheap, see `probe`), of real
/// images from the stream; the peak resident memory each adds above the current resident size is fitted
/// with a line in the batch size, then read at the run's batch size. Afterwards the model and the method
/// are reset and the random generator and timers put back, but what a method's reset keeps (as in the
/// reference: UnMix-TNS's drawn components, RMT's place in its source data, RDumb's update count, SAR's
/// SGD momentum)
/// survives the probe, as do the adaptor's counters and window: probe a throwaway adaptor, as `tta`
/// does, when the run must give the same numbers as one without an estimate.
///
/// While it probes, the heap releases freed blocks (`ProcessMemory.HeapPolicy.releaseFreed`), so each
/// probe's peak is its own. Afterwards it keeps them (`.keepFreed`), so the run reuses freed activation
/// memory instead of faulting fresh pages in every batch.
public struct MemoryEstimate: Sendable, Codable, Equatable {
    /// Resident memory before the run: weights, source snapshot, method copies, the data reader.
    public var baseBytes: Int
    /// What one step adds per image of the batch (activations kept for backward, augmented copies, …).
    public var bytesPerImage: Double
    /// What one step adds regardless of the batch size (scratch buffers, optimizer state on first use).
    public var fixedStepBytes: Double
    /// The batch size the estimate is for, and the estimated peak resident memory at it.
    public var batchSize: Int
    public var peakBytes: Int

    /// The peak at another batch size (`Int.max` when it exceeds what an `Int` holds: a batch size far
    /// beyond any memory).
    public func peak(batchSize b: Int) -> Int {
        Self.saturating(Double(baseBytes) + max(0, fixedStepBytes + bytesPerImage * Double(b)))
    }

    /// The largest batch size whose estimated peak stays within `bytes`, or 0 when none does.
    public func largestBatch(within bytes: Int) -> Int {
        guard bytesPerImage > 0 else { return peak(batchSize: 1) <= bytes ? Int.max : 0 }
        let room = Double(bytes) - Double(baseBytes) - fixedStepBytes
        return max(0, Self.saturating((room / bytesPerImage).rounded(.down)))
    }

    /// `x` as an `Int`, clamped to `Int`'s range (where `Int(x)` would trap); NaN gives 0.
    static func saturating(_ x: Double) -> Int {
        x.isNaN ? 0 : x >= 0x1p63 ? Int.max : x < -0x1p63 ? Int.min : Int(x)
    }

    /// Factor on what a step adds, for the heap retention of the run (see `probe`).
    public static let heapAllowance = 1.25

    /// The smaller probe batch size for `threads` kernel threads: it already keeps every thread busy
    /// (each holds its own per-image scratch), so the two probes differ only in per-image memory.
    public static func smallProbeBatch(threads: Int) -> Int { max(1, threads) }

    /// Probes `adaptor` on the images of `batch` (tiled when a probe needs more) and estimates the
    /// peak at `batchSize`.
    ///
    /// The larger probe starts at twice the smaller plus 2 and doubles while a step takes less than
    /// `stepBudget` seconds, so that cheap methods are measured far from the small probe (the slope's
    /// error shrinks with the distance) and expensive ones stay cheap to probe. The seconds are CPU
    /// seconds per kernel thread, not the wall clock: on a busy machine the wall clock would stop the
    /// doubling early and leave the slope to a short baseline (measured: 152-212 MiB estimated for one
    /// 157 MiB run while another process kept both cores busy). A batch size the larger
    /// probe reaches is measured directly. Returns nil where the platform reports no resident memory.
    public static func probe(_ adaptor: Adaptor, batch: Tensor, batchSize: Int, threads: Int,
                             stepBudget: Double = 0.25) throws -> MemoryEstimate? {
        guard ProcessMemory.residentBytes > 0 else { return nil }
        ProcessMemory.setHeapPolicy(.releaseFreed)
        let savedRNG = adaptor.rng, savedTimer = adaptor.timer
        adaptor.method.setMemoryProbe(true)
        defer {
            adaptor.method.setMemoryProbe(false)
            ProcessMemory.setHeapPolicy(.keepFreed)
            adaptor.reset()
            adaptor.rng = savedRNG
            adaptor.timer = savedTimer
        }
        /// Peak resident memory one step on `b` images adds, and the step's seconds.
        func added(_ b: Int) throws -> (bytes: Int, seconds: Double) {
            let x = tiled(batch, to: b)
            adaptor.reset()
            ProcessMemory.trimHeap()
            let before = ProcessMemory.residentBytes
            ProcessMemory.resetPeak()
            let cpu0 = ProcessTime.cpuSeconds
            _ = try adaptor.adapt(x)
            let seconds = (ProcessTime.cpuSeconds - cpu0) / Double(max(1, threads))
            return (max(0, ProcessMemory.peakResidentBytes - before), seconds)
        }
        // Batch statistics on one small image can be refused (`Adaptor.smallestBatch`): probe from there.
        let least = adaptor.smallestBatch(height: batch.shape[2], width: batch.shape[3])
        let b1 = max(least, min(smallProbeBatch(threads: threads), max(1, batchSize - 1)))
        var b2 = max(b1, min(2 * b1 + 2, batchSize))
        // A warm-up step first: what the first step allocates once (lazily built buffers, thread
        // stacks, code paged in) must fall in neither probe, or it would read as per-image memory.
        _ = try added(b2)
        let a1 = try added(b1).bytes
        var a2 = try added(b2)
        while b2 < batchSize && a2.seconds < stepBudget {
            b2 = min(2 * b2, batchSize)
            a2 = try added(b2)
        }
        ProcessMemory.trimHeap()
        let base = ProcessMemory.residentBytes
        // The probes see live memory; the run keeps freed blocks in the heap, which the step's fragments
        // do not always fit: measured here on the embedded model, its peak exceeds the probes' by 4-25%.
        // `heapAllowance` covers that.
        let slope = b2 > b1 ? max(0, Double(a2.bytes - a1) / Double(b2 - b1)) * heapAllowance : 0
        let fixed = (Double(a1) - slope / heapAllowance * Double(b1)) * heapAllowance
        var e = MemoryEstimate(baseBytes: base, bytesPerImage: slope, fixedStepBytes: fixed, batchSize: batchSize, peakBytes: 0)
        e.peakBytes = e.peak(batchSize: batchSize)
        return e
    }

    /// The first `n` images of `x`, repeating them when `x` has fewer.
    static func tiled(_ x: Tensor, to n: Int) -> Tensor {
        let per = x.count / x.shape[0]
        var storage = [Float](repeating: 0, count: n * per)
        for i in 0..<n {
            let src = (i % x.shape[0]) * per
            for j in 0..<per { storage[i * per + j] = x.storage[src + j] }
        }
        return Tensor(shape: [n] + Array(x.shape.dropFirst()), storage: storage)
    }
}

/// How much memory a run may use: the `--memory-limit` given, else what the system reports available
/// (`MemAvailable` in `/proc/meminfo`, capped by a cgroup v2 `memory.max`) plus what this process
/// already holds.
public enum MemoryBudget {
    public static func available() -> Int? {
        var best: Int? = nil
        if let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) {
            for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
                let parts = line.split(separator: " ", omittingEmptySubsequences: true)
                if parts.count >= 2, let kb = Int(parts[1]) { best = kb * 1024 }
            }
        }
        if let text = try? String(contentsOfFile: "/sys/fs/cgroup/memory.max", encoding: .utf8),
           let limit = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
            let used = (try? String(contentsOfFile: "/sys/fs/cgroup/memory.current", encoding: .utf8))
                .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
            best = min(best ?? Int.max, max(0, limit - used))
        }
        return best.map { $0 + ProcessMemory.residentBytes }
    }
}
