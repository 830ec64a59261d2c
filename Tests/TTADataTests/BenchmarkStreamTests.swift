import Foundation
import Testing
import TTATensor
@testable import TTAData

// Python-compatibility data: Tests/Fixtures/stream/python_random.json, written by
// scripts/make_stream_fixtures.py. Every top-level section is named after the script function that
// produced it, and each test below names the function whose data it compares against.
// Benchmarks are small CIFAR-C-layout folders written at test time (`CBFixture`).

/// Reads the JSON files of `Tests/Fixtures/stream/`: `python_random.json` (scripts/make_stream_fixtures.py) and
/// `numpy_dirichlet.json` (scripts/make_dirichlet_fixtures.py).
enum StreamFixtures {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // TTADataTests
        .deletingLastPathComponent()  // Tests
        .appendingPathComponent("Fixtures/stream")
    static let files = ["python_random.json", "numpy_dirichlet.json"]

    nonisolated(unsafe) static let json: [String: [String: Any]] = Dictionary(uniqueKeysWithValues: files.map { name in
        guard let data = try? Data(contentsOf: directory.appendingPathComponent(name)),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return (name, [:]) }
        return (name, object)
    })

    /// The `cases` of the section written by script function `function` into `file`.
    static func section(_ function: String, in file: String = files[0]) -> Any? {
        guard let s = json[file]?[function] as? [String: Any], s["function"] as? String == function else { return nil }
        return s["cases"]
    }

    static func cases(_ function: String, in file: String = files[0]) throws -> [[String: Any]] {
        let c = try #require(section(function, in: file) as? [[String: Any]],
                             "missing section \(function) in \(directory.appendingPathComponent(file).path)")
        #expect(!c.isEmpty)
        return c
    }

    static func int(_ v: Any?) -> Int? { (v as? NSNumber)?.intValue ?? (v as? String).flatMap { Int($0) } }
    static func u64(_ v: Any?) -> UInt64? { (v as? String).flatMap { UInt64($0) } ?? (v as? NSNumber)?.uint64Value }
    static func ints(_ v: Any?) -> [Int]? { (v as? [Any])?.compactMap { int($0) } }

    /// The scripts' `digest` hash: h = (h * 1000003 + v + 1) mod (2^31 - 1) from h = 0.
    static func polyHash(_ values: [Int]) -> Int {
        values.reduce(0) { ($0 * 1_000_003 + $1 + 1) % 2_147_483_647 }
    }

    /// Checks `values` against a case's digest: count, head, sum(i·v), polynomial hash, and `full` when stored.
    static func expectDigest(_ values: [Int], _ c: [String: Any], _ label: String,
                             sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(values.count == int(c["count"]), "\(label): count", sourceLocation: sourceLocation)
        #expect(Array(values.prefix(50)) == ints(c["head"]), "\(label): first 50", sourceLocation: sourceLocation)
        let sum = values.enumerated().reduce(0) { $0 + $1.offset * $1.element }
        #expect(sum == int(c["sum_iv"]), "\(label): sum(i*v)", sourceLocation: sourceLocation)
        #expect(polyHash(values) == int(c["poly"]), "\(label): polynomial hash", sourceLocation: sourceLocation)
        if let full = ints(c["full"]) {
            #expect(values == full, "\(label): full list", sourceLocation: sourceLocation)
        }
    }
}

@Suite("BenchmarkStream")
struct BenchmarkStreamTests {
    static let three = ["gaussian_noise", "shot_noise", "impulse_noise"]

    func stream(_ f: CBFixture, _ cfg: StreamConfiguration) throws -> BenchmarkStream {
        try BenchmarkStream(benchmark: try CorruptionBenchmark(directory: f.folder), configuration: cfg)
    }

    func allBatches(_ s: BenchmarkStream) throws -> [StreamBatch] {
        s.restart()
        var out: [StreamBatch] = []
        while let b = try s.next() { out.append(b) }
        return out
    }

    // MARK: PythonRandom against CPython

