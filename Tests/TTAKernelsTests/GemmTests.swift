import Testing
import TTAKernels
import TTATensor
import TTATestSupport

/// gemmSIMD against the naive gemmReference: odd and tiny shapes, shapes that cross every blocking
/// boundary (MR, NR, KC, MC, NC), all four transpose combinations, padded leading dimensions,
/// alpha/beta variants, NaN in C with beta == 0, and one and two threads; the build's micro-kernel and
/// every other one (the portable kernels are compiled and checked on an FMA machine too).
@Suite("GEMM", .serialized)
struct GemmTests {
    /// (m, n, k). Tiles are 6 x 16 (6 x 8 in the portable x86-64 kernel); blocks KC 256, MC 156, NC 2048. Unless 2m < n, B is
    /// the shared operand and an untransposed A is read in place unless n > 512 or lda is a multiple
    /// of 256 ((40, 17, 512) with lda 512, (600, 520, 8)). (160, 96, 144), (157, 130, 101) and
    /// (13, 500, 700) are large enough (at least 4 MFLOP) for gemmSIMD to use a second thread.
    static let shapes: [(Int, Int, Int)] = [
        (1, 1, 1), (1, 1, 9), (1, 23, 1), (9, 1, 4), (2, 3, 0), (6, 16, 8), (6, 8, 8), (5, 15, 3),
        (7, 17, 13), (12, 32, 31), (13, 33, 257), (31, 9, 600), (157, 21, 11), (3, 2051, 5),
        (40, 17, 512), (600, 520, 8),
        (160, 96, 144), (40, 300, 70), (96, 20, 520), (157, 130, 101), (13, 500, 700),
    ]

    /// (alpha, beta); cycled over the shapes and transposes so each combination meets many shapes.
    static let scalings: [(Float, Float)] = [(1, 0), (-0.75, 0), (1, 1), (0.5, -2), (2, 0.25), (0, 1.5), (0, 0)]

    @Test("matches gemmReference", arguments: 0..<shapes.count)
    func matchesReference(_ index: Int) {
        let (m, n, k) = Self.shapes[index]
        var rng = SeededGenerator(seed: UInt64(index) &+ 42)
        var variant = index
        for threads in [1, 2] {
            for transA in [false, true] {
                for transB in [false, true] {
                    let (alpha, beta) = Self.scalings[variant % Self.scalings.count]
                    variant += 1
                    withKernelThreads(threads) {
                        check(m: m, n: n, k: k, transA: transA, transB: transB, alpha: alpha, beta: beta,
                              padding: (variant % 3, 2 * (variant % 2), variant % 4), rng: &rng)
                    }
                }
            }
        }
    }

    /// Every micro-kernel, whichever the build uses, on every shape and transpose: the portable 6 x 8 and
    /// 6 x 16 kernels (separate multiply and add) and the fused 6 x 16 one, each within the same bound of the
    /// reference (so within it of each other).
    @Test("every micro-kernel matches gemmReference",
          arguments: [GemmKernel6x16Fused.self, GemmKernel6x16.self, GemmKernel6x8.self] as [any GemmMicroKernel.Type])
    func everyKernelMatchesReference(_ kernel: any GemmMicroKernel.Type) {
        var rng = SeededGenerator(seed: 5)
        var variant = 0
        for (m, n, k) in Self.shapes {
            for threads in [1, 2] {
                for (transA, transB) in [(false, false), (true, false), (false, true), (true, true)] {
                    let (alpha, beta) = Self.scalings[variant % Self.scalings.count]
                    variant += 1
                    withKernelThreads(threads) {
                        check(m: m, n: n, k: k, transA: transA, transB: transB, alpha: alpha, beta: beta,
                              padding: (variant % 3, 2 * (variant % 2), variant % 4), rng: &rng, kernel: kernel)
                    }
                }
            }
        }
        check(m: 9, n: 21, k: 6, transA: false, transB: false, alpha: 1, beta: 0, padding: (1, 0, 2), rng: &rng,
              fill: .nan, kernel: kernel)
        #expect(kernel.name.hasPrefix("6x\(kernel.nr) "))
    }

    @Test("beta == 0 ignores NaN and infinity in C")
    func betaZeroDoesNotReadC() {
        var rng = SeededGenerator(seed: 7)
        for (m, n, k) in [(1, 1, 1), (7, 19, 5), (64, 130, 300)] {
            for threads in [1, 2] {
                withKernelThreads(threads) {
                    check(m: m, n: n, k: k, transA: false, transB: false, alpha: 1.5, beta: 0,
                          padding: (1, 3, 2), rng: &rng, fill: .nan)
                    check(m: m, n: n, k: k, transA: true, transB: true, alpha: 1, beta: 0,
                          padding: (0, 0, 0), rng: &rng, fill: .infinity)
                }
            }
        }
    }

    @Test("k == 0 scales C by beta")
    func emptyInnerDimension() {
        var rng = SeededGenerator(seed: 9)
        for beta: Float in [0, 1, -0.5] {
            check(m: 5, n: 37, k: 0, transA: false, transB: true, alpha: 2, beta: beta,
                  padding: (1, 1, 3), rng: &rng)
        }
    }

