import Dispatch
import Foundation
import TTATensor

/// How the domains of a corruption benchmark follow each other and when the model is reset
/// (mariodoebler/test-time-adaptation's `SETTING`).
public enum StreamSetting: String, CaseIterable, Sendable, Codable {
    /// Domains back to back; one reset before the first batch.
    case continual
    /// A reset at the start of every domain (every (corruption, severity) pair; mariodoebler resets
    /// only when the corruption changes, which differs only with several severities).
    case reset_each_shift
    /// Each corruption runs severities 1,2,3,4,5,4,3,2,1 (when one severity is configured), each
    /// (corruption, severity) its own domain; one reset before the first batch.
    case gradual
    /// All corruptions of a severity concatenated and shuffled with the seed into one stream;
    /// one reset before the first batch; every sample keeps its domain index.
    case mixed_domains
    /// `continual`, but each domain's samples are ordered by label (stably sorted, or by the
    /// Dirichlet algorithm when `dirichletDelta > 0`).
    case correlated
}

/// The order of the samples within a domain.
public enum SampleOrder: String, CaseIterable, Sendable, Codable {
    /// The first N rows of each severity block in file order, unshuffled (official Tent / CoTTA CIFAR code).
    case file
    /// `random.seed(seed); random.shuffle(rows)` (then `random.sample(rows, N)` when a sample count is
    /// set), bit-exact with Python, as mariodoebler/test-time-adaptation does.
    case shuffled
}

/// What a `BenchmarkStream` streams. Every field has a default, also when decoding JSON.
public struct StreamConfiguration: Sendable, Codable, Equatable {
    public var setting: StreamSetting
    /// Corruption names in stream order (repeats allowed). Default: the 15 standard corruptions.
    public var corruptions: [String]
    /// Severities (1...5) run for each corruption, in order. Default `[5]`. For `gradual` a single
    /// severity means the sequence 1,2,3,4,5,4,3,2,1 (the configured value itself is not used, as in
    /// mariodoebler); several severities are run as given.
    public var severities: [Int]
    /// Samples per (corruption, severity) domain; nil means all rows of the severity block.
    public var samplesPerDomain: Int?
    public var batchSize: Int
    public var order: SampleOrder
    /// The seed of the shuffles (`random.seed(seed)` in Python terms) and of the Dirichlet ordering.
    public var seed: UInt64
    /// `correlated` only: 0 sorts each domain by label; δ > 0 orders it by the Dirichlet algorithm.
    public var dirichletDelta: Double
    /// Reset before every batch (mariodoebler's `MODEL.EPISODIC`), on top of the setting's resets.
    public var episodic: Bool
    /// Batch size 1 only: the sliding window of the last W images that single-image adaptation uses
    /// (mariodoebler's `TEST.WINDOW_LENGTH`; 1 = none). The stream itself still yields single images;
    /// the adaptor keeps the window.
    public var windowLength: Int

    public init(setting: StreamSetting = .continual,
                corruptions: [String] = CorruptionBenchmark.standardCorruptions,
                severities: [Int] = [5],
                samplesPerDomain: Int? = nil,
                batchSize: Int = 200,
                order: SampleOrder = .shuffled,
                seed: UInt64 = 1,
                dirichletDelta: Double = 0,
                episodic: Bool = false,
                windowLength: Int = 1) {
        self.setting = setting
        self.corruptions = corruptions
        self.severities = severities
        self.samplesPerDomain = samplesPerDomain
        self.batchSize = batchSize
        self.order = order
        self.seed = seed
        self.dirichletDelta = dirichletDelta
        self.episodic = episodic
        self.windowLength = windowLength
    }

    enum CodingKeys: String, CodingKey {
        case setting, corruptions, severities, samplesPerDomain, batchSize, order, seed, dirichletDelta, episodic, windowLength
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = StreamConfiguration()
        setting = try c.decodeIfPresent(StreamSetting.self, forKey: .setting) ?? d.setting
        corruptions = try c.decodeIfPresent([String].self, forKey: .corruptions) ?? d.corruptions
        severities = try c.decodeIfPresent([Int].self, forKey: .severities) ?? d.severities
        samplesPerDomain = try c.decodeIfPresent(Int.self, forKey: .samplesPerDomain)
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? d.batchSize
        order = try c.decodeIfPresent(SampleOrder.self, forKey: .order) ?? d.order
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
        dirichletDelta = try c.decodeIfPresent(Double.self, forKey: .dirichletDelta) ?? d.dirichletDelta
        episodic = try c.decodeIfPresent(Bool.self, forKey: .episodic) ?? d.episodic
        windowLength = try c.decodeIfPresent(Int.self, forKey: .windowLength) ?? d.windowLength
    }