    /// Data: `shuffle_cases` of scripts/make_stream_fixtures.py.
    @Test func shuffleMatchesPython() throws {
        for c in try StreamFixtures.cases("shuffle_cases") {
            let seed = try #require(StreamFixtures.u64(c["seed"])), n = try #require(StreamFixtures.int(c["n"]))
            var rng = PythonRandom(seed: seed)
            var x = Array(0..<n)
            rng.shuffle(&x)
            StreamFixtures.expectDigest(x, c, "shuffle seed \(seed) n \(n)")
        }
    }

    /// Data: `sample_cases` of scripts/make_stream_fixtures.py (both the pool and the set branch).
    @Test func sampleMatchesPython() throws {
        var methods = Set<String>()
        for c in try StreamFixtures.cases("sample_cases") {
            let seed = try #require(StreamFixtures.u64(c["seed"]))
            let n = try #require(StreamFixtures.int(c["n"])), k = try #require(StreamFixtures.int(c["k"]))
            let method = try #require(c["method"] as? String)
            methods.insert(method)
            #expect((n <= PythonRandom.sampleSetSize(k)) == (method == "pool"), "branch for n \(n) k \(k)")
            var rng = PythonRandom(seed: seed)
            StreamFixtures.expectDigest(rng.sample(Array(0..<n), k: k), c, "sample seed \(seed) n \(n) k \(k) (\(method))")
        }
        #expect(methods == ["pool", "set"])
    }

    /// Data: `getrandbits_cases` of scripts/make_stream_fixtures.py.
    @Test func getrandbitsMatchesPython() throws {
        for c in try StreamFixtures.cases("getrandbits_cases") {
            let seed = try #require(StreamFixtures.u64(c["seed"]))
            let bits = try #require(StreamFixtures.ints(c["bits"]))
            let values = try #require((c["values"] as? [String])?.compactMap { UInt64($0) })
            var rng = PythonRandom(seed: seed)
            #expect(bits.map { rng.getrandbits($0) } == values, "seed \(seed)")
        }
    }

    /// Data: `randbelow_cases` of scripts/make_stream_fixtures.py.
    @Test func randbelowMatchesPython() throws {
        for c in try StreamFixtures.cases("randbelow_cases") {
            let seed = try #require(StreamFixtures.u64(c["seed"]))
            let bounds = try #require((c["bounds"] as? [String])?.compactMap { Int($0) })
            let values = try #require((c["values"] as? [String])?.compactMap { Int($0) })
            var rng = PythonRandom(seed: seed)
            #expect(bounds.map { rng.randbelow($0) } == values, "seed \(seed)")
        }
    }

    /// Data: `random_cases` of scripts/make_stream_fixtures.py (compared exactly via x · 2^53 and the repr).
    @Test func randomMatchesPython() throws {
        for c in try StreamFixtures.cases("random_cases") {
            let seed = try #require(StreamFixtures.u64(c["seed"]))
            let scaled = try #require((c["scaled"] as? [String])?.compactMap { UInt64($0) })
            let reprs = try #require((c["repr"] as? [String])?.compactMap { Double($0) })
            var rng = PythonRandom(seed: seed)
            let xs = (0..<scaled.count).map { _ in rng.random() }
            #expect(xs.map { UInt64($0 * 9_007_199_254_740_992.0) } == scaled, "seed \(seed)")
            #expect(xs == reprs, "seed \(seed)")
        }
    }

    /// Data: `doebler_domain_order` of scripts/make_stream_fixtures.py.
    @Test func domainOrderMatchesMariodoebler() throws {
        for c in try StreamFixtures.cases("doebler_domain_order") {
            let seed = try #require(StreamFixtures.u64(c["seed"])), n = try #require(StreamFixtures.int(c["n"]))
            let k = StreamFixtures.int(c["k"])
            let order = BenchmarkStream.domainOrder(count: n, take: k, order: .shuffled, seed: seed)
            StreamFixtures.expectDigest(order, c, "domain order seed \(seed) n \(n) k \(String(describing: k))")
        }
    }

