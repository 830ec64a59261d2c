import Testing
import TTAKernels
import TTATestSupport

/// LayerNorm, GELU and multi-head attention kernels against PyTorch (float64 answers), their reference
/// twins and finite differences. Golden: `kernel_cases()` in scripts/make_vit_fixtures.py.
@Suite struct TransformerKernelTests {
    @Test func layerNormMatchesPyTorchReferenceAndFiniteDifferences() throws {
        let f = try fixture("vit/kernels.safetensors")
        let x = try f.tensor("layernorm.x").storage, gamma = try f.tensor("layernorm.weight").storage
        let beta = try f.tensor("layernorm.bias").storage, dy = try f.tensor("layernorm.dy").storage
        let (rows, dim) = (15, 16)
        var y = [Float](repeating: .nan, count: x.count), mean = [Float](repeating: 0, count: rows), invStd = mean
        layerNormForward(x: x, rows: rows, dim: dim, gamma: gamma, beta: beta, eps: 1e-6, y: &y, mean: &mean, invStd: &invStd)
        expectClose(y, try f.tensor("layernorm.y").storage, "forward")
        var yRef = y
        layerNormForwardReference(x: x, rows: rows, dim: dim, gamma: gamma, beta: beta, eps: 1e-6, y: &yRef)
        expectClose(y, yRef, tolerance: 1e-6, "forward vs reference")

        // dγ and dβ accumulate onto what is there; dx is overwritten.
        var dx = [Float](repeating: .nan, count: x.count), dg = [Float](repeating: 0.5, count: dim), db = dg
        layerNormBackward(dy: dy, x: x, rows: rows, dim: dim, mean: mean, invStd: invStd, gamma: gamma, dx: &dx, dGamma: &dg, dBeta: &db)
        expectClose(dx, try f.tensor("layernorm.dx").storage, "dx")
        expectClose(dg.map { $0 - 0.5 }, try f.tensor("layernorm.dweight").storage, "dγ")
        expectClose(db.map { $0 - 0.5 }, try f.tensor("layernorm.dbias").storage, "dβ")
        var dxRef = dx, dgRef = [Float](repeating: 0.5, count: dim), dbRef = dgRef
        layerNormBackwardReference(dy: dy, x: x, rows: rows, dim: dim, gamma: gamma, eps: 1e-6, dx: &dxRef, dGamma: &dgRef, dBeta: &dbRef)
        expectClose(dx, dxRef, "dx vs reference")
        expectClose(dg, dgRef, "dγ vs reference")

        func loss(_ input: [Float]) -> Double {
            var out = [Float](repeating: 0, count: input.count), m = mean, s = invStd
            layerNormForward(x: input, rows: rows, dim: dim, gamma: gamma, beta: beta, eps: 1e-6, y: &out, mean: &m, invStd: &s)
            return weightedSum(out, dy)
        }
        #expect(finiteDifferenceError(at: x, analytic: dx, step: 1e-2, loss) < 2e-3)
        let dgOnly = dg.map { $0 - 0.5 }
        let dgFD = finiteDifferenceError(at: gamma, analytic: dgOnly, samples: dim) { g in
            var out = [Float](repeating: 0, count: x.count), m = mean, s = invStd
            layerNormForward(x: x, rows: rows, dim: dim, gamma: g, beta: beta, eps: 1e-6, y: &out, mean: &m, invStd: &s)
            return weightedSum(out, dy)
        }
        #expect(dgFD < 1e-3)
    }

    @Test func geluMatchesPyTorchReferenceAndFiniteDifferences() throws {
        let f = try fixture("vit/kernels.safetensors")
        let x = try f.tensor("gelu.x").storage, dy = try f.tensor("gelu.dy").storage
        var y = [Float](repeating: .nan, count: x.count), yRef = y
        geluForward(x: x, y: &y, count: x.count)
        geluForwardReference(x: x, y: &yRef, count: x.count)
        expectClose(y, try f.tensor("gelu.y").storage, "forward")
        expectClose(y, yRef, tolerance: 1e-6, "forward vs reference")
        var dx = [Float](repeating: .nan, count: x.count), dxRef = dx
        geluBackward(dy: dy, x: x, dx: &dx, count: x.count)
        geluBackwardReference(dy: dy, x: x, dx: &dxRef, count: x.count)
        expectClose(dx, try f.tensor("gelu.dx").storage, "backward")
        expectClose(dx, dxRef, tolerance: 1e-6, "backward vs reference")
        let fd = finiteDifferenceError(at: x, analytic: dx, samples: x.count, step: 1e-2) { input in
            var out = [Float](repeating: 0, count: input.count)
            geluForward(x: input, y: &out, count: input.count)
            return weightedSum(out, dy)
        }
        #expect(fd < 1e-3)
    }

