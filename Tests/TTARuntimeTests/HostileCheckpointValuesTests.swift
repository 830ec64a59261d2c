import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTAModels
import TTANN
import TTARuntime
import TTATensor

/// Checkpoints edited by hand in what they hold rather than in how they are laid out: values no run saves (NaN or
/// infinity, counters out of range) and finished results that contradict their own counts or the stream. Each is
/// refused naming the file and the entry, never restored and never printed as a result.
@Suite struct HostileCheckpointValuesTests {
    static let note = "a checkpoint holds only finite values (the guard undoes any step that leaves NaN or infinity before it is saved)"

    /// The TENT run of `HostileCheckpointTests` as it stood after batch 4, and a file with `edit` applied.
    let base = HostileCheckpointTests()

    func refusal(_ url: URL, _ message: String) -> RuntimeError {
        RuntimeError("\(url.path) is not a usable SwiftTTA checkpoint: \(message)")
    }

    /// NaN or infinity in the model values, a method tensor or a method number is refused on reading, naming the file
    /// and the entry (SAR's loss average, Adam's moments, …): a real checkpoint never holds one.
    @Test func nonFiniteValuesAreRefusedOnReading() throws {
        let s = try base.saved()
        let tensorKey = try #require(s.adaptor.method.tensors.keys.sorted().first, "no method tensor in the TENT state")
        let numberKey = try #require(s.adaptor.method.numbers.keys.sorted().first, "no method number in the TENT state")
        let cases: [(String, HostileCheckpointTests.Edit)] = [
            ("tensor 'adaptor.model' holds nan at index 5; \(Self.note)", { _, a in
                var v = a.model.values
                v[5] = .nan
                a.model = ParameterStore.Snapshot(values: v, counters: a.model.counters)
            }),
            ("tensor 'method.\(tensorKey)' holds inf at index 0; \(Self.note)", { _, a in a.method.tensors[tensorKey]![0] = .infinity }),
            ("method number '\(numberKey)' (methodNumbers) holds nan at index 0; \(Self.note)", { _, a in a.method.numbers[numberKey]![0] = .nan }),
            ("method number 'lossAverage' (methodNumbers) holds -inf at index 0; \(Self.note)", { _, a in a.method.numbers["lossAverage"] = [-.infinity] }),
        ]
        for (message, edit) in cases {
            let url = try base.file(s, edit)
            #expect(throws: refusal(url, message)) { try RunCheckpoint.read(url) }
        }
        _ = try RunCheckpoint.read(try base.file(s))
    }

