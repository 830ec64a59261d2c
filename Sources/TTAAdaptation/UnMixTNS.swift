import Foundation
import TTAModels
import TTANN
import TTATensor

/// UnMix-TNS (Tomar et al., ICLR 2024, devavratTomar/unmixtns): every BN normalises each sample with
/// its own statistics, mixed from K running components, so that non-i.i.d. (label-correlated) test
/// batches do not share one set of batch statistics.
///
/// Alone (`unmix_tns`) it runs under the source model, no parameter trained: the reference's default run.
/// With a `host` (`tent+unmix_tns`, `eta+unmix_tns`, …) the host method adapts on top of it, as the
/// reference's `replace_bn_layers` before the method is set up: the host configures the model (its
/// trainable selection, the BN affine parameters; its BN mode is overridden by UnMix-TNS), then every
/// BN gets UnMix-TNS statistics, and the host's gradients flow through them (`SampleStatistics`): through
/// the instance statistics `m_b`, `v_b` in the mixtures, not through the assignments `p_bk` (computed
/// under `no_grad` in the reference) nor the components. Every forward pass of the host updates the
/// components as it normalises, before the optimizer step, as the reference layer does in `forward`:
/// one per step for TENT, ETA, EATA and RDumb, two for SAR (and for ROID: its pass on the batch and
/// its augmented pass on the kept images; its second recording of the batch repeats the first pass's
/// statistics, `RepeatablePass`); RoTTA's student moves them only at its memory updates. A host that copies the model (`copiesTheModel`: CoTTA's teacher
/// and anchor) gets UnMix-TNS installed first, so that each copy has layers of its own, as the reference's
/// deep copies of the replaced model do: they share the initial draws, move with their own forward passes
/// (the teacher's plain pass or its N augmented ones, the anchor's one), are not averaged into the teacher
/// (the reference's EMA goes over parameters, not buffers) and are restored with the student's on a reset.
/// When the host restores the source model by
/// itself (SAR's model recovery, RDumb's periodic reset: the reference reloads the whole state dict, the
/// components included), the components go back to their initial draws too.
///
/// Per BN layer (C channels): components `M_k`, `V_k` (k = 1…K), initialised from the source statistics
/// as `M_k = μ + √(α·K/(K−1))·σ ⊙ ε_k` (ε_k ~ N(0, I), drawn at the first batch from the adaptor's
/// generator), `V_k = (1−α)·σ²`, α = ½ (K = 1: `M = μ`, `V = σ²`). For each sample b: instance mean
/// `m_b` and biased variance `v_b` over H·W; assignment `p_bk = softmax_k(cos(m_b, M_k)/0.07)`;
/// mixtures `μ_bk = (1−p_bk)·M_k + p_bk·m_b`, `σ²_bk = (1−p_bk)·V_k + p_bk·v_b`; the sample is normalised
/// with `mean_k μ_bk` and `mean_k σ²_bk + mean_k μ_bk² − (mean_k μ_bk)²`. Then
/// `M_k += η·mean_b p_bk (m_b − M_k)`, `V_k += η·mean_b p_bk (v_b − V_k)`, with
/// `η = 1 − (1 − 0.1)^(B/B_max)` (B the batch size, `B_max` = `unmixBatchSizeMax`).
///
/// Works at any batch size, 1 included (the statistics are per sample), alone and under a host, but for
/// the hosts whose batches relate their images (`lame`, `roid`: `MethodRegistry`'s `singleImages`). A model
/// without BatchNorm layers (a ViT) is refused. EATA's Fisher information is computed when the host is
/// configured, before UnMix-TNS is installed (with BN batch statistics): the reference has no EATA, and
/// its components are drawn at the first batch.
public final class UnMixTNSMethod: AdaptationMethod {
    public let name: String
    public var steps: Int { host?.steps ?? 1 }
    public let configuration: MethodConfiguration
    /// The method adapting on top of the UnMix-TNS normalisation; nil: the source model, no training.
    public let host: (any AdaptationMethod)?
    /// The UnMix-TNS state of every BN layer, in the model's BN order.
    public private(set) var layers: [UnMixTNSLayer] = []
    /// The components' initial means per layer (K·C each, in the model's BN order); drawn at the first
    /// batch when nil. Set them before the first batch to fix the draws (as the parity tests do).
    public var initialMeans: [[Float]]?