    /// The severity sequence run for each corruption under this configuration's setting.
    public var effectiveSeverities: [Int] {
        setting == .gradual && severities.count == 1 ? [1, 2, 3, 4, 5, 4, 3, 2, 1] : severities
    }
}

/// One (corruption, severity) domain of a stream.
public struct StreamDomain: Sendable, Equatable, Codable, CustomStringConvertible {
    /// The corruption name.
    public var name: String
    public var severity: Int
    /// Samples of this domain in the stream.
    public var sampleCount: Int

    public init(name: String, severity: Int, sampleCount: Int) {
        self.name = name
        self.severity = severity
        self.sampleCount = sampleCount
    }

    /// `gaussian_noise5`, the label mariodoebler's logs use.
    public var description: String { "\(name)\(severity)" }
}

/// One sample's place in a stream: its domain and its row within that domain's severity block.
public struct StreamSample: Sendable, Equatable, Hashable {
    /// Index into `BenchmarkStream.domains`.
    public var domainIndex: Int
    /// Row within the severity block, `0..<samplesPerSeverity` (file row `(severity-1)·K + index`).
    public var index: Int

    public init(domainIndex: Int, index: Int) {
        self.domainIndex = domainIndex
        self.index = index
    }
}

/// A batch of a stream.
public struct StreamBatch: Sendable {
    /// Position of the batch in the stream, `0..<batchCount`.
    public var batchIndex: Int
    /// Float32 NCHW images in [0, 1].
    public var images: Tensor
    public var labels: [Int]
    /// Per sample: index into the stream's `domains`.
    public var domainIndex: [Int]
    /// Per sample: row within its domain's severity block.
    public var sampleIndex: [Int]
    /// True when the model must be reset before adapting on this batch.
    public var resetBefore: Bool

    public var count: Int { labels.count }
}

/// A test stream over a `CorruptionDataset` (`CorruptionBenchmark`, `ImageFolderBenchmark`): the domain sequence, sample order, batching and
/// reset points of one `StreamConfiguration`.
///
/// Batches never cross a domain boundary (one DataLoader per domain with `drop_last=False`, so a
/// domain's last batch may be partial), except in `mixed_domains`, where each severity forms one
/// mixed segment and batches never cross a segment boundary.
///
/// The whole order is computed up front (a few integers per sample); images are read lazily, batch
/// by batch, from the memory-mapped files. `batch(at:)` is random access, `next()` iterates, and
/// `seek(toBatch:)` resumes a run at any batch.
///
/// Compatibility with mariodoebler/test-time-adaptation (`test_time.py`, `datasets/data_loading.py`):
/// - `.shuffled` reproduces its per-domain order exactly: `random.seed(RNG_SEED)` before every
///   (corruption, severity) loader, `random.shuffle(samples)`, then `random.sample(samples, k=NUM_EX)`
///   when `NUM_EX != -1` (here: when `samplesPerDomain` is set, even if it equals the block size).
/// - `mixed_domains` reproduces its order exactly: per severity, the corruptions' blocks are
///   concatenated in configured order, re-seeded, shuffled, and, with `samplesPerDomain = N`, cut by
///   `random.sample(k = N · corruptions.count)` (its `NUM_EX` is a total for the mixed list; per-domain
///   counts then vary). With `.file` order the first N rows of each block are mixed instead.
/// - `correlated` with δ = 0 is exact (a stable sort by label of the shuffled list, as Python's
///   `list.sort`). With δ > 0 it is exact too: `dirichletOrder` runs `sort_by_dirichlet` on numpy's
///   legacy generator (`NumpyRandomState`) seeded as `np.random.seed(seed)`; it gives up after 120 s
///   as the reference does (or `dirichletMaxAttempts` attempts), and refuses a δ whose draws turn NaN.
/// - Differences: with several severities, `reset_each_shift` here resets at every (corruption,
///   severity) domain (as the original Tent protocol), while mariodoebler resets only when the
///   corruption changes; with the default single severity both are the same. Labels are read row for
///   row from `labels.npy` (RobustBench uses the first block for every severity; identical for the
///   distributed files, see `CorruptionBenchmark.labelsRepeatAcrossSeverities`).
public final class BenchmarkStream {
    public let benchmark: any CorruptionDataset
    public let configuration: StreamConfiguration
    /// The (corruption, severity) domains in stream order. For `mixed_domains` they are listed
    /// severity by severity, corruptions in configured order within each.
    public let domains: [StreamDomain]
    /// Every sample in stream order.
    public let samples: [StreamSample]
    /// `samples` ranges of the batches.
    private let batchRanges: [Range<Int>]
    private let resetFlags: [Bool]
    /// The index of the batch `next()` returns.
    public private(set) var position = 0