    @Test("a shared operand larger than 4M floats is packed in super-blocks")
    func superBlocks() {
        var rng = SeededGenerator(seed: 17)
        // A shared (2m < n): 7 x 350000 floats, in blocks of 6 and 1 rows. B shared (m > n):
        // 17 x 140000, in blocks of 16 and 1 columns. (Bᵀ keeps gemmReference's inner loop
        // contiguous, hence fast.)
        withKernelThreads(2) {
            check(m: 7, n: 15, k: 350_000, transA: false, transB: true, alpha: 1, beta: 0.5,
                  padding: (0, 0, 0), rng: &rng)
            check(m: 18, n: 17, k: 140_000, transA: false, transB: true, alpha: -1, beta: 0,
                  padding: (0, 0, 0), rng: &rng)
        }
    }

    @Test("two threads give the same result as one, on shapes split along rows and along columns")
    func threadCountDoesNotChangeResult() {
        var rng = SeededGenerator(seed: 11)
        for (m, n, k) in [(300, 40, 300), (20, 700, 300), (128, 128, 128)] {
            let a = randomMatrix(m * k, &rng), b = randomMatrix(k * n, &rng)
            var results: [[Float]] = []
            for threads in [1, 2] {
                var c = [Float](repeating: .nan, count: m * n)
                withKernelThreads(threads) {
                    gemmSIMD(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k,
                             b: b, ldb: n, beta: 0, c: &c, ldc: n)
                }
                results.append(c)
            }
            // Every thread count computes each element with the same blocking and order of k.
            #expect(results[0] == results[1], "\(m)x\(n)x\(k)")
        }
    }

    /// `gemm`, the entry point, on both sides of its dispatch threshold (m·n·k = 4096: the naive loop below
    /// it, the packed SIMD kernel from it on), against the product in Double: each element's error relative
    /// to `Σ_p |a_ip b_pj|`, within k float32 roundings.
    @Test("gemm is right on both sides of its dispatch threshold")
    func dispatch() {
        var rng = SeededGenerator(seed: 13)
        for (m, n, k) in [(3, 4, 5), (16, 16, 15), (16, 16, 16), (70, 80, 90)] {
            let a = randomMatrix(m * k, &rng), b = randomMatrix(k * n, &rng)
            var c = [Float](repeating: .nan, count: m * n)
            gemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: n,
                 beta: 0, c: &c, ldc: n)
            var worst = 0.0
            for i in 0..<m {
                for j in 0..<n {
                    var exact = 0.0, scale = 0.0
                    for p in 0..<k {
                        exact += Double(a[i * k + p]) * Double(b[p * n + j])
                        scale += abs(Double(a[i * k + p]) * Double(b[p * n + j]))
                    }
                    worst = max(worst, abs(Double(c[i * n + j]) - exact) / max(scale, .leastNormalMagnitude))
                }
            }
            #expect(worst <= Double(k) * Double(Float.ulpOfOne), "\(m)x\(n)x\(k): relative error \(worst)")
        }
    }

    // MARK: - Helpers

    /// Runs gemmSIMD and gemmReference on the same random inputs and compares every element of C,
    /// including the padding between n and ldc, which must be left untouched.
    private func check(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, alpha: Float, beta: Float,
                       padding: (Int, Int, Int), rng: inout SeededGenerator, fill: Float? = nil,
                       kernel: any GemmMicroKernel.Type = BuildGemmKernel.self,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        // Stored shapes: A is m x k (k x m transposed), B is k x n (n x k transposed).
        let (aRows, aCols) = transA ? (k, m) : (m, k)
        let (bRows, bCols) = transB ? (n, k) : (k, n)
        let lda = max(1, aCols + padding.0), ldb = max(1, bCols + padding.1), ldc = max(1, n + padding.2)
        let a = randomMatrix(aRows * lda, &rng), b = randomMatrix(bRows * ldb, &rng)
        var c = randomMatrix(m * ldc, &rng)
        if let fill {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = fill } }
        }
        var expected = c
        var got = c
        gemmReference(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                      b: b, ldb: ldb, beta: beta, c: &expected, ldc: ldc)
        gemmSIMD(using: kernel, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                 b: b, ldb: ldb, beta: beta, c: &got, ldc: ldc)
        // The scale of each element: |alpha| sum_p |a_ip b_pj| + |beta c_ij|.
        var scale = c.map { beta == 0 ? 0 : abs($0) }
        gemmReference(transA: transA, transB: transB, m: m, n: n, k: k, alpha: abs(alpha),
                      a: a.map(abs), lda: lda, b: b.map(abs), ldb: ldb, beta: abs(beta), c: &scale, ldc: ldc)

        var failures = 0
        for i in 0..<m {
            for j in 0..<ldc {
                let index = i * ldc + j
                let ok: Bool
                if j >= n {
                    ok = got[index] == c[index]  // padding: untouched
                } else {
                    ok = abs(got[index] - expected[index]) <= 1e-4 * scale[index] + 1e-30
                }
                if !ok {
                    failures += 1
                    if failures <= 3 {
                        Issue.record("""
                            \(kernel.name) \(m)x\(n)x\(k) trans \(transA) \(transB) alpha \(alpha) beta \(beta) \
                            ld \(lda) \(ldb) \(ldc), threads \(KernelThreads.count): C[\(i), \(j)] = \(got[index]), \
                            expected \(j >= n ? c[index] : expected[index])
                            """, sourceLocation: sourceLocation)
                    }
                }
            }
        }
        #expect(failures == 0, sourceLocation: sourceLocation)
    }

    private func randomMatrix(_ count: Int, _ rng: inout SeededGenerator) -> [Float] {
        (0..<count).map { _ in 2 * rng.nextUniform() - 1 }
    }
}
