import Foundation

/// A bit-exact port of CPython's `random.Random` (the MT19937 Mersenne Twister behind the module
/// functions `random.seed`, `random.shuffle`, `random.sample`, `random.getrandbits`,
/// `random.random`), so a stream can reproduce the test order of Python benchmark code that
/// calls `random.seed(RNG_SEED)` and then `random.shuffle(samples)`.
///
/// Matched exactly (checked against CPython 3.11 outputs in `Tests/Fixtures/stream/`):
/// - `random.seed(n)` for an int `n`: `init_by_array` on the 32-bit little-endian words of
///   `abs(n)` (one word `0` for `n == 0`);
/// - `getrandbits(k)`, `_randbelow(n)` (the rejection loop on `n.bit_length()` bits),
///   `shuffle` (Fisher-Yates from the end) and `sample` (both its pool and its set branch),
///   `random()` (53-bit float).
///
/// Not provided: seeding from strings/bytes/floats (CPython hashes those differently), or
/// `getrandbits` with more than 64 bits.
public struct PythonRandom: Sendable, Equatable {
    private static let n = 624
    private static let m = 397

    private var state: [UInt32]
    private var index: Int

    /// The generator after `random.seed(seed)` (a non-negative Python int).
    public init(seed: UInt64) {
        let lo = UInt32(truncatingIfNeeded: seed), hi = UInt32(truncatingIfNeeded: seed >> 32)
        self.init(key: hi == 0 ? [lo] : [lo, hi])
    }