    public var totalSamples: Int { samples.count }
    public var batchCount: Int { batchRanges.count }

    /// Samples in each chunk the Dirichlet ordering must reach (mariodoebler's `min_size_thresh`).
    public static let dirichletMinChunkSize = 10
    /// Attempts of the Dirichlet ordering before giving up, unless `dirichletTimeLimit` comes first. Small domains
    /// can need thousands (one seed of 120 samples in 10 classes at δ 0.1 takes 2,705 in the reference too).
    public static let dirichletMaxAttempts = 1_000_000
    /// Seconds the Dirichlet ordering tries before giving up: mariodoebler's `time_duration`.
    public static let dirichletTimeLimit = 120.0
    /// The most classes (chunks) the Dirichlet ordering takes: ImageNet-C's 1000, the most of the benchmarks
    /// `tta` reads (CIFAR-10-C 10, CIFAR-100-C 100, Tiny-ImageNet-C 200). Its work and memory grow with the
    /// square of the class count.
    public static let dirichletMaxClasses = 1000

    /// Validates `configuration` against `benchmark` and computes the sample order.
    /// - Throws: `DataError` with `file` "stream configuration" and `key` the option at fault.
    public init(benchmark: any CorruptionDataset, configuration: StreamConfiguration) throws {
        self.benchmark = benchmark
        self.configuration = configuration
        let cfg = configuration
        func fail(_ option: String, _ message: String) -> DataError {
            DataError(file: "stream configuration", key: option, keyKind: "option", message: message)
        }

        // Validate.
        guard !cfg.corruptions.isEmpty else {
            throw fail("corruptions", "is empty; available: \(CorruptionBenchmark.listText(benchmark.availableCorruptions))")
        }
        for name in cfg.corruptions where !benchmark.availableCorruptions.contains(name) {
            let known = (CorruptionBenchmark.standardCorruptions + CorruptionBenchmark.extraCorruptions).contains(name)
            throw fail("corruptions", (known ? "corruption '\(name)' has no file in \(benchmark.folder.path)"
                                             : "unknown corruption '\(name)'")
                       + "; valid: \(CorruptionBenchmark.listText(benchmark.availableCorruptions))")
        }
        guard !cfg.severities.isEmpty else { throw fail("severities", "is empty; expected severities in 1...5") }
        if let bad = cfg.severities.first(where: { !(1...CorruptionBenchmark.severityCount).contains($0) }) {
            throw fail("severities", "severity \(bad) is outside 1...5")
        }
        guard cfg.batchSize >= 1 else { throw fail("batchSize", "must be at least 1, got \(cfg.batchSize)") }
        guard cfg.windowLength >= 1 else { throw fail("windowLength", "must be at least 1, got \(cfg.windowLength)") }
        guard cfg.windowLength == 1 || cfg.batchSize == 1 else {
            throw fail("windowLength", "a sliding window of \(cfg.windowLength) images is for single-image streams (batch size 1); the batch size is \(cfg.batchSize)")
        }
        let available = benchmark.samplesPerSeverity
        if let n = cfg.samplesPerDomain {
            guard n >= 1 else { throw fail("samplesPerDomain", "must be at least 1, got \(n) (leave it unset for every sample)") }
            guard n <= available else {
                throw fail("samplesPerDomain", "\(n) exceeds the \(available) samples per severity of \(benchmark.folder.path)")
            }
        }
        guard cfg.dirichletDelta.isFinite, cfg.dirichletDelta >= 0 else {
            throw fail("dirichletDelta", "must be a finite number ≥ 0, got \(cfg.dirichletDelta)")
        }
        if cfg.dirichletDelta > 0 && cfg.setting != .correlated {
            throw fail("dirichletDelta", "\(cfg.dirichletDelta) only applies to the correlated setting (setting is \(cfg.setting.rawValue)); use 0")
        }
        if cfg.dirichletDelta > 0 && cfg.seed > UInt64(UInt32.max) {
            throw fail("seed", Self.dirichletSeedMessage(cfg.seed))
        }

        // Domains and per-domain orders.
        let severities = cfg.effectiveSeverities
        var domains: [StreamDomain] = []
        var samples: [StreamSample] = []
        var ranges: [Range<Int>] = []
        var resets: [Bool] = []
        func addBatches(_ segment: Range<Int>, resetFirst: Bool) {
            var start = segment.lowerBound
            var first = true
            while start < segment.upperBound {
                let end = start + min(cfg.batchSize, segment.upperBound - start)  // batchSize may be Int.max
                ranges.append(start..<end)
                resets.append(cfg.episodic || (first && resetFirst) || ranges.count == 1)
                first = false
                start = end
            }
        }

        if cfg.setting == .mixed_domains {
            for severity in severities {
                let firstDomain = domains.count
                var pool: [StreamSample] = []
                for (c, name) in cfg.corruptions.enumerated() {
                    domains.append(StreamDomain(name: name, severity: severity, sampleCount: 0))
                    let rows = cfg.order == .file ? Array(0..<(cfg.samplesPerDomain ?? available)) : Array(0..<available)
                    pool += rows.map { StreamSample(domainIndex: firstDomain + c, index: $0) }
                }
                var rng = PythonRandom(seed: cfg.seed)
                rng.shuffle(&pool)
                if cfg.order == .shuffled, let n = cfg.samplesPerDomain {
                    pool = rng.sample(pool, k: n * cfg.corruptions.count)
                }
                for s in pool { domains[s.domainIndex].sampleCount += 1 }
                let start = samples.count
                samples += pool
                addBatches(start..<samples.count, resetFirst: false)
            }
        } else {
            for name in cfg.corruptions {
                for severity in severities {
                    var rows = Self.domainOrder(count: available, take: cfg.samplesPerDomain, order: cfg.order, seed: cfg.seed)
                    if cfg.setting == .correlated {
                        let blockLabels = benchmark.labels(ofSeverity: severity)
                        let labels = rows.map { blockLabels[blockLabels.startIndex + $0] }
                        if cfg.dirichletDelta > 0 {
                            let perm: [Int]
                            do {
                                perm = try Self.dirichletOrder(labels: labels, delta: cfg.dirichletDelta, seed: cfg.seed)
                            } catch let e as DataError {
                                throw fail("dirichletDelta", "domain \(name)\(severity): \(e.message)")
                            }
                            rows = perm.map { rows[$0] }
                        } else {
                            let perm = (0..<rows.count).sorted { (labels[$0], $0) < (labels[$1], $1) }
                            rows = perm.map { rows[$0] }
                        }
                    }
                    let d = domains.count
                    domains.append(StreamDomain(name: name, severity: severity, sampleCount: rows.count))
                    let start = samples.count
                    samples += rows.map { StreamSample(domainIndex: d, index: $0) }
                    addBatches(start..<samples.count, resetFirst: cfg.setting == .reset_each_shift)
                }
            }
        }
        self.domains = domains
        self.samples = samples
        self.batchRanges = ranges
        self.resetFlags = resets
    }