    /// Data: `doebler_domain_order` of scripts/make_stream_fixtures.py, through a whole stream over a
    /// 1×1×1-pixel benchmark with 10,000 rows per severity (cases with n = 10000).
    @Test func streamOrderMatchesMariodoeblerAtCIFARSize() throws {
        let f = try CBFixture.make(["fog", "snow"], k: 10_000, classes: 10, height: 1, width: 1, channels: 1)
        let bench = try CorruptionBenchmark(directory: f.folder)
        for c in try StreamFixtures.cases("doebler_domain_order") where StreamFixtures.int(c["n"]) == 10_000 {
            let seed = try #require(StreamFixtures.u64(c["seed"]))
            let k = StreamFixtures.int(c["k"])
            let s = try BenchmarkStream(benchmark: bench, configuration: StreamConfiguration(
                corruptions: ["fog", "snow"], severities: [5, 2], samplesPerDomain: k, batchSize: 200, order: .shuffled, seed: seed))
            #expect(s.domains.count == 4)
            for d in 0..<4 {
                let rows = s.samples.filter { $0.domainIndex == d }.map(\.index)
                StreamFixtures.expectDigest(rows, c, "stream domain \(d) seed \(seed) k \(String(describing: k))")
            }
        }
    }

    /// Data: `doebler_mixed_order` of scripts/make_stream_fixtures.py (sample id = domain · n + row).
    @Test func mixedOrderMatchesMariodoebler() throws {
        let big = try CBFixture.make(CorruptionBenchmark.standardCorruptions, k: 10_000, classes: 10, height: 1, width: 1, channels: 1)
        let small = try CBFixture.make(Self.three, k: 40, classes: 4)
        for c in try StreamFixtures.cases("doebler_mixed_order") {
            let seed = try #require(StreamFixtures.u64(c["seed"]))
            let d = try #require(StreamFixtures.int(c["domains"])), n = try #require(StreamFixtures.int(c["n"]))
            let k = StreamFixtures.int(c["k_per_domain"])
            let f = n == 10_000 ? big : small
            let names = Array((n == 10_000 ? CorruptionBenchmark.standardCorruptions : Self.three).prefix(d))
            let s = try stream(f, StreamConfiguration(setting: .mixed_domains, corruptions: names, samplesPerDomain: k,
                                                      batchSize: 64, order: .shuffled, seed: seed))
            StreamFixtures.expectDigest(s.samples.map { $0.domainIndex * n + $0.index }, c,
                                        "mixed seed \(seed) d \(d) n \(n) k \(String(describing: k))")
        }
    }

    @Test func seedWordsAndInitByArray() {
        // A seed ≥ 2^32 uses two key words; below, one.
        #expect(PythonRandom(seed: 5) == PythonRandom(key: [5]))
        #expect(PythonRandom(seed: (1 << 32) + 5) == PythonRandom(key: [5, 1]))
        #expect(PythonRandom(seed: 1) != PythonRandom(seed: 2))
    }

    // MARK: Domains per setting

