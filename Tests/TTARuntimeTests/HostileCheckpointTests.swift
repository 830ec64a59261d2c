import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTANN
import TTARuntime

/// Checkpoints edited by hand, the run's identity left intact, are refused with an error naming the file or
/// the run and the field at fault: never an index out of range, never a silently wrong score.
@Suite struct HostileCheckpointTests {
    /// A TENT run on the tiny stream (3 domains of 12 images, batches of 4) as it stood after batch 4:
    /// domain 0 finished, domain 1 in progress, Adam's moments for every BN affine parameter.
    struct Saved {
        let tiny: TinyBenchmark
        let identity: RunCheckpoint.Identity
        let progress: RunProgress
        let adaptor: Adaptor.State
    }

    typealias Edit = (inout RunProgress, inout Adaptor.State) -> Void

    static var config: MethodConfiguration { busyConfiguration("tent") }

    func saved() throws -> Saved {
        let tiny = try TinyBenchmark()
        let stream = try tiny.stream(.continual)
        let identity = RunCheckpoint.Identity(dataset: "tiny", model: "wrn-10-1", weightsFingerprint: "-", dataFingerprint: "-",
                                              stream: stream.configuration, methods: ["tent"],
                                              methodConfigurations: [Self.config], seed: 5, collapse: CollapsePolicy())
        var atBatch4: (RunProgress, Adaptor.State)?
        _ = try BenchmarkRunner.run(method: "tent", adaptor: try makeAdaptor("tent"), stream: stream, configuration: Self.config,
                                    checkpointing: .init(every: 2) { p, s in if p.batches == 4 { atBatch4 = (p, s) } })
        let (progress, adaptor) = try #require(atBatch4)
        return Saved(tiny: tiny, identity: identity, progress: progress, adaptor: adaptor)
    }

    /// The saved run with `edit` applied, written as a checkpoint file.
    func file(_ s: Saved, _ edit: Edit = { _, _ in }) throws -> URL {
        var (progress, adaptor) = (s.progress, s.adaptor)
        edit(&progress, &adaptor)
        let url = s.tiny.root.appendingPathComponent("hostile-\(UUID().uuidString).safetensors")
        let checkpoint = RunCheckpoint(identity: s.identity, finishedRuns: [], methodIndex: 0, inProgress: (progress, adaptor))
        try writeAtomically(try checkpoint.encoded(), to: url)
        return url
    }

    /// Reads the checkpoint at `url` and resumes it on a new adaptor to the end of the stream.
    func resume(_ s: Saved, _ url: URL) throws -> RunResult {
        let checkpoint = try RunCheckpoint.read(url)
        let adaptor = try makeAdaptor("tent")
        return try BenchmarkRunner.run(method: "tent", adaptor: adaptor, stream: try s.tiny.stream(.continual), configuration: Self.config,
                                       resume: try checkpoint.resumeState(for: adaptor))
    }

    /// A progress record that contradicts itself (a short `correct`, which the next batch would index past; a
    /// `lastDomain` out of range; a finished domain without its result) is refused on reading, naming the
    /// file and the field. The record as written reads and resumes to the end.
    @Test func progressThatContradictsItselfIsRefusedOnReading() throws {
        let s = try saved()
        #expect(s.progress.seen.count == 3 && s.progress.finishedDomains == [0] && s.progress.lastDomain == 1)
        let cases: [(String, Edit)] = [
            ("correct has 2 entries, one per domain; seen has 3", { p, _ in p.correct = Array(p.correct.dropLast()) }),
            ("lastDomain is 999; expected a domain index in 0..<3", { p, _ in p.lastDomain = 999 }),
            ("finishedDomains lists 2 domains and domainResults holds 1 results; expected one result per finished domain, in the same order",
             { p, _ in p.finishedDomains.append(2) }),
        ]
        for (message, edit) in cases {
            let url = try file(s, edit)
            #expect(throws: RuntimeError("\(url.path) is not a usable SwiftTTA checkpoint: its progress: \(message)")) {
                try RunCheckpoint.read(url)
            }
        }
        #expect(try resume(s, try file(s)).completed)
    }

    /// A record consistent in itself that does not fit the stream is refused on resuming, naming the field:
    /// domain 1 seen 40 times when the 4 batches scored hold 4 of its 12 images; the last domain scored said to
    /// be domain 2 (which would finish domain 2 with no images and never score it).
    @Test func progressThatContradictsTheStreamIsRefusedOnResuming() throws {
        let s = try saved()
        let record = s.progress, fog = try s.tiny.stream(.continual).domains[1]
        #expect(record.batches == 4 && record.nextBatch == 4 && record.lastDomain == 1)
        let cases: [(String, Edit)] = [
            ("seen[1] is \(record.seen[1] + 36); the 4 batches scored (0..<4) hold \(record.seen[1]) samples of domain 1 "
                + "(\(fog), \(fog.sampleCount) samples in all)",
             { p, _ in p.seen[1] += 36; p.totalSeen += 36 }),
            ("lastDomain is 2; the last batch scored (3) ends in domain 1", { p, _ in p.lastDomain = 2 }),
        ]
        for (message, edit) in cases {
            let url = try file(s, edit)
            #expect(throws: RuntimeError("tent: the checkpoint's progress does not fit this stream: \(message)")) {
                try resume(s, url)
            }
        }
    }

    /// An optimizer buffer shorter than its parameter (which Adam's next step would index past), or for an entry
    /// the optimizer does not update, is refused on resuming, naming the checkpoint's tensor and the parameter.
    @Test func optimizerBuffersThatDoNotFitAreRefusedOnResuming() throws {
        let s = try saved()
        let store = try makeAdaptor("tent").model.store
        var cases: [(String, Edit)] = []
        for kind in ["buffers", "secondBuffers"] {
            let prefix = "optimizer.\(kind)."
            let indices = s.adaptor.method.tensors.keys.compactMap { $0.hasPrefix(prefix) ? Int($0.dropFirst(prefix.count)) : nil }
            let i = try #require(indices.min(), "no \(prefix)* in the TENT state")
            let key = prefix + "\(i)", e = store.entries[i]
            cases.append(("'method.\(key)' holds \(e.count - 1) values; parameter \(i) (\(e.name), shape \(e.shape)) has \(e.count)",
                          { _, a in a.method.tensors[key] = a.method.tensors[key].map { Array($0.dropLast()) } }))
        }
        cases.append(("'method.optimizer.buffers.999' is for entry 999, which is not a parameter this optimizer updates",
                      { _, a in a.method.tensors["optimizer.buffers.999"] = [0] }))
        for (message, edit) in cases {
            let url = try file(s, edit)
            #expect(throws: RuntimeError("tent: the saved optimizer state does not fit: \(message)")) {
                try resume(s, url)
            }
        }
    }
}