    /// The rows of one domain block in stream order (before any correlated reordering):
    /// `.file` takes rows `0..<take`; `.shuffled` is Python's
    /// `random.seed(seed); random.shuffle(rows)` then, if `take` is set, `rows = random.sample(rows, take)`.
    /// (mariodoebler applies `random.sample` whenever `NUM_EX != -1`, even when it equals the block
    /// size, which still reorders; so does this.)
    public static func domainOrder(count: Int, take: Int?, order: SampleOrder, seed: UInt64) -> [Int] {
        switch order {
        case .file:
            return Array(0..<min(take ?? count, count))
        case .shuffled:
            var rng = PythonRandom(seed: seed)
            var rows = Array(0..<count)
            rng.shuffle(&rows)
            if let take { rows = rng.sample(rows, k: min(take, count)) }
            return rows
        }
    }

    // MARK: Iteration

    /// The next batch, or nil at the end of the stream.
    public func next() throws -> StreamBatch? {
        guard position < batchCount else { return nil }
        let b = try batch(at: position)
        position += 1
        return b
    }

    /// Starts again from the first batch.
    public func restart() { position = 0 }

    /// Makes `next()` return batch `k` (`k == batchCount` means the end), to resume a run.
    public func seek(toBatch k: Int) throws {
        guard (0...batchCount).contains(k) else {
            throw DataError(file: "stream configuration", key: "batch", keyKind: "option",
                            message: "cannot seek to batch \(k); the stream has \(batchCount) batches (0..<\(batchCount))")
        }
        position = k
    }

