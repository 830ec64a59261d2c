import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The CPU time the process has used (user and system, all threads; `getrusage`).
public enum ProcessTime {
    public static var cpuSeconds: Double {
        var u = rusage()
        #if canImport(Glibc)
        let who = __rusage_who_t(RUSAGE_SELF.rawValue)
        #else
        let who = RUSAGE_SELF
        #endif
        guard getrusage(who, &u) == 0 else { return 0 }
        func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return s(u.ru_utime) + s(u.ru_stime)
    }
}

/// Process memory, read from `/proc/self/status` on Linux, and the C heap's policy for freed blocks.
public enum ProcessMemory {
    /// Peak resident set size (`VmHWM`) in bytes, or 0 where unavailable.
    public static var peakResidentBytes: Int { field("VmHWM") }
    /// Current resident set size (`VmRSS`) in bytes, or 0 where unavailable.
    public static var residentBytes: Int { field("VmRSS") }

    /// Resets the peak to the current resident size (writes `5` to `/proc/self/clear_refs`), so that
    /// each method of a comparison reports its own peak. Returns false where the kernel refuses.
    @discardableResult
    public static func resetPeak() -> Bool {
        guard let h = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? h.close() }
        do { try h.write(contentsOf: Data("5".utf8)); return true } catch { return false }
    }

    /// What glibc's malloc does with large freed blocks.
    public enum HeapPolicy: Sendable {
        /// Blocks from 128 KiB up come from `mmap` and go back to the kernel when freed, so a peak
        /// measured over one step is that step's live memory (the memory estimate's probes).
        case releaseFreed
        /// Every block comes from the heap, and freed memory stays in it for the next step; the heap
        /// never shrinks. A step's activations then reuse the previous step's pages instead of
        /// faulting in fresh ones that the kernel zeroes first. glibc's own adaptive threshold stops at
        /// 32 MiB, below one activation of WRN-28-10 at batch 200 (up to 131 MB): there, a TENT step
        /// took 62 s with glibc's defaults and 54 s with this policy, at the same peak.
        case keepFreed
    }

    /// Sets the heap policy of the whole process (glibc's `mallopt`). `tta` and `tta-bench` keep
    /// freed memory; an application that streams batches through an `Adaptor` should too, unless it
    /// needs the memory back between batches. Returns whether glibc accepted every setting (false
    /// where there is no glibc, and nothing changes).
    @discardableResult
    public static func setHeapPolicy(_ policy: HeapPolicy) -> Bool {
        // mallopt(3) parameters (malloc.h is not in the Glibc module).
        let trimThreshold: Int32 = -1, mmapThreshold: Int32 = -3, mmapMax: Int32 = -4
        switch policy {
        case .releaseFreed:
            return mallopt(mmapMax, 65536)          // glibc's default
                && mallopt(mmapThreshold, 128 * 1024)
                && mallopt(trimThreshold, 128 * 1024)
        case .keepFreed:
            return mallopt(mmapMax, 0)              // no block from mmap
                && mallopt(trimThreshold, -1)       // never give the top of the heap back
        }
    }

    /// glibc's `malloc_trim(0)`: returns the heap's free pages to the kernel (no-op elsewhere).
    static func trimHeap() {
        #if canImport(Glibc)
        typealias MallocTrim = @convention(c) (Int) -> Int32
        if let f = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") {
            _ = unsafeBitCast(f, to: MallocTrim.self)(0)
        }
        #endif
    }

    /// `mallopt(parameter, value) == 1` (glibc's success), looked up at run time; false elsewhere.
    private static func mallopt(_ parameter: Int32, _ value: Int32) -> Bool {
        #if canImport(Glibc)
        typealias MallOpt = @convention(c) (Int32, Int32) -> Int32
        if let f = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") {
            return unsafeBitCast(f, to: MallOpt.self)(parameter, value) == 1
        }
        #endif
        return false
    }

    private static func field(_ name: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return 0
    }
}
