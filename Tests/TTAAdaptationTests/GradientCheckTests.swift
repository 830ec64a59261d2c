import Foundation
import Testing
@testable import TTAAdaptation
import TTANN
import TTATensor
import TTATestSupport

/// Softmax of one row, in Double.
private func softmaxRow(_ z: ArraySlice<Float>) -> [Double] {
    let mx = Double(z.max()!)
    let e = z.map { Foundation.exp(Double($0) - mx) }
    let s = e.reduce(0, +)
    return e.map { $0 / s }
}

/// The soft likelihood ratio of one row as the reference writes it (mariodoebler `methods/roid.py`):
/// `−Σ_c q_c·log(q_c/(1−q_c) + 1e-5)` with `q = softmax(z).clamp(max=clip)`; `clip` 1 is no clip.
private func softLikelihoodRatio(_ z: ArraySlice<Float>, clip: Double) -> Double {
    var sum = 0.0
    for p in softmaxRow(z) {
        let q = min(p, clip)
        sum += q * Foundation.log(q / (1 - q) + 1e-5)
    }
    return -sum
}

/// `SCE(a, b) = −½ Σ softmax(b)·log softmax(a) − ½ Σ softmax(a)·log softmax(b)` for one pair of rows.
private func symmetricCrossEntropy(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
    let (pa, pb) = (softmaxRow(a), softmaxRow(b))
    let (la, lb) = (pa.map { Foundation.log($0) }, pb.map { Foundation.log($0) })
    var ab = 0.0, ba = 0.0
    for c in pa.indices {
        ab += pb[c] * la[c]
        ba += pa[c] * lb[c]
    }
    return -0.5 * ab - 0.5 * ba
}

/// Hand-derived gradients of adaptation losses against central finite differences of the losses' values, the
/// values written out here in Double as the reference writes them. No fixture: `finiteDifferenceError` in
/// Tests/TTATestSupport/TestSupport.swift, over every coordinate.
@Suite struct GradientCheckTests {
    /// Classes per row of the logits below.
    static let classes = 5
    /// Rows of 5 logits, multiples of 1/8 so that steps of 1/256 are exact in float32. Largest probabilities:
    /// row 0 0.99691 and row 4 0.99869 (above ROID's 0.99 clip), row 1 0.97173 (below it, where the gradient
    /// is steep: ~1/(1−p)²), rows 2 and 3 0.534 and 0.277. No step moves a probability across 0.99.
    static let logits: [Float] = [7.5, 0.25, -0.5, 1.0, 0.0,
                                  5.25, 0.5, -0.25, 0.75, 0.0,
                                  1.5, 0.5, -1.0, 0.25, -0.5,
                                  0.125, -0.25, 0.0, 0.375, -0.125,
                                  -1.0, 0.5, 8.0, -0.5, 0.25]
    /// ROID's per-sample weights divided by the batch size (8), as its loss scales each row.
    static let weights: [Double] = [1.5, 0.75, 1.0, 2.0, 0.5].map { $0 / 8 }

    static func row(_ x: [Float], _ i: Int) -> ArraySlice<Float> { x[(i * classes)..<((i + 1) * classes)] }

    /// ROID's soft-likelihood-ratio gradient (`softLikelihoodRatioGradient`, ROID.swift), weighted per row as the
    /// method weights it, on rows with a clipped class and without: within 1e-4 of the finite differences of
    /// `Σ_i w_i·SLR(z_i)` with the 0.99 clip. Without the clip (as if the clipped classes passed their gradient)
    /// the finite differences are another gradient, 1.7 (relative) away: the check sees the clip.
    @Test func softLikelihoodRatioGradientMatchesFiniteDifferencesAcrossTheClip() {
        let z = Self.logits, n = z.count / Self.classes
        let largest = (0..<n).map { softmaxRow(Self.row(z, $0)).max()! }
        #expect(largest.map { $0 > 0.99 } == [true, false, false, false, true], "\(largest)")
        #expect(largest[1] > 0.97 && largest[0] - 0.99 > 0.005 && largest[4] - 0.99 > 0.005, "\(largest)")
        let analytic = (0..<n).flatMap { i in softLikelihoodRatioGradient(Self.row(z, i)).map { Float(Self.weights[i] * $0) } }
        func loss(_ x: [Float], clip: Double) -> Double {
            (0..<n).reduce(0) { $0 + Self.weights[$1] * softLikelihoodRatio(Self.row(x, $1), clip: clip) }
        }
        let error = finiteDifferenceError(at: z, analytic: analytic, samples: z.count, step: 1.0 / 256) { loss($0, clip: 0.99) }
        #expect(error < 1e-4, "SLR gradient: FD error \(error)")
        let unclipped = finiteDifferenceError(at: z, analytic: analytic, samples: z.count, step: 1.0 / 256) { loss($0, clip: 1) }
        #expect(unclipped > 0.5, "the clip changes nothing: FD error without it \(unclipped)")
    }