    /// Which samples batch `k` holds (a range of `samples`).
    public func sampleRange(ofBatch k: Int) -> Range<Int> { batchRanges[k] }

    /// Whether the model is reset before batch `k`.
    public func resetBefore(batch k: Int) -> Bool { resetFlags[k] }

    /// Batch `k`, read from the files.
    public func batch(at k: Int) throws -> StreamBatch {
        guard (0..<batchCount).contains(k) else {
            throw DataError(file: "stream configuration", key: "batch", keyKind: "option",
                            message: "batch \(k) is out of range; the stream has \(batchCount) batches (0..<\(batchCount))")
        }
        let range = batchRanges[k]
        let items = samples[range]
        let bm = benchmark
        var images = Tensor(shape: [items.count, bm.imageChannels, bm.imageHeight, bm.imageWidth])
        var labels: [Int] = []
        labels.reserveCapacity(items.count)
        try images.withUnsafeMutableBufferPointer { buf in
            var i = items.startIndex
            while i < items.endIndex {
                // A run of samples from the same domain is read in one call (consecutive rows in one copy).
                let d = items[i].domainIndex
                var j = i + 1
                while j < items.endIndex, items[j].domainIndex == d { j += 1 }
                let domain = domains[d]
                let indices = items[i..<j].map(\.index)
                try bm.readImages(corruption: domain.name, severity: domain.severity, indices: indices,
                                  into: buf, firstSlot: i - items.startIndex)
                let block = bm.labels(ofSeverity: domain.severity)
                for r in indices { labels.append(block[block.startIndex + r]) }
                i = j
            }
        }
        return StreamBatch(batchIndex: k, images: images, labels: labels, domainIndex: items.map(\.domainIndex),
                           sampleIndex: items.map(\.index), resetBefore: resetFlags[k])
    }

    // MARK: Dirichlet ordering

    static func dirichletSeedMessage(_ seed: UInt64) -> String {
        "the Dirichlet ordering seeds numpy's generator as the reference does (np.random.seed), which takes seeds up to 2^32 − 1 = 4294967295; got \(seed)"
    }

