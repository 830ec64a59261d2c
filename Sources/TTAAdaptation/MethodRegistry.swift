import TTAModels
import TTATensor

/// The methods SwiftTTA knows, by their reference-benchmark names.
public enum MethodRegistry {
    /// One registered method: its name, what it does, and how to build it.
    public struct Entry: Sendable {
        public let name: String
        public let summary: String
        /// Whether it updates parameters with gradients (and so uses the optimizer settings).
        public let usesGradients: Bool
        /// Whether it needs labelled or unlabelled source-domain data (EATA's Fisher information).
        public var needsSourceData = false
        /// Whether it is meant for batches of one image as they are: its normalisation does not take the
        /// statistics of the test batch alone (source, α-BN, BN-EMA, RoTTA's robust BN, UnMix-TNS). The
        /// others need several images per step: at batch size 1 they want a sliding window.
        public var singleImages = false
        /// The optimizer it builds itself whatever `--optimizer` says, and the optimizer settings it reads
        /// (SAR: SGD with sharpness-aware minimisation, as the reference); nil: the configured optimizer.
        public var ownOptimizer: (description: String, settings: [String])?
        /// The test batch size the reference's configs give it where that is not the dataset's (200 on CIFAR, 64
        /// on ImageNet): `cfgs/*/norm_alpha.yaml` run α-BN on single images. Nil: the dataset's.
        public var referenceBatchSize: Int?
    }

    /// The registered methods: the single ones, then the UnMix-TNS combinations (`<host>+unmix_tns`).
    public static let entries: [Entry] = singleEntries + unmixHosts.map { host in
        let e = singleEntries.first { $0.name == host }!
        return Entry(name: host + unmixSuffix, summary: "\(host) adapting through UnMix-TNS normalisation (per-sample mixed BN statistics)",
                     usesGradients: e.usesGradients, needsSourceData: e.needsSourceData,
                     // Per-sample statistics: one image normalises itself. LAME's affinity still relates a batch's
                     // images, and ROID weights each image against the others of its batch.
                     singleImages: host != "lame" && host != "roid", ownOptimizer: e.ownOptimizer)
    }

    /// The methods UnMix-TNS normalisation can be put under, as `<host>+unmix_tns`: those whose only use of
    /// BN is to train its affine parameters on batch statistics; LAME, which reads the features of the
    /// model as normalised; CoTTA and RoTTA, whose teachers (and CoTTA's anchor) get UnMix-TNS layers of
    /// their own; ROID, whose repeated recording pass repeats its prediction's statistics (`RepeatablePass`).
    /// (The reference also combines it with NOTE, which SwiftTTA does not have.)
    public static let unmixHosts = ["tent", "eta", "eata", "sar", "rdumb", "lame", "cotta", "rotta", "roid"]
    static let unmixSuffix = "+unmix_tns"

    /// The single method a registered name runs: `tent` for `tent+unmix_tns`, the name itself otherwise.
    public static func baseName(_ name: String) -> String {
        name.hasSuffix(unmixSuffix) ? String(name.dropLast(unmixSuffix.count)) : name
    }

    static let singleEntries: [Entry] = [
        Entry(name: "source", summary: "the source model, BN with running statistics, no adaptation", usesGradients: false, singleImages: true),
        Entry(name: "norm_test", summary: "BN with each test batch's statistics (AdaBN / BN-1)", usesGradients: false),
        Entry(name: "norm_alpha", summary: "BN with (1-α)·source + α·batch statistics (α-BN)", usesGradients: false, singleImages: true,
              referenceBatchSize: 1),
        Entry(name: "norm_ema", summary: "BN running statistics updated on the test stream, then used (BN-EMA)", usesGradients: false, singleImages: true),
        Entry(name: "tent", summary: "entropy minimisation over BN affine parameters (TENT)", usesGradients: true),
        Entry(name: "cotta", summary: "mean teacher, augmentation-averaged pseudo-labels, stochastic restore (CoTTA)", usesGradients: true),
        Entry(name: "lame", summary: "Laplacian-regularised output correction on the source model's features, no update (LAME)", usesGradients: false),
        Entry(name: "eta", summary: "entropy minimisation on reliable, non-redundant samples, reweighted (ETA)", usesGradients: true),
        Entry(name: "eata", summary: "ETA plus a Fisher penalty towards the source parameters; needs source data (EATA)", usesGradients: true,
              needsSourceData: true),
        Entry(name: "sar", summary: "sharpness-aware reliable entropy minimisation with model recovery (SAR)", usesGradients: true,
              ownOptimizer: (description: "SGD with SAM", settings: ["lr", "momentum", "steps"])),
        Entry(name: "rdumb", summary: "ETA, reset to the source every 1000 updates (RDumb)", usesGradients: true),
        Entry(name: "rotta", summary: "robust BN, category-balanced memory, mean teacher trained on the memory (RoTTA)", usesGradients: true,
              singleImages: true),
        Entry(name: "roid", summary: "weighted soft-likelihood-ratio loss, consistency, weight ensembling, prior correction (ROID)",
              usesGradients: true),
        Entry(name: "unmix_tns", summary: "per-sample BN statistics mixed from K running components, no training (UnMix-TNS)",
              usesGradients: false, singleImages: true),
        Entry(name: "rmt", summary: "mean teacher with symmetric CE, source prototypes, contrastive term, source warm-up and replay; needs labelled source data (RMT)",
              usesGradients: true, needsSourceData: true),
    ]

