import Foundation
import TTAAdaptation
import TTAData

/// The subcommands of `tta`.
public enum CommandName: String, CaseIterable, Sendable {
    case compare, run, list, inspect, predict
}

/// How an option's value is written and checked. Parsing, the error text ("expected …") and the
/// `<value>` placeholder in the help all come from here.
enum ValueKind: Sendable, Equatable {
    /// No value: present or not (`--quiet`). `--quiet=false` is accepted too.
    case flag
    /// `true` or `false`.
    case bool
    /// An integer `≥ min`, and `≤ max` for a count that sizes an allocation (or a thread split), bounded so that no
    /// shape product overflows and no allocation runs away.
    case int(min: Int, max: Int = .max)
    /// A seed: an integer in `0...UInt64.max`.
    case seed
    /// A finite number `≥ 0`, optionally `≤ 1` (`unit`) or `< 1` (`unitOpen`); or `> 0` (`positive`), optionally
    /// `≤ 1` (`positiveUnit`).
    case number(NumberRange)
    /// One of a fixed set of words.
    case choice([String])
    /// A comma-separated list of words, each from `allowed` when given.
    case list(allowed: [String]?)
    /// A comma-separated list of integers in a range.
    case intList(ClosedRange<Int>)
    /// A file or folder path, or any other free text (a model name).
    case text(placeholder: String)

    enum NumberRange: Sendable, Equatable { case nonNegative, unit, unitOpen, positive, positiveUnit }

    /// What a valid value looks like, for error messages.
    var expected: String {
        switch self {
        case .flag: return "no value, or true or false"
        case .bool: return "true or false"
        case .int(let min, let max) where max < .max: return "an integer in \(min)...\(max)"
        case .int(let min, _): return min == 1 ? "a positive integer" : min == 0 ? "a non-negative integer" : "an integer ≥ \(min)"
        case .seed: return "a non-negative integer"
        case .number(.nonNegative): return "a non-negative number"
        case .number(.unit): return "a number in [0, 1]"
        case .number(.unitOpen): return "a number in [0, 1)"
        case .number(.positive): return "a positive number"
        case .number(.positiveUnit): return "a number in (0, 1]"
        case .choice(let words): return "one of " + words.joined(separator: ", ")
        case .list(let allowed?): return "a comma-separated list of " + allowed.joined(separator: ", ")
        case .list(nil): return "a comma-separated list of names"
        case .intList(let r): return "a comma-separated list of integers in \(r.lowerBound)...\(r.upperBound)"
        case .text(let p): return p
        }
    }

    /// The `<value>` shown after the option name in the help.
    var placeholder: String {
        switch self {
        case .flag: return ""
        case .bool: return "true|false"
        case .int, .seed: return "<n>"
        case .number: return "<x>"
        case .choice(let words): return words.joined(separator: "|")
        case .list: return "<a,b,…>"
        case .intList: return "<n,…>"
        case .text(let p): return "<\(p)>"
        }
    }
}

/// A parsed, checked option value.
enum OptionValue: Sendable, Equatable {
    case bool(Bool)
    case int(Int)
    case seed(UInt64)
    case number(Double)
    case word(String)
    case list([String])
    case ints([Int])
}

/// One declared option: its name (without dashes; also its key in a `--config` file), its value,
/// the default as the help shows it, the help text, and the commands that take it.
struct OptionSpec: Sendable {
    enum Group: String, CaseIterable, Sendable {
        case data = "Data", model = "Model", methods = "Methods", stream = "Stream"
        case hyper = "Method hyper-parameters (defaults: the reference CIFAR settings)"
        /// The title the help prints: the name in capitals, a parenthesised note as written.
        var title: String {
            guard let p = rawValue.firstIndex(of: "(") else { return rawValue.uppercased() + ":" }
            return rawValue[..<p].uppercased() + String(rawValue[p...]) + ":"
        }
        case input = "Images and logits", output = "Output", runtime = "Runtime"
    }
    let name: String
    let kind: ValueKind
    /// The default as shown in the help; nil when the option has none (or is a flag).
    let defaultText: String?
    let help: String
    let group: Group
    let commands: Set<CommandName>
}