    /// UnMix-TNS under `host` (named `<host>+unmix_tns`), or alone (`unmix_tns`).
    public init(_ configuration: MethodConfiguration, host: (any AdaptationMethod)? = nil) {
        self.configuration = configuration
        self.host = host
        name = host.map { "\($0.name)+unmix_tns" } ?? "unmix_tns"
    }

    public func configure(_ model: any ImageClassifier) throws {
        guard !model.batchNorms.isEmpty else {
            // The reference's replacement would find nothing and run the bare method: say so instead.
            throw AdaptationError("\(name): \(model.architecture) has no BatchNorm layer for UnMix-TNS to replace"
                                  + (host.map { "; run \($0.name) alone" } ?? ""))
        }
        let k = configuration.unmixComponents
        func install() {
            layers = model.batchNorms.map { bn in
                let layer = UnMixTNSLayer(components: k, mean: Array(UnsafeBufferPointer(start: model.store.pointer(bn.runningMean), count: bn.features)),
                                          variance: Array(UnsafeBufferPointer(start: model.store.pointer(bn.runningVar), count: bn.features)),
                                          bnMomentum: bn.momentum ?? 0.1, batchSizeMax: configuration.unmixBatchSizeMax,
                                          configuredBatchSize: configuration.batchSize)
                bn.sampleStatistics = layer
                return layer
            }
        }
        if let host, host.copiesTheModel {
            // The copies the host makes (teacher, anchor) get UnMix-TNS layers of their own.
            install()
            try host.configure(model)
        } else if let host {
            try host.configure(model)
            install()
        } else {
            model.setBatchNormMode(.runningStatistics)
            model.store.setTrainable(.none)
            install()
        }
    }

    /// What the host takes (an augmenting host's square images, RoTTA's memory size).
    public func checkBatch(shape: [Int]) throws {
        try host?.checkBatch(shape: shape)
    }

    /// The reference's UnMix-TNS layers are not BatchNorm layers, so its sliding window (`has_bn`) predicts the new
    /// image alone between updates, which moves the components by that image only.
    public var predictsWithTheWindow: Bool { false }
    public func stepsOnTheWindow(_ on: Bool) { host?.stepsOnTheWindow(on) }
    public func setMemoryProbe(_ on: Bool) { host?.setMemoryProbe(on) }

    /// The host's prediction (CoTTA's: its teacher's), for the sliding window between updates. A window's first images
    /// are predicted before any step: the components are drawn then (`startLayers`).
    public func predict(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator) throws -> Tensor {
        try startLayers(rng: &rng)
        return try host?.predict(x, model: model, rng: &rng) ?? model.forward(x, .inference)
    }

