import Dispatch
import Foundation
import TTAAdaptation
import TTAData
import TTAModels
import TTATensor

/// What the runner reports while it works.
public struct ProgressEvent: Sendable {
    public enum Kind: Sendable { case batch, domainFinished(DomainResult) }
    public var kind: Kind
    public var method: String
    /// 1-based index of the current domain and the number of domains.
    public var domain: Int
    public var domainCount: Int
    public var domainName: String
    /// 1-based batch within the current domain and the domain's batch count.
    public var batchInDomain: Int
    public var batchesInDomain: Int
    /// Batches done in the whole stream and their total.
    public var batch: Int
    public var batchCount: Int
    /// Cumulative error so far (percent).
    public var runningError: Double
    public var imagesPerSecond: Double
    /// Estimated seconds left.
    public var eta: Double
    /// Seconds the run has taken so far (across a resume: the time before it too).
    public var elapsed: Double = 0
}

/// Everything a run has accumulated between two batches: where the stream is, the scores so far,
/// what the guard and the collapse monitor saw, and the time spent. With the adaptor's state
/// (`Adaptor.State`) it is a checkpoint: a run resumed from it ends bit-identical to one that never
/// stopped (apart from the measured times and memory).
public struct RunProgress: Sendable, Codable, Equatable {
    /// The stream batch the run continues with.
    public var nextBatch = 0
    /// Per domain: samples scored and correct.
    public var seen: [Int], correct: [Int]
    public var totalSeen = 0, totalCorrect = 0
    /// Batches processed.
    public var batches = 0
    public var runningError: [RunningErrorPoint] = []
    /// Finished domains, in the order they finished, and their results.
    public var finishedDomains: [Int] = []
    public var domainResults: [DomainResult] = []
    /// The domain of the last batch (a domain is finished once the stream moves past it).
    public var lastDomain: Int?
    public var stability = StabilityReport()
    public var monitor: CollapseMonitor
    /// Seconds in adaptation and in reading data, and in the whole run so far.
    public var adaptSeconds = 0.0, dataSeconds = 0.0, elapsedSeconds = 0.0
    /// The adaptor's phase times so far.
    public var phaseSeconds: [String: Double] = [:]

    public init(domainCount: Int, collapse: CollapsePolicy) {
        seen = [Int](repeating: 0, count: domainCount)
        correct = seen
        monitor = CollapseMonitor(policy: collapse)
    }

    public var errorOverAllSamples: Double { totalSeen == 0 ? 0 : 100 * Double(totalSeen - totalCorrect) / Double(totalSeen) }

    /// Scores one processed batch and watches it for collapse: every sample counts; a rejected batch
    /// and rows whose output is not finite count as wrong (class −1). Returns the collapse event, if
    /// this batch completed one. The caller resets the adaptor when the event says so.
    public mutating func record(_ batch: StreamBatch, _ result: Adaptor.StepResult) -> CollapseEvent? {
        var predictions = [Int](repeating: -1, count: batch.count)
        if let out = result.output {
            let c = out.shape[1]
            for (i, p) in out.argmaxRows().enumerated() where out.storage[(i * c)..<((i + 1) * c)].allSatisfy(\.isFinite) {
                predictions[i] = p
            }
        }
        switch result.outcome {
        case .adapted, .windowed: break
        case .rejectedInput: stability.rejectedBatches.append(batch.batchIndex + 1)
        case .rolledBack: stability.rolledBackBatches.append(batch.batchIndex + 1)
        }
        stability.samplesWithoutPrediction += predictions.filter { $0 < 0 }.count
        for (i, p) in predictions.enumerated() {
            let d = batch.domainIndex[i]
            seen[d] += 1
            if p == batch.labels[i] { correct[d] += 1; totalCorrect += 1 }
        }
        totalSeen += predictions.count
        batches += 1
        nextBatch = batch.batchIndex + 1
        guard let (cls, share) = monitor.observe(predictions) else { return nil }
        let event = CollapseEvent(batch: batch.batchIndex + 1, dominantClass: cls, share: share, reset: monitor.policy.resetOnCollapse)
        stability.collapses.append(event)
        if event.reset { monitor.clear() }
        return event
    }
}

/// Streams a benchmark through an adaptor and scores it: per-domain error, running error, time per
/// phase, peak memory, the guard's and collapse monitor's events. The shared driver every method runs through.
public enum BenchmarkRunner {
    /// Saving a run's state as it goes.
    public struct Checkpointing {
        /// Save after every `every` batches (0: only when the run ends or is stopped).
        public var every: Int
        /// Called with the progress and the adaptor's state between batches, after the last batch, and
        /// when the run is stopped.
        public var save: (RunProgress, Adaptor.State) throws -> Void
        public init(every: Int, save: @escaping (RunProgress, Adaptor.State) throws -> Void) {
            self.every = every
            self.save = save
        }
    }