    /// The generator after `init_by_array(key)` (CPython seeds ints through this with the 32-bit
    /// words of the absolute value, least significant first). `key` must not be empty.
    public init(key: [UInt32]) {
        precondition(!key.isEmpty, "PythonRandom: init_by_array needs at least one key word")
        let n = Self.n
        var mt = Self.initGenrand(19_650_218)
        var i = 1, j = 0
        for _ in 0..<max(n, key.count) {
            mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) &* 1_664_525)) &+ key[j] &+ UInt32(truncatingIfNeeded: j)
            i += 1; j += 1
            if i >= n { mt[0] = mt[n - 1]; i = 1 }
            if j >= key.count { j = 0 }
        }
        for _ in 0..<(n - 1) {
            mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) &* 1_566_083_941)) &- UInt32(i)
            i += 1
            if i >= n { mt[0] = mt[n - 1]; i = 1 }
        }
        mt[0] = 0x8000_0000
        state = mt
        index = n
    }

    /// The generator after MT19937's `init_genrand(seed)`: the seeding of numpy's legacy `np.random.seed(n)`
    /// (`RandomState`), where CPython's `random.seed` goes through `init_by_array`. `NumpyRandomState` draws from it.
    public init(genrandSeed seed: UInt32) {
        state = Self.initGenrand(seed)
        index = Self.n
    }

    /// MT19937's `init_genrand`: the state words from one 32-bit seed.
    private static func initGenrand(_ seed: UInt32) -> [UInt32] {
        var mt = [UInt32](repeating: 0, count: n)
        mt[0] = seed
        for i in 1..<n {
            mt[i] = 1_812_433_253 &* (mt[i - 1] ^ (mt[i - 1] >> 30)) &+ UInt32(i)
        }
        return mt
    }

    private mutating func twist() {
        let n = Self.n, m = Self.m
        let upper: UInt32 = 0x8000_0000, lower: UInt32 = 0x7FFF_FFFF, matrixA: UInt32 = 0x9908_B0DF
        state.withUnsafeMutableBufferPointer { mt in
            for kk in 0..<n {
                let y = (mt[kk] & upper) | (mt[(kk + 1) % n] & lower)
                mt[kk] = mt[(kk + m) % n] ^ (y >> 1) ^ ((y & 1) == 0 ? 0 : matrixA)
            }
        }
        index = 0
    }

    /// CPython's `genrand_uint32`: the next tempered 32-bit output.
    public mutating func nextUInt32() -> UInt32 {
        if index >= Self.n { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    /// `random.getrandbits(k)` for `0 <= k <= 64`: one 32-bit draw shifted right by `32 - k` for
    /// `k <= 32`; otherwise 32-bit words least significant first, the last one truncated.
    /// `k == 0` returns 0 without drawing (Python 3.9+).
    public mutating func getrandbits(_ k: Int) -> UInt64 {
        precondition((0...64).contains(k), "PythonRandom.getrandbits: k must be in 0...64, got \(k)")
        if k == 0 { return 0 }
        if k <= 32 { return UInt64(nextUInt32() >> UInt32(32 - k)) }
        var result: UInt64 = 0
        var remaining = k, shift: UInt64 = 0
        while remaining > 0 {
            var r = nextUInt32()
            if remaining < 32 { r >>= UInt32(32 - remaining) }
            result |= UInt64(r) << shift
            shift += 32
            remaining -= 32
        }
        return result
    }

    /// `random._randbelow(n)`: a uniform int in `0..<n` by rejection sampling on
    /// `n.bit_length()` bits. `n` must be at least 1.
    public mutating func randbelow(_ n: Int) -> Int {
        precondition(n >= 1, "PythonRandom.randbelow: n must be at least 1, got \(n)")
        let k = Int.bitWidth - n.leadingZeroBitCount
        var r = getrandbits(k)
        while r >= UInt64(n) { r = getrandbits(k) }
        return Int(r)
    }

    /// `random.shuffle(x)`: for `i` from `count - 1` down to 1, swap `x[i]` with `x[randbelow(i + 1)]`.
    public mutating func shuffle<T>(_ x: inout [T]) {
        guard x.count > 1 else { return }
        for i in stride(from: x.count - 1, through: 1, by: -1) {
            let j = randbelow(i + 1)
            x.swapAt(i, j)
        }
    }

    /// `random.sample(population, k)`: `k` distinct positions of `population`, in selection order.
    /// Like CPython it keeps a pool list when `n <= 21 + (k > 5 ? 4^ceil(log4(3k)) : 0)` and a
    /// set of selected positions otherwise; the two draw differently, so both are reproduced.
    /// `k` must be in `0...population.count`.
    public mutating func sample<T>(_ population: [T], k: Int) -> [T] {
        let n = population.count
        precondition(k >= 0 && k <= n, "PythonRandom.sample: sample larger than population or is negative (k \(k), n \(n))")
        var result: [T] = []
        result.reserveCapacity(k)
        if n <= Self.sampleSetSize(k) {
            var pool = population
            for i in 0..<k {
                let j = randbelow(n - i)
                result.append(pool[j])
                pool[j] = pool[n - i - 1]
            }
        } else {
            var selected = Set<Int>(minimumCapacity: k)
            for _ in 0..<k {
                var j = randbelow(n)
                while selected.contains(j) { j = randbelow(n) }
                selected.insert(j)
                result.append(population[j])
            }
        }
        return result
    }

    /// CPython's threshold between `sample`'s pool and set branches:
    /// `21 + 4 ** ceil(log(3k, 4))` for `k > 5`, else 21 (`math.log(x, 4)` is `log(x) / log(4)`).
    static func sampleSetSize(_ k: Int) -> Int {
        var setsize = 21
        if k > 5 {
            let e = Int((Foundation.log(Double(k * 3)) / Foundation.log(4.0)).rounded(.up))
            // 4^e overflows Int only for absurd k (> 2^60); saturate, which always picks the pool.
            setsize += e >= 31 ? Int.max - 21 : 1 << (2 * e)
        }
        return setsize
    }

    /// `random.random()`: `(a * 2^26 + b) / 2^53` with `a = genrand >> 5` (27 bits) and
    /// `b = genrand >> 6` (26 bits), a double in `[0, 1)`.
    public mutating func random() -> Double {
        let a = UInt64(nextUInt32() >> 5), b = UInt64(nextUInt32() >> 6)
        return Double(a * 67_108_864 + b) / 9_007_199_254_740_992.0
    }
}