private let experiment: Set<CommandName> = [.compare, .run]
private let adapting: Set<CommandName> = [.compare, .run, .predict]

/// `--optimizer`'s help: the methods it applies to and those that build their own, from the registry.
private let optimizerHelp: String = {
    let single = MethodRegistry.entries.filter { MethodRegistry.baseName($0.name) == $0.name && $0.usesGradients }
    let own = single.compactMap { e in e.ownOptimizer.map { "\(e.name) always takes \($0.description)" } }
    return "Optimizer of the gradient-based methods (" + single.filter { $0.ownOptimizer == nil }.map(\.name).joined(separator: ", ")
        + (own.isEmpty ? "" : "; " + own.joined(separator: ", ")) + ")."
}()

/// The reference defaults that the help shows (`MethodConfiguration.defaults(for: .cifar)`).
private let cifarDefaults = MethodConfiguration.defaults(for: .cifar, numClasses: 10)
private func text(_ x: Float) -> String { formatNumber(Double(x)) }

/// The default batch size of the embedded benchmark: 200 images per severity, so 200 would be one
/// batch (one adaptation step) per domain; 50 gives four.
let embeddedBatchSize = 50
/// The default batch size elsewhere (mariodoebler's CIFAR `TEST.BATCH_SIZE`).
let standardBatchSize = 200
/// The default batch size of ImageNet-C-layout benchmarks (mariodoebler's ImageNet `TEST.BATCH_SIZE`).
let imageNetBatchSize = 64
/// The methods `tta compare` runs by default.
let defaultCompareMethods = ["source", "norm_test", "tent", "cotta"]
/// The bounds of the counts that size an allocation: RMT's projector is d×P + P×P weights (P = --projection-dim; the
/// reference takes 128, and ResNet-50's d is 2048); UnMix-TNS keeps K components of every BN channel (--unmix-components;
/// the reference takes at most 128); the kernels split their work into up to 4 × --threads parts.
let maxProjectionDim = 4096
let maxUnmixComponents = 1024
let maxThreads = 1024

