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
}

/// Streams a benchmark through an adaptor and scores it: per-domain error, running error, time per
/// phase, peak memory. The shared driver every method runs through.
public enum BenchmarkRunner {
    /// Runs `adaptor` over `stream` from its current position to the end.
    ///
    /// Resets the adaptor where the stream says so (`continual`: once, before the first batch;
    /// `reset_each_shift`: at each domain; `episodic`: before every batch). Predictions are the argmax of
    /// what the method returns for each batch, before its update. When `shouldStop()` turns true
    /// between batches the run ends early, keeping the domains it finished (`completed` false).
    public static func run(method name: String, adaptor: Adaptor, stream: BenchmarkStream,
                           configuration: MethodConfiguration, runningErrorEvery: Int = 10,
                           progress: ((ProgressEvent) -> Void)? = nil,
                           shouldStop: () -> Bool = { false }) throws -> RunResult {
        let start = DispatchTime.now().uptimeNanoseconds
        ProcessMemory.resetPeak()
        let domains = stream.domains
        var correct = [Int](repeating: 0, count: domains.count)
        var seen = [Int](repeating: 0, count: domains.count)
        var running: [RunningErrorPoint] = []
        var totalSeen = 0, totalCorrect = 0, batches = 0
        var adaptSeconds = 0.0, dataSeconds = 0.0
        let batchCount = stream.batchCount
        // Batches per domain, for progress lines (in mixed_domains each domain spans its whole mix).
        let domainBatches = stream.domainBatchRanges()
        var finishedDomains = Set<Int>()
        var domainResults: [DomainResult] = []
        var interrupted = false

        func finishDomain(_ d: Int) {
            guard !finishedDomains.contains(d) else { return }
            finishedDomains.insert(d)
            let r = DomainResult(name: domains[d].name, severity: domains[d].severity, samples: seen[d], correct: correct[d])
            domainResults.append(r)
            progress?(event(.domainFinished(r), domain: d))
        }

        func event(_ kind: ProgressEvent.Kind, domain d: Int) -> ProgressEvent {
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let ips = adaptSeconds > 0 ? Double(totalSeen) / adaptSeconds : 0
            let perBatch = batches > 0 ? elapsed / Double(batches) : 0
            let inDomain = domainBatches[d]
            return ProgressEvent(kind: kind, method: name, domain: d + 1, domainCount: domains.count,
                                 domainName: "\(domains[d].name)\(domains[d].severity)",
                                 batchInDomain: max(0, min(batches - inDomain.lowerBound, inDomain.count)),
                                 batchesInDomain: inDomain.count, batch: batches, batchCount: batchCount,
                                 runningError: totalSeen == 0 ? 0 : 100 * Double(totalSeen - totalCorrect) / Double(totalSeen),
                                 imagesPerSecond: ips, eta: perBatch * Double(batchCount - batches))
        }

        var lastDomain: Int? = nil
        while true {
            if shouldStop() { interrupted = true; break }
            let t0 = DispatchTime.now().uptimeNanoseconds
            guard let batch = try stream.next() else { break }
            let t1 = DispatchTime.now().uptimeNanoseconds
            dataSeconds += Double(t1 - t0) / 1e9
            if batch.resetBefore { adaptor.reset() }
            let output: Tensor
            do {
                output = try adaptor.adapt(batch.images)
            } catch let e as AdaptationError {
                throw RuntimeError("\(name): batch \(batch.batchIndex + 1) of \(batchCount): \(e.message)")
            }
            adaptSeconds += Double(DispatchTime.now().uptimeNanoseconds - t1) / 1e9
            let predictions = output.argmaxRows()
            for (i, p) in predictions.enumerated() {
                let d = batch.domainIndex[i]
                seen[d] += 1
                if p == batch.labels[i] { correct[d] += 1; totalCorrect += 1 }
            }
            totalSeen += predictions.count
            batches += 1
            // A domain is finished once the stream has moved past its last batch.
            let current = batch.domainIndex.last!
            if let last = lastDomain, last != current, stream.configuration.setting != .mixed_domains { finishDomain(last) }
            lastDomain = current
            if runningErrorEvery > 0 && (batches % runningErrorEvery == 0 || batches == batchCount) {
                running.append(RunningErrorPoint(samples: totalSeen, error: 100 * Double(totalSeen - totalCorrect) / Double(totalSeen)))
            }
            progress?(event(.batch, domain: current))
        }
        if !interrupted {
            for d in domains.indices { finishDomain(d) }
        } else if stream.configuration.setting != .mixed_domains, let last = lastDomain,
                  domainBatches[last].upperBound <= batches {
            finishDomain(last)
        }
        // Report domains in stream order.
        let ordered = domains.indices.compactMap { d in domainResults.first { $0.name == domains[d].name && $0.severity == domains[d].severity && finishedDomains.contains(d) } }
        let meanError = ordered.isEmpty ? 0 : ordered.map(\.error).reduce(0, +) / Double(ordered.count)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        var phases = adaptor.timer.seconds
        phases["data"] = dataSeconds
        return RunResult(method: name, setting: stream.configuration.setting.rawValue, meanError: meanError, domains: ordered,
                         imagesPerSecond: adaptSeconds > 0 ? Double(totalSeen) / adaptSeconds : 0, seconds: seconds,
                         peakMemoryBytes: ProcessMemory.peakResidentBytes, phaseSeconds: phases, runningError: running,
                         batches: batches, totalBatches: batchCount, completed: !interrupted, methodConfiguration: configuration,
                         errorOverAllSamples: totalSeen == 0 ? 0 : 100 * Double(totalSeen - totalCorrect) / Double(totalSeen))
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
