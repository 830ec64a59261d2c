import Foundation
import Testing
import TTAData
import TTAKernels
import TTANN
import TTATensor

/// Where the committed fixtures live: `Tests/Fixtures/`, written by `scripts/make_fixtures.py`.
public let fixturesDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

/// Opens a fixture file by name (e.g. `conv2d.safetensors`).
public func fixture(_ name: String) throws -> SafeTensorsFile {
    try SafeTensorsFile.read(fixturesDirectory.appendingPathComponent(name))
}

/// The largest absolute difference divided by the largest magnitude of `expected`: the error measure
/// every parity test bounds (≤ 1e-4 against PyTorch). Equal infinities match; any other non-finite
/// value, NaN included, is an infinite error.
public func relativeError(_ actual: [Float], _ expected: [Float]) -> Double {
    precondition(actual.count == expected.count)
    var maxDiff = 0.0, scale = 0.0
    for (a, e) in zip(actual, expected) {
        if !a.isFinite || !e.isFinite {
            if a == e { continue }
            return .infinity
        }
        maxDiff = max(maxDiff, abs(Double(a) - Double(e)))
        scale = max(scale, abs(Double(e)))
    }
    return scale == 0 ? maxDiff : maxDiff / scale
}

/// Records an issue at the caller when `actual` and `expected` differ in shape or by more than `tolerance`
/// (see `relativeError`).
public func expectClose(_ actual: Tensor, _ expected: Tensor, tolerance: Double = 1e-4, _ label: String = "",
                        sourceLocation: SourceLocation = #_sourceLocation) {
    guard actual.count == expected.count else {
        Issue.record("\(label): shape \(actual.shape) vs expected \(expected.shape)", sourceLocation: sourceLocation)
        return
    }
    let err = relativeError(actual.storage, expected.storage)
    #expect(err <= tolerance, "\(label): relative error \(err) > \(tolerance)", sourceLocation: sourceLocation)
}

/// Array form of `expectClose`.
public func expectClose(_ actual: [Float], _ expected: [Float], tolerance: Double = 1e-4, _ label: String = "",
                        sourceLocation: SourceLocation = #_sourceLocation) {
    expectClose(Tensor(shape: [actual.count], storage: actual), Tensor(shape: [expected.count], storage: expected),
                tolerance: tolerance, label, sourceLocation: sourceLocation)
}

/// A central finite-difference check of `analytic`, the gradient of `f` at `x`, on `samples` distinct
/// coordinates chosen by a seeded generator (every coordinate when `samples ≥ x.count`). `f` is
/// evaluated in float32 and summed in Double; returns the worst error relative to the largest analytic
/// gradient magnitude.
public func finiteDifferenceError(at x: [Float], analytic: [Float], samples: Int = 24, step h: Float = 1e-2,
                                  seed: UInt64 = 42, _ f: ([Float]) -> Double) -> Double {
    precondition(analytic.count == x.count)
    var g = SeededGenerator(seed: seed)
    var worst = 0.0
    let scale = max(analytic.map { abs(Double($0)) }.max() ?? 0, 1e-6)
    // The first `samples` entries of a seeded Fisher-Yates shuffle of the indices: no coordinate twice.
    var indices = Array(0..<x.count)
    let count = min(samples, x.count)
    for j in 0..<count {
        indices.swapAt(j, j + Int(g.next() % UInt64(x.count - j)))
    }
    for i in indices.prefix(count) {
        var xp = x, xm = x
        xp[i] += h; xm[i] -= h
        let numeric = (f(xp) - f(xm)) / Double(2 * h)
        worst = max(worst, abs(numeric - Double(analytic[i])) / scale)
    }
    return worst
}

/// `Σ y ⊙ r` in Double: the scalar a finite-difference check differentiates.
public func weightedSum(_ y: [Float], _ r: [Float]) -> Double {
    zip(y, r).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
}

/// `count` seeded standard-normal floats.
public func randomFloats(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var g = SeededGenerator(seed: seed)
    return (0..<count).map { _ in g.nextNormal() * scale }
}

/// Runs `body` with `KernelThreads.count == threads`, then restores the previous count.
public func withKernelThreads<T>(_ threads: Int, _ body: () throws -> T) rethrows -> T {
    let saved = KernelThreads.count
    KernelThreads.count = threads
    defer { KernelThreads.count = saved }
    return try body()
}