    /// ROID's consistency term (`symmetricCrossEntropyGradients`, ROID.swift): the gradients of the weighted
    /// `Σ_i w_i·SCE(a_i, b_i)` w.r.t. the augmented logits `a` and the batch's logits `b` (the reference does not
    /// detach `b`), each within 1e-4 of finite differences; pairs include confident rows (largest p 0.994, 0.967, 0.995).
    @Test func symmetricCrossEntropyGradientsMatchFiniteDifferencesOnBothSides() {
        let a: [Float] = [2.0, -0.5, 0.25, 1.0, -1.5,
                          6.5, 0.0, -0.75, 0.5, 0.125,
                          0.25, 0.0, -0.125, 0.5, -0.375]
        let b: [Float] = [0.5, 1.25, -1.0, 0.0, 0.75,
                          5.0, 1.0, -0.5, 0.0, -0.25,
                          -2.0, 7.0, 0.5, 0.0, 1.0]
        let w: [Double] = [1, 0.5, 2]
        var ga: [Float] = [], gb: [Float] = []
        for i in 0..<3 {
            let (x, y) = symmetricCrossEntropyGradients(Self.row(a, i), Self.row(b, i))
            ga += x.map { Float(w[i] * $0) }
            gb += y.map { Float(w[i] * $0) }
        }
        func loss(_ a: [Float], _ b: [Float]) -> Double {
            (0..<3).reduce(0) { $0 + w[$1] * symmetricCrossEntropy(Self.row(a, $1), Self.row(b, $1)) }
        }
        let errorA = finiteDifferenceError(at: a, analytic: ga, samples: a.count, step: 1.0 / 256) { loss($0, b) }
        let errorB = finiteDifferenceError(at: b, analytic: gb, samples: b.count, step: 1.0 / 256) { loss(a, $0) }
        #expect(errorA < 1e-4, "∂SCE/∂a: FD error \(errorA)")
        #expect(errorB < 1e-4, "∂SCE/∂b: FD error \(errorB)")
        #expect(gb.map(abs).max()! > 0.1, "∂SCE/∂b vanishes")
    }

    /// EATA's anti-forgetting term (`FisherRegularizer.addGradient`, EATA.swift): the gradient it adds is that of
    /// `β·Σ F ⊙ (θ − θ0)²` over the trainable parameters (the reference's `fishers` hold only those), within 1e-4
    /// of finite differences at every float; frozen parameters and buffers get nothing even where `F` is not
    /// zero; and it adds to the gradient already there.
    @Test func fisherPenaltyGradientMatchesFiniteDifferences() {
        let store = ParameterStore()
        store.add("bn.weight", shape: [3], kind: .parameter, isNormAffine: true)
        store.add("bn.bias", shape: [3], kind: .parameter, isNormAffine: true)
        store.add("conv.weight", shape: [2, 2], kind: .parameter)
        store.add("bn.running_mean", shape: [3], kind: .buffer)
        store.finalize()
        store.setTrainable(.names(["bn.weight", "bn.bias"]))
        let n = store.totalCount
        var trainable = Set<Int>()   // the trainable floats of the arena
        for (i, e) in store.entries.enumerated() where store.trainable[i] { trainable.formUnion(e.offset..<(e.offset + e.count)) }
        #expect(n == 13 && trainable.count == 6)
        let fisher = randomFloats(n, seed: 11).map { $0 * $0 + 0.1 }, anchor = randomFloats(n, seed: 12), theta = randomFloats(n, seed: 13)
        for i in 0..<n { store.allValuesMutable[i] = theta[i] }
        let beta: Float = 3
        let regularizer = FisherRegularizer(fisher: fisher, anchor: anchor)
        store.zeroGrads()
        regularizer.addGradient(to: store, weight: beta)
        let analytic = Array(store.allGrads)
        func penalty(_ v: [Float]) -> Double {
            var sum = 0.0
            for j in trainable {
                let d = Double(v[j]) - Double(anchor[j])
                sum += Double(beta) * Double(fisher[j]) * d * d
            }
            return sum
        }
        let error = finiteDifferenceError(at: theta, analytic: analytic, samples: n, step: 1.0 / 64, penalty)
        #expect(error < 1e-4, "Fisher penalty: FD error \(error)")
        #expect((0..<n).filter { !trainable.contains($0) }.allSatisfy { analytic[$0] == 0 })
        #expect(trainable.allSatisfy { analytic[$0] != 0 })
        regularizer.addGradient(to: store, weight: beta)
        #expect(Array(store.allGrads) == analytic.map { $0 + $0 })
    }
}