    public func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
        try startLayers(rng: &rng)
        guard let host else { return timer.measure(.forward) { model.forward(x, .inference) } }
        let restoresBefore = (host as? RestoresSource)?.sourceRestores
        let out = try host.step(x, model: model, rng: &rng, timer: &timer)
        if let restoresBefore, (host as? RestoresSource)?.sourceRestores != restoresBefore {
            for layer in layers { layer.restart() }
        }
        return out
    }

    /// Before the first forward pass, the components' initial means: `initialMeans`, else drawn from `rng`.
    private func startLayers(rng: inout SeededGenerator) throws {
        guard !layers.isEmpty else { throw AdaptationError("\(name): step before configure") }
        if layers.contains(where: { $0.initial == nil }) {
            if initialMeans == nil {
                initialMeans = layers.map { layer in
                    (0..<(layer.k * layer.c)).map { i in layer.sourceMean[i % layer.c] + layer.noiseScale[i % layer.c] * rng.nextNormal() }
                }
            }
            guard let means = initialMeans, means.count == layers.count,
                  zip(means, layers).allSatisfy({ $0.count == $1.k * $1.c }) else {
                throw AdaptationError("\(name): initialMeans must hold K·C values for each of the model's \(layers.count) BN layers")
            }
            for (layer, m) in zip(layers, means) { layer.start(means: m) }
        }
    }

    public func reset() {
        host?.reset()
        for layer in layers { layer.restart() }
    }

    /// State key of BN layer `layer` in the model (`copy` 0) or in the host's `copy`-th model copy.
    static func stateKey(layer: Int, copy: Int) -> String { copy == 0 ? "layer.\(layer)" : "layer.\(layer).copy\(copy)" }

    /// Per BN layer, in the model and in each of the host's copies of it: the components' current and
    /// initial means and variances (absent before the first batch); the drawn initial means; the host's
    /// state under `host.`.
    public func captureState() -> MethodState {
        var s = componentsState()
        if let host { s.store(host.captureState(), as: "host") }
        return s
    }

    public func restoreState(_ state: MethodState) throws {
        try host?.restoreState(state.inner("host"))
        try restoreComponents(state)
    }

    /// A prediction moves the components (and what the host's prediction moves), not the rest of the host's state.
    public func capturePredictionState() -> MethodState? {
        var s = componentsState()
        if let inner = host?.capturePredictionState() { s.store(inner, as: "host") }
        return s
    }

    public func restorePredictionState(_ state: MethodState) throws {
        try host?.restorePredictionState(state.inner("host"))
        try restoreComponents(state)
    }

    /// The components of every layer and copy, and the drawn initial means (`captureState` without the host's).
    private func componentsState() -> MethodState {
        var s = MethodState()
        for (i, layer) in layers.enumerated() {
            for (j, l) in layer.family.enumerated() {
                let key = Self.stateKey(layer: i, copy: j)
                s.tensors["\(key).means"] = l.means
                s.tensors["\(key).variances"] = l.variances
                if let initial = l.initial {
                    s.tensors["\(key).initialMeans"] = initial.means
                    s.tensors["\(key).initialVariances"] = initial.variances
                }
            }
        }
        for (i, m) in (initialMeans ?? []).enumerated() { s.tensors["drawn.\(i)"] = m }
        return s
    }

    private func restoreComponents(_ state: MethodState) throws {
        for (i, layer) in layers.enumerated() {
            for (j, l) in layer.family.enumerated() {
                let key = Self.stateKey(layer: i, copy: j), kc = l.k * l.c
                func values(_ field: String) throws -> [Float]? {
                    guard let v = state.tensors["\(key).\(field)"] else { return nil }
                    guard v.count == kc else { throw AdaptationError("\(name): state '\(key).\(field)' has \(v.count) values, expected \(kc)") }
                    return v
                }
                guard let means = try values("means"), let variances = try values("variances") else {
                    throw AdaptationError("\(name): state of BN layer \(i)\(j == 0 ? "" : " (model copy \(j))") is missing")
                }
                let initial = try values("initialMeans").flatMap { m in try values("initialVariances").map { (m, $0) } }
                l.restore(means: means, variances: variances, initial: initial)
            }
        }
        let drawn = (0..<layers.count).compactMap { state.tensors["drawn.\($0)"] }
        initialMeans = drawn.count == layers.count ? drawn : nil
    }
}

/// A sample-statistics provider whose state moves with every forward pass, for a method that predicts on a
/// batch and then records the same forward again (ROID, whose loss needs the augmented pass's logits before
/// the first pass's backward, while a model records one forward at a time): `keepNextPass()` before the
/// prediction, `repeatKeptPass()` before the recording, and the recording gets the prediction's statistics
/// and slopes without moving the state again, so the state moves once, as in the reference's single pass.
/// (The input is the same both times: no parameter changes in between.)
protocol RepeatablePass: AnyObject {
    func keepNextPass()
    func repeatKeptPass()
}

