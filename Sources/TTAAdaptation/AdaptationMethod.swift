import Dispatch
import Foundation
import TTAData
import TTAModels
import TTANN
import TTATensor

/// A test-time adaptation method: what varies between TENT, CoTTA, BN recalibration, …
///
/// The shared mechanics (source snapshot and reset, the steps loop, input validation, the guard
/// against non-finite steps, timing) live once in `Adaptor`. A method only says how it configures the
/// model, what one step does, and what state it keeps between batches.
///
/// **State.** `captureState()` and `restoreState(_:)` export and import everything the method changes
/// between batches outside the model's trainable parameters, buffers and counters (which the adaptor
/// saves itself): optimizer moments and step counts, teacher weights, moving averages, sample counters.
/// The adaptor uses them to roll back a step that produced NaN or infinity and to checkpoint and resume
/// a run bit for bit, so `restoreState(captureState())` after any steps must leave the method exactly as
/// it was. What `configure` fixes and never changes (a frozen anchor copy, the source snapshot, EATA's
/// Fisher information) is rebuilt by `configure` and need not be stored. A method without such state
/// returns `MethodState()` and ignores what it is given. The helpers of `MethodState` store an
/// optimizer (`store(_:as:)` / `restore(_:from:of:)`, which checks it fits) and a teacher model (`store(_:as:)` /
/// `restore(_:from:of:)`); plain values go in `numbers`. A method must change nothing in the model
/// but its trainable parameters, buffers and counters, unless its state holds the rest.
public protocol AdaptationMethod: AnyObject {
    /// Registry name, as in the reference benchmark (`tent`, `cotta`, `norm_test`, …).
    var name: String { get }
    /// Gradient steps per batch (`OPTIM.STEPS`); 1 for methods without gradients.
    var steps: Int { get }
    /// Sets BN modes and the trainable selection, and builds any teacher/anchor copies and optimizers.
    /// Called once, before the adaptor takes the source snapshot.
    func configure(_ model: any ImageClassifier) throws
    /// Whether `configure` copies the model (a mean teacher, an anchor: `ImageClassifier.copy()`). A method
    /// that changes the model's layers before the host is configured (`UnMixTNSMethod`) reads it, so that the
    /// copies get the changed layers too. Default: false.
    var copiesTheModel: Bool { get }
    /// Whether a step normalises the test batch with the batch's own statistics (BN in a batch-statistics
    /// mode: TENT, CoTTA, `norm_test`, …), so that every BN needs more than one value per channel from
    /// the batch. `Adaptor` refuses a batch that gives fewer (one image whose smallest feature map is 1×1),
    /// as PyTorch does. Default: false.
    var needsBatchStatistics: Bool { get }
    /// Predicts on `x` and adapts. Returns the method's output for the batch (logits, or what the
    /// reference returns, e.g. CoTTA's teacher logits), computed before this step's update.
    func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor
    /// The method's prediction for `x` without a gradient update: what the sliding window of a single-image
    /// stream shows between its updates (the reference's `forward_sliding_window`). Default: the model's
    /// forward pass as the method configured it. (norm_ema's updates its BN statistics, as the reference's
    /// EMA BatchNorm does on every call.) `rng` is the adaptor's, for what a method draws at its first forward pass
    /// (UnMix-TNS's components), which under a window may be a prediction.
    func predict(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator) throws -> Tensor
    /// What `predict` moves in the method's own state, outside the model's buffers (UnMix-TNS's components, drawn
    /// and updated by every forward pass), so that the adaptor can undo a sliding-window prediction that left NaN or
    /// infinity there, as it undoes a step. Captured before each such prediction: only that part, not the whole state
    /// (which may hold a teacher). Default: nil, a prediction moves nothing of the method's own.
    func capturePredictionState() -> MethodState?
    /// Restores what `capturePredictionState()` returned. Default: nothing to restore.
    func restorePredictionState(_ state: MethodState) throws
    /// Whether a sliding-window prediction between updates (`predict`) is of the whole window, for its BN statistics,
    /// or of the new image alone. The reference forwards the window only while the configured model still has
    /// BatchNorm layers (`has_bn`, checked after `configure_model`): RoTTA's robust BNs replace them, so RoTTA predicts
    /// the image alone. Default: true (on a model without BN the adaptor predicts the image alone either way).
    var predictsWithTheWindow: Bool { get }
    /// The adaptor says whether the coming steps are on its sliding window's buffer (`Adaptor.windowLength`), which, like
    /// the reference's `input_buffer`, stays one buffer from step to step, written in place slot by slot (RoTTA's memory
    /// keeps views of it in the reference). Default: ignored.
    func stepsOnTheWindow(_ on: Bool)
    /// The memory probe (`MemoryEstimate.probe`) says when it starts and stops: a method whose steps differ in cost
    /// from batch to batch (RoTTA's update every so many images, on its whole memory) then makes every step as costly
    /// as its costliest. The probe resets the method afterwards. Default: ignored.
    func setMemoryProbe(_ on: Bool)
    /// Restores the method's own state (optimizer moments, teacher, anchor, …) to just after `configure`, but
    /// what the reference's reset keeps (SAR's SGD momentum, RMT's place in its source data, RDumb's update
    /// count). The adaptor restores the model itself.
    func reset()
    /// The method's mutable state between batches (see the protocol's discussion).
    func captureState() -> MethodState
    /// Restores a state from `captureState()` of the same method with the same configuration and model.
    /// Throws, naming the key, when a value is missing or does not fit.
    func restoreState(_ state: MethodState) throws
    /// Throws when the method cannot take a batch of `shape` `(N, C, H, W)`, one the model takes (its channels,
    /// N, H, W ≥ 1): an augmenting method's pipeline (CoTTA's) needs square images of the size it was built for,
    /// RoTTA's memory images of one size. `Adaptor` asks before any work, so that a refusal changes nothing.
    /// Default: any such shape.
    func checkBatch(shape: [Int]) throws
}

