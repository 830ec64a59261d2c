/// The fast GEMM path: packed panels, cache blocking and a register-tiled SIMD micro-kernel
/// (the Goto / BLIS scheme), spread over `KernelThreads.count` threads.
///
/// One operand is packed once, by all threads together, into panels for every KC block of k; then the
/// other dimension is cut into chunks, which the threads take dynamically (`parallelFor` over more
/// chunks than threads, so a core slowed by other work takes fewer). B is the shared operand unless
/// A has less than half as many rows as B has columns (`GemmTile.sharesA`): a chunk is then a range of
/// rows, whose MC x KC blocks of A stay in the core's L2 while they meet every B panel (the BLIS
/// order; about 10 % faster per core than column chunks on square problems, where a chunk's few B
/// panels meet each A block only a few times). With A shared, a chunk is a range of columns:
///
///     for pc in 0..<k, step KC           (equal-sized KC blocks: 1440 = 6 x 240)
///       pack op(B)[pc..<pc+kc, chunk columns] into NR-wide panels (L2)
///       for ic in 0..<m, step MC         packed A block: MC x KC, MR-tall panels (L2)
///         for jr in the chunk's NR panels         one B panel: KC x NR (L1)
///           for ir in the block's MR panels
///             micro-kernel: C[MR x NR] (+)= A panel x B panel, in registers
///
/// and with B shared, a chunk is a range of rows that packs its own MC x KC blocks of A and
/// runs them against all of the shared B (or, with at most `GemmTile.directAMaxColumns` columns,
/// reads an untransposed A in place: the kernel then streams A from memory while it computes, where
/// a packing pass would wait for it). Either way nothing is packed twice, both threads have work
/// when one dimension is small (m = 160, n = 8192; m = 640, n = 64), and there are exactly two
/// `parallelFor` calls (pack, multiply) per call, or per super-block when the shared operand would
/// exceed `GemmTile.sharedLimit` floats.
///
/// Transposes are resolved while packing: B panels always have one layout; A panels are copied row
/// by row or column by column, whichever matches the source, and the micro-kernel reads them (or A in
/// place) through two strides (`GemmPanelA`). The first KC block
/// applies `beta` to C (beta == 0 never reads C); later blocks accumulate. Panels are zero-padded to
/// MR / NR and edge tiles go through a scratch tile, so any m, n, k are handled. Every element of C is
/// computed in the same order whatever the thread count, so results do not depend on it.
///
/// The micro-kernel is the build's (`BuildGemmKernel`): the fused 6 x 16 one under `TTA_FMA`, which
/// Package.swift defines together with `-target-cpu`, a portable one otherwise (without a target CPU
/// `addProduct` becomes a call to `fmaf`, so the portable kernels multiply and add separately).
///
/// `threads` caps the threads of this call (1 when the caller already runs one call per thread).
package func gemmSIMD(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                      alpha: Float, a: UnsafePointer<Float>, lda: Int,
                      b: UnsafePointer<Float>, ldb: Int,
                      beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
                      threads maxThreads: Int = KernelThreads.count) {
    gemmSIMD(using: BuildGemmKernel.self, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
             a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, threads: maxThreads)
}