    @Test func continualDomainsAndResets() throws {
        let f = try CBFixture.make(Self.three, k: 10, classes: 4)
        let s = try stream(f, StreamConfiguration(setting: .continual, corruptions: ["shot_noise", "gaussian_noise"],
                                                  severities: [5, 3], batchSize: 4, order: .file))
        #expect(s.domains == [
            StreamDomain(name: "shot_noise", severity: 5, sampleCount: 10), StreamDomain(name: "shot_noise", severity: 3, sampleCount: 10),
            StreamDomain(name: "gaussian_noise", severity: 5, sampleCount: 10), StreamDomain(name: "gaussian_noise", severity: 3, sampleCount: 10),
        ])
        #expect(s.domains.map(\.description) == ["shot_noise5", "shot_noise3", "gaussian_noise5", "gaussian_noise3"])
        #expect(s.totalSamples == 40)
        // 10 samples per domain in batches of 4: 4, 4, 2 per domain.
        #expect(s.batchCount == 12)
        let batches = try allBatches(s)
        #expect(batches.map(\.count) == [4, 4, 2, 4, 4, 2, 4, 4, 2, 4, 4, 2])
        #expect(batches.map(\.resetBefore) == [true] + [Bool](repeating: false, count: 11))
        #expect(batches.map(\.batchIndex) == Array(0..<12))
        for b in batches { #expect(Set(b.domainIndex).count == 1, "a batch crosses a domain boundary") }
    }

    /// `tta compare --batch-size 9223372036854775807` is a valid option value; the end of each batch
    /// used to be computed as start + batchSize, which overflowed (a trap) from the second domain on.
    /// Found while checking what the option fuzzer cannot reach (scripts/fuzz.sh).
    @Test func batchSizeUpToIntMax() throws {
        let f = try CBFixture.make(Self.three, k: 10, classes: 4)
        let s = try stream(f, StreamConfiguration(setting: .continual, corruptions: ["shot_noise", "gaussian_noise"],
                                                  severities: [5, 3], batchSize: .max, order: .file))
        #expect(s.batchCount == 4)
        let batches = try allBatches(s)
        #expect(batches.map(\.count) == [10, 10, 10, 10])
        #expect(batches.map { $0.domainIndex[0] } == [0, 1, 2, 3])
    }

    @Test func resetEachShiftResetsAtEveryDomainStart() throws {
        let f = try CBFixture.make(Self.three, k: 5, classes: 4)
        let s = try stream(f, StreamConfiguration(setting: .reset_each_shift, corruptions: Self.three, severities: [5, 4],
                                                  batchSize: 2, order: .shuffled))
        #expect(s.domains.count == 6)
        let batches = try allBatches(s)
        #expect(batches.count == 18)
        for (i, b) in batches.enumerated() {
            #expect(b.resetBefore == (i % 3 == 0), "batch \(i)")
            #expect(b.domainIndex.allSatisfy { $0 == i / 3 })
        }
    }

    @Test func gradualRunsOneToFiveToOne() throws {
        let f = try CBFixture.make(Self.three, k: 3, classes: 3)
        let s = try stream(f, StreamConfiguration(setting: .gradual, corruptions: ["impulse_noise", "gaussian_noise"],
                                                  severities: [5], batchSize: 2))
        let seq = [1, 2, 3, 4, 5, 4, 3, 2, 1]
        #expect(s.domains.map(\.name) == [String](repeating: "impulse_noise", count: 9) + [String](repeating: "gaussian_noise", count: 9))
        #expect(s.domains.map(\.severity) == seq + seq)
        #expect(s.domains.allSatisfy { $0.sampleCount == 3 })
        let batches = try allBatches(s)
        #expect(batches.count == 36)
        #expect(batches.filter(\.resetBefore).map(\.batchIndex) == [0])
        // Each batch's images are those of its domain's severity.
        let bench = s.benchmark
        for b in batches {
            let d = s.domains[b.domainIndex[0]]
            #expect(b.images == (try bench.images(corruption: d.name, severity: d.severity, indices: b.sampleIndex)))
        }
        // Several severities are run as given.
        let multi = try stream(f, StreamConfiguration(setting: .gradual, corruptions: ["shot_noise"], severities: [2, 4]))
        #expect(multi.domains.map(\.severity) == [2, 4])
        #expect(StreamConfiguration(setting: .gradual, severities: [3]).effectiveSeverities == seq)
        #expect(StreamConfiguration(setting: .continual, severities: [3]).effectiveSeverities == [3])
    }

    @Test func mixedDomainsBookkeeping() throws {
        let k = 12
        let f = try CBFixture.make(Self.three, k: k, classes: 4)
        let s = try stream(f, StreamConfiguration(setting: .mixed_domains, corruptions: Self.three, severities: [5, 2],
                                                  batchSize: 10, order: .shuffled, seed: 3))
        // Domains listed severity by severity.
        #expect(s.domains.map(\.description) == ["gaussian_noise5", "shot_noise5", "impulse_noise5",
                                                 "gaussian_noise2", "shot_noise2", "impulse_noise2"])
        #expect(s.domains.allSatisfy { $0.sampleCount == k })
        #expect(s.totalSamples == 6 * k)
        // Every (domain, row) exactly once.
        #expect(Set(s.samples).count == 6 * k)
        // Two segments of 36 samples, batches of 10: 10, 10, 10, 6 each; one reset.
        let batches = try allBatches(s)
        #expect(batches.map(\.count) == [10, 10, 10, 6, 10, 10, 10, 6])
        #expect(batches.map(\.resetBefore) == [true, false, false, false, false, false, false, false])
        var mixedBatch = false
        for b in batches {
            let segment = b.batchIndex < 4 ? 0..<3 : 3..<6
            #expect(b.domainIndex.allSatisfy(segment.contains), "a batch crosses a severity segment")
            if Set(b.domainIndex).count > 1 { mixedBatch = true }
            // Images and labels follow each sample's own domain.
            for i in 0..<b.count {
                let d = s.domains[b.domainIndex[i]]
                let ci = Self.three.firstIndex(of: d.name)!
                let expected = CBFixture.expectedImage(ci: ci, row: (d.severity - 1) * k + b.sampleIndex[i], height: 2, width: 3, channels: 3)
                #expect(Array(b.images.storage[(i * 18)..<((i + 1) * 18)]) == expected)
                #expect(b.labels[i] == CBFixture.blockLabel(b.sampleIndex[i], classes: 4))
            }
        }
        #expect(mixedBatch, "mixed_domains should interleave domains")
        // Both segments are shuffled with the same re-seeded generator (one get_test_loader per severity).
        #expect(s.samples[0..<36].map { $0.domainIndex * k + $0.index } == s.samples[36...].map { ($0.domainIndex - 3) * k + $0.index })
    }

    @Test func mixedDomainsWithSampleCounts() throws {
        let k = 20
        let f = try CBFixture.make(Self.three, k: k, classes: 4)
        // Shuffled: random.sample(k = 5 · 3) of the shuffled concatenation, so per-domain counts vary.
        let s = try stream(f, StreamConfiguration(setting: .mixed_domains, corruptions: Self.three, samplesPerDomain: 5,
                                                  batchSize: 4, order: .shuffled, seed: 1))
        #expect(s.totalSamples == 15)
        #expect(s.domains.map(\.sampleCount).reduce(0, +) == 15)
        for (d, domain) in s.domains.enumerated() {
            #expect(s.samples.filter { $0.domainIndex == d }.count == domain.sampleCount)
        }
        // File order: the first 5 rows of each block, then shuffled.
        let fo = try stream(f, StreamConfiguration(setting: .mixed_domains, corruptions: Self.three, samplesPerDomain: 5,
                                                   batchSize: 4, order: .file, seed: 1))
        #expect(fo.domains.map(\.sampleCount) == [5, 5, 5])
        #expect(Set(fo.samples) == Set((0..<3).flatMap { d in (0..<5).map { StreamSample(domainIndex: d, index: $0) } }))
        var rng = PythonRandom(seed: 1)
        var expected = (0..<3).flatMap { d in (0..<5).map { StreamSample(domainIndex: d, index: $0) } }
        rng.shuffle(&expected)
        #expect(fo.samples == expected)
    }

    @Test func correlatedSortsEachDomainByLabelStably() throws {
        let k = 30
        let f = try CBFixture.make(Self.three, k: k, classes: 4)
        for order in SampleOrder.allCases {
            let s = try stream(f, StreamConfiguration(setting: .correlated, corruptions: ["shot_noise", "impulse_noise"],
                                                      batchSize: 7, order: order, seed: 2))
            let base = BenchmarkStream.domainOrder(count: k, take: nil, order: order, seed: 2)
            for d in 0..<2 {
                let rows = s.samples.filter { $0.domainIndex == d }.map(\.index)
                let labels = rows.map { CBFixture.blockLabel($0, classes: 4) }
                #expect(labels == labels.sorted(), "\(order): labels sorted")
                // Stable: within a label, rows keep the base (shuffled or file) order.
                let expected = (0..<4).flatMap { l in base.filter { CBFixture.blockLabel($0, classes: 4) == l } }
                #expect(rows == expected, "\(order): stable")
            }
            let batches = try allBatches(s)
            #expect(batches.map(\.count) == [7, 7, 7, 7, 2, 7, 7, 7, 7, 2])
            #expect(batches.filter(\.resetBefore).map(\.batchIndex) == [0])
            for b in batches { #expect(b.labels == b.labels.sorted()) }
        }
    }

    @Test func episodicResetsBeforeEveryBatch() throws {
        let f = try CBFixture.make(Self.three, k: 5, classes: 4)
        for setting in StreamSetting.allCases {
            let s = try stream(f, StreamConfiguration(setting: setting, corruptions: Self.three, batchSize: 2, episodic: true))
            let batches = try allBatches(s)
            #expect(!batches.isEmpty && batches.allSatisfy(\.resetBefore), "\(setting)")
            #expect((0..<s.batchCount).allSatisfy { s.resetBefore(batch: $0) })
        }
    }

    // MARK: Orders, sample counts, batching

    @Test func fileOrderTakesTheFirstRowsOfEachBlock() throws {
        let k = 10
        let f = try CBFixture.make(Self.three, k: k, classes: 4)
        let s = try stream(f, StreamConfiguration(corruptions: ["impulse_noise"], severities: [3], samplesPerDomain: 7,
                                                  batchSize: 3, order: .file))
        #expect(s.samples.map(\.index) == Array(0..<7))
        let batches = try allBatches(s)
        #expect(batches.map(\.sampleIndex) == [[0, 1, 2], [3, 4, 5], [6]])
        let expected = (0..<7).flatMap { CBFixture.expectedImage(ci: 2, row: 2 * k + $0, height: 2, width: 3, channels: 3) }
        #expect(batches.flatMap(\.images.storage) == expected)
        #expect(batches.flatMap(\.labels) == (0..<7).map { CBFixture.blockLabel($0, classes: 4) })
        #expect(batches[0].images.shape == [3, 3, 2, 3] && batches[2].images.shape == [1, 3, 2, 3])
    }

    @Test func shuffledOrderIsPythonsAndSampleAlwaysApplies() throws {
        let k = 10
        let f = try CBFixture.make(Self.three, k: k, classes: 4)
        let all = try stream(f, StreamConfiguration(corruptions: ["gaussian_noise"], order: .shuffled, seed: 7))
        var rng = PythonRandom(seed: 7)
        var rows = Array(0..<k)
        rng.shuffle(&rows)
        #expect(all.samples.map(\.index) == rows)
        // samplesPerDomain == all rows still applies random.sample (as NUM_EX != -1 does), reordering.
        let sampled = try stream(f, StreamConfiguration(corruptions: ["gaussian_noise"], samplesPerDomain: k, order: .shuffled, seed: 7))
        #expect(sampled.samples.map(\.index) == rng.sample(rows, k: k))
        #expect(Set(sampled.samples.map(\.index)) == Set(0..<k))
    }

    @Test func iterationRestartSeekAndRandomAccess() throws {
        let f = try CBFixture.make(Self.three, k: 5, classes: 4)
        let s = try stream(f, StreamConfiguration(corruptions: Self.three, batchSize: 2))
        #expect(s.batchCount == 9)
        let first = try allBatches(s)
        #expect(try s.next() == nil)
        s.restart()
        #expect(s.position == 0)
        #expect(try s.next()?.images == first[0].images)
        try s.seek(toBatch: 6)
        let resumed = try s.next()
        #expect(resumed?.batchIndex == 6 && resumed?.sampleIndex == first[6].sampleIndex && resumed?.images == first[6].images)
        #expect(try s.batch(at: 4).labels == first[4].labels)
        #expect(s.sampleRange(ofBatch: 2) == 4..<5 && s.sampleRange(ofBatch: 3) == 5..<7)  // 2, 2, 1 per domain
        try s.seek(toBatch: 9)
        #expect(try s.next() == nil)
        expectBenchmarkError(file: "stream configuration", key: "batch", contains: ["cannot seek to batch 10", "9 batches"]) {
            try s.seek(toBatch: 10)
        }
        expectBenchmarkError(file: "stream configuration", key: "batch", contains: ["batch -1 is out of range"]) {
            _ = try s.batch(at: -1)
        }
        // Batch size larger than a domain: one partial batch per domain.
        let big = try stream(f, StreamConfiguration(corruptions: Self.three, batchSize: 100))
        #expect(try allBatches(big).map(\.count) == [5, 5, 5])
    }

    @Test func repeatedCorruptionsAreSeparateDomains() throws {
        let f = try CBFixture.make(Self.three, k: 4, classes: 4)
        let s = try stream(f, StreamConfiguration(setting: .reset_each_shift, corruptions: ["shot_noise", "shot_noise"], batchSize: 4))
        #expect(s.domains.count == 2)
        #expect(try allBatches(s).map(\.resetBefore) == [true, true])
    }

    // MARK: Dirichlet ordering

    @Test func dirichletOrderProperties() throws {
        let classes = 5
        let labels = (0..<400).map { ($0 * 3 + $0 / 7) % classes }
        for delta in [0.01, 0.1, 1.0, 10.0] {
            let a = try BenchmarkStream.dirichletOrder(labels: labels, delta: delta, seed: 11)
            let b = try BenchmarkStream.dirichletOrder(labels: labels, delta: delta, seed: 11)
            #expect(a == b, "seeded determinism (δ \(delta))")
            #expect(a.sorted() == Array(0..<400), "every sample exactly once (δ \(delta))")
            let c = try BenchmarkStream.dirichletOrder(labels: labels, delta: delta, seed: 12)
            #expect(a != c, "another seed gives another order (δ \(delta))")
            // Classes come in contiguous runs: at most one run per (chunk, class).
            let seq = a.map { labels[$0] }
            let runs = 1 + zip(seq, seq.dropFirst()).filter { $0 != $1 }.count
            #expect(runs <= classes * classes, "δ \(delta): \(runs) runs")
        }
        // Small δ correlates strongly: far fewer label changes than a random order.
        let small = try BenchmarkStream.dirichletOrder(labels: labels, delta: 0.01, seed: 3).map { labels[$0] }
        let changes = zip(small, small.dropFirst()).filter { $0 != $1 }.count
        #expect(changes < 40, "δ 0.01 gives \(changes) label changes")
        // A δ so small that numpy's draws underflow (its proportions turn NaN) is an error naming the option, not a trap.
        let error = #expect(throws: DataError.self) { try BenchmarkStream.dirichletOrder(labels: labels, delta: 1e-320, seed: 11) }
        #expect(error.map { "\($0)".contains("dirichletDelta") && "\($0)".contains("too small for numpy's Dirichlet draw") } == true)
        // A negative class index is refused by name; a huge one (Int.max overflowed the class count) asks for more
        // samples than there are, as too many classes for the samples do.
        #expect(throws: DataError(file: "stream configuration", key: "labels", keyKind: "argument",
                                  message: "the Dirichlet ordering takes class indices from 0, got -1")) {
            try BenchmarkStream.dirichletOrder(labels: [-1] + labels.dropFirst(), delta: 0.1, seed: 11)
        }
        for (bad, chunks, total) in [(Int.max, "\(Int.max) + 1", "more than \(Int.max)"), (399, "400", "4000")] {
            #expect(throws: DataError(file: "stream configuration", key: "dirichletDelta", keyKind: "option",
                                      message: "the Dirichlet ordering needs at least 10 samples in each of the \(chunks) chunks (one per class), "
                                          + "i.e. ≥ \(total) samples, but the domain has 400; use more samples per domain, or a Dirichlet δ of 0 (each domain sorted by label)")) {
                try BenchmarkStream.dirichletOrder(labels: [bad] + labels.dropFirst(), delta: 0.1, seed: 11)
            }
        }
    }

    @Test func correlatedWithDirichletInAStream() throws {
        let k = 60
        let f = try CBFixture.make(Self.three, k: k, classes: 3)
        let cfg = StreamConfiguration(setting: .correlated, corruptions: ["gaussian_noise", "shot_noise"], batchSize: 16,
                                      order: .shuffled, seed: 4, dirichletDelta: 0.1)
        let s = try stream(f, cfg)
        let again = try stream(f, cfg)
        #expect(s.samples == again.samples)
        for d in 0..<2 {
            let rows = s.samples.filter { $0.domainIndex == d }.map(\.index)
            #expect(rows.sorted() == Array(0..<k))
            let base = BenchmarkStream.domainOrder(count: k, take: nil, order: .shuffled, seed: 4)
            let perm = try BenchmarkStream.dirichletOrder(labels: base.map { CBFixture.blockLabel($0, classes: 3) }, delta: 0.1, seed: 4)
            #expect(rows == perm.map { base[$0] })
        }
        let batches = try allBatches(s)
        #expect(batches.map(\.count) == [16, 16, 16, 12, 16, 16, 16, 12])
        #expect(batches.filter(\.resetBefore).map(\.batchIndex) == [0])
    }

    @Test func dirichletNeedsEnoughSamples() throws {
        let f = try CBFixture.make(Self.three, k: 20, classes: 4)
        expectBenchmarkError(file: "stream configuration", key: "dirichletDelta",
                             contains: ["domain gaussian_noise5", "at least 10 samples in each of the 4 chunks", "≥ 40 samples", "has 20"]) {
            _ = try stream(f, StreamConfiguration(setting: .correlated, corruptions: ["gaussian_noise"], dirichletDelta: 0.5))
        }
    }

    // MARK: Configuration validation

    @Test func configurationErrorsNameTheOption() throws {
        let f = try CBFixture.make(["gaussian_noise", "fog", "my_blur"], k: 4, classes: 4)
        let bench = try CorruptionBenchmark(directory: f.folder)
        func check(_ cfg: StreamConfiguration, _ option: String, _ contains: [String],
                   sourceLocation: SourceLocation = #_sourceLocation) {
            expectBenchmarkError(file: "stream configuration", key: option, contains: contains, sourceLocation: sourceLocation) {
                _ = try BenchmarkStream(benchmark: bench, configuration: cfg)
            }
        }
        let valid = "valid: gaussian_noise, fog, my_blur"
        check(StreamConfiguration(corruptions: ["gausian_noise"]), "corruptions", ["unknown corruption 'gausian_noise'", valid])
        check(StreamConfiguration(corruptions: ["fog", "snow"]), "corruptions", ["corruption 'snow' has no file in", valid])
        check(StreamConfiguration(), "corruptions", ["corruption 'shot_noise' has no file"])  // the default 15
        check(StreamConfiguration(corruptions: []), "corruptions", ["is empty", "available: gaussian_noise, fog, my_blur"])
        check(StreamConfiguration(corruptions: ["fog"], severities: []), "severities", ["is empty"])
        check(StreamConfiguration(corruptions: ["fog"], severities: [5, 6]), "severities", ["severity 6 is outside 1...5"])
        check(StreamConfiguration(corruptions: ["fog"], severities: [0]), "severities", ["severity 0 is outside 1...5"])
        check(StreamConfiguration(corruptions: ["fog"], batchSize: 0), "batchSize", ["must be at least 1, got 0"])
        check(StreamConfiguration(corruptions: ["fog"], samplesPerDomain: 0), "samplesPerDomain", ["must be at least 1"])
        check(StreamConfiguration(corruptions: ["fog"], samplesPerDomain: 5), "samplesPerDomain",
              ["5 exceeds the 4 samples per severity"])
        check(StreamConfiguration(corruptions: ["fog"], dirichletDelta: -1), "dirichletDelta", ["finite number ≥ 0"])
        check(StreamConfiguration(corruptions: ["fog"], dirichletDelta: .nan), "dirichletDelta", ["finite number ≥ 0"])
        check(StreamConfiguration(setting: .continual, corruptions: ["fog"], dirichletDelta: 0.1), "dirichletDelta",
              ["only applies to the correlated setting", "continual"])
        // A custom corruption name present in the folder is fine.
        #expect(try BenchmarkStream(benchmark: bench, configuration: StreamConfiguration(corruptions: ["my_blur"])).domains.count == 1)
    }

    @Test func configurationCodableWithDefaults() throws {
        let partial = #"{"setting": "gradual", "batchSize": 64, "seed": 3}"#
        let cfg = try JSONDecoder().decode(StreamConfiguration.self, from: Data(partial.utf8))
        var expected = StreamConfiguration()
        expected.setting = .gradual
        expected.batchSize = 64
        expected.seed = 3
        #expect(cfg == expected)
        #expect(cfg.corruptions == CorruptionBenchmark.standardCorruptions && cfg.severities == [5] && cfg.order == .shuffled)
        let full = StreamConfiguration(setting: .correlated, corruptions: ["fog"], severities: [1, 2], samplesPerDomain: 9,
                                       batchSize: 5, order: .file, seed: 1 << 40, dirichletDelta: 0.25, episodic: true)
        #expect(try JSONDecoder().decode(StreamConfiguration.self, from: JSONEncoder().encode(full)) == full)
        #expect(throws: DecodingError.self) {
            _ = try JSONDecoder().decode(StreamConfiguration.self, from: Data(#"{"setting": "sometimes"}"#.utf8))
        }
        #expect(StreamSetting.allCases.map(\.rawValue) == ["continual", "reset_each_shift", "gradual", "mixed_domains", "correlated"])
    }
}