/// One BN layer's UnMix-TNS components and their update (see `UnMixTNSMethod`).
public final class UnMixTNSLayer: SampleStatisticsProvider, RepeatablePass {
    public let k: Int, c: Int
    /// The source running statistics the components start from.
    public let sourceMean: [Float], sourceVariance: [Float]
    /// `M` and `V`, K·C each, row-major by component.
    public private(set) var means: [Float], variances: [Float]
    /// `M` and `V` after initialisation (what `restart()` returns to); nil until the first batch.
    public private(set) var initial: (means: [Float], variances: [Float])?
    /// The same layer in the model's copies (a mean teacher's, an anchor's; `copy()`), in the order they
    /// were made: each moves its components with its own forward passes, and starts and restarts with
    /// this layer, as PyTorch's deep copies of a model whose BNs were replaced before the method copied it.
    public private(set) var replicas: [UnMixTNSLayer] = []
    let bnMomentum: Float, batchSizeMax: Int, configuredBatchSize: Int?
    /// `RepeatablePass`: keep the next pass's statistics; give the kept ones to the next pass.
    private var keepsNext = false, repeatsNext = false
    private var kept: SampleStatistics?
    /// α = ½ of the initialisation.
    static let spread: Float = 0.5

    init(components: Int, mean: [Float], variance: [Float], bnMomentum: Float, batchSizeMax: Int, configuredBatchSize: Int?) {
        (k, c, sourceMean, sourceVariance) = (components, mean.count, mean, variance)
        (self.bnMomentum, self.batchSizeMax, self.configuredBatchSize) = (bnMomentum, batchSizeMax, configuredBatchSize)
        means = (0..<components).flatMap { _ in mean }
        variances = (0..<components).flatMap { _ in variance }
    }

    /// `√(α·K/(K−1))·σ` per channel (0 for K = 1): the standard deviation of the initial means.
    var noiseScale: [Float] {
        k == 1 ? Array(repeating: 0, count: c) : sourceVariance.map { (Self.spread * Float(k) / Float(k - 1)).squareRoot() * $0.squareRoot() }
    }

    /// Puts back a captured state.
    func restore(means m: [Float], variances v: [Float], initial i: (means: [Float], variances: [Float])?) {
        (means, variances, initial) = (m, v, i)
    }

    func start(means m: [Float]) {
        let a: Float = k == 1 ? 0 : Self.spread
        means = m
        variances = (0..<k).flatMap { _ in sourceVariance.map { (1 - a) * $0 } }
        initial = (means, variances)
        for r in replicas { r.start(means: m) }
    }

    func restart() {
        if let initial { (means, variances) = initial }
        for r in replicas { r.restart() }
    }

    public func copy() -> any SampleStatisticsProvider {
        let r = UnMixTNSLayer(components: k, mean: sourceMean, variance: sourceVariance, bnMomentum: bnMomentum,
                              batchSizeMax: batchSizeMax, configuredBatchSize: configuredBatchSize)
        r.restore(means: means, variances: variances, initial: initial)
        replicas.append(r)
        return r
    }

    /// This layer, then its replicas and theirs, depth first: every copy whose state a checkpoint keeps.
    var family: [UnMixTNSLayer] { [self] + replicas.flatMap(\.family) }

    public func statistics(_ x: Tensor, layer: BatchNorm2d) -> SampleStatistics {
        if repeatsNext, let kept, kept.mean.count == x.shape[0] * c {
            (repeatsNext, self.kept) = (false, nil)
            return kept
        }
        repeatsNext = false
        let (m, v) = Self.instanceStatistics(x)
        let p = assignments(m)
        let out = mixture(m, v, assignments: p)
        update(m, v, assignments: p, batchSize: x.shape[0])
        if keepsNext { (keepsNext, kept) = (false, out) }
        return out
    }

    func keepNextPass() { keepsNext = true }
    func repeatKeptPass() { repeatsNext = kept != nil }

    /// Instance mean `m` and biased variance `v` of every row (sample, channel) over H·W, in Double.
    static func instanceStatistics(_ x: Tensor) -> (mean: [Double], variance: [Double]) {
        let (rows, hw) = (x.shape[0] * x.shape[1], x.shape[2] * x.shape[3])
        var m = [Double](repeating: 0, count: rows), v = m
        for row in 0..<rows {
            let plane = x.storage[(row * hw)..<((row + 1) * hw)]
            let mu = plane.reduce(0.0) { $0 + Double($1) } / Double(hw)
            m[row] = mu
            v[row] = plane.reduce(0.0) { $0 + (Double($1) - mu) * (Double($1) - mu) } / Double(hw)
        }
        return (m, v)
    }