/// `gemmSIMD` with a given micro-kernel: every build compiles all of them, so the tests check the
/// portable ones (and their tile widths) on an FMA machine too.
package func gemmSIMD<K: GemmMicroKernel>(using kernel: K.Type, transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                          alpha: Float, a: UnsafePointer<Float>, lda: Int,
                                          b: UnsafePointer<Float>, ldb: Int,
                                          beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
                                          threads maxThreads: Int = KernelThreads.count) {
    if m <= 0 || n <= 0 { return }
    if k == 0 || alpha == 0 {
        scaleC(m: m, n: n, beta: beta, c: c, ldc: ldc)
        return
    }
    // Below a few MFLOP (well under a millisecond), waking a second thread costs more than it saves.
    let flops = 2 * Double(m) * Double(n) * Double(k)
    let threads = flops < 4e6 ? 1 : max(1, maxThreads)
    let problem = GemmProblem<K>(transA: transA, transB: transB, k: k, alpha: alpha, beta: beta,
                              a: SendablePointer(a), lda: lda, b: SendablePointer(b), ldb: ldb,
                              c: SendablePointer(c), ldc: ldc)
    let mr = GemmTile.mr, nr = K.nr
    if GemmTile.sharesA(m: m, n: n) {
        // A shared: super-blocks of rows, each packed once, then column chunks.
        let rowsPerBlock = max(mr, GemmTile.sharedLimit / k / mr * mr)
        var i0 = 0
        while i0 < m {
            let rows = i0..<min(m, i0 + rowsPerBlock)
            let chunks = chunkCount(panels: (n + nr - 1) / nr, minPanels: GemmTile.minChunkPanelsB,
                                    maxPanels: GemmTile.nc / nr, threads: threads)
            problem.withSharedA(rows: rows, threads: threads) { packedA in
                parallelFor(chunks) { chunk in
                    let cols = chunkRange(chunk, of: chunks, count: n, unit: nr)
                    problem.multiplyColumnChunk(rows: rows, packedA: packedA, cols: cols)
                }
            }
            i0 = rows.upperBound
        }
    } else {
        // B shared: super-blocks of columns, each packed once, then row chunks.
        let colsPerBlock = max(nr, GemmTile.sharedLimit / k / nr * nr)
        var j0 = 0
        while j0 < n {
            let cols = j0..<min(n, j0 + colsPerBlock)
            let chunks = chunkCount(panels: (m + mr - 1) / mr, minPanels: GemmTile.minChunkPanelsA,
                                    maxPanels: .max, threads: threads)
            problem.withSharedB(cols: cols, threads: threads) { packedB in
                parallelFor(chunks) { chunk in
                    let rows = chunkRange(chunk, of: chunks, count: m, unit: mr)
                    problem.multiplyRowChunk(rows: rows, cols: cols, packedB: packedB)
                }
            }
            j0 = cols.upperBound
        }
    }
}

/// The micro-kernel this build uses, e.g. "6x16 FMA" (for benchmark reports).
package var gemmSIMDKernel: String {
    "\(BuildGemmKernel.name), KC \(GemmTile.kc) MC \(GemmTile.mc) NC \(GemmTile.nc)"
}

// MARK: - Blocking parameters

/// Blocking shared by the micro-kernels: MR rows of C per tile (the kernel's `nr` gives the columns).
enum GemmTile {
    static let mr = 6
    /// Depth of a packed block: one KC x NR B panel (16 KiB) stays in L1 during the micro-kernel loop.
    static let kc = 256
    /// Rows of a packed A block, a multiple of MR: MC x KC floats (about 160 KiB) stay in L2.
    static let mc = 156
    /// Most columns a thread packs of B at a time, a multiple of NR: KC x NC floats (2 MiB) in L3.
    static let nc = 2048
    /// Most floats of the shared packed operand (16 MiB); larger problems go in super-blocks.
    static let sharedLimit = 4 << 20
    /// Smallest chunks handed to a thread: 4 B panels (64 columns) or 8 A panels (48 rows), so the
    /// shared operand is streamed at least 30 FLOP per byte.
    static let minChunkPanelsB = 4
    static let minChunkPanelsA = 8
    /// Chunks per thread when several threads share the work, for dynamic load balance.
    static let chunksPerThread = 8
    /// With B shared and at most this many columns, an M x K A is read in place, not packed.
    static let directAMaxColumns = 512

    /// Whether A is the shared operand (column chunks): only when A is much the smaller one, so that
    /// row chunks would be too few or too thin (m = 160, n = 8192 from a convolution).
    static func sharesA(m: Int, n: Int) -> Bool { 2 * m < n }
}

/// How many chunks to cut `panels` panels into. Single-threaded: as few as `maxPanels` allows.
/// Otherwise at least one per thread, and up to `chunksPerThread` per thread for load balance as long
/// as each keeps `minPanels` panels.
private func chunkCount(panels: Int, minPanels: Int, maxPanels: Int, threads: Int) -> Int {
    let needed = (panels + maxPanels - 1) / maxPanels
    if threads == 1 { return max(1, needed) }
    let balanced = min(threads * GemmTile.chunksPerThread, panels / minPanels)
    return max(1, needed, min(threads, panels), balanced)
}

