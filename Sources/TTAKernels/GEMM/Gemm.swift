/// General matrix multiply, row-major, BLAS `sgemm` semantics:
///
///     C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C[M,N]
///
/// `op(A)` is `A` (stored M×K, leading dimension `lda` ≥ K) or, with `transA`, `Aᵀ` where `A` is
/// stored K×M (`lda` ≥ M). Likewise for `B`: K×N (`ldb` ≥ N) or, with `transB`, stored N×K (`ldb` ≥ K).
/// `C` is M×N with leading dimension `ldc` ≥ N. With `beta == 0`, `C` is not read (NaNs in it are ignored).
///
/// Dispatches to the packed, register-tiled SIMD kernel (`gemmSIMD`, multi-threaded) when the problem
/// is large enough to pay for packing, otherwise to `gemmReference`. `threads` caps the threads it uses.
package func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                  alpha: Float, a: UnsafePointer<Float>, lda: Int,
                  b: UnsafePointer<Float>, ldb: Int,
                  beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
                  threads: Int = KernelThreads.count) {
    precondition(m >= 0 && n >= 0 && k >= 0, "gemm: negative dimension")
    if m == 0 || n == 0 { return }
    if m * n * k < 4096 {
        gemmReference(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                      b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    } else {
        gemmSIMD(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                 b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, threads: threads)
    }
}

/// The naive triple loop: the algorithmic reference the fast kernel is tested and benchmarked against.
/// Accumulates each dot product in Float, in order of `k`.
package func gemmReference(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                           alpha: Float, a: UnsafePointer<Float>, lda: Int,
                           b: UnsafePointer<Float>, ldb: Int,
                           beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    for i in 0..<m {
        for j in 0..<n {
            var s: Float = 0
            for p in 0..<k {
                let av = transA ? a[p * lda + i] : a[i * lda + p]
                let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                s += av * bv
            }
            c[i * ldc + j] = beta == 0 ? alpha * s : alpha * s + beta * c[i * ldc + j]
        }
    }
}