    /// Runs `adaptor` over `stream` from its current position to the end, or, with `resume`, from the
    /// checkpointed position with the checkpointed scores and adaptor state; a checkpoint that does not fit
    /// the stream or the adaptor is an error, prefixed with `resumeLabel` (the CLI's `--resume <path>`).
    ///
    /// Resets the adaptor where the stream says so (`continual`: once, before the first batch;
    /// `reset_each_shift`: at each domain; `episodic`: before every batch), and after a collapse when
    /// `collapse.resetOnCollapse`. Predictions are the argmax of what the method returns for each
    /// batch, before its update; batches the adaptor's guard rejects are scored wrong (see
    /// `RunProgress.record`). When `shouldStop()` turns true between batches the run ends early,
    /// keeping the domains it finished (`completed` false).
    public static func run(method name: String, adaptor: Adaptor, stream: BenchmarkStream,
                           configuration: MethodConfiguration, runningErrorEvery: Int = 10,
                           collapse: CollapsePolicy = CollapsePolicy(),
                           resume: (progress: RunProgress, adaptor: Adaptor.State)? = nil, resumeLabel: String? = nil,
                           checkpointing: Checkpointing? = nil,
                           progress: ((ProgressEvent) -> Void)? = nil,
                           shouldStop: () -> Bool = { false }) throws -> RunResult {
        let start = DispatchTime.now().uptimeNanoseconds
        ProcessMemory.resetPeak()
        let domains = stream.domains
        var state = RunProgress(domainCount: domains.count, collapse: collapse)
        if let resume {
            func refuse(_ message: String) -> RuntimeError {
                RuntimeError((resumeLabel.map { "\($0): " } ?? "") + (message.hasPrefix("\(name): ") ? message : "\(name): \(message)"))
            }
            guard resume.progress.seen.count == domains.count, resume.progress.monitor.policy == collapse else {
                throw refuse("the checkpoint was taken on another stream or collapse policy")
            }
            // The whole record, against this stream: a hand-edited one is refused here, naming the field, rather
            // than indexing out of range or scoring wrong numbers below.
            if let problem = resume.progress.problem(on: stream) {
                throw refuse("the checkpoint's progress does not fit this stream: \(problem)")
            }
            state = resume.progress
            do { try adaptor.restoreState(resume.adaptor) } catch let e as AdaptationError { throw refuse(e.message) }
            adaptor.timer.seconds = state.phaseSeconds
            try stream.seek(toBatch: state.nextBatch)
        }
        let elapsedBefore = state.elapsedSeconds
        func elapsed() -> Double { elapsedBefore + Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
        let batchCount = stream.batchCount
        // Batches per domain, for progress lines (in mixed_domains each domain spans its whole mix).
        let domainBatches = stream.domainBatchRanges()
        var interrupted = false

        func finishDomain(_ d: Int) {
            guard !state.finishedDomains.contains(d) else { return }
            state.finishedDomains.append(d)
            let r = DomainResult(name: domains[d].name, severity: domains[d].severity, samples: state.seen[d], correct: state.correct[d])
            state.domainResults.append(r)
            progress?(event(.domainFinished(r), domain: d))
        }

        func event(_ kind: ProgressEvent.Kind, domain d: Int) -> ProgressEvent {
            let ips = state.adaptSeconds > 0 ? Double(state.totalSeen) / state.adaptSeconds : 0
            let perBatch = state.batches > 0 ? elapsed() / Double(state.batches) : 0
            let inDomain = domainBatches[d]
            return ProgressEvent(kind: kind, method: name, domain: d + 1, domainCount: domains.count,
                                 domainName: "\(domains[d].name)\(domains[d].severity)",
                                 batchInDomain: max(0, min(state.batches - inDomain.lowerBound, inDomain.count)),
                                 batchesInDomain: inDomain.count, batch: state.batches, batchCount: batchCount,
                                 runningError: state.errorOverAllSamples,
                                 imagesPerSecond: ips, eta: perBatch * Double(batchCount - state.batches), elapsed: elapsed())
        }

        func save() throws {
            guard let checkpointing else { return }
            state.elapsedSeconds = elapsed()
            state.phaseSeconds = adaptor.timer.seconds
            try checkpointing.save(state, adaptor.captureState())
        }

        while true {
            if shouldStop() { interrupted = true; break }
            let t0 = DispatchTime.now().uptimeNanoseconds
            guard let batch = try stream.next() else { break }
            let t1 = DispatchTime.now().uptimeNanoseconds
            state.dataSeconds += Double(t1 - t0) / 1e9
            if batch.resetBefore { adaptor.reset() }
            let result: Adaptor.StepResult
            do {
                result = try adaptor.process(batch.images)
            } catch let e as AdaptationError {
                throw RuntimeError("\(name): batch \(batch.batchIndex + 1) of \(batchCount): \(e.message)")
            }
            state.adaptSeconds += Double(DispatchTime.now().uptimeNanoseconds - t1) / 1e9
            if let event = state.record(batch, result), event.reset { adaptor.reset() }
            // A domain is finished once the stream has moved past its last batch.
            let current = batch.domainIndex.last!
            if let last = state.lastDomain, last != current, stream.configuration.setting != .mixed_domains { finishDomain(last) }
            state.lastDomain = current
            if runningErrorEvery > 0 && (state.batches % runningErrorEvery == 0 || state.batches == batchCount) {
                state.runningError.append(RunningErrorPoint(samples: state.totalSeen, error: state.errorOverAllSamples))
            }
            progress?(event(.batch, domain: current))
            if let checkpointing, checkpointing.every > 0, state.batches % checkpointing.every == 0, state.batches < batchCount {
                try save()
            }
        }
        if !interrupted {
            for d in domains.indices { finishDomain(d) }
        } else if stream.configuration.setting != .mixed_domains, let last = state.lastDomain,
                  domainBatches[last].upperBound <= state.batches {
            finishDomain(last)
        }
        try save()
        // Report domains in stream order; in mixed_domains, not those the cut left without images (no error to report).
        let ordered = domains.indices.filter(state.finishedDomains.contains).map { d in
            state.domainResults[state.finishedDomains.firstIndex(of: d)!]
        }.filter { $0.samples > 0 }
        // In mixed_domains, as the reference (test_time.py scores one "mixed" domain per severity): the error over each
        // severity's mixed stream, averaged over the severities.
        let meanError = RunResult.averageError(of: ordered, mixedDomains: stream.configuration.setting == .mixed_domains)
        var phases = adaptor.timer.seconds
        phases["data"] = state.dataSeconds
        var result = RunResult(method: name, setting: stream.configuration.setting.rawValue, meanError: meanError, domains: ordered,
                               imagesPerSecond: state.adaptSeconds > 0 ? Double(state.totalSeen) / state.adaptSeconds : 0,
                               seconds: elapsed(), peakMemoryBytes: ProcessMemory.peakResidentBytes, phaseSeconds: phases,
                               runningError: state.runningError, batches: state.batches, totalBatches: batchCount,
                               completed: !interrupted, methodConfiguration: configuration,
                               errorOverAllSamples: state.errorOverAllSamples)
        result.stability = state.stability
        return result
    }
}

extension RunProgress {
    /// What is wrong with this record, as "field: what was expected", or nil: the record of a run resumed from a
    /// file someone may have edited. Checked against `stream` when given (the run the record continues), else in
    /// itself (one count per domain as `seen` has, indices in range, totals, finished domains and their results).
    ///
    /// What `record` and `BenchmarkRunner.run` keep true: `seen[d]` counts the samples of domain `d` in the
    /// `batches` stream batches before `nextBatch`; `correct[d]` is at most `seen[d]`; the totals are their sums;
    /// `lastDomain` is the domain of the last sample scored (none before the first batch); each finished domain
    /// is listed once, with the result `DomainResult(seen[d], correct[d])` at the same place in `domainResults`
    /// (a domain is finished once the stream has moved past it, so its counts no longer change).
    func problem(on stream: BenchmarkStream?) -> String? {
        let n = stream?.domains.count ?? seen.count
        let domainCount = stream == nil ? "seen has \(n)" : "the stream has \(n) domains"
        guard seen.count == n else { return "seen has \(seen.count) entries, one per domain; \(domainCount)" }
        guard correct.count == n else { return "correct has \(correct.count) entries, one per domain; \(domainCount)" }
        guard nextBatch >= 0 else { return "nextBatch is \(nextBatch); expected a batch index, 0 or more" }
        if let stream, nextBatch > stream.batchCount {
            return "nextBatch is \(nextBatch); the stream has \(stream.batchCount) batches"
        }
        guard (0...nextBatch).contains(batches) else {
            return "batches is \(batches); expected 0...\(nextBatch) (the batches scored, all before nextBatch \(nextBatch))"
        }
        // The samples of each domain in the batches scored: (nextBatch − batches)..<nextBatch.
        var expected: [Int]?
        if let stream {
            var counts = [Int](repeating: 0, count: n)
            for k in (nextBatch - batches)..<nextBatch {
                for s in stream.samples[stream.sampleRange(ofBatch: k)] { counts[s.domainIndex] += 1 }
            }
            expected = counts
        }
        for d in 0..<n {
            guard seen[d] >= 0 else { return "seen[\(d)] is \(seen[d]); expected a count, 0 or more" }
            if let stream, let expected, seen[d] != expected[d] {
                return "seen[\(d)] is \(seen[d]); the \(batches) batches scored (\(nextBatch - batches)..<\(nextBatch)) hold "
                    + "\(expected[d]) samples of domain \(d) (\(stream.domains[d]), \(stream.domains[d].sampleCount) samples in all)"
            }
            guard (0...seen[d]).contains(correct[d]) else {
                return "correct[\(d)] is \(correct[d]); expected 0...\(seen[d]) (seen[\(d)])"
            }
        }
        /// The sum of `xs`, nil when it overflows.
        func sum(_ xs: [Int]) -> Int? {
            var s = 0
            for x in xs {
                let (r, overflow) = s.addingReportingOverflow(x)
                if overflow { return nil }
                s = r
            }
            return s
        }
        let seenSum = sum(seen), correctSum = sum(correct)
        guard seenSum == totalSeen else {
            return "totalSeen is \(totalSeen); the seen counts add up to \(seenSum.map { "\($0)" } ?? "more than \(Int.max)")"
        }
        guard correctSum == totalCorrect else {
            return "totalCorrect is \(totalCorrect); the correct counts add up to \(correctSum.map { "\($0)" } ?? "more than \(Int.max)")"
        }
        if let d = lastDomain {
            guard (0..<n).contains(d) else { return "lastDomain is \(d); expected a domain index in 0..<\(n)" }
        }
        if batches == 0 {
            if let d = lastDomain { return "lastDomain is \(d), but no batch was scored (batches is 0); expected none" }
        } else if let stream {
            let last = stream.samples[stream.sampleRange(ofBatch: nextBatch - 1).upperBound - 1].domainIndex
            guard lastDomain == last else {
                return "lastDomain is \(lastDomain.map { "\($0)" } ?? "absent"); the last batch scored (\(nextBatch - 1)) ends in domain \(last)"
            }
        } else if lastDomain == nil {
            return "lastDomain is absent, but \(batches) batches were scored; expected the domain of the last one"
        }
        guard finishedDomains.count == domainResults.count else {
            return "finishedDomains lists \(finishedDomains.count) domains and domainResults holds \(domainResults.count) results; "
                + "expected one result per finished domain, in the same order"
        }
        var listed = Set<Int>()
        for (k, d) in finishedDomains.enumerated() {
            guard (0..<n).contains(d) else { return "finishedDomains[\(k)] is \(d); expected a domain index in 0..<\(n)" }
            guard listed.insert(d).inserted else { return "finishedDomains[\(k)] is \(d), which is listed before; expected each domain once" }
            let r = domainResults[k]
            let name = stream?.domains[d].name ?? r.name, severity = stream?.domains[d].severity ?? r.severity
            let want = DomainResult(name: name, severity: severity, samples: seen[d], correct: correct[d])
            guard r == want else {
                return "domainResults[\(k)] is \(r.name)\(r.severity): \(r.samples) samples, \(r.correct) correct, error \(r.error); "
                    + "finishedDomains[\(k)] is domain \(d), expected \(want.name)\(want.severity): \(want.samples) samples (seen[\(d)]), "
                    + "\(want.correct) correct (correct[\(d)]), error \(want.error)"
            }
        }
        if let problem = monitor.problem(batchLimit: stream.map { min($0.configuration.batchSize, $0.totalSamples) } ?? Int.max) {
            return problem
        }
        var times: [(field: String, seconds: Double)] = [(field: "adaptSeconds", seconds: adaptSeconds),
                                                         (field: "dataSeconds", seconds: dataSeconds),
                                                         (field: "elapsedSeconds", seconds: elapsedSeconds)]
        for (phase, t) in phaseSeconds.sorted(by: { $0.key < $1.key }) { times.append((field: "phaseSeconds[\(phase)]", seconds: t)) }
        if let bad = times.first(where: { !($0.seconds.isFinite && $0.seconds >= 0) }) {
            return "\(bad.field) is \(bad.seconds); expected a finite number of seconds, 0 or more"
        }
        // The running error goes into the results as it is read.
        return RunningErrorPoint.problem(runningError, samples: totalSeen, total: "totalSeen")
    }
}

extension BenchmarkStream {
    /// For each domain, the batches (by index) holding its samples, in one pass over the stream's plan.
    public func domainBatchRanges() -> [Range<Int>] {
        var lo = [Int?](repeating: nil, count: domains.count)
        var hi = [Int](repeating: 0, count: domains.count)
        for k in 0..<batchCount {
            for s in samples[sampleRange(ofBatch: k)] {
                if lo[s.domainIndex] == nil { lo[s.domainIndex] = k }
                hi[s.domainIndex] = k + 1
            }
        }
        return domains.indices.map { (lo[$0] ?? 0)..<hi[$0] }
    }
}