/// Chunk `index` of `parts` near-equal slices of `0..<count`, cut on multiples of `unit`.
private func chunkRange(_ index: Int, of parts: Int, count: Int, unit: Int) -> Range<Int> {
    let units = (count + unit - 1) / unit
    let lo = min(count, units * index / parts * unit)
    let hi = min(count, units * (index + 1) / parts * unit)
    return lo..<hi
}

/// The operands of one call, shareable with the worker threads (which write disjoint parts of C).
private struct GemmProblem<K: GemmMicroKernel>: Sendable {
    let transA: Bool, transB: Bool
    let k: Int
    let alpha: Float, beta: Float
    let a: SendablePointer<Float>, lda: Int
    let b: SendablePointer<Float>, ldb: Int
    let c: SendablePointer<Float>, ldc: Int

    /// k is cut into equal blocks of at most KC: block q starts at q * kcMax.
    var kcMax: Int {
        let blocks = (k + GemmTile.kc - 1) / GemmTile.kc
        return (k + blocks - 1) / blocks
    }

    /// Packs op(A)[rows, 0..<k] for every KC block (block at p0 starts at `p0 * paddedRows`; its MR
    /// panels follow each other) with all threads, and passes it to `body`.
    func withSharedA(rows: Range<Int>, threads: Int, _ body: (SendablePointer<Float>) -> Void) {
        let mr = GemmTile.mr, kcMax = kcMax
        let padded = (rows.count + mr - 1) / mr * mr
        let packed = allocateFloats(padded * k)
        defer { packed.deallocate() }
        let shared = SendablePointer(packed)
        let parts = padded * k < 1 << 16 ? 1 : threads
        parallelFor(parts) { part in
            let local = chunkRange(part, of: parts, count: rows.count, unit: mr)
            if local.isEmpty { return }
            var p0 = 0
            while p0 < k {
                let kc = min(kcMax, k - p0)
                packA(transA: transA, a: UnsafePointer(a.base), lda: lda, i0: rows.lowerBound + local.lowerBound,
                      mc: local.count, p0: p0, kc: kc, into: shared.base + p0 * padded + local.lowerBound * kc)
                p0 += kc
            }
        }
        body(shared)
    }

    /// Packs op(B)[0..<k, cols] for every KC block (block at p0 starts at `p0 * paddedCols`; its NR
    /// panels follow each other) with all threads, and passes it to `body`.
    func withSharedB(cols: Range<Int>, threads: Int, _ body: (SendablePointer<Float>) -> Void) {
        let nr = K.nr, kcMax = kcMax
        let padded = (cols.count + nr - 1) / nr * nr
        let packed = allocateFloats(padded * k)
        defer { packed.deallocate() }
        let shared = SendablePointer(packed)
        let parts = padded * k < 1 << 16 ? 1 : threads
        parallelFor(parts) { part in
            let local = chunkRange(part, of: parts, count: cols.count, unit: nr)
            if local.isEmpty { return }
            var p0 = 0
            while p0 < k {
                let kc = min(kcMax, k - p0)
                packB(K.self, transB: transB, b: UnsafePointer(b.base), ldb: ldb, p0: p0, kc: kc,
                      j0: cols.lowerBound + local.lowerBound, nc: local.count,
                      into: shared.base + p0 * padded + local.lowerBound * kc)
                p0 += kc
            }
        }
        body(shared)
    }

