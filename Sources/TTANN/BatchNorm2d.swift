import Foundation
import TTAKernels
import TTATensor

/// Which statistics a `BatchNorm2d` normalises with, and whether it updates its running buffers.
///
/// PyTorch semantics (`torch.nn.BatchNorm2d`): batch variance is biased for normalisation and
/// unbiased (×M/(M−1), M = N·H·W) for the running update; `running = (1 − m)·running + m·batch`.
public enum BatchNormMode: Sendable, Equatable {
    /// `eval()`: the running mean and variance (the source model; `source`, BN-0).
    case runningStatistics
    /// Batch statistics, running buffers untouched (`track_running_stats=False`: TENT, EATA, SAR, CoTTA).
    case batchStatistics
    /// `train()` with tracking: batch statistics, and the running buffers and `num_batches_tracked`
    /// are updated with the layer's momentum (`norm_test`, the first pass of `norm_ema`).
    case batchStatisticsUpdatingRunning
    /// α-BN (`norm_alpha`): `μ = (1−α)·μ_run + α·μ_batch`, `σ² = (1−α)·σ²_run + α·σ²_batch,unbiased`.
    /// Forward only.
    case alphaMixed(alpha: Float)
    /// RoTTA's robust BN in train mode: `μ = (1−α)·μ_run + α·μ_batch`, `σ² = (1−α)·σ²_run + α·σ²_batch,biased`;
    /// then `μ_run, σ²_run ← μ, σ²`. Only the batch part carries a gradient to the input.
    /// (Its eval mode is `runningStatistics`.)
    case robust(alpha: Float)
}

/// Per-sample normalisation statistics (UnMix-TNS) of a `(N, C, H, W)` input, one value per row
/// `r = n·C + c`: the layer normalises row `r` with `mean[r]` and `variance[r]`. For the backward pass,
/// how they depend on the row's own instance mean `m_r` (over H·W) and biased variance `v_r`:
/// `meanByMean` = ∂μ_r/∂m_r, `varianceByMean` = ∂σ²_r/∂m_r, `varianceByVariance` = ∂σ²_r/∂v_r; every
/// other input of the statistics is a constant of the forward pass (μ_r does not depend on v_r).
public struct SampleStatistics: Sendable {
    public var mean: [Float], variance: [Float]
    /// `m_r`.
    public var instanceMean: [Float]
    public var meanByMean: [Float], varianceByMean: [Float], varianceByVariance: [Float]

    public init(mean: [Float], variance: [Float], instanceMean: [Float], meanByMean: [Float], varianceByMean: [Float],
                varianceByVariance: [Float]) {
        (self.mean, self.variance, self.instanceMean) = (mean, variance, instanceMean)
        (self.meanByMean, self.varianceByMean, self.varianceByVariance) = (meanByMean, varianceByMean, varianceByVariance)
    }
}

/// Statistics computed per sample instead of per batch (UnMix-TNS): replaces the layer's mode. The
/// provider may update its own state from `x` (once per forward pass).
public protocol SampleStatisticsProvider: AnyObject {
    func statistics(_ x: Tensor, layer: BatchNorm2d) -> SampleStatistics
    /// The provider of the same layer in a copy of the model (`ImageClassifier.copy()`, e.g. a mean
    /// teacher): its own state from then on, starting as this one's, as PyTorch's `deepcopy` of a model
    /// copies a normalisation layer's buffers.
    func copy() -> any SampleStatisticsProvider
}

/// `nn.BatchNorm2d(features)` with `<name>.weight`, `.bias`, `.running_mean`, `.running_var`,
/// `.num_batches_tracked`; eps 1e-5, momentum 0.1 unless given (`nil` momentum = cumulative average).
public final class BatchNorm2d: Module {
    public let store: ParameterStore
    public let name: String
    public let features: Int
    public let eps: Float
    public var momentum: Float?
    public var mode: BatchNormMode = .runningStatistics
    /// When set, replaces `mode`'s statistics by per-sample ones; the backward pass goes through them.
    public var sampleStatistics: (any SampleStatisticsProvider)?
    public let weight, bias, runningMean, runningVar: ParameterRef
    public var counterName: String { "\(name).num_batches_tracked" }