    @Test func attentionMatchesPyTorchReferenceAndFiniteDifferences() throws {
        let f = try fixture("vit/kernels.safetensors")
        let qkv = try f.tensor("attention.qkv").storage, dOut = try f.tensor("attention.dout").storage
        let (b, n, heads, hd) = (2, 5, 2, 4)
        let scale = 1 / Float(hd).squareRoot()
        var out = [Float](repeating: .nan, count: b * n * heads * hd), outRef = out
        var probs = [Float](repeating: .nan, count: b * heads * n * n)
        attentionForward(qkv: qkv, batch: b, tokens: n, heads: heads, headDim: hd, scale: scale, probs: &probs, out: &out)
        expectClose(out, try f.tensor("attention.out").storage, "forward")
        attentionForwardReference(qkv: qkv, batch: b, tokens: n, heads: heads, headDim: hd, scale: scale, out: &outRef)
        expectClose(out, outRef, "forward vs reference")
        for row in 0..<(b * heads * n) {   // each row of the probabilities sums to 1
            #expect(abs(probs[(row * n)..<((row + 1) * n)].reduce(0, +) - 1) < 1e-5)
        }
        var dqkv = [Float](repeating: .nan, count: qkv.count), dqkvRef = dqkv
        attentionBackward(dOut: dOut, qkv: qkv, probs: probs, batch: b, tokens: n, heads: heads, headDim: hd, scale: scale, dqkv: &dqkv)
        expectClose(dqkv, try f.tensor("attention.dqkv").storage, "backward")
        attentionBackwardReference(dOut: dOut, qkv: qkv, batch: b, tokens: n, heads: heads, headDim: hd, scale: scale, dqkv: &dqkvRef)
        expectClose(dqkv, dqkvRef, "backward vs reference")
        let fd = finiteDifferenceError(at: qkv, analytic: dqkv, samples: 48, step: 1e-2) { input in
            var o = [Float](repeating: 0, count: b * n * heads * hd), p = [Float](repeating: 0, count: b * heads * n * n)
            attentionForward(qkv: input, batch: b, tokens: n, heads: heads, headDim: hd, scale: scale, probs: &p, out: &o)
            return weightedSum(o, dOut)
        }
        #expect(fd < 2e-3)
    }

    /// Realistic sizes (ViT-B's 197 tokens of 64-wide heads go through the SIMD GEMM) against the twins,
    /// with one thread and with several: the (batch, head) split must not change the result.
    @Test func largeAttentionMatchesReferenceOnAnyThreadCount() {
        let (b, n, heads, hd) = (2, 67, 3, 32)
        let qkv = randomFloats(b * n * 3 * heads * hd, seed: 11), dOut = randomFloats(b * n * heads * hd, seed: 12)
        let scale = 1 / Float(hd).squareRoot()
        var outRef = [Float](repeating: 0, count: dOut.count), dqkvRef = [Float](repeating: 0, count: qkv.count)
        attentionForwardReference(qkv: qkv, batch: b, tokens: n, heads: heads, headDim: hd, scale: scale, out: &outRef)
        attentionBackwardReference(dOut: dOut, qkv: qkv, batch: b, tokens: n, heads: heads, headDim: hd, scale: scale, dqkv: &dqkvRef)
        for threads in [1, 4] {
            withKernelThreads(threads) {
                var out = [Float](repeating: .nan, count: dOut.count), dqkv = [Float](repeating: .nan, count: qkv.count)
                var probs = [Float](repeating: .nan, count: b * heads * n * n)
                attentionForward(qkv: qkv, batch: b, tokens: n, heads: heads, headDim: hd, scale: scale, probs: &probs, out: &out)
                attentionBackward(dOut: dOut, qkv: qkv, probs: probs, batch: b, tokens: n, heads: heads, headDim: hd, scale: scale, dqkv: &dqkv)
                expectClose(out, outRef, "forward, \(threads) threads")
                expectClose(dqkv, dqkvRef, "backward, \(threads) threads")
            }
        }
    }
}