    /// C[rows, cols] with A shared (packed by `withSharedA` for `rows`): packs this chunk's B blocks.
    func multiplyColumnChunk(rows: Range<Int>, packedA: SendablePointer<Float>, cols: Range<Int>) {
        if cols.isEmpty { return }
        let mr = GemmTile.mr, nr = K.nr, kcMax = kcMax
        let paddedRows = (rows.count + mr - 1) / mr * mr
        let paddedCols = (cols.count + nr - 1) / nr * nr
        let packedB = allocateFloats(paddedCols * kcMax)
        let edge = GemmEdge(kcMax: kcMax, inPlaceA: false, nr: nr)
        defer { packedB.deallocate(); edge.deallocate() }
        var p0 = 0
        while p0 < k {
            let kc = min(kcMax, k - p0)
            packB(K.self, transB: transB, b: UnsafePointer(b.base), ldb: ldb, p0: p0, kc: kc,
                  j0: cols.lowerBound, nc: cols.count, into: packedB)
            let blockA = packedA.base + p0 * paddedRows
            var ic = 0
            while ic < rows.count {
                let mc = min(GemmTile.mc, rows.count - ic)
                multiplyPacked(K.self, kc: kc, a: blockA + ic * kc, panel: .layout(transA: transA, kc: kc), rows: mc,
                               b: packedB, cols: cols.count,
                               c: c.base + (rows.lowerBound + ic) * ldc + cols.lowerBound, ldc: ldc,
                               alpha: alpha, beta: p0 == 0 ? beta : 1, edge: edge)
                ic += mc
            }
            p0 += kc
        }
    }

    /// C[rows, cols] with B shared (packed by `withSharedB` for `cols`): packs this chunk's A blocks.
    func multiplyRowChunk(rows: Range<Int>, cols: Range<Int>, packedB: SendablePointer<Float>) {
        if rows.isEmpty { return }
        let mr = GemmTile.mr, nr = K.nr, kcMax = kcMax
        let paddedCols = (cols.count + nr - 1) / nr * nr
        let mcMax = min(GemmTile.mc, (rows.count + mr - 1) / mr * mr)
        // With few columns, each element of A meets only a few B panels, and copying A into panels
        // (a burst of memory reads with nothing to overlap) costs up to a fifth of the time; the
        // micro-kernel then reads an M x K A in place instead, streaming it while it computes. Not when
        // rows are a multiple of 1 KiB apart: they would all fall into the same cache sets.
        let direct = !transA && cols.count <= GemmTile.directAMaxColumns && lda % 256 != 0
        let packedA = allocateFloats(direct ? 0 : mcMax * kcMax)
        let edge = GemmEdge(kcMax: kcMax, inPlaceA: direct, nr: nr)
        defer { packedA.deallocate(); edge.deallocate() }
        var p0 = 0
        while p0 < k {
            let kc = min(kcMax, k - p0)
            let blockB = packedB.base + p0 * paddedCols
            var ic = rows.lowerBound
            while ic < rows.upperBound {
                let mc = min(mcMax, rows.upperBound - ic)
                let blockA: UnsafeMutablePointer<Float>, panel: GemmPanelA
                if direct {
                    blockA = a.base + ic * lda + p0
                    panel = .inPlace(lda: lda)
                } else {
                    packA(transA: transA, a: UnsafePointer(a.base), lda: lda, i0: ic, mc: mc, p0: p0, kc: kc,
                          into: packedA)
                    blockA = packedA
                    panel = .layout(transA: transA, kc: kc)
                }
                multiplyPacked(K.self, kc: kc, a: blockA, panel: panel, rows: mc,
                               b: blockB, cols: cols.count,
                               c: c.base + ic * ldc + cols.lowerBound, ldc: ldc,
                               alpha: alpha, beta: p0 == 0 ? beta : 1, edge: edge)
                ic += mc
            }
            p0 += kc
        }
    }
}

/// A 64-byte aligned buffer of `count` floats.
private func allocateFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * MemoryLayout<Float>.stride, alignment: 64)
        .bindMemory(to: Float.self, capacity: count)
}

/// Scratch for the edges of one chunk: a C tile, and an MR x kc A panel for the last rows of an A
/// read in place (the kernel reads all MR rows of a panel, and those past m do not exist).
private struct GemmEdge {
    let tile: UnsafeMutablePointer<Float>
    let panelA: UnsafeMutablePointer<Float>

    init(kcMax: Int, inPlaceA: Bool, nr: Int) {
        tile = allocateFloats(GemmTile.mr * nr)
        panelA = allocateFloats(inPlaceA ? GemmTile.mr * kcMax : 0)
    }

