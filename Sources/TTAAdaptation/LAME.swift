import Foundation
import TTAModels
import TTANN
import TTATensor

/// How LAME relates the samples of a batch, on L2-normalised features `f_i`.
public enum LAMEAffinity: String, Sendable, Codable, CaseIterable {
    /// `W_ij = exp(−‖f_i − f_j‖² / 2σ²)`, σ = the mean distance to each point's k-th nearest point,
    /// the point itself counting as the first. The diagonal stays 1.
    case rbf
    /// `W_ij = 1` when j is one of the k nearest other points of i, else 0 (not symmetric).
    case knn
    /// `W = F·Fᵀ`.
    case linear
}

/// LAME (Boudiaf et al., CVPR 2022, arXiv 2201.05718): parameter-free output correction. The source
/// model (running BN statistics, nothing trained) gives class probabilities `p` and features; LAME
/// returns the assignment `Y` that minimises `Σ −Y log p − Σ W_ij Y_iᵀY_j + Σ Y log Y` on the batch,
/// found by at most 100 concave-convex (bound) iterations `Y ← softmax(log p + W·Y)`.
///
/// Output: `Y`, class **probabilities** `(N, C)`, not logits. No state persists across batches.
/// The model must expose its penultimate features (`FeatureClassifier`).
public final class LAMEMethod: AdaptationMethod {
    public let name = "lame"
    public let steps = 1
    public let affinity: LAMEAffinity
    public let neighbours: Int
    public let forceSymmetry: Bool
    /// Bound-iteration cap (`max_steps` in the reference, fixed there at 100).
    public var maxIterations = 100

    public init(_ configuration: MethodConfiguration) {
        affinity = configuration.lameAffinity
        neighbours = configuration.lameNeighbours
        forceSymmetry = configuration.lameForceSymmetry
    }

    public func configure(_ model: any ImageClassifier) throws {
        guard model is any FeatureClassifier else {
            throw AdaptationError("lame needs the model's penultimate features; \(model.architecture) does not expose them")
        }
        model.setBatchNormMode(.runningStatistics)
        model.store.setTrainable(.none)
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        guard let model = model as? any FeatureClassifier else { throw AdaptationError("lame: the model lost its feature split") }
        let (features, logits) = timer.measure(.forward) {
            let f = model.features(x, .inference)
            return (f, model.head(f, .inference))
        }
        return timer.measure(.update) {
            let (n, c) = (logits.shape[0], logits.shape[1])
            let probs = logits.softmaxRows()
            // One image has no neighbours: the pairwise term vanishes and the source prediction is the
            // solution (the reference's kNN over one sample fails instead).
            if n == 1 { return probs }
            let unary = probs.storage.map { -Foundation.log(Double($0) + 1e-10) }
            var w = affinityMatrix(normalizedRows(features))
            if forceSymmetry {
                for i in 0..<n { for j in (i + 1)..<n { let s = (w[i * n + j] + w[j * n + i]) / 2; w[i * n + j] = s; w[j * n + i] = s } }
            }
            let y = boundIterations(unary: unary, kernel: w, n: n, c: c)
            return Tensor(shape: [n, c], storage: y.map(Float.init))
        }
    }

    public func reset() {}

    /// Nothing persists in the method (the BN statistics live in the model).
    public func captureState() -> MethodState { MethodState() }
    public func restoreState(_ state: MethodState) throws {}

    /// `f_i / max(‖f_i‖, 1e-12)` in Double, as `F.normalize`.
    private func normalizedRows(_ f: Tensor) -> [[Double]] {
        let d = f.shape[1]
        return (0..<f.shape[0]).map { i in
            let row = f.storage[(i * d)..<((i + 1) * d)].map(Double.init)
            let norm = max(row.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
            return row.map { $0 / norm }
        }
    }

    /// The `(N, N)` affinity, row-major.
    private func affinityMatrix(_ f: [[Double]]) -> [Double] {
        let n = f.count
        if affinity == .linear {
            return (0..<(n * n)).map { k in zip(f[k / n], f[k % n]).reduce(0) { $0 + $1.0 * $1.1 } }
        }
        var dist = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in (i + 1)..<n {
                let d = zip(f[i], f[j]).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
                dist[i * n + j] = d
                dist[j * n + i] = d
            }
        }
        // Each row's points by increasing distance (ties by index); the point itself comes first.
        let nearest = (0..<n).map { i in (0..<n).sorted { (dist[i * n + $0], $0) < (dist[i * n + $1], $1) } }
        var w = [Double](repeating: 0, count: n * n)
        switch affinity {
        case .knn:
            for i in 0..<n { for j in nearest[i].dropFirst().prefix(neighbours) { w[i * n + j] = 1 } }
        case .rbf:
            let k = min(neighbours, n)
            let sigma = (0..<n).reduce(0) { $0 + dist[$1 * n + nearest[$1][k - 1]] } / Double(n)
            w = dist.map { Foundation.exp(-$0 * $0 / (2 * sigma * sigma)) }
        case .linear:
            break
        }
        return w
    }

    /// `Y ← softmax(−a + W·Y)` from `Y = softmax(−a)`, until the energy changes by at most 1e-8
    /// relative (checked from the third iteration on) or `maxIterations`.
    private func boundIterations(unary a: [Double], kernel w: [Double], n: Int, c: Int) -> [Double] {
        var y = rowSoftmax(a.map { -$0 }, n: n, c: c)
        var oldEnergy = Double.infinity
        for iteration in 0..<maxIterations {
            var pairwise = [Double](repeating: 0, count: n * c)
            for i in 0..<n {
                for j in 0..<n where w[i * n + j] != 0 {
                    let wij = w[i * n + j]
                    for k in 0..<c { pairwise[i * c + k] += wij * y[j * c + k] }
                }
            }
            y = rowSoftmax((0..<(n * c)).map { -a[$0] + pairwise[$0] }, n: n, c: c)
            var energy = 0.0
            for k in 0..<(n * c) { energy += a[k] * y[k] - pairwise[k] * y[k] + y[k] * Foundation.log(max(y[k], 1e-20)) }
            if iteration > 1 && abs(energy - oldEnergy) <= 1e-8 * abs(oldEnergy) { break }
            oldEnergy = energy
        }
        return y
    }

    private func rowSoftmax(_ z: [Double], n: Int, c: Int) -> [Double] {
        var out = z
        for i in 0..<n {
            let row = z[(i * c)..<((i + 1) * c)]
            let mx = row.max()!
            let e = row.map { Foundation.exp($0 - mx) }
            let s = e.reduce(0, +)
            for k in 0..<c { out[i * c + k] = e[k] / s }
        }
        return out
    }
}