    /// A `num_batches_tracked` counter below 0, or above 2^53 (BatchNorm's next `+ 1` would overflow near Int64.max), is
    /// refused on reading, naming the counter; 2^53 itself reads.
    @Test func countersOutOfRangeAreRefusedOnReading() throws {
        let s = try base.saved()
        let counter = try #require(s.adaptor.model.counters.keys.sorted().first, "no BN counter in the model")
        func setting(_ value: Int64) -> HostileCheckpointTests.Edit {
            { _, a in
                var c = a.model.counters
                c[counter] = value
                a.model = ParameterStore.Snapshot(values: a.model.values, counters: c)
            }
        }
        for value: Int64 in [-1, Int64.max, (1 << 53) + 1] {
            let url = try base.file(s, setting(value))
            #expect(throws: refusal(url, "model counter '\(counter)' (modelCounters) is \(value); expected a count of batches in 0...9007199254740992 (2^53)")) {
                try RunCheckpoint.read(url)
            }
        }
        _ = try RunCheckpoint.read(try base.file(s, setting(1 << 53)))
    }

    /// A finished TENT run, a second method in the identity, and the file of the checkpoint with `edit` applied to the run.
    struct Finished {
        let tiny: TinyBenchmark
        let stream: BenchmarkStream
        let run: RunResult
        let identity: RunCheckpoint.Identity

        init() throws {
            tiny = try TinyBenchmark()
            stream = try tiny.stream(.continual)
            let config = busyConfiguration("tent")
            identity = RunCheckpoint.Identity(dataset: "tiny", model: "wrn-10-1", weightsFingerprint: "-", dataFingerprint: "-",
                                              stream: stream.configuration, methods: ["tent", "norm_test"],
                                              methodConfigurations: [config, busyConfiguration("norm_test")], seed: 5, collapse: CollapsePolicy())
            run = try BenchmarkRunner.run(method: "tent", adaptor: try makeAdaptor("tent"), stream: stream, configuration: config)
        }

        func file(_ edit: (inout RunResult) -> Void = { _ in }) throws -> URL {
            var r = run
            edit(&r)
            let url = tiny.root.appendingPathComponent("finished-\(UUID().uuidString).safetensors")
            try RunCheckpoint(identity: identity, finishedRuns: [r], methodIndex: 1, inProgress: nil).write(to: url)
            return url
        }
    }

    /// A finished run whose method is not the identity's, or whose errors are not those its counts give (a domain's, the
    /// mean, the error over all samples; recomputed as the runner computes them), is refused on reading, naming the run
    /// and the field. The run as written reads and fits its stream.
    @Test func finishedRunsThatContradictThemselvesAreRefusedOnReading() throws {
        let f = try Finished()
        let d0 = f.run.domains[0], d1 = f.run.domains[1]
        #expect(f.run.domains.count == 3 && d0.samples == 12)
        let cases: [(String, (inout RunResult) -> Void)] = [
            ("method is 'norm_test'; the run's method at this place is 'tent'", { $0.method = "norm_test" }),
            ("completed is false; a finished run scored its whole stream", { $0.completed = false }),
            ("domains[0] (gaussian_noise5) has error \(d0.error + 1); \(d0.samples - d0.correct) wrong of 12 samples is \(d0.error)",
             { $0.domains[0].error += 1 }),
            ("domains[1] (fog5) has 13 correct of 12 samples; expected 0...12", { $0.domains[1].correct = 13 }),
            ("domains[1] (fog5) has 0 samples; a reported domain has 1 or more",
             { $0.domains[1] = DomainResult(name: d1.name, severity: d1.severity, samples: 0, correct: 0) }),
            ("meanError is \(f.run.meanError + 1); its domains' errors give \(f.run.meanError)", { $0.meanError += 1 }),
            ("errorOverAllSamples is nan; \(f.run.domains.reduce(0) { $0 + $1.samples - $1.correct }) wrong of its 36 samples is \(f.run.errorOverAllSamples)",
             { $0.errorOverAllSamples = .nan }),
            ("batches is 8 of totalBatches 9; a finished run scored every batch", { $0.batches = 8 }),
            ("seconds is inf; expected a finite number, 0 or more", { $0.seconds = .infinity }),
            ("runningError[0] is 120.0% after 36 samples; expected an error in 0...100 after 0...36 samples",
             { $0.runningError[0].error = 120 }),
        ]
        #expect(f.run.runningError.first?.samples == 36, "one running-error point, at the end of the 9 batches")
        for (message, edit) in cases {
            let url = try f.file(edit)
            #expect(throws: refusal(url, "finished run 0 (tent): \(message)")) { try RunCheckpoint.read(url) }
        }
        let intact = try RunCheckpoint.read(try f.file())
        #expect(intact.finishedRuns == [f.run] && intact.finishedRunsProblem(on: f.stream) == nil)
    }

    /// A finished run consistent in itself that does not fit the stream it is resumed on (a domain with another sample
    /// count, a domain missing, fewer batches) is named by `finishedRunsProblem(on:)`, which `tta` refuses to resume.
    @Test func finishedRunsThatDoNotFitTheStreamAreNamed() throws {
        let f = try Finished()
        /// The run with domain 0 one sample short and domain 1 one over, every error recomputed: consistent in itself.
        func moved(_ r: inout RunResult) {
            let (a, b) = (r.domains[0], r.domains[1])
            r.domains[0] = DomainResult(name: a.name, severity: a.severity, samples: a.samples - 1, correct: min(a.correct, a.samples - 1))
            r.domains[1] = DomainResult(name: b.name, severity: b.severity, samples: b.samples + 1, correct: b.correct + (a.correct == a.samples ? 1 : 0))
            r.meanError = RunResult.averageError(of: r.domains, mixedDomains: false)
        }
        let url = try f.file(moved)
        let read = try RunCheckpoint.read(url)
        #expect(read.finishedRunsProblem(on: f.stream)
                == "finished run 0 (tent): domains[0] is gaussian_noise5 with 11 samples; the stream's domain 0 is gaussian_noise5 with 12 samples")
        // Another stream of the same benchmark: batches of 6.
        let other = try f.tiny.stream(.continual, batchSize: 6)
        #expect(try RunCheckpoint.read(try f.file()).finishedRunsProblem(on: other)
                == "finished run 0 (tent): batches is 9 of totalBatches 9; the stream has 6 batches")
    }
}