extension AdaptationMethod {
    public var copiesTheModel: Bool { false }
    public var needsBatchStatistics: Bool { false }
    public var predictsWithTheWindow: Bool { true }
    public func stepsOnTheWindow(_ on: Bool) {}
    public func setMemoryProbe(_ on: Bool) {}
    public func checkBatch(shape: [Int]) throws {}
    public func capturePredictionState() -> MethodState? { nil }
    public func restorePredictionState(_ state: MethodState) throws {}

    public func predict(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator) throws -> Tensor {
        model.forward(x, .inference)
    }
}

/// The fewest images a batch of `height × width` images needs when `model` normalises it with its own statistics: 2
/// when one image leaves the model's smallest BatchNorm feature map a single value per channel (a ResNet-50's 1×1
/// layer 4 on 32×32 images), which PyTorch's BatchNorm refuses too ("Expected more than 1 value per channel when
/// training"); else 1.
func fewestImagesForBatchStatistics(height: Int, width: Int, in model: any ImageClassifier) -> Int {
    model.batchNormValuesPerImage(height: height, width: width) == 1 ? 2 : 1
}

/// Throws when a batch of `images` images of `height × width` is too small for `model`'s BatchNorm layers to
/// normalise it with its own statistics (`fewestImagesForBatchStatistics`); layers using per-sample statistics
/// (UnMix-TNS) take any batch. `what` names the batch; `advice`, if given, ends the message.
func requireSeveralValuesPerChannel(images: Int, height: Int, width: Int, in model: any ImageClassifier, _ what: String,
                                    advice: String? = nil) throws {
    guard images < fewestImagesForBatchStatistics(height: height, width: width, in: model),
          model.batchNorms.contains(where: { $0.sampleStatistics == nil }) else { return }
    throw AdaptationError("\(what): one \(height)×\(width) image leaves \(model.architecture)'s smallest BatchNorm feature map a single "
                          + "value per channel (PyTorch refuses it too: \"Expected more than 1 value per channel when training\")"
                          + (advice.map { ": \($0)" } ?? ""))
}

/// Throws unless `x` is a batch `model` takes: `(N, C, H, W)` with the model's C and N, H, W ≥ 1, its storage
/// holding the values its shape says (both are public fields of `Tensor`: the kernels index by the shape), and
/// images of the model's required size (a ViT's). `what` names the batch at the start of the message ("batch",
/// "eata: source batch 2", …).
func requireImageBatch(_ x: Tensor, for model: any ImageClassifier, _ what: String) throws {
    guard x.rank == 4, x.shape[1] == model.inputChannels, x.shape.allSatisfy({ $0 >= 1 }) else {
        throw AdaptationError("\(what) has shape \(x.shape); \(model.architecture) expects (N, \(model.inputChannels), H, W) with N, H, W ≥ 1")
    }
    let needed = checkedProduct(x.shape)
    guard needed == x.storage.count else {
        throw AdaptationError("\(what) has shape \(x.shape) but holds \(x.storage.count) values; "
                              + (needed.map { "that shape needs \($0)" } ?? "that shape needs more values than an Int counts"))
    }
    if let (h, w) = model.requiredImageSize, x.shape[2] != h || x.shape[3] != w {
        throw AdaptationError("\(what) has \(x.shape[2])×\(x.shape[3]) images; \(model.architecture) expects \(h)×\(w)")
    }
}