    /// A temporally correlated order of `labels` (a permutation of `0..<labels.count`): mariodoebler's
    /// `sort_by_dirichlet` (after NOTE), with numpy's legacy generator after `np.random.seed(seed)` as its
    /// `get_test_loader` seeds it, so the order is the reference's to the sample:
    ///
    /// 1. `K` = largest label + 1 chunks; `N` = `labels.count`.
    /// 2. For each class `k` in order: shuffle its positions (`np.random.shuffle`); draw proportions
    ///    `np.random.dirichlet(δ·1_K)`; chunks already holding ≥ N/K samples get proportion 0; divide by their
    ///    sum (numpy's pairwise `sum`); split the shuffled positions at `int(cumsum(p) · n_k)` into the chunks.
    /// 3. Repeat from 1, the draws continuing, until every chunk holds at least `dirichletMinChunkSize` samples.
    ///    The reference gives up after 120 s; here after `timeLimit` seconds (the same 120 s by default) or
    ///    `maxAttempts` attempts, whichever comes first. Neither changes an order that is found.
    /// 4. Output chunk by chunk; within a chunk its classes follow in a shuffled order (`np.random.shuffle`),
    ///    each class a contiguous run in its shuffled order.
    ///
    /// Where numpy's draws become NaN (a δ so small that every Gamma draw of a class underflows to 0, or every
    /// chunk still open got proportion 0), the reference goes on with garbage split points; here that is an error
    /// that names δ. numpy's seed must be below 2^32 (`np.random.seed` refuses larger ones).
    public static func dirichletOrder(labels: [Int], delta: Double, seed: UInt64, maxAttempts: Int = dirichletMaxAttempts,
                                      timeLimit: Double = dirichletTimeLimit) throws -> [Int] {
        let n = labels.count
        func fail(_ message: String) -> DataError {
            DataError(file: "stream configuration", key: "dirichletDelta", keyKind: "option", message: message)
        }
        guard delta > 0, delta.isFinite else { throw fail("must be > 0 for the Dirichlet ordering, got \(delta)") }
        guard let numpySeed = UInt32(exactly: seed) else {
            throw DataError(file: "stream configuration", key: "seed", keyKind: "option", message: dirichletSeedMessage(seed))
        }
        guard n > 0 else { return [] }
        if let label = labels.first(where: { $0 < 0 }) {
            throw DataError(file: "stream configuration", key: "labels", keyKind: "argument",
                            message: "the Dirichlet ordering takes class indices from 0, got \(label)")
        }
        // One chunk per class, each of at least `minChunk` samples (counted without overflowing for huge labels).
        let minChunk = dirichletMinChunkSize
        let (k, kOverflow) = labels.max()!.addingReportingOverflow(1)
        let (needed, neededOverflow) = minChunk.multipliedReportingOverflow(by: k)
        guard !kOverflow, !neededOverflow, n >= needed else {
            let chunks = kOverflow ? "\(Int.max) + 1" : "\(k)", total = kOverflow || neededOverflow ? "more than \(Int.max)" : "\(needed)"
            throw fail("the Dirichlet ordering needs at least \(minChunk) samples in each of the \(chunks) chunks (one per class), i.e. ≥ \(total) samples, but the domain has \(n); use more samples per domain, or a Dirichlet δ of 0 (each domain sorted by label)")
        }
        // The chunks hold a list per class each (k × k lists) and every class draws k proportions per attempt: past
        // ImageNet-C's 1000 classes (labels go up to 99,999) that is tens of gigabytes and hours, so it is refused.
        guard k <= dirichletMaxClasses else {
            throw fail("the Dirichlet ordering takes at most \(dirichletMaxClasses) classes (ImageNet-C's), one chunk each, "
                       + "but the domain's labels go up to \(k - 1) (\(k) classes); use a Dirichlet δ of 0 (each domain sorted by label)")
        }
        var byClass = [[Int]](repeating: [], count: k)
        for (i, l) in labels.enumerated() { byClass[l].append(i) }
        var rng = NumpyRandomState(seed: numpySeed)
        let cap = Double(n) / Double(k)
        let alpha = [Double](repeating: delta, count: k)
        let started = DispatchTime.now().uptimeNanoseconds
        var attempts = 0

        // As the reference's loop: an attempt, then the clock (so at least one attempt is made).
        repeat {
            attempts += 1
            var chunkSize = [Int](repeating: 0, count: k)
            var chunkClass = [[[Int]]](repeating: [[Int]](repeating: [], count: k), count: k)  // [chunk][class]
            for cls in 0..<k {
                var idx = byClass[cls]
                rng.shuffle(&idx)
                var p = rng.dirichlet(alpha)
                for j in 0..<k where !(Double(chunkSize[j]) < cap) { p[j] *= 0 }  // numpy's p * False: NaN stays NaN
                let sum = numpySum(p)
                for j in 0..<k { p[j] /= sum }
                guard p.allSatisfy(\.isFinite) else {
                    throw fail("δ \(delta) is too small for numpy's Dirichlet draw: class \(cls)'s proportions underflow to 0 on every chunk still open, "
                               + "so they cannot be normalised (the reference goes on with NaN split points); use a larger δ, or 0 to sort each domain by label")
                }
                var cum = 0.0, start = 0
                for j in 0..<k {
                    let end: Int
                    if j == k - 1 {
                        end = idx.count
                    } else {
                        cum += p[j]
                        end = min(max(Int(cum * Double(idx.count)), start), idx.count)
                    }
                    chunkClass[j][cls] = Array(idx[start..<end])
                    chunkSize[j] += end - start
                    start = end
                }
            }
            guard chunkSize.min()! >= minChunk else { continue }
            var out: [Int] = []
            out.reserveCapacity(n)
            for chunk in chunkClass {
                var classOrder = Array(0..<k)
                rng.shuffle(&classOrder)
                for cls in classOrder { out += chunk[cls] }
            }
            return out
        } while attempts < maxAttempts && Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9 <= timeLimit
        throw fail("no Dirichlet ordering with every chunk ≥ \(minChunk) samples found in \(attempts) attempts "
                   + "(δ \(delta), \(n) samples, \(k) classes); try another Dirichlet δ or more samples per domain")
    }
}
