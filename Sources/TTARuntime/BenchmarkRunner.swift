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
    /// checkpointed position with the checkpointed scores and adaptor state.
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
                           resume: (progress: RunProgress, adaptor: Adaptor.State)? = nil,
                           checkpointing: Checkpointing? = nil,
                           progress: ((ProgressEvent) -> Void)? = nil,
                           shouldStop: () -> Bool = { false }) throws -> RunResult {
        let start = DispatchTime.now().uptimeNanoseconds
        ProcessMemory.resetPeak()
        let domains = stream.domains
        var state = RunProgress(domainCount: domains.count, collapse: collapse)
        if let resume {
            guard resume.progress.seen.count == domains.count, resume.progress.monitor.policy == collapse else {
                throw RuntimeError("\(name): the checkpoint was taken on another stream or collapse policy")
            }
            state = resume.progress
            do { try adaptor.restoreState(resume.adaptor) } catch let e as AdaptationError { throw RuntimeError("\(name): \(e.message)") }
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
        // Report domains in stream order.
        let ordered = domains.indices.filter(state.finishedDomains.contains).map { d in
            state.domainResults[state.finishedDomains.firstIndex(of: d)!]
        }
        let meanError = ordered.isEmpty ? 0 : ordered.map(\.error).reduce(0, +) / Double(ordered.count)
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