/// A method that augments its batches with CoTTA's augmentation pipeline (`CoTTAAugmentation` in TTAAugment, what
/// `MethodRegistry.make`'s `augment` stands for: CoTTA's, RoTTA's, ROID's variant, RMT's) when it has one and its
/// configuration uses it (`MethodRegistry.augments`: CoTTA with augmentations above 0, ROID with its consistency loss,
/// RoTTA and RMT always). Its `checkBatch` refuses a batch the pipeline cannot take before any work, on every batch:
/// whether a given batch is augmented is only known inside the step (CoTTA's augmented teacher passes run when the
/// anchor is unconfident, ROID's on the images its certainty filter keeps).
public protocol AugmentingMethod: AdaptationMethod {
    var configuration: MethodConfiguration { get }
    /// Draws one augmentation of a batch (one parameter draw shared by the batch); nil runs the method without.
    var augment: BatchAugmentation? { get }
    /// The side of the square images `augment` was built for (`CoTTAAugmentation.imageSize`), when known: a batch of
    /// another size is refused before any work, as is one the pipeline cannot take at all.
    var augmentImageSize: Int? { get }
}

extension AugmentingMethod {
    public func checkBatch(shape: [Int]) throws { try checkAugmentable(shape: shape) }

    /// Throws when the method augments (above) and its pipeline cannot take a batch of `shape` `(N, C, H, W)`: it
    /// takes square images of 1 or 3 channels, at least 2×2 (its 5-tap blur reflects inside the padded canvas), and
    /// of side `augmentImageSize` when that is known. The message names the method.
    public func checkAugmentable(shape: [Int]) throws {
        guard augment != nil, MethodRegistry.augments(name, configuration),
              MethodRegistry.augmentationProblem(channels: shape[1], height: shape[2], width: shape[3],
                                                 imageSize: augmentImageSize) != nil else { return }
        let takes = augmentImageSize.map { "built here for \($0)×\($0) images" } ?? "which takes square images of at least 2×2 pixels"
        throw AdaptationError("\(name) augments its batches with CoTTA's augmentation pipeline, \(takes) with 1 or 3 channels; "
                              + "the batch has shape \(shape)")
    }
}

/// A method that restores the model to its source state by itself during a step (SAR's model recovery,
/// RDumb's periodic reset). A method wrapping it (`UnMixTNSMethod`) restores its own state with it.
public protocol RestoresSource: AdaptationMethod {
    /// How many such restores there have been; a change across a step means the step restored the source.
    var sourceRestores: Int { get }
}

/// Wall time per phase of adaptation, accumulated across batches.
public struct PhaseTimer: Sendable, Equatable, Codable {
    public enum Phase: String, Sendable, Codable, CaseIterable { case forward, backward, update }
    public var seconds: [String: Double] = [:]
    public init() {}

    /// Runs `body` and adds its wall time to `phase`.
    public mutating func measure<R>(_ phase: Phase, _ body: () throws -> R) rethrows -> R {
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer { seconds[phase.rawValue, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 }
        return try body()
    }
}

/// Errors raised while adapting; each names what is wrong.
public struct AdaptationError: Error, CustomStringConvertible, Equatable, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The optimizer a gradient-based method uses, as PyTorch configures it.
public enum OptimizerChoice: String, Sendable, Codable, CaseIterable {
    case adam, sgd
}

/// Hyper-parameters of the methods, with the reference defaults per benchmark family
/// (`mariodoebler/test-time-adaptation` `cfgs/` and `conf.py`; see `../shared/spec/algorithms.md` §3).
/// A method reads the fields it uses and ignores the rest.
public struct MethodConfiguration: Sendable, Codable, Equatable {
    /// Which reference defaults apply.
    public enum Family: String, Sendable, Codable, CaseIterable { case cifar, imagenet }

