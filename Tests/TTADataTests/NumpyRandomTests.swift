import Foundation
import Testing
@testable import TTAData

// numpy-compatibility data: Tests/Fixtures/stream/numpy_dirichlet.json, written by scripts/make_dirichlet_fixtures.py
// (numpy's legacy np.random, and mariodoebler's own sort_by_dirichlet run on it). Each test names the script function
// whose section it compares against; floats are compared bit for bit.

@Suite("NumpyRandom")
struct NumpyRandomTests {
    static let file = "numpy_dirichlet.json"

    /// A `float.hex` string, or a plain JSON number.
    static func double(_ v: Any?) -> Double? { (v as? String).flatMap { Double($0) } ?? (v as? NSNumber)?.doubleValue }
    static func doubles(_ v: Any?) -> [Double]? { (v as? [Any])?.compactMap { double($0) } }

    /// Bitwise equality (NaN equal to NaN), with the first mismatch in the message.
    static func expectBits(_ got: [Double], _ expected: [Double]?, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
        guard let expected else {
            Issue.record("\(label): no expected values", sourceLocation: sourceLocation)
            return
        }
        let same = got.count == expected.count && zip(got, expected).allSatisfy { $0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) }
        #expect(same, "\(label): \(got) != \(expected)", sourceLocation: sourceLocation)
    }

    static func state(_ c: [String: Any]) throws -> NumpyRandomState {
        NumpyRandomState(seed: try #require(StreamFixtures.u64(c["seed"]).flatMap { UInt32(exactly: $0) }))
    }

    /// Data: `legacy_draw_cases`. The draws continue from one call to the next, so the polar method's kept value
    /// (used by the Gamma draws above shape 1) and both shuffle paths are checked in sequence.
    @Test func legacyDrawsMatchNumpy() throws {
        for c in try StreamFixtures.cases("legacy_draw_cases", in: Self.file) {
            var r = try Self.state(c)
            let seed = c["seed"] as? String ?? "?"
            Self.expectBits((0..<6).map { _ in r.randomSample() }, Self.doubles(c["random_sample"]), "seed \(seed) random_sample")
            Self.expectBits((0..<5).map { _ in r.standardNormal() }, Self.doubles(c["standard_normal"]), "seed \(seed) standard_normal")
            Self.expectBits((0..<3).map { _ in r.standardExponential() }, Self.doubles(c["standard_exponential"]),
                            "seed \(seed) standard_exponential")
            let shapes = try #require(Self.doubles(c["shapes"]))
            let gammas = try #require(c["standard_gamma"] as? [Any])
            #expect(shapes.count == gammas.count && shapes.count == 6)
            for (shape, expected) in zip(shapes, gammas) {
                Self.expectBits((0..<4).map { _ in r.standardGamma(shape: shape) }, Self.doubles(expected), "seed \(seed) standard_gamma(\(shape))")
            }
            var array = Array(0..<37)
            r.shuffle(&array)
            #expect(array == StreamFixtures.ints(c["shuffle_array"]), "seed \(seed) shuffle(arange(37))")
            var list = Array(0..<11)
            r.shuffle(&list)
            #expect(list == StreamFixtures.ints(c["shuffle_list"]), "seed \(seed) shuffle(list(range(11)))")
            Self.expectBits((0..<2).map { _ in r.randomSample() }, Self.doubles(c["random_sample_after"]), "seed \(seed) random_sample after")
        }
    }

    /// Data: `dirichlet_cases`, three consecutive draws each (δ from 0.001 to 2.5, 3 to 200 entries).
    @Test func dirichletMatchesNumpy() throws {
        for c in try StreamFixtures.cases("dirichlet_cases", in: Self.file) {
            var r = try Self.state(c)
            let delta = try #require(c["delta"] as? Double), k = try #require(StreamFixtures.int(c["k"]))
            let draws = try #require(c["draws"] as? [Any])
            #expect(draws.count == 3)
            for (i, expected) in draws.enumerated() {
                Self.expectBits(r.dirichlet([Double](repeating: delta, count: k)), Self.doubles(expected),
                                "seed \(c["seed"] ?? "?") δ \(delta) k \(k) draw \(i)")
            }
        }
    }

    /// Data: `pairwise_sum_cases`. Magnitudes 1e-30 to 1e30 make the summation order visible: the sequential sum
    /// differs from numpy's in several cases, and `numpySum` must give numpy's in all.
    @Test func pairwiseSumMatchesNumpy() throws {
        var differsFromSequential = 0
        for c in try StreamFixtures.cases("pairwise_sum_cases", in: Self.file) {
            let values = try #require(Self.doubles(c["values"]))
            let sum = try #require(Self.double(c["sum"])), sequential = try #require(Self.double(c["sequential"]))
            #expect(values.count == StreamFixtures.int(c["n"]))
            #expect(numpySum(values).bitPattern == sum.bitPattern, "n \(values.count): \(numpySum(values)) != numpy's \(sum)")
            if sequential.bitPattern != sum.bitPattern { differsFromSequential += 1 }
        }
        #expect(differsFromSequential >= 3, "only \(differsFromSequential) cases tell the two orders apart")
    }

    /// The labels of a `sort_by_dirichlet_cases` case, rebuilt as the script builds them (checked against its head
    /// and hash).
    static func labels(_ c: [String: Any]) throws -> [Int] {
        let n = try #require(StreamFixtures.int(c["n"])), classes = try #require(StreamFixtures.int(c["classes"]))
        var labels = (0..<n).map { ($0 * 7 + $0 / 13) % classes }
        var python = PythonRandom(seed: 99)
        python.shuffle(&labels)
        #expect(Array(labels.prefix(50)) == StreamFixtures.ints(c["labels_head"]))
        #expect(StreamFixtures.polyHash(labels) == StreamFixtures.int(c["labels_poly"]))
        return labels
    }

    /// Data: `sort_by_dirichlet_cases`: the reference's own function on numpy. 3 to 100 classes, δ 0.01 to 10,
    /// and cases whose first attempts leave a chunk short (up to 2,705 attempts), so the retry loop is covered.
    @Test func dirichletOrderIsTheReferences() throws {
        var retried = 0
        for c in try StreamFixtures.cases("sort_by_dirichlet_cases", in: Self.file) {
            let labels = try Self.labels(c)
            let delta = try #require(c["delta"] as? Double), seed = try #require(StreamFixtures.u64(c["seed"]))
            let order = try BenchmarkStream.dirichletOrder(labels: labels, delta: delta, seed: seed)
            StreamFixtures.expectDigest(order, c, "seed \(seed) δ \(delta) \(c["classes"] ?? "?") classes, \(labels.count) samples")
            if (StreamFixtures.int(c["attempts"]) ?? 0) > 1 { retried += 1 }
        }
        #expect(retried >= 4)
    }

    /// Data: `sort_by_dirichlet_cases`, the case the reference needed 2,705 attempts for: one attempt fewer is
    /// refused with the count in the message, and exactly that many finds the reference's order.
    @Test func dirichletAttemptLimit() throws {
        let c = try #require(try StreamFixtures.cases("sort_by_dirichlet_cases", in: Self.file)
            .first { StreamFixtures.int($0["attempts"]) == 2705 })
        let labels = try Self.labels(c)
        #expect(throws: DataError(file: "stream configuration", key: "dirichletDelta", keyKind: "option",
                                  message: "no Dirichlet ordering with every chunk ≥ 10 samples found in 2704 attempts (δ 0.1, 120 samples, 10 classes); "
                                      + "try another Dirichlet δ or more samples per domain")) {
            try BenchmarkStream.dirichletOrder(labels: labels, delta: 0.1, seed: 1, maxAttempts: 2704)
        }
        StreamFixtures.expectDigest(try BenchmarkStream.dirichletOrder(labels: labels, delta: 0.1, seed: 1, maxAttempts: 2705), c, "2705 attempts")
        // A time limit of 0 s stops after the first attempt (the reference's 120 s check, at its loop's end).
        #expect(throws: DataError(file: "stream configuration", key: "dirichletDelta", keyKind: "option",
                                  message: "no Dirichlet ordering with every chunk ≥ 10 samples found in 1 attempts (δ 0.1, 120 samples, 10 classes); "
                                      + "try another Dirichlet δ or more samples per domain")) {
            try BenchmarkStream.dirichletOrder(labels: labels, delta: 0.1, seed: 1, timeLimit: 0)
        }
    }

    /// numpy's seed is 32 bits (`np.random.seed` refuses more), and a δ whose Gamma draws all underflow makes numpy's
    /// proportions NaN: both are errors that name the option.
    @Test func seedsAndDeltasNumpyCannotTakeAreRefused() throws {
        let labels = (0..<1000).map { ($0 * 7 + $0 / 13) % 10 }
        #expect(throws: DataError(file: "stream configuration", key: "seed", keyKind: "option",
                                  message: "the Dirichlet ordering seeds numpy's generator as the reference does (np.random.seed), "
                                      + "which takes seeds up to 2^32 − 1 = 4294967295; got 4294967296")) {
            try BenchmarkStream.dirichletOrder(labels: labels, delta: 0.1, seed: 1 << 32)
        }
        _ = try BenchmarkStream.dirichletOrder(labels: labels, delta: 0.1, seed: UInt64(UInt32.max))
        // δ 1e-300: every Gamma draw is U^(1e300) = 0, so numpy's first class already divides 0 by 0.
        #expect(throws: DataError(file: "stream configuration", key: "dirichletDelta", keyKind: "option",
                                  message: "δ 1e-300 is too small for numpy's Dirichlet draw: class 0's proportions underflow to 0 on every chunk "
                                      + "still open, so they cannot be normalised (the reference goes on with NaN split points); "
                                      + "use a larger δ, or 0 to sort each domain by label")) {
            try BenchmarkStream.dirichletOrder(labels: labels, delta: 1e-300, seed: 1)
        }
    }
}