    private var savedInput: Tensor?
    private var savedMean: [Float] = []
    private var savedInvStd: [Float] = []
    private var savedBatchStatistics = false
    /// Robust mode: α and the batch mean, for the backward pass.
    private var savedBatchWeight: Float = 1
    private var savedBatchMean: [Float]?
    /// Per-sample statistics of the recorded forward, and their inverse standard deviations.
    private var savedSample: (statistics: SampleStatistics, invStd: [Float])?

    public init(_ store: ParameterStore, name: String, features: Int, eps: Float = 1e-5, momentum: Float? = 0.1) {
        self.store = store
        self.name = name
        self.features = features
        self.eps = eps
        self.momentum = momentum
        weight = store.add("\(name).weight", shape: [features], kind: .parameter, initial: 1, isNormAffine: true)
        bias = store.add("\(name).bias", shape: [features], kind: .parameter, initial: 0, isNormAffine: true)
        runningMean = store.add("\(name).running_mean", shape: [features], kind: .buffer, initial: 0)
        runningVar = store.add("\(name).running_var", shape: [features], kind: .buffer, initial: 1)
        store.addCounter("\(name).num_batches_tracked")
    }

    public func forward(_ x: Tensor, _ ctx: ForwardContext) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == features, "BatchNorm2d \(name): expected (N, \(features), H, W), got \(x.shape)")
        let (n, c, hw) = (x.shape[0], features, x.shape[2] * x.shape[3])
        if let provider = sampleStatistics {
            let stats = provider.statistics(x, layer: self)
            precondition([stats.mean, stats.variance, stats.instanceMean, stats.meanByMean, stats.varianceByMean,
                          stats.varianceByVariance].allSatisfy { $0.count == n * c },
                         "BatchNorm2d \(name): per-sample statistics of the wrong size")
            let sd = stats.variance.map { ($0 + eps).squareRoot() }, invStd = sd.map { 1 / $0 }
            var y = Tensor(shape: x.shape)
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { yp in
                    sampleNormApply(x: xp.baseAddress!, n: n, c: c, hw: hw, mean: stats.mean, standardDeviation: sd,
                                    gamma: store.pointer(weight), beta: store.pointer(bias), y: yp.baseAddress!)
                }
            }
            savedInput = ctx.recording ? x : nil
            savedSample = ctx.recording ? (stats, invStd) : nil
            return y
        }
        savedSample = nil
        var mean = [Float](repeating: 0, count: c), variance = [Float](repeating: 0, count: c)
        let rm = store.pointer(runningMean), rv = store.pointer(runningVar)
        let usesBatch: Bool
        var batchWeight: Float = 1, batchMean: [Float]?
        switch mode {
        case .runningStatistics:
            for j in 0..<c { mean[j] = rm[j]; variance[j] = rv[j] }
            usesBatch = false
        case .batchStatistics, .batchStatisticsUpdatingRunning, .alphaMixed, .robust:
            // PyTorch's BatchNorm refuses a single value per channel; RoTTA's robust BN (biased variance, mixed with the
            // running statistics) takes it, as the reference's RobustBN does.
            let least = if case .robust = mode { 1 } else { 2 }
            precondition(n * hw >= least, "BatchNorm2d \(name): batch statistics need at least \(least) value(s) per channel (got N·H·W = \(n * hw))")
            x.withUnsafeBufferPointer { xp in
                batchNormStatistics(x: xp.baseAddress!, n: n, c: c, hw: hw, mean: &mean, variance: &variance)
            }
            let unbias = Float(n * hw) / Float(n * hw - 1)
            if case .batchStatisticsUpdatingRunning = mode {
                // Saturating: a counter loaded at Int64.max stays there (PyTorch's int64 would wrap) rather than trapping.
                let (next, overflow) = (store.counters[counterName] ?? 0).addingReportingOverflow(1)
                let count = overflow ? Int64.max : next
                store.counters[counterName] = count
                let m = momentum ?? 1 / Float(count)
                for j in 0..<c {
                    rm[j] = (1 - m) * rm[j] + m * mean[j]
                    rv[j] = (1 - m) * rv[j] + m * variance[j] * unbias
                }
            } else if case .alphaMixed(let a) = mode {
                for j in 0..<c {
                    mean[j] = (1 - a) * rm[j] + a * mean[j]
                    variance[j] = (1 - a) * rv[j] + a * variance[j] * unbias
                }
            }
            if case .robust(let a) = mode {
                batchMean = mean
                batchWeight = a
                for j in 0..<c {
                    mean[j] = (1 - a) * rm[j] + a * mean[j]
                    variance[j] = (1 - a) * rv[j] + a * variance[j]
                    rm[j] = mean[j]
                    rv[j] = variance[j]
                }
            }
            if case .alphaMixed = mode { usesBatch = false } else { usesBatch = true }
        }
        let sd = variance.map { ($0 + eps).squareRoot() }, invStd = sd.map { 1 / $0 }
        var y = Tensor(shape: x.shape)
        let g = store.pointer(weight), b = store.pointer(bias)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                // RoTTA's robust BN in the reference's order of operations (see `batchNormApply`).
                batchNormApply(x: xp.baseAddress!, n: n, c: c, hw: hw, mean: mean, invStd: invStd, gamma: g, beta: b, y: yp.baseAddress!,
                               standardDeviation: batchMean == nil ? nil : sd)
            }
        }
        if ctx.recording {
            if case .alphaMixed = mode { preconditionFailure("BatchNorm2d \(name): alphaMixed mode is forward-only") }
            savedInput = x
            savedMean = mean
            savedInvStd = invStd
            savedBatchStatistics = usesBatch
            savedBatchWeight = batchWeight
            savedBatchMean = batchMean
        } else {
            savedInput = nil
        }
        return y
    }

    public func backward(_ dy: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let x = savedInput else { preconditionFailure("BatchNorm2d \(name).backward without a recorded forward") }
        savedInput = nil
        let (n, c, hw) = (x.shape[0], features, x.shape[2] * x.shape[3])
        let dG = store.requiresGrad(weight) ? store.gradPointer(weight) : nil
        let dB = store.requiresGrad(bias) ? store.gradPointer(bias) : nil
        var dx = [Float](repeating: 0, count: needInputGradient ? x.count : 0)
        let g = store.pointer(weight)
        if let (s, invStd) = savedSample {
            savedSample = nil
            x.withUnsafeBufferPointer { xp in
                dy.withUnsafeBufferPointer { dyp in
                    dx.withUnsafeMutableBufferPointer { dxp in
                        sampleNormBackward(dy: dyp.baseAddress!, x: xp.baseAddress!, n: n, c: c, hw: hw, mean: s.mean, invStd: invStd,
                                           gamma: g, instanceMean: s.instanceMean, meanByMean: s.meanByMean,
                                           varianceByMean: s.varianceByMean, varianceByVariance: s.varianceByVariance,
                                           dx: needInputGradient ? dxp.baseAddress : nil, dGamma: dG, dBeta: dB)
                    }
                }
            }
            return needInputGradient ? Tensor(shape: x.shape, storage: dx) : nil
        }
        x.withUnsafeBufferPointer { xp in
            dy.withUnsafeBufferPointer { dyp in
                dx.withUnsafeMutableBufferPointer { dxp in
                    batchNormBackward(dy: dyp.baseAddress!, x: xp.baseAddress!, n: n, c: c, hw: hw, mean: savedMean,
                                      invStd: savedInvStd, gamma: g, batchStatistics: savedBatchStatistics,
                                      batchWeight: savedBatchWeight, batchMean: savedBatchMean,
                                      dx: needInputGradient ? dxp.baseAddress : nil, dGamma: dG, dBeta: dB)
                }
            }
        }
        return needInputGradient ? Tensor(shape: x.shape, storage: dx) : nil
    }
}