    public static var names: [String] { entries.map(\.name) }

    /// Whether method `name` (alone or under UnMix-TNS), configured as `c`, augments its batches with `make`'s `augment`
    /// (CoTTA's pipeline, ROID's variant of it): cotta with augmentations above 0, roid with its consistency loss, rotta
    /// and rmt. Such a method refuses a batch the pipeline cannot take (`augmentationProblem`).
    public static func augments(_ name: String, _ c: MethodConfiguration) -> Bool {
        switch baseName(name) {
        case "cotta": c.augmentations > 0
        case "roid": c.roidConsistency
        case "rotta", "rmt": true
        default: false
        }
    }

    /// Why CoTTA's augmentation pipeline cannot take images of `channels` × `height` × `width` (nil when it can): it
    /// takes square images of 1 or 3 channels, at least 2×2 (its 5-tap blur reflects inside the padded canvas), and of
    /// side `imageSize` when it was built for one. Said as what the images are ("images are 16×20 (H×W)").
    public static func augmentationProblem(channels: Int, height: Int, width: Int, imageSize: Int? = nil) -> String? {
        if height != width || height < 2 || imageSize.map({ height != $0 }) == true { return "images are \(height)×\(width) (H×W)" }
        if channels != 1 && channels != 3 { return "images have \(channels) channels" }
        return nil
    }

    /// The entry named `name`, if any.
    public static func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }

    /// Builds the method `name` with `configuration`; `augment` is the method's augmentation (CoTTA's and
    /// RoTTA's pipeline, ROID's variant without blur and noise; nil disables it);
    /// `sourceBatches` are source-domain images for EATA's Fisher information (`eata` refuses to be built
    /// without them while its `fisherAlpha` is positive; the other methods ignore them). `sourceLabels`: one
    /// label list per source batch (`rmt` needs them). `cache` keeps RMT's prototypes and warm-up between runs;
    /// `sourceSeed` seeds the shuffled order of RMT's source batches.
    ///
    /// `augment` stands for CoTTA's pipeline (`CoTTAAugmentation` in TTAAugment, or its ROID variant), which takes
    /// square images of 1 or 3 channels, at least 2×2, of the side it was built for: the augmenting methods refuse,
    /// before any work, a batch it cannot take (`AdaptationMethod.checkBatch`), and with `augmentImageSize` (its
    /// `imageSize`) a square batch of another side too.
    public static func make(_ name: String, configuration: MethodConfiguration,
                            augment: BatchAugmentation? = nil, sourceBatches: [Tensor] = [], sourceLabels: [[Int]] = [],
                            cache: PreparationCache? = nil, sourceSeed: UInt64 = 0, augmentImageSize: Int? = nil) throws -> any AdaptationMethod {
        try configuration.validate()
        if let size = augmentImageSize, size < 2, augment != nil, augments(name, configuration) {
            throw AdaptationError("\(name): its augmentation was built for \(size)×\(size) images; "
                                  + "CoTTA's augmentation pipeline needs images of at least 2×2 pixels")
        }
        if name.hasSuffix(unmixSuffix) {
            let host = baseName(name)
            guard unmixHosts.contains(host) else {
                throw AdaptationError("unknown method '\(name)'; UnMix-TNS combines with \(unmixHosts.joined(separator: ", ")) (as <method>\(unmixSuffix))")
            }
            return UnMixTNSMethod(configuration, host: try make(host, configuration: configuration, augment: augment, sourceBatches: sourceBatches,
                                                                sourceLabels: sourceLabels, cache: cache, sourceSeed: sourceSeed,
                                                                augmentImageSize: augmentImageSize))
        }
        switch name {
        case "source": return ForwardOnlyMethod.source()
        case "norm_test": return ForwardOnlyMethod.normTest()
        case "norm_alpha": return ForwardOnlyMethod.normAlpha(configuration.bnAlpha)
        case "norm_ema": return NormEMAMethod()
        case "tent": return TentMethod(configuration)
        case "cotta": return CoTTAMethod(configuration, augment: augment, augmentImageSize: augmentImageSize)
        case "lame": return LAMEMethod(configuration)
        case "eta": return EATAMethod(eta: configuration)
        case "eata": return try EATAMethod(eata: configuration, sourceBatches: sourceBatches)
        case "sar": return SARMethod(configuration)
        case "rdumb": return RDumbMethod(configuration)
        case "rotta": return RoTTAMethod(configuration, augment: augment, augmentImageSize: augmentImageSize)
        case "roid": return try ROIDMethod(configuration, augment: augment, augmentImageSize: augmentImageSize)
        case "unmix_tns": return UnMixTNSMethod(configuration)
        case "rmt":
            guard !sourceBatches.isEmpty, !sourceLabels.isEmpty else {
                throw AdaptationError("rmt needs labelled source data (images and labels) for its prototypes, warm-up and replay")
            }
            return try RMTMethod(configuration, augment: augment,
                                 source: SourceSampler(batches: sourceBatches, labels: sourceLabels, shuffle: true, seed: sourceSeed), cache: cache,
                                 augmentImageSize: augmentImageSize)
        default:
            throw AdaptationError("unknown method '\(name)'; known methods: \(names.joined(separator: ", "))")
        }
    }
}
