import Foundation

/// A bit-exact port of the parts of numpy's legacy `np.random` (`RandomState`, what `np.random.seed`,
/// `np.random.shuffle` and `np.random.dirichlet` use) that mariodoebler's Dirichlet ordering draws from, so that
/// `BenchmarkStream.dirichletOrder` gives the reference's order.
///
/// Matched exactly (checked against numpy 2.4 outputs in `Tests/Fixtures/stream/numpy_dirichlet.json`):
/// - `np.random.seed(n)` for `0 ≤ n < 2^32`: MT19937's `init_genrand(n)` (CPython's `random.seed` seeds the same
///   generator through `init_by_array` instead);
/// - `random_sample` (the 53-bit double of `random.random()`), `standard_normal` (the polar method, which keeps
///   its second value for the next call), `standard_exponential` (`-log(1 - U)`), `standard_gamma`
///   (Marsaglia-Tsang above shape 1, the Johnk-style rejection below it, exponential at 1), `dirichlet`
///   (Gamma draws multiplied by the reciprocal of their sequential sum) and `shuffle` (Fisher-Yates from the end,
///   each index drawn by masked rejection, `random_interval`).
///
/// The transcendental functions are the platform's (`log`, `pow`, `sqrt`, as numpy's C code calls them): with
/// glibc, as on Linux, the draws are numpy's to the bit.
public struct NumpyRandomState: Sendable, Equatable {
    private var mt: PythonRandom
    /// The polar method's second normal, kept for the next call (numpy's `has_gauss` / `gauss`).
    private var cachedGauss: Double?

    /// The generator after `np.random.seed(seed)`.
    public init(seed: UInt32) {
        mt = PythonRandom(genrandSeed: seed)
    }

    /// `random_sample()`: a double in [0, 1) from two 32-bit draws (27 and 26 bits).
    public mutating func randomSample() -> Double { mt.random() }

    /// `random_interval(max)`: a uniform integer in `0...max`, drawing 32 bits (64 above `UInt32.max`) masked to
    /// `max`'s bit length until one is at most `max`.
    public mutating func interval(_ max: UInt64) -> UInt64 {
        if max == 0 { return 0 }
        let mask = UInt64.max >> max.leadingZeroBitCount
        while true {
            let value = max <= UInt64(UInt32.max)
                ? UInt64(mt.nextUInt32()) & mask
                : ((UInt64(mt.nextUInt32()) << 32) | UInt64(mt.nextUInt32())) & mask
            if value <= max { return value }
        }
    }

    /// `shuffle(x)` (an array or a list: both paths draw the same): for `i` from `count - 1` down to 1, swap
    /// `x[i]` with `x[interval(i)]`.
    public mutating func shuffle<T>(_ x: inout [T]) {
        guard x.count > 1 else { return }
        for i in stride(from: x.count - 1, through: 1, by: -1) {
            x.swapAt(i, Int(interval(UInt64(i))))
        }
    }

    /// `standard_normal()`: the polar (Marsaglia) method; each accepted pair gives two values, the second kept
    /// for the next call.
    public mutating func standardNormal() -> Double {
        if let g = cachedGauss {
            cachedGauss = nil
            return g
        }
        var x1 = 0.0, x2 = 0.0, r2 = 0.0
        repeat {
            x1 = 2.0 * randomSample() - 1.0
            x2 = 2.0 * randomSample() - 1.0
            r2 = x1 * x1 + x2 * x2
        } while r2 >= 1.0 || r2 == 0.0
        let f = (-2.0 * Foundation.log(r2) / r2).squareRoot()
        cachedGauss = f * x1
        return f * x2
    }

    /// `standard_exponential()`: `-log(1 - U)`.
    public mutating func standardExponential() -> Double {
        -Foundation.log(1.0 - randomSample())
    }

    /// `standard_gamma(shape)` for `shape ≥ 0`.
    public mutating func standardGamma(shape: Double) -> Double {
        if shape == 1.0 { return standardExponential() }
        if shape == 0.0 { return 0.0 }
        if shape < 1.0 {
            while true {
                let u = randomSample()
                let v = standardExponential()
                if u <= 1.0 - shape {
                    let x = Foundation.pow(u, 1.0 / shape)
                    if x <= v { return x }
                } else {
                    let y = -Foundation.log((1 - u) / shape)
                    let x = Foundation.pow(1.0 - shape + shape * y, 1.0 / shape)
                    if x <= v + y { return x }
                }
            }
        }
        let b = shape - 1.0 / 3.0, c = 1.0 / (9 * b).squareRoot()
        while true {
            var x = 0.0, v = 0.0
            repeat {
                x = standardNormal()
                v = 1.0 + c * x
            } while v <= 0.0
            v = v * v * v
            let u = randomSample()
            if u < 1.0 - 0.0331 * (x * x) * (x * x) { return b * v }
            if Foundation.log(u) < 0.5 * x * x + b * (1.0 - v + Foundation.log(v)) { return b * v }
        }
    }

    /// `dirichlet(alpha)` (positive `alpha`): one Gamma draw per entry, each multiplied by `1 / sum`, the sum
    /// taken in order. When every draw underflows to 0 the result is NaN, as numpy's is.
    public mutating func dirichlet(_ alpha: [Double]) -> [Double] {
        var values = [Double](repeating: 0, count: alpha.count)
        var sum = 0.0
        for (j, a) in alpha.enumerated() {
            values[j] = standardGamma(shape: a)
            sum = sum + values[j]
        }
        let inverse = 1 / sum
        for j in values.indices { values[j] = values[j] * inverse }
        return values
    }
}

/// `a.sum()` of a float64 numpy array: numpy's pairwise summation, which differs from a sequential sum in the
/// last bits (and, with magnitudes far apart, by more). Below 8 values a sequential sum; up to 128, eight
/// interleaved accumulators combined as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the remainder in
/// order; above 128, the two halves (the first a multiple of 8 long) summed the same way and added.
public func numpySum(_ x: [Double]) -> Double {
    x.withUnsafeBufferPointer { pairwiseSum($0) }
}

private func pairwiseSum(_ a: UnsafeBufferPointer<Double>) -> Double {
    let n = a.count
    if n < 8 {
        var sum = 0.0
        for v in a { sum += v }
        return sum
    }
    if n <= 128 {
        var r = (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7])
        var i = 8
        while i < n - n % 8 {
            r.0 += a[i]; r.1 += a[i + 1]; r.2 += a[i + 2]; r.3 += a[i + 3]
            r.4 += a[i + 4]; r.5 += a[i + 5]; r.6 += a[i + 6]; r.7 += a[i + 7]
            i += 8
        }
        var sum = ((r.0 + r.1) + (r.2 + r.3)) + ((r.4 + r.5) + (r.6 + r.7))
        while i < n {
            sum += a[i]
            i += 1
        }
        return sum
    }
    var half = n / 2
    half -= half % 8
    return pairwiseSum(UnsafeBufferPointer(rebasing: a[0..<half])) + pairwiseSum(UnsafeBufferPointer(rebasing: a[half...]))
}
