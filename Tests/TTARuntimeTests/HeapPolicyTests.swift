import Testing
import TTARuntime

/// `ProcessMemory.setHeapPolicy`: glibc accepts every `mallopt` setting of both policies (it refuses,
/// for instance, an mmap threshold above 32 MiB, or a parameter it does not know). The policy's effect
/// on speed is measured in benchmarks/ (`tta-bench steps`), not here: in-process CLI tests switch it
/// concurrently (the memory estimate's probes release, the run keeps).
@Suite struct HeapPolicyTests {
    @Test func glibcAcceptsBothPolicies() {
        #if canImport(Glibc)
        #expect(ProcessMemory.setHeapPolicy(.releaseFreed))
        #expect(ProcessMemory.setHeapPolicy(.keepFreed))
        #else
        #expect(!ProcessMemory.setHeapPolicy(.keepFreed))
        #endif
    }
}