    public var optimizer: OptimizerChoice
    public var lr: Float
    /// Adam β1 (`OPTIM.BETA`); β2 is 0.999.
    public var beta1: Float = 0.9
    public var momentum: Float = 0.9
    public var dampening: Float = 0
    public var nesterov: Bool = true
    public var weightDecay: Float = 0
    /// Gradient steps per batch (`OPTIM.STEPS`).
    public var steps: Int = 1
    /// α of `norm_alpha` (`BN.ALPHA`).
    public var bnAlpha: Float = 0.1
    /// Teacher EMA momentum (`M_TEACHER.MOMENTUM`).
    public var teacherMomentum: Float = 0.999
    /// CoTTA stochastic-restore probability (`COTTA.RST`).
    public var restoreProbability: Float
    /// CoTTA anchor-confidence threshold (`COTTA.AP`).
    public var confidenceThreshold: Float
    /// CoTTA augmented teacher passes (`TEST.N_AUGMENTATIONS`).
    public var augmentations: Int = 32
    /// CoTTA loss: soft-target cross-entropy on CIFAR, symmetric cross-entropy on ImageNet.
    public var symmetricLoss: Bool
    /// EATA/ETA/SAR reliability margin as a fraction of ln C: `E0 = factor·ln C` (`EATA.MARGIN_E0`).
    public var entropyMarginFactor: Float = 0.4
    /// EATA/ETA redundancy threshold ε on `|cos(m, p_i)|` (`EATA.D_MARGIN`): 0.4 on CIFAR-10, 0.1 on
    /// CIFAR-100, 0.05 on ImageNet.
    public var redundancyMargin: Float = 0.4
    /// EATA's Fisher-regulariser weight β (`EATA.FISHER_ALPHA`): 1 on CIFAR, 2000 on ImageNet. `eta` ignores it.
    public var fisherAlpha: Float = 1
    /// SAR model recovery: reset to the source when the EMA of the loss falls below this (`SAR.RESET_CONSTANT_EM`).
    public var sarResetConstant: Float = 0.2
    /// SAR's SAM neighbourhood radius ρ (fixed at 0.05 in the reference).
    public var samRho: Float = 0.05
    /// LAME affinity between features (`LAME.AFFINITY`).
    public var lameAffinity: LAMEAffinity = .rbf
    /// LAME neighbours k (`LAME.KNN`): the kNN graph's degree, or rbf's σ from the k-th nearest distance.
    public var lameNeighbours: Int = 5
    /// LAME: use `(W + Wᵀ)/2` (`LAME.FORCE_SYMMETRY`).
    public var lameForceSymmetry: Bool = false
    /// RDumb: a full reset to the source every this many update steps (`MODEL.RESET_AFTER_NUM_UPDATES` of
    /// the rdumb configs; 0 never resets).
    public var resetAfterUpdates: Int = 1000
    /// RoTTA: capacity of the category-balanced memory (`ROTTA.MEMORY_SIZE`).
    public var rottaMemorySize: Int = 64
    /// RoTTA: one update every this many inserted samples (`ROTTA.UPDATE_FREQUENCY`).
    public var rottaUpdateFrequency: Int = 64
    /// RoTTA: teacher EMA weight of the student, `θ′ ← (1−ν)·θ′ + ν·θ` (`ROTTA.NU`).
    public var rottaNu: Float = 0.001
    /// RoTTA: robust-BN weight of the batch statistics (`ROTTA.ALPHA`).
    public var rottaAlpha: Float = 0.05
    /// RoTTA: weights of the age and the uncertainty in the memory's eviction score (`ROTTA.LAMBDA_T`, `LAMBDA_U`).
    public var rottaLambdaT: Float = 1, rottaLambdaU: Float = 1
    /// ROID: diversity/certainty loss weights and the mask (`ROID.USE_WEIGHTING`).
    public var roidWeighting: Bool = true
    /// ROID: scale the returned logits by the smoothed batch prior (`ROID.USE_PRIOR_CORRECTION`).
    public var roidPriorCorrection: Bool = true
    /// ROID: the augmentation-consistency loss (`ROID.USE_CONSISTENCY`).
    public var roidConsistency: Bool = true
    /// ROID: weight ensembling `θ ← m·θ + (1−m)·θ_source` after each step (`ROID.MOMENTUM_SRC`).
    public var roidMomentumSource: Float = 0.99
    /// ROID: momentum of the class-probability EMA (`ROID.MOMENTUM_PROBS`).
    public var roidMomentumProbabilities: Float = 0.9
    /// ROID: temperature of the sample weights (`ROID.TEMPERATURE`).
    public var roidTemperature: Float = 1.0 / 3
    /// UnMix-TNS: mixture components per BN layer (`UNMIXTNS.NUM_COMPONENTS`; 128 in the reference's
    /// mixed-domain runs).
    public var unmixComponents: Int = 16
    /// UnMix-TNS: the batch size at which its momentum equals the BN momentum (`UNMIXTNS.BATCH_SIZE_MAX`;
    /// 16 in the reference's ImageNet runs).
    public var unmixBatchSizeMax: Int = 64
    /// The configured test batch size (`TEST.BATCH_SIZE`), for losses the reference divides by it rather
    /// than by the images in the batch (ROID's loss, UnMix-TNS's momentum); nil: the batch's own size (equal
    /// except for a short last batch).
    public var batchSize: Int?
    /// RMT's weights of the self-training, contrastive and source-replay terms (`RMT.LAMBDA_CE_TRG`,
    /// `RMT.LAMBDA_CONT`, `RMT.LAMBDA_CE_SRC`; replay 0 is the source-free variant).
    public var rmtLambdaTarget: Float = 1, rmtLambdaContrast: Float = 1, rmtLambdaSource: Float = 1
    /// RMT warm-up on source images (`RMT.NUM_SAMPLES_WARM_UP`): `samples / source batch size` steps; 0 skips it.
    public var rmtWarmupSamples: Int = 50_000
    /// Contrastive temperature τ (`CONTRAST.TEMPERATURE`) and projector width (`CONTRAST.PROJECTION_DIM`).
    public var contrastTemperature: Float = 0.1
    public var projectionDim: Int = 128