    func deallocate() {
        tile.deallocate()
        panelA.deallocate()
    }
}

/// C[rows x cols] = alpha * (A block x packed B block) + beta * C, tile by tile: each KC x NR B panel
/// stays in L1 while it meets every MR panel of the A block.
@inline(__always)
private func multiplyPacked<K: GemmMicroKernel>(_ kernel: K.Type, kc: Int, a: UnsafeMutablePointer<Float>, panel: GemmPanelA,
                                                rows: Int, b: UnsafeMutablePointer<Float>, cols: Int,
                                                c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float,
                                                edge: GemmEdge) {
    let mr = GemmTile.mr, nr = K.nr
    var jr = 0
    while jr < cols {
        let panelB = b + jr * kc
        let width = min(nr, cols - jr)
        var ir = 0
        while ir < rows {
            var panelA = a + ir * panel.rowOffset, layout = panel
            let height = min(mr, rows - ir)
            if height < mr && panel.inPlace {
                // The last rows of an A read in place: copy them into a zero-padded packed panel.
                for i in 0..<mr {
                    let row = edge.panelA + i * kc
                    if i < height {
                        row.update(from: panelA + i * panel.rowStride, count: kc)
                    } else {
                        row.update(repeating: 0, count: kc)
                    }
                }
                panelA = edge.panelA
                layout = .rows(kc: kc)
            }
            let tile = c + ir * ldc + jr
            if height == mr && width == nr {
                K.multiply(kc: kc, a: panelA, rowStride: layout.rowStride, step: layout.step, b: panelB,
                           c: tile, ldc: ldc, alpha: alpha, beta: beta)
            } else {
                // Compute the full padded tile into scratch, then merge the valid part.
                K.multiply(kc: kc, a: panelA, rowStride: layout.rowStride, step: layout.step, b: panelB,
                           c: edge.tile, ldc: nr, alpha: alpha, beta: 0)
                mergeEdge(edge.tile, stride: nr, rows: height, cols: width, beta: beta, into: tile, ldc: ldc)
            }
            ir += mr
        }
        jr += nr
    }
}

/// C = beta * C for the k == 0 / alpha == 0 cases (beta == 0 writes zeros without reading C).
private func scaleC(m: Int, n: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    for i in 0..<m {
        let row = c + i * ldc
        if beta == 0 {
            row.update(repeating: 0, count: n)
        } else if beta != 1 {
            for j in 0..<n { row[j] *= beta }
        }
    }
}

/// tile[0..<rows, 0..<cols] = edge + beta * tile (edge, rows `stride` apart, already holds alpha * A B;
/// beta == 0 does not read the tile).
@inline(__always)
private func mergeEdge(_ edge: UnsafeMutablePointer<Float>, stride: Int, rows: Int, cols: Int, beta: Float,
                       into tile: UnsafeMutablePointer<Float>, ldc: Int) {
    for i in 0..<rows {
        let src = edge + i * stride, dst = tile + i * ldc
        if beta == 0 {
            for j in 0..<cols { dst[j] = src[j] }
        } else {
            for j in 0..<cols { dst[j] = src[j] + beta * dst[j] }
        }
    }
}

// MARK: - Packing