/// Every option of every command, in the order the help lists them. The only place options are declared.
let optionTable: [OptionSpec] = [
    // Data
    OptionSpec(name: "dataset", kind: .choice(Dataset.allCases.map(\.rawValue)),
               defaultText: "fmnist-c, the embedded benchmark; with --data-dir, from its folder name",
               help: "Benchmark: CIFAR-10-C, CIFAR-100-C, ImageNet-C, Tiny-ImageNet-C, or the embedded Fashion-MNIST-C.", group: .data, commands: experiment),
    OptionSpec(name: "data-dir", kind: .text(placeholder: "dir"), defaultText: "the embedded FMNIST-C folder",
               help: "The benchmark folder (e.g. CIFAR-10-C, holding labels.npy and <corruption>.npy; ImageNet-C, holding <corruption>/<severity>/<wnid>/<file>.JPEG) or its parent.",
               group: .data, commands: experiment),
    OptionSpec(name: "subset", kind: .text(placeholder: "robustbench5000|all|list.txt"), defaultText: "robustbench5000 for imagenet-c (all with --setting correlated or --samples-per-domain, as the reference), else all",
               help: "ImageNet-C-layout benchmarks: RobustBench's fixed 5,000 images, every image, or a file of <wnid>/<file> lines, in its order "
                   + "(the reference's classification/datasets/imagenet_list/imagenet_val_ids_50k.txt gives its exact sample order).",
               group: .data, commands: experiment),
    OptionSpec(name: "source-data", kind: .text(placeholder: "path"), defaultText: nil,
               help: "Labelled source-domain data, needed by eata and rmt: a folder with images.npy (uint8 NHWC or float32 NCHW in [0, 1]) "
                   + "and labels.npy, or CIFAR-10/100 in the binary or python format (data_batch_N[.bin], train[.bin]; a single batch file; "
                   + "or their torchvision root).", group: .data, commands: experiment),
    OptionSpec(name: "source-samples", kind: .int(min: 1), defaultText: "2000 for eata, all for rmt",
               help: "Source images drawn at random (with --seed) from --source-data (the reference's SOURCE.NUM_SAMPLES).",
               group: .data, commands: experiment),
    OptionSpec(name: "cache-dir", kind: .text(placeholder: "dir"), defaultText: "$XDG_CACHE_HOME/swifttta, else ~/.cache/swifttta",
               help: "Where rmt keeps its source prototypes and warm-up, keyed by the SHA-256 of the weights and the source files "
                   + "and by the settings they depend on; a change to either makes a new entry.", group: .data, commands: experiment),
    // Model
    OptionSpec(name: "model", kind: .text(placeholder: "name"), defaultText: "auto",
               help: "wideresnet-<depth>-<widen> (e.g. wideresnet-28-10), resnet50, resnext-29-4x32, vit-b-16 (timm vit_base_patch16_224), or auto to infer it from --weights.",
               group: .model, commands: adapting),
    OptionSpec(name: "normalize", kind: .text(placeholder: "none|imagenet|half|m,m,m:s,s,s"), defaultText: "what the weights store (mu/sigma, normalize.mean/std), else the model's (resnet: imagenet, resnext and vit: half, wideresnet: none)",
               help: "Per-channel (x - mean) / std applied to [0, 1] images inside the model: none, ImageNet's, 0.5/0.5, or given means and stds.",
               group: .model, commands: adapting),
    OptionSpec(name: "weights", kind: .text(placeholder: "file.safetensors"), defaultText: "the embedded model for fmnist-c",
               help: "Source-model weights: a PyTorch state dict saved as safetensors.", group: .model, commands: experiment),
    OptionSpec(name: "weights", kind: .text(placeholder: "file.safetensors"), defaultText: nil,
               help: "Required. The model's weights: a PyTorch state dict saved as safetensors.", group: .model, commands: [.predict]),
    // Methods
    OptionSpec(name: "methods", kind: .list(allowed: MethodRegistry.names), defaultText: defaultCompareMethods.joined(separator: ","),
               help: "Methods to compare, in this order, each from the source model.", group: .methods, commands: [.compare]),
    OptionSpec(name: "method", kind: .choice(MethodRegistry.names), defaultText: "tent",
               help: "The method to run.", group: .methods, commands: [.run]),
    OptionSpec(name: "method", kind: .choice(MethodRegistry.names), defaultText: "source",
               help: "The method that adapts on the images while predicting (source: no adaptation).",
               group: .methods, commands: [.predict]),
    // Stream
    OptionSpec(name: "setting", kind: .choice(StreamSetting.allCases.map(\.rawValue)), defaultText: "continual",
               help: "How domains follow each other and when the model is reset.", group: .stream, commands: experiment),
    OptionSpec(name: "severity", kind: .intList(1...5), defaultText: "5",
               help: "Severities run for each corruption, in order (e.g. 5 or 5,4,3).", group: .stream, commands: experiment),
    OptionSpec(name: "corruptions", kind: .list(allowed: nil), defaultText: "the 15 standard corruptions",
               help: "Corruptions in stream order (e.g. gaussian_noise,fog).", group: .stream, commands: experiment),
    OptionSpec(name: "samples-per-domain", kind: .int(min: 1), defaultText: "all",
               help: "Images per (corruption, severity) domain.", group: .stream, commands: experiment),
    OptionSpec(name: "batch-size", kind: .int(min: 1),
               defaultText: "\(standardBatchSize); \(imageNetBatchSize) for imagenet-c, tiny-imagenet-c; \(embeddedBatchSize) for fmnist-c; "
                   + "1 for norm_alpha alone",
               help: "Images per batch (one adaptation step each). norm_alpha run alone takes the reference's 1; "
                   + "compared with other methods it shares their stream.",
               group: .stream, commands: experiment),
    OptionSpec(name: "window-length", kind: .int(min: 1), defaultText: "none",
               help: "With --batch-size 1: adapt on a sliding window of the last N images, updating when the window has turned over "
                   + "and predicting each image with the window in between (the reference's TEST.WINDOW_LENGTH). "
                   + "Needed at batch size 1 by the methods that normalise with the test batch's statistics; 1 runs them on single images anyway.",
               group: .stream, commands: experiment),
    OptionSpec(name: "batch-size", kind: .int(min: 1), defaultText: "\(standardBatchSize); \(imageNetBatchSize) for images larger than 32×32",
               help: "Images per batch (one adaptation step each).", group: .input, commands: [.predict]),
    OptionSpec(name: "order", kind: .choice(SampleOrder.allCases.map(\.rawValue)), defaultText: "shuffled",
               help: "Sample order within a domain: file order, or shuffled with --seed as the reference benchmark does.",
               group: .stream, commands: experiment),
    OptionSpec(name: "seed", kind: .seed, defaultText: "1",
               help: "Seed of the shuffles and of every random draw of the methods.", group: .stream, commands: experiment),
    OptionSpec(name: "seed", kind: .seed, defaultText: "1",
               help: "Seed of the method's random draws (augmentations, restore masks, UnMix-TNS's components, RoTTA's and ROID's views).", group: .hyper, commands: [.predict]),
    OptionSpec(name: "dirichlet", kind: .number(.nonNegative), defaultText: "0, which sorts each domain by label",
               help: "Correlated setting only: Dirichlet concentration δ of the label-correlated order.",
               group: .stream, commands: experiment),
    OptionSpec(name: "episodic", kind: .flag, defaultText: nil,
               help: "Reset the model before every batch.", group: .stream, commands: experiment),
    // Hyper-parameters
    OptionSpec(name: "optimizer", kind: .choice(OptimizerChoice.allCases.map(\.rawValue)), defaultText: cifarDefaults.optimizer.rawValue,
               help: optimizerHelp, group: .hyper, commands: adapting),
    OptionSpec(name: "lr", kind: .number(.nonNegative), defaultText: text(cifarDefaults.lr),
               help: "Learning rate.", group: .hyper, commands: adapting),
    OptionSpec(name: "steps", kind: .int(min: 1), defaultText: "\(cifarDefaults.steps)",
               help: "Gradient steps per batch.", group: .hyper, commands: adapting),
    OptionSpec(name: "momentum", kind: .number(.nonNegative), defaultText: text(cifarDefaults.momentum),
               help: "SGD momentum.", group: .hyper, commands: adapting),
    OptionSpec(name: "dampening", kind: .number(.unit), defaultText: text(cifarDefaults.dampening),
               help: "SGD dampening of the momentum, in [0, 1]; Nesterov momentum applies only with 0 (OPTIM.DAMPENING).",
               group: .hyper, commands: adapting),
    OptionSpec(name: "nesterov", kind: .bool, defaultText: "\(cifarDefaults.nesterov)",
               help: "SGD Nesterov momentum.", group: .hyper, commands: adapting),
    OptionSpec(name: "weight-decay", kind: .number(.nonNegative), defaultText: text(cifarDefaults.weightDecay),
               help: "Weight decay.", group: .hyper, commands: adapting),
    OptionSpec(name: "beta1", kind: .number(.unitOpen), defaultText: text(cifarDefaults.beta1),
               help: "Adam β1 (β2 is 0.999).", group: .hyper, commands: adapting),
    OptionSpec(name: "bn-alpha", kind: .number(.unit), defaultText: text(cifarDefaults.bnAlpha),
               help: "norm_alpha: weight α of the test-batch statistics.", group: .hyper, commands: adapting),
    OptionSpec(name: "teacher-momentum", kind: .number(.unit), defaultText: text(cifarDefaults.teacherMomentum),
               help: "cotta, rmt: EMA momentum of the teacher.", group: .hyper, commands: adapting),
    OptionSpec(name: "restore-probability", kind: .number(.unit), defaultText: text(cifarDefaults.restoreProbability),
               help: "cotta: stochastic-restore probability.", group: .hyper, commands: adapting),
    OptionSpec(name: "confidence-threshold", kind: .number(.unit),
               defaultText: "\(text(cifarDefaults.confidenceThreshold)); \(text(MethodConfiguration.defaults(for: .cifar, numClasses: 100).confidenceThreshold)) with 100 classes",
               help: "cotta: anchor confidence below which the teacher averages augmentations.", group: .hyper, commands: adapting),
    OptionSpec(name: "augmentations", kind: .int(min: 0), defaultText: "\(cifarDefaults.augmentations)",
               help: "cotta: augmented teacher passes.", group: .hyper, commands: adapting),
    OptionSpec(name: "warmup-samples", kind: .int(min: 0), defaultText: "\(cifarDefaults.rmtWarmupSamples)",
               help: "rmt: source images of the warm-up before adapting (steps = samples / batch size); 0 skips it.",
               group: .hyper, commands: adapting),
    OptionSpec(name: "entropy-margin", kind: .number(.positive), defaultText: text(cifarDefaults.entropyMarginFactor),
               help: "eta, eata, sar, rdumb: reliability margin E0 as a fraction of ln(classes), positive (EATA.MARGIN_E0).", group: .hyper, commands: adapting),
    OptionSpec(name: "redundancy-margin", kind: .number(.nonNegative), defaultText: "\(text(cifarDefaults.redundancyMargin)); 0.1 for eta and eata with 100 classes; 0.05 for imagenet-c",
               help: "eta, eata, rdumb: redundancy threshold on the cosine to the mean prediction (EATA.D_MARGIN).", group: .hyper, commands: adapting),
    OptionSpec(name: "fisher-alpha", kind: .number(.nonNegative), defaultText: "\(text(cifarDefaults.fisherAlpha)); 2000 for imagenet-c",
               help: "eata: weight of the Fisher penalty (EATA.FISHER_ALPHA).", group: .hyper, commands: adapting),
    OptionSpec(name: "sar-reset-constant", kind: .number(.nonNegative), defaultText: text(cifarDefaults.sarResetConstant),
               help: "sar: reset to the source when the moving average of the loss falls below this (SAR.RESET_CONSTANT_EM).", group: .hyper, commands: adapting),
    OptionSpec(name: "sam-rho", kind: .number(.nonNegative), defaultText: text(cifarDefaults.samRho),
               help: "sar: radius ρ of the sharpness-aware (SAM) neighbourhood (rho of the reference's SAM, which SAR leaves at its default).",
               group: .hyper, commands: adapting),
    OptionSpec(name: "lame-affinity", kind: .choice(LAMEAffinity.allCases.map(\.rawValue)), defaultText: cifarDefaults.lameAffinity.rawValue,
               help: "lame: affinity between features (LAME.AFFINITY).", group: .hyper, commands: adapting),
    OptionSpec(name: "lame-neighbours", kind: .int(min: 2), defaultText: "\(cifarDefaults.lameNeighbours)",
               help: "lame: neighbours k of the kNN graph, or of rbf's bandwidth (LAME.KNN).", group: .hyper, commands: adapting),
    OptionSpec(name: "lame-force-symmetry", kind: .bool, defaultText: "\(cifarDefaults.lameForceSymmetry)",
               help: "lame: symmetrise the affinity (LAME.FORCE_SYMMETRY).", group: .hyper, commands: adapting),
    OptionSpec(name: "reset-after-updates", kind: .int(min: 0), defaultText: "\(cifarDefaults.resetAfterUpdates)",
               help: "rdumb: reset to the source every this many updates; 0 never (MODEL.RESET_AFTER_NUM_UPDATES).", group: .hyper, commands: adapting),
    OptionSpec(name: "rotta-memory-size", kind: .int(min: 1), defaultText: "\(cifarDefaults.rottaMemorySize)",
               help: "rotta: capacity of the category-balanced memory (ROTTA.MEMORY_SIZE).", group: .hyper, commands: adapting),
    OptionSpec(name: "rotta-update-frequency", kind: .int(min: 1), defaultText: "\(cifarDefaults.rottaUpdateFrequency)",
               help: "rotta: one update every this many images (ROTTA.UPDATE_FREQUENCY).", group: .hyper, commands: adapting),
    OptionSpec(name: "rotta-nu", kind: .number(.unit), defaultText: text(cifarDefaults.rottaNu),
               help: "rotta: teacher EMA weight of the student (ROTTA.NU).", group: .hyper, commands: adapting),
    OptionSpec(name: "rotta-alpha", kind: .number(.unit), defaultText: text(cifarDefaults.rottaAlpha),
               help: "rotta: robust-BN weight of the batch statistics (ROTTA.ALPHA).", group: .hyper, commands: adapting),
    OptionSpec(name: "rotta-lambda-t", kind: .number(.nonNegative), defaultText: text(cifarDefaults.rottaLambdaT),
               help: "rotta: weight of a sample's age in the memory's eviction score (ROTTA.LAMBDA_T).", group: .hyper, commands: adapting),
    OptionSpec(name: "rotta-lambda-u", kind: .number(.nonNegative), defaultText: text(cifarDefaults.rottaLambdaU),
               help: "rotta: weight of a sample's uncertainty in the memory's eviction score (ROTTA.LAMBDA_U).", group: .hyper, commands: adapting),
    OptionSpec(name: "roid-weighting", kind: .bool, defaultText: "\(cifarDefaults.roidWeighting)",
               help: "roid: sample weighting and diversity term (ROID.USE_WEIGHTING).", group: .hyper, commands: adapting),
    OptionSpec(name: "roid-prior-correction", kind: .bool, defaultText: "\(cifarDefaults.roidPriorCorrection)",
               help: "roid: prior correction of the output (ROID.USE_PRIOR_CORRECTION).", group: .hyper, commands: adapting),
    OptionSpec(name: "roid-consistency", kind: .bool, defaultText: "\(cifarDefaults.roidConsistency)",
               help: "roid: augmentation-consistency loss (ROID.USE_CONSISTENCY).", group: .hyper, commands: adapting),
    OptionSpec(name: "roid-momentum-source", kind: .number(.unit), defaultText: text(cifarDefaults.roidMomentumSource),
               help: "roid: weight ensembling with the source after each step (ROID.MOMENTUM_SRC).", group: .hyper, commands: adapting),
    OptionSpec(name: "roid-momentum-probs", kind: .number(.unit), defaultText: text(cifarDefaults.roidMomentumProbabilities),
               help: "roid: momentum of the class-probability average (ROID.MOMENTUM_PROBS).", group: .hyper, commands: adapting),
    OptionSpec(name: "roid-temperature", kind: .number(.positive), defaultText: text(cifarDefaults.roidTemperature),
               help: "roid: temperature of the sample weights, positive (ROID.TEMPERATURE).", group: .hyper, commands: adapting),
    OptionSpec(name: "rmt-lambda-target", kind: .number(.nonNegative), defaultText: text(cifarDefaults.rmtLambdaTarget),
               help: "rmt: weight of the self-training loss (RMT.LAMBDA_CE_TRG).", group: .hyper, commands: adapting),
    OptionSpec(name: "rmt-lambda-contrast", kind: .number(.nonNegative), defaultText: text(cifarDefaults.rmtLambdaContrast),
               help: "rmt: weight of the contrastive loss (RMT.LAMBDA_CONT).", group: .hyper, commands: adapting),
    OptionSpec(name: "rmt-lambda-source", kind: .number(.nonNegative), defaultText: text(cifarDefaults.rmtLambdaSource),
               help: "rmt: weight of the source replay; 0 is the source-free variant (RMT.LAMBDA_CE_SRC).", group: .hyper, commands: adapting),
    OptionSpec(name: "contrast-temperature", kind: .number(.positive), defaultText: text(cifarDefaults.contrastTemperature),
               help: "rmt: temperature of the contrastive loss, positive (CONTRAST.TEMPERATURE).", group: .hyper, commands: adapting),
    OptionSpec(name: "projection-dim", kind: .int(min: 1, max: maxProjectionDim), defaultText: "\(cifarDefaults.projectionDim)",
               help: "rmt: width of the contrastive projector, at most \(maxProjectionDim) (CONTRAST.PROJECTION_DIM).", group: .hyper, commands: adapting),
    OptionSpec(name: "symmetric-loss", kind: .bool, defaultText: "\(cifarDefaults.symmetricLoss)",
               help: "cotta: symmetric cross-entropy (ImageNet) instead of soft-target cross-entropy.",
               group: .hyper, commands: adapting),
    OptionSpec(name: "unmix-components", kind: .int(min: 1, max: maxUnmixComponents), defaultText: "\(cifarDefaults.unmixComponents)",
               help: "unmix_tns and <method>+unmix_tns: mixture components K per BN layer, at most \(maxUnmixComponents) (the reference takes 128 for mixed domains).",
               group: .hyper, commands: adapting),
    OptionSpec(name: "unmix-batch-size-max", kind: .int(min: 1), defaultText: "\(cifarDefaults.unmixBatchSizeMax)",
               help: "unmix_tns and the +unmix_tns combinations: the batch size at which the components' momentum is the BN momentum 0.1 (16 in the reference's ImageNet runs).",
               group: .hyper, commands: adapting),
    // Input and output of predict
    OptionSpec(name: "input", kind: .text(placeholder: "images.npy"), defaultText: nil,
               help: "Required. Images: uint8 (N, H, W, C) NHWC, divided by 255, or float32 (N, C, H, W) NCHW in the model's input range.",
               group: .input, commands: [.predict]),
    OptionSpec(name: "output", kind: .text(placeholder: "out.npy"), defaultText: nil,
               help: "Required. Where to write the logits: float32 (N, classes) .npy, atomically.", group: .input, commands: [.predict]),
    // Output of run and compare
    OptionSpec(name: "format", kind: .choice(OutputFormat.allCases.map(\.rawValue)), defaultText: "table",
               help: "How results are printed (json: the results file).", group: .output, commands: experiment),
    OptionSpec(name: "output", kind: .text(placeholder: "file"), defaultText: nil,
               help: "Also write the results to this file, atomically: in --format, or without it by the extension (.json, .csv, .md; else table).",
               group: .output, commands: experiment),
    OptionSpec(name: "report", kind: .text(placeholder: "file.html"), defaultText: nil,
               help: "Write a self-contained HTML report: the table, error per corruption and running error charts.",
               group: .output, commands: experiment),
    OptionSpec(name: "quiet", kind: .flag, defaultText: nil,
               help: "No progress on stderr.", group: .output, commands: adapting),
    OptionSpec(name: "collapse-window", kind: .int(min: 1), defaultText: "10",
               help: "Batches over which the predicted classes are checked for collapse.", group: .output, commands: experiment),
    OptionSpec(name: "collapse-threshold", kind: .number(.positiveUnit), defaultText: "0.95",
               help: "Collapse: one class takes at least this share, in (0, 1], of the window's predictions (reported in the results).",
               group: .output, commands: experiment),
    OptionSpec(name: "on-collapse", kind: .choice(["report", "reset"]), defaultText: "report",
               help: "What a detected collapse does: only report it, or also reset the model to the source.",
               group: .output, commands: experiment),
    // Runtime
    OptionSpec(name: "checkpoint", kind: .text(placeholder: "file"), defaultText: nil,
               help: "Save the run's full state to this file (atomically) every --checkpoint-every batches, after each method and on Ctrl-C.",
               group: .runtime, commands: experiment),
    OptionSpec(name: "checkpoint-every", kind: .int(min: 1), defaultText: "10",
               help: "Batches between checkpoints.", group: .runtime, commands: experiment),
    OptionSpec(name: "resume", kind: .text(placeholder: "file"), defaultText: nil,
               help: "Continue the run saved in this checkpoint (same options, weights and data; refused otherwise); it keeps checkpointing there unless --checkpoint says otherwise.",
               group: .runtime, commands: experiment),
    OptionSpec(name: "threads", kind: .int(min: 1, max: maxThreads), defaultText: "\(ProcessInfo.processInfo.activeProcessorCount), the active cores",
               help: "Threads the kernels use, at most \(maxThreads).", group: .runtime, commands: adapting),
    OptionSpec(name: "memory-limit", kind: .text(placeholder: "size"), defaultText: "the memory the system reports available",
               help: "Refuse up front a run whose estimated peak memory exceeds this (e.g. 8GiB, 512MiB); none skips the estimate.",
               group: .runtime, commands: experiment),
    OptionSpec(name: "config", kind: .text(placeholder: "file.json"), defaultText: nil,
               help: "A JSON object of options: keys are the option names without dashes, e.g. \(Parser.configExample); flags override it.",
               group: .runtime, commands: adapting),
]