    /// The reference defaults: CIFAR10-C/CIFAR100-C (`Adam 1e-3`, CoTTA rst 0.01, ap 0.92 on CIFAR-10
    /// and 0.72 on CIFAR-100; EATA ε 0.4 on CIFAR-10 and 0.1 on CIFAR-100 but for RDumb, β 1) or ImageNet-C (`SGD`
    /// Nesterov; TENT, EATA and SAR 2.5e-4, CoTTA 0.01, rst 0.001, ap 0.1; EATA ε 0.05, β 2000).
    /// SAR builds its own SGD (momentum 0.9, no Nesterov) with `lr`, as the reference does. A combination
    /// such as `cotta+unmix_tns` takes its host method's defaults.
    public static func defaults(for family: Family, method: String = "", numClasses: Int = 10) -> MethodConfiguration {
        let method = MethodRegistry.baseName(method)
        switch family {
        case .cifar:
            var c = MethodConfiguration(optimizer: .adam, lr: 1e-3, restoreProbability: 0.01,
                                        confidenceThreshold: numClasses >= 100 ? 0.72 : 0.92, symmetricLoss: false)
            // cfgs/cifar100_c/eta.yaml and eata.yaml: 0.1; rdumb.yaml keeps 0.4, as on CIFAR-10.
            c.redundancyMargin = numClasses >= 100 && method != "rdumb" ? 0.1 : 0.4
            c.fisherAlpha = 1
            return c
        case .imagenet:
            var c = MethodConfiguration(optimizer: .sgd, lr: method == "cotta" || method == "rmt" ? 0.01 : 2.5e-4, restoreProbability: 0.001,
                                        confidenceThreshold: 0.1, symmetricLoss: true)
            if method == "rotta" { (c.optimizer, c.lr) = (.adam, 1e-3) }   // cfgs/imagenet_c/rotta.yaml
            c.redundancyMargin = 0.05
            c.fisherAlpha = 2000
            return c
        }
    }

    /// The optimizer these settings describe, over `store`'s trainable entries.
    public func makeOptimizer(_ store: ParameterStore) -> Optimizer {
        switch optimizer {
        case .adam: return Adam(store, lr: lr, beta1: beta1, beta2: 0.999, eps: 1e-8, weightDecay: weightDecay)
        case .sgd: return SGD(store, lr: lr, momentum: momentum, dampening: dampening, weightDecay: weightDecay,
                              nesterov: nesterov && momentum > 0 && dampening == 0)
        }
    }

