import Foundation

/// Process memory, read from `/proc/self/status` on Linux.
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

    private static func field(_ name: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return 0
    }
}