extension OptionSpec {
    /// The options `command` takes, in table order.
    static func options(for command: CommandName) -> [OptionSpec] {
        optionTable.filter { $0.commands.contains(command) }
    }

    /// The option `name` of `command`.
    static func spec(_ name: String, for command: CommandName) -> OptionSpec? {
        optionTable.first { $0.name == name && $0.commands.contains(command) }
    }
}

/// The benchmarks `--dataset` names.
enum Dataset: String, CaseIterable, Sendable {
    case cifar10 = "cifar10-c", cifar100 = "cifar100-c", fmnist = "fmnist-c", imagenet = "imagenet-c", tinyImagenet = "tiny-imagenet-c"

    /// The folder name of the distributed files (`CorruptionBenchmark`'s `folderName`).
    var folderName: String {
        switch self {
        case .cifar10: "CIFAR-10-C"
        case .cifar100: "CIFAR-100-C"
        case .fmnist: "FMNIST-C"
        case .imagenet: "ImageNet-C"
        case .tinyImagenet: "Tiny-ImageNet-C"
        }
    }

    /// The class count of the distributed benchmark (an image-folder benchmark's own is its class folders).
    var numClasses: Int {
        switch self {
        case .cifar100: 100
        case .imagenet: 1000
        case .tinyImagenet: 200
        default: 10
        }
    }