    /// Checks ranges; the error names the field.
    public func validate() throws {
        func check(_ ok: Bool, _ msg: String) throws { if !ok { throw AdaptationError(msg) } }
        try check(lr.isFinite && lr >= 0, "lr must be a non-negative number, got \(lr)")
        try check(steps >= 1, "steps must be at least 1, got \(steps)")
        try check(beta1 >= 0 && beta1 < 1, "beta1 must be in [0, 1), got \(beta1)")
        // Finite after the conversion to Float: `1e39` becomes infinity, which `>= 0` lets through.
        try check(momentum.isFinite && momentum >= 0, "momentum must be a non-negative number, got \(momentum)")
        try check(dampening.isFinite && dampening >= 0 && dampening <= 1, "dampening must be in [0, 1], got \(dampening)")
        try check(weightDecay.isFinite && weightDecay >= 0, "weight-decay must be a non-negative number, got \(weightDecay)")
        try check(bnAlpha >= 0 && bnAlpha <= 1, "bn-alpha must be in [0, 1], got \(bnAlpha)")
        try check(teacherMomentum >= 0 && teacherMomentum <= 1, "teacher-momentum must be in [0, 1], got \(teacherMomentum)")
        try check(restoreProbability >= 0 && restoreProbability <= 1, "restore-probability must be in [0, 1], got \(restoreProbability)")
        try check(confidenceThreshold >= 0 && confidenceThreshold <= 1, "confidence-threshold must be in [0, 1], got \(confidenceThreshold)")
        try check(augmentations >= 0, "augmentations must be non-negative, got \(augmentations)")
        try check(entropyMarginFactor.isFinite && entropyMarginFactor > 0, "entropy-margin must be positive, got \(entropyMarginFactor)")
        try check(redundancyMargin.isFinite && redundancyMargin >= 0, "redundancy-margin must be non-negative, got \(redundancyMargin)")
        try check(fisherAlpha.isFinite && fisherAlpha >= 0, "fisher-alpha must be non-negative, got \(fisherAlpha)")
        try check(sarResetConstant.isFinite, "sar-reset-constant must be a number, got \(sarResetConstant)")
        try check(samRho.isFinite && samRho >= 0, "sam-rho must be non-negative, got \(samRho)")
        try check(lameNeighbours >= 1, "lame-neighbours must be at least 1, got \(lameNeighbours)")
        // rbf's σ is the mean distance to each point's k-th nearest point, the point itself the first: k = 1 gives σ = 0.
        try check(lameAffinity != .rbf || lameNeighbours >= 2,
                  "lame-neighbours must be at least 2 with the rbf affinity, got \(lameNeighbours): each point is its own nearest "
                  + "neighbour, so σ would be 0 and the affinity NaN (the reference's rbf_affinity divides by zero there)")
        try check(resetAfterUpdates >= 0, "reset-after-updates must be non-negative, got \(resetAfterUpdates)")
        try check(rottaMemorySize >= 1, "rotta-memory-size must be at least 1, got \(rottaMemorySize)")
        try check(rottaUpdateFrequency >= 1, "rotta-update-frequency must be at least 1, got \(rottaUpdateFrequency)")
        try check(rottaNu >= 0 && rottaNu <= 1, "rotta-nu must be in [0, 1], got \(rottaNu)")
        try check(rottaAlpha >= 0 && rottaAlpha <= 1, "rotta-alpha must be in [0, 1], got \(rottaAlpha)")
        try check(rottaLambdaT.isFinite && rottaLambdaU.isFinite, "rotta-lambda-t and rotta-lambda-u must be numbers")
        try check(roidMomentumSource >= 0 && roidMomentumSource <= 1, "roid-momentum-source must be in [0, 1], got \(roidMomentumSource)")
        try check(roidMomentumProbabilities >= 0 && roidMomentumProbabilities <= 1,
                  "roid-momentum-probs must be in [0, 1], got \(roidMomentumProbabilities)")
        try check(roidTemperature.isFinite && roidTemperature > 0, "roid-temperature must be positive, got \(roidTemperature)")
        try check(unmixComponents >= 1, "unmix-components must be at least 1, got \(unmixComponents)")
        try check(unmixBatchSizeMax >= 1, "unmix-batch-size-max must be at least 1, got \(unmixBatchSizeMax)")
        try check(batchSize.map { $0 >= 1 } ?? true, "batch-size must be at least 1, got \(batchSize ?? 0)")
        for (v, flag) in [(rmtLambdaTarget, "rmt-lambda-target"), (rmtLambdaContrast, "rmt-lambda-contrast"), (rmtLambdaSource, "rmt-lambda-source")] {
            try check(v.isFinite && v >= 0, "\(flag) must be non-negative, got \(v)")
        }
        try check(rmtWarmupSamples >= 0, "warmup-samples must be non-negative, got \(rmtWarmupSamples)")
        try check(contrastTemperature.isFinite && contrastTemperature > 0, "contrast-temperature must be positive, got \(contrastTemperature)")
        try check(projectionDim >= 1, "projection-dim must be at least 1, got \(projectionDim)")
    }
}
