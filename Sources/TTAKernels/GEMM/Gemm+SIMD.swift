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
/// The micro-kernel uses `addProduct` (one `vfmadd231ps`) only under `TTA_FMA`, which Package.swift
/// defines together with `-target-cpu`; without it `addProduct` becomes a call to `fmaf`, so the
/// portable build multiplies and adds separately.
///
/// `threads` caps the threads of this call (1 when the caller already runs one call per thread).
package func gemmSIMD(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
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
    let problem = GemmProblem(transA: transA, transB: transB, k: k, alpha: alpha, beta: beta,
                              a: SendablePointer(a), lda: lda, b: SendablePointer(b), ldb: ldb,
                              c: SendablePointer(c), ldc: ldc)
    let mr = GemmTile.mr, nr = GemmTile.nr
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
    #if TTA_FMA
    let arithmetic = "FMA"
    #else
    let arithmetic = "mul+add"
    #endif
    return "\(GemmTile.mr)x\(GemmTile.nr) \(arithmetic), KC \(GemmTile.kc) MC \(GemmTile.mc) NC \(GemmTile.nc)"
}

// MARK: - Blocking parameters

/// Register tile of the micro-kernel: MR rows by NR columns of C held in SIMD8 accumulators.
/// 6x16 needs 12 ymm accumulators, 2 B vectors and 1 broadcast A value: 15 of the 16 AVX registers.
/// The portable x86-64 build has only 128-bit SSE registers (a SIMD8 takes two), so it uses 6x8.
enum GemmTile {
    static let mr = 6
    #if TTA_FMA || !arch(x86_64)
    static let nr = 16
    #else
    static let nr = 8
    #endif
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
private struct GemmProblem: Sendable {
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
        let nr = GemmTile.nr, kcMax = kcMax
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
                packB(transB: transB, b: UnsafePointer(b.base), ldb: ldb, p0: p0, kc: kc,
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
        let mr = GemmTile.mr, nr = GemmTile.nr, kcMax = kcMax
        let paddedRows = (rows.count + mr - 1) / mr * mr
        let paddedCols = (cols.count + nr - 1) / nr * nr
        let packedB = allocateFloats(paddedCols * kcMax)
        let edge = GemmEdge(kcMax: kcMax, inPlaceA: false)
        defer { packedB.deallocate(); edge.deallocate() }
        var p0 = 0
        while p0 < k {
            let kc = min(kcMax, k - p0)
            packB(transB: transB, b: UnsafePointer(b.base), ldb: ldb, p0: p0, kc: kc,
                  j0: cols.lowerBound, nc: cols.count, into: packedB)
            let blockA = packedA.base + p0 * paddedRows
            var ic = 0
            while ic < rows.count {
                let mc = min(GemmTile.mc, rows.count - ic)
                multiplyPacked(kc: kc, a: blockA + ic * kc, panel: .layout(transA: transA, kc: kc), rows: mc,
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
        let mr = GemmTile.mr, nr = GemmTile.nr, kcMax = kcMax
        let paddedCols = (cols.count + nr - 1) / nr * nr
        let mcMax = min(GemmTile.mc, (rows.count + mr - 1) / mr * mr)
        // With few columns, each element of A meets only a few B panels, and copying A into panels
        // (a burst of memory reads with nothing to overlap) costs up to a fifth of the time; the
        // micro-kernel then reads an M x K A in place instead, streaming it while it computes. Not when
        // rows are a multiple of 1 KiB apart: they would all fall into the same cache sets.
        let direct = !transA && cols.count <= GemmTile.directAMaxColumns && lda % 256 != 0
        let packedA = allocateFloats(direct ? 0 : mcMax * kcMax)
        let edge = GemmEdge(kcMax: kcMax, inPlaceA: direct)
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
                multiplyPacked(kc: kc, a: blockA, panel: panel, rows: mc,
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

    init(kcMax: Int, inPlaceA: Bool) {
        tile = allocateFloats(GemmTile.mr * GemmTile.nr)
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
private func multiplyPacked(kc: Int, a: UnsafeMutablePointer<Float>, panel: GemmPanelA, rows: Int,
                            b: UnsafeMutablePointer<Float>, cols: Int,
                            c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float,
                            edge: GemmEdge) {
    let mr = GemmTile.mr, nr = GemmTile.nr
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
                microKernel(kc: kc, a: panelA, panel: layout, b: panelB, c: tile, ldc: ldc,
                            alpha: alpha, beta: beta)
            } else {
                // Compute the full padded tile into scratch, then merge the valid part.
                microKernel(kc: kc, a: panelA, panel: layout, b: panelB, c: edge.tile, ldc: nr,
                            alpha: alpha, beta: 0)
                mergeEdge(edge.tile, rows: height, cols: width, beta: beta, into: tile, ldc: ldc)
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

/// tile[0..<rows, 0..<cols] = edge + beta * tile (edge already holds alpha * A B; beta == 0 does not
/// read the tile).
@inline(__always)
private func mergeEdge(_ edge: UnsafeMutablePointer<Float>, rows: Int, cols: Int, beta: Float,
                       into tile: UnsafeMutablePointer<Float>, ldc: Int) {
    for i in 0..<rows {
        let src = edge + i * GemmTile.nr, dst = tile + i * ldc
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

/// Packs op(B)[p0..<p0+kc, j0..<j0+nc] as NR-column panels: the panel of columns q..<q+NR holds,
/// for each p in turn, the NR values of row p (columns past nc are zero), and starts at `into + q * kc`.
private func packB(transB: Bool, b: UnsafePointer<Float>, ldb: Int, p0: Int, kc: Int,
                   j0: Int, nc: Int, into dst: UnsafeMutablePointer<Float>) {
    let nr = GemmTile.nr
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

// MARK: - Micro-kernel

/// acc += x * y, fused only when the build targets a CPU with FMA.
@inline(__always)
private func madd(_ acc: inout SIMD8<Float>, _ x: SIMD8<Float>, _ y: SIMD8<Float>) {
    #if TTA_FMA
    acc.addProduct(x, y)
    #else
    acc = acc + x * y
    #endif
}

/// One output row of a tile: row = alpha * acc (beta == 0, C not read) or alpha * acc + beta * row.
@inline(__always)
private func storeRow(_ row: UnsafeMutablePointer<Float>, _ acc: SIMD8<Float>, alpha: Float, beta: Float) {
    let p = UnsafeMutableRawPointer(row)
    var v = acc * alpha
    if beta != 0 {
        let old = p.loadUnaligned(as: SIMD8<Float>.self)
        madd(&v, old, SIMD8(repeating: beta))
    }
    p.storeBytes(of: v, as: SIMD8<Float>.self)
}

#if TTA_FMA || !arch(x86_64)

/// C[6 x 16] = alpha * (A panel x B panel) + beta * C, with 12 SIMD8 accumulators.
/// `a`: an A panel laid out as `panel` says; `b`: kc groups of 16 floats, 64-byte aligned.
@inline(__always)
private func microKernel(kc: Int, a: UnsafePointer<Float>, panel: GemmPanelA, b: UnsafePointer<Float>,
                         c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float) {
    var t = Tile6x16()
    // Constant steps, so the unrolled loop addresses A with fixed displacements.
    if panel.step == 1 {
        t.accumulate(kc: kc, a: a, rowStride: panel.rowStride, step: 1, b: b)
    } else {
        t.accumulate(kc: kc, a: a, rowStride: 1, step: GemmTile.mr, b: b)
    }
    storeRow(c, t.c00, alpha: alpha, beta: beta); storeRow(c + 8, t.c01, alpha: alpha, beta: beta)
    var row = c + ldc
    storeRow(row, t.c10, alpha: alpha, beta: beta); storeRow(row + 8, t.c11, alpha: alpha, beta: beta)
    row += ldc
    storeRow(row, t.c20, alpha: alpha, beta: beta); storeRow(row + 8, t.c21, alpha: alpha, beta: beta)
    row += ldc
    storeRow(row, t.c30, alpha: alpha, beta: beta); storeRow(row + 8, t.c31, alpha: alpha, beta: beta)
    row += ldc
    storeRow(row, t.c40, alpha: alpha, beta: beta); storeRow(row + 8, t.c41, alpha: alpha, beta: beta)
    row += ldc
    storeRow(row, t.c50, alpha: alpha, beta: beta); storeRow(row + 8, t.c51, alpha: alpha, beta: beta)
}

/// The 6 x 16 accumulators of one tile; after inlining they stay in 12 ymm registers for the whole
/// k loop.
private struct Tile6x16 {
    var c00 = SIMD8<Float>(), c01 = SIMD8<Float>(), c10 = SIMD8<Float>(), c11 = SIMD8<Float>()
    var c20 = SIMD8<Float>(), c21 = SIMD8<Float>(), c30 = SIMD8<Float>(), c31 = SIMD8<Float>()
    var c40 = SIMD8<Float>(), c41 = SIMD8<Float>(), c50 = SIMD8<Float>(), c51 = SIMD8<Float>()

    /// Adds the products of k steps, unrolled by 4. Rows 0-2 and 3-5 of A are read at 0, rs and
    /// 2 rs from two pointers (base + index * scale + displacement addressing, no extra arithmetic).
    @inline(__always)
    mutating func accumulate(kc: Int, a: UnsafePointer<Float>, rowStride rs: Int, step: Int,
                             b: UnsafePointer<Float>) {
        var top = a
        var bottom = a + 3 * rs
        var pb = UnsafeRawPointer(b)
        var left = kc
        while left >= 4 {
            update(top, bottom, rs, 0, pb, 0)
            update(top, bottom, rs, step, pb, 64)
            update(top, bottom, rs, 2 * step, pb, 128)
            update(top, bottom, rs, 3 * step, pb, 192)
            top += 4 * step
            bottom += 4 * step
            pb += 256
            left -= 4
        }
        while left > 0 {
            update(top, bottom, rs, 0, pb, 0)
            top += step
            bottom += step
            pb += 64
            left -= 1
        }
    }

    /// One k step: the 16 B values at byte offset `bo` times the 6 A values at offset `o`.
    @inline(__always)
    mutating func update(_ top: UnsafePointer<Float>, _ bottom: UnsafePointer<Float>, _ rs: Int, _ o: Int,
                         _ pb: UnsafeRawPointer, _ bo: Int) {
        let b0 = pb.load(fromByteOffset: bo, as: SIMD8<Float>.self)
        let b1 = pb.load(fromByteOffset: bo + 32, as: SIMD8<Float>.self)
        var x = SIMD8<Float>(repeating: top[o])
        madd(&c00, x, b0); madd(&c01, x, b1)
        x = SIMD8<Float>(repeating: top[rs + o])
        madd(&c10, x, b0); madd(&c11, x, b1)
        x = SIMD8<Float>(repeating: top[2 * rs + o])
        madd(&c20, x, b0); madd(&c21, x, b1)
        x = SIMD8<Float>(repeating: bottom[o])
        madd(&c30, x, b0); madd(&c31, x, b1)
        x = SIMD8<Float>(repeating: bottom[rs + o])
        madd(&c40, x, b0); madd(&c41, x, b1)
        x = SIMD8<Float>(repeating: bottom[2 * rs + o])
        madd(&c50, x, b0); madd(&c51, x, b1)
    }
}

#else

/// C[6 x 8] = alpha * (A panel x B panel) + beta * C, with 6 SIMD8 accumulators (12 SSE registers).
/// `a`: an A panel laid out as `panel` says; `b`: kc groups of 8 floats, 32-byte aligned.
@inline(__always)
private func microKernel(kc: Int, a: UnsafePointer<Float>, panel: GemmPanelA, b: UnsafePointer<Float>,
                         c: UnsafeMutablePointer<Float>, ldc: Int, alpha: Float, beta: Float) {
    var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), c2 = SIMD8<Float>()
    var c3 = SIMD8<Float>(), c4 = SIMD8<Float>(), c5 = SIMD8<Float>()
    let rs = panel.rowStride, step = panel.step
    let a0 = a, a1 = a + rs, a2 = a + 2 * rs, a3 = a + 3 * rs, a4 = a + 4 * rs, a5 = a + 5 * rs
    var p = 0
    var pb = UnsafeRawPointer(b)
    for _ in 0..<kc {
        let b0 = pb.load(as: SIMD8<Float>.self)
        madd(&c0, SIMD8(repeating: a0[p]), b0)
        madd(&c1, SIMD8(repeating: a1[p]), b0)
        madd(&c2, SIMD8(repeating: a2[p]), b0)
        madd(&c3, SIMD8(repeating: a3[p]), b0)
        madd(&c4, SIMD8(repeating: a4[p]), b0)
        madd(&c5, SIMD8(repeating: a5[p]), b0)
        p += step
        pb += 32
    }
    var row = c
    storeRow(row, c0, alpha: alpha, beta: beta); row += ldc
    storeRow(row, c1, alpha: alpha, beta: beta); row += ldc
    storeRow(row, c2, alpha: alpha, beta: beta); row += ldc
    storeRow(row, c3, alpha: alpha, beta: beta); row += ldc
    storeRow(row, c4, alpha: alpha, beta: beta); row += ldc
    storeRow(row, c5, alpha: alpha, beta: beta)
}

#endif