    /// True for the JPEG-folder layouts (`<corruption>/<severity>/<wnid>/<file>.JPEG`).
    var isImageFolder: Bool { self == .imagenet || self == .tinyImagenet }

    /// Which reference defaults its methods use.
    var family: MethodConfiguration.Family { isImageFolder ? .imagenet : .cifar }

    var summary: String {
        switch self {
        case .cifar10: "CIFAR-10-C (Hendrycks & Dietterich): 10 classes, 32x32 RGB, 10,000 images per severity"
        case .cifar100: "CIFAR-100-C: 100 classes, 32x32 RGB, 10,000 images per severity"
        case .fmnist: "FMNIST-C, embedded in the repository: 10 classes, 32x32 grey, 200 images per severity"
        case .imagenet: "ImageNet-C: 1000 classes, 224x224 JPEG, RobustBench's 5,000 (or all 50,000) images per severity"
        case .tinyImagenet: "Tiny-ImageNet-C: 200 classes, 64x64 JPEG, 10,000 images per severity"
        }
    }

    /// The dataset a folder holds, from its name or its only child folder named like one (nil when
    /// there is none, or several).
    static func detect(in directory: URL) -> Dataset? {
        if let d = allCases.first(where: { directory.lastPathComponent == $0.folderName }) { return d }
        let children = allCases.filter { FileManager.default.fileExists(atPath: directory.appendingPathComponent($0.folderName).path) }
        return children.count == 1 ? children[0] : nil
    }
}

/// How results are printed or written.
enum OutputFormat: String, CaseIterable, Sendable {
    case table, markdown, csv, json

    /// The format a file name implies (`.json`, `.csv`, `.md`), or nil.
    static func implied(by path: String) -> OutputFormat? {
        switch URL(fileURLWithPath: path).pathExtension.lowercased() {
        case "json": .json
        case "csv": .csv
        case "md", "markdown": .markdown
        default: nil
        }
    }
}

/// `0.001`, `0.9`, `1e-05`: the shortest text that reads back as the same Float.
func formatNumber(_ x: Double) -> String {
    let f = Float(x)
    if f == f.rounded(), abs(f) < 1e9 { return String(Int(f)) }
    return "\(f)"
}