    /// `p_bk = softmax_k(cos(m_b, M_k)/0.07)` (N·K, row-major by sample): a constant of the forward pass,
    /// as the reference computes it under `no_grad`.
    func assignments(_ m: [Double]) -> [Double] {
        let n = m.count / c
        func unit(_ a: [Double]) -> [Double] {
            let norm = max(a.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
            return a.map { $0 / norm }
        }
        let unitM = (0..<k).map { j in unit(means[(j * c)..<((j + 1) * c)].map(Double.init)) }
        var p = [Double](repeating: 0, count: n * k)
        for b in 0..<n {
            let u = unit(Array(m[(b * c)..<((b + 1) * c)]))
            let sims = unitM.map { zip($0, u).reduce(0) { $0 + $1.0 * $1.1 } / 0.07 }
            let mx = sims.max()!
            let e = sims.map { Foundation.exp($0 - mx) }
            let s = e.reduce(0, +)
            for j in 0..<k { p[b * k + j] = e[j] / s }
        }
        return p
    }

    /// The normalisation statistics of every row from its instance statistics and the assignments,
    /// with their slopes in `m` and `v` (for the backward pass; the components and `p` are constants):
    /// `μ = mean_k μ_k`, `σ² = mean_k σ²_k + mean_k μ_k² − μ²` with `μ_k = (1−p_k)·M_k + p_k·m`,
    /// `σ²_k = (1−p_k)·V_k + p_k·v`; so `∂μ/∂m = ∂σ²/∂v = mean_k p_k` and `∂σ²/∂m = 2·(mean_k p_k·μ_k − μ·mean_k p_k)`.
    func mixture(_ m: [Double], _ v: [Double], assignments p: [Double]) -> SampleStatistics {
        let n = m.count / c
        var mean = [Float](repeating: 0, count: n * c), variance = mean, meanByMean = mean, varianceByMean = mean
        for b in 0..<n {
            for ch in 0..<c {
                var (sm, sm2, sv, sp, spm) = (0.0, 0.0, 0.0, 0.0, 0.0)
                for j in 0..<k {
                    let pj = p[b * k + j]
                    let mu = (1 - pj) * Double(means[j * c + ch]) + pj * m[b * c + ch]
                    sm += mu; sm2 += mu * mu
                    sv += (1 - pj) * Double(variances[j * c + ch]) + pj * v[b * c + ch]
                    sp += pj; spm += pj * mu
                }
                let kk = Double(k), mk = sm / kk, pbar = sp / kk
                mean[b * c + ch] = Float(mk)
                variance[b * c + ch] = Float(sv / kk + sm2 / kk - mk * mk)
                meanByMean[b * c + ch] = Float(pbar)
                varianceByMean[b * c + ch] = Float(2 * (spm / kk - mk * pbar))
            }
        }
        return SampleStatistics(mean: mean, variance: variance, instanceMean: m.map(Float.init), meanByMean: meanByMean,
                                varianceByMean: varianceByMean, varianceByVariance: meanByMean)
    }

    /// The component update (no gradient): `M_k += η·mean_b p_bk (m_b − M_k)`, `V_k += η·mean_b p_bk (v_b − V_k)`,
    /// with momentum `η = 1 − (1 − m_bn)^(B/B_max)`.
    func update(_ m: [Double], _ v: [Double], assignments p: [Double], batchSize n: Int) {
        let batch = Double(configuredBatchSize ?? n)
        let eta = 1 - Foundation.pow(1 - Double(bnMomentum), batch / Double(batchSizeMax))
        for j in 0..<k {
            for ch in 0..<c {
                let (mj, vj) = (Double(means[j * c + ch]), Double(variances[j * c + ch]))
                var (dm, dv) = (0.0, 0.0)
                for b in 0..<n {
                    dm += p[b * k + j] * (m[b * c + ch] - mj)
                    dv += p[b * k + j] * (v[b * c + ch] - vj)
                }
                means[j * c + ch] = Float(mj + eta * dm / Double(n))
                variances[j * c + ch] = Float(vj + eta * dv / Double(n))
            }
        }
    }
}