/// Packs op(A)[i0..<i0+mc, p0..<p0+kc] as MR-row panels; the panel of rows r..<r+MR starts at
/// `into + r * kc` and rows past mc are zero. Its layout follows the source, so both are plain copies:
/// - A stored M x K (`transA == false`): row by row, row i of the panel at `panel + i * kc`
///   (`GemmPanelA.rows`);
/// - A stored K x M: column by column, the MR values of column p at `panel + p * MR`
///   (`GemmPanelA.columns`).
private func packA(transA: Bool, a: UnsafePointer<Float>, lda: Int, i0: Int, mc: Int,
                   p0: Int, kc: Int, into dst: UnsafeMutablePointer<Float>) {
    let mr = GemmTile.mr
    var r = 0
    while r < mc {
        let panel = dst + r * kc
        let height = min(mr, mc - r)
        if !transA {
            let src = a + (i0 + r) * lda + p0
            for i in 0..<height { (panel + i * kc).update(from: src + i * lda, count: kc) }
            if height < mr { (panel + height * kc).update(repeating: 0, count: (mr - height) * kc) }
        } else {
            let src = a + p0 * lda + i0 + r
            if height == mr {
                for p in 0..<kc {
                    let s = src + p * lda, d = panel + p * mr
                    d[0] = s[0]; d[1] = s[1]; d[2] = s[2]
                    d[3] = s[3]; d[4] = s[4]; d[5] = s[5]
                }
            } else {
                // Edge panel: zero it, then fill row by row (a loop per p would become memcpy calls).
                panel.update(repeating: 0, count: kc * mr)
                for i in 0..<height {
                    for p in 0..<kc { panel[p * mr + i] = src[p * lda + i] }
                }
            }
        }
        r += mr
    }
}

/// Where the micro-kernel finds element (i, p) of an A panel: at `i * rowStride + p * step`, and
/// where the panel of rows r..<r+MR starts: at `r * rowOffset`.
private struct GemmPanelA {
    let rowStride: Int
    let step: Int
    let rowOffset: Int
    /// A read in place: rows past m do not exist (packed panels are zero-padded instead).
    var inPlace = false

    /// Packed row by row (from A stored M x K), depth kc.
    static func rows(kc: Int) -> GemmPanelA { GemmPanelA(rowStride: kc, step: 1, rowOffset: kc) }
    /// Packed column by column (from A stored K x M), depth kc.
    static func columns(kc: Int) -> GemmPanelA { GemmPanelA(rowStride: 1, step: GemmTile.mr, rowOffset: kc) }
    /// Not packed: A stored M x K, read in place.
    static func inPlace(lda: Int) -> GemmPanelA {
        GemmPanelA(rowStride: lda, step: 1, rowOffset: lda, inPlace: true)
    }

    /// The packed layout `packA` writes.
    static func layout(transA: Bool, kc: Int) -> GemmPanelA { transA ? columns(kc: kc) : rows(kc: kc) }
}

/// Packs op(B)[p0..<p0+kc, j0..<j0+nc] as NR-column panels (NR = `K.nr`): the panel of columns
/// q..<q+NR holds, for each p in turn, the NR values of row p (columns past nc are zero), and starts at
/// `into + q * kc`.
private func packB<K: GemmMicroKernel>(_ kernel: K.Type, transB: Bool, b: UnsafePointer<Float>, ldb: Int, p0: Int, kc: Int,
                                       j0: Int, nc: Int, into dst: UnsafeMutablePointer<Float>) {
    let nr = K.nr
    var q = 0
    while q < nc {
        let panel = dst + q * kc
        let width = min(nr, nc - q)
        if !transB {
            // B is K x N: each row of a panel is a contiguous run of NR.
            let src = b + p0 * ldb + j0 + q
            if width == nr {
                for p in 0..<kc {
                    let s = UnsafeRawPointer(src + p * ldb), d = UnsafeMutableRawPointer(panel + p * nr)
                    for v in 0..<(nr / 8) {
                        d.storeBytes(of: s.loadUnaligned(fromByteOffset: 32 * v, as: SIMD8<Float>.self),
                                     toByteOffset: 32 * v, as: SIMD8<Float>.self)
                    }
                }
            } else {
                // Edge panel: zero it, then fill column by column (a loop per p would become memcpy calls).
                panel.update(repeating: 0, count: kc * nr)
                for j in 0..<width {
                    for p in 0..<kc { panel[p * nr + j] = src[p * ldb + j] }
                }
            }
        } else {
            // B is stored N x K: walk each of the NR source rows contiguously.
            let src = b + (j0 + q) * ldb + p0
            if width < nr { panel.update(repeating: 0, count: kc * nr) }
            for j in 0..<width {
                let s = src + j * ldb
                for p in 0..<kc { panel[p * nr + j] = s[p] }
            }
        }
        q += nr
    }
}

