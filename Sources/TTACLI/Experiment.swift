import Foundation
import TTAAdaptation
import TTAData
import TTAKernels
import TTAModels
import TTARuntime
import TTATensor

/// The options of `tta run` and `tta compare`, typed; defaults that depend on the dataset stay nil
/// until `Experiment.prepare` resolves them.
struct ExperimentOptions {
    var dataset: Dataset?
    var dataDirectory: String?
    var sourceData: String?
    var sourceSamples: Int?
    var cacheDirectory: String?
    var model: String
    var normalize: String?
    var subset: String?
    var weights: String?
    var methods: [String]
    var setting: StreamSetting
    var severities: [Int]
    var corruptions: [String]
    var samplesPerDomain: Int?
    var batchSize: Int?
    /// `--window-length`: nil when not given (at batch size 1 that refuses the methods that need a window).
    var windowLength: Int?
    var order: SampleOrder
    var seed: UInt64
    var dirichlet: Double
    var episodic: Bool
    /// Every option as parsed (the hyper-parameters are read from here per method).
    var arguments: ParsedArguments
    var format: OutputFormat
    var formatGiven: Bool
    var output: String?
    var report: String?
    var quiet: Bool
    var threads: Int?
    /// `--memory-limit` as given (parsed by `Experiment.prepare`).
    var memoryLimit: String?
    var collapse: CollapsePolicy
    /// Where checkpoints go (`--checkpoint`, else `--resume`), how often, and what to resume from.
    var checkpoint: String?
    var checkpointEvery: Int
    var resume: String?

    init(_ a: ParsedArguments, command: CommandName) {
        dataset = a.word("dataset").flatMap(Dataset.init(rawValue:))
        dataDirectory = a.word("data-dir")
        sourceData = a.word("source-data")
        sourceSamples = a.int("source-samples")
        cacheDirectory = a.word("cache-dir")
        model = a.word("model") ?? "auto"
        normalize = a.word("normalize")
        subset = a.word("subset")
        weights = a.word("weights")
        methods = command == .compare ? (a.list("methods") ?? defaultCompareMethods) : [a.word("method") ?? "tent"]
        setting = a.word("setting").flatMap(StreamSetting.init(rawValue:)) ?? .continual
        severities = a.ints("severity") ?? [5]
        corruptions = a.list("corruptions") ?? CorruptionBenchmark.standardCorruptions
        samplesPerDomain = a.int("samples-per-domain")
        batchSize = a.int("batch-size")
        windowLength = a.int("window-length")
        order = a.word("order").flatMap(SampleOrder.init(rawValue:)) ?? .shuffled
        seed = a.seed("seed") ?? 1
        dirichlet = a.number("dirichlet") ?? 0
        episodic = a.flag("episodic")
        arguments = a
        formatGiven = a.has("format")
        format = a.word("format").flatMap(OutputFormat.init(rawValue:)) ?? .table
        output = a.word("output")
        report = a.word("report")
        quiet = a.flag("quiet")
        threads = a.int("threads")
        memoryLimit = a.word("memory-limit")
        collapse = CollapsePolicy(window: a.int("collapse-window") ?? 10, threshold: a.number("collapse-threshold") ?? 0.95,
                                  resetOnCollapse: a.word("on-collapse") == "reset")
        resume = a.word("resume")
        checkpoint = a.word("checkpoint") ?? resume
        checkpointEvery = a.int("checkpoint-every") ?? 10
    }

    /// The format of the `--output` file: `--format` when given, else by the file's extension.
    var outputFileFormat: OutputFormat {
        formatGiven ? format : output.flatMap(OutputFormat.implied(by:)) ?? .table
    }
}

/// `path` with `.`, `..` and symbolic links resolved, to compare paths.
func canonicalPath(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path }

/// Whether two paths name the same file.
func samePath(_ a: String) -> (String) -> Bool {
    let k = canonicalPath(a)
    return { canonicalPath($0) == k }
}

/// Whether `path` lies inside `folder`.
func isInside(_ path: String, folder: String) -> Bool {
    let f = canonicalPath(folder)
    return canonicalPath(path).hasPrefix(f.hasSuffix("/") ? f : f + "/")
}

/// Refuses output paths that would fail after the work is done or lose a file: a path that is a folder or whose folder
/// does not exist, two outputs on one file, an output on one of the inputs. A checkpoint may be the one resumed.
func checkOutputPaths(_ outputs: [(flag: String, path: String)], inputs: [(flag: String, path: String)]) throws {
    for (i, (flag, path)) in outputs.enumerated() {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            throw CLIError.usage("--\(flag) \(path) is a folder; give the path of a file to write")
        }
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            throw CLIError.failed("cannot write \(path): the folder \(dir.path) does not exist")
        }
        let same = samePath(path)
        if let other = outputs[..<i].first(where: { same($0.path) }) {
            throw CLIError.usage("--\(other.flag) and --\(flag) are the same file, \(path): one would overwrite the other")
        }
        if let input = inputs.first(where: { same($0.path) && !(flag == "checkpoint" && $0.flag == "resume") }) {
            throw CLIError.usage("--\(flag) \(path) is the --\(input.flag) file: writing it would overwrite an input")
        }
    }
}

/// Throws a usage error for the first method option given on the command line that none of `methods` reads, naming
/// the methods that read it (a `--config` file shared by several runs may set what one of them does not read): the
/// optimizer settings (a method with its own optimizer reads the settings its registry entry lists, SAR lr, momentum
/// and steps; source, norm_*, lame and unmix_tns train nothing), each method's hyper-parameters
/// (`ListCommand.methodParameters`; a `<method>+unmix_tns` reads its method's and UnMix-TNS's) and the source data's
/// options.
func refuseUnreadOptions(_ a: ParsedArguments, methods: [String]) throws {
    let entries = MethodRegistry.entries.filter { MethodRegistry.baseName($0.name) == $0.name }
    let trained = entries.filter(\.usesGradients)
    var readers: [(flag: String, methods: [String])] =
        ["optimizer", "beta1", "nesterov", "weight-decay", "dampening", "lr", "momentum", "steps"].map { flag in
            (flag, trained.filter { $0.ownOptimizer?.settings.contains(flag) ?? true }.map(\.name))
        }
        + [("source-data", entries.filter(\.needsSourceData).map(\.name)), ("source-samples", entries.filter(\.needsSourceData).map(\.name)),
           ("cache-dir", ["rmt"])]
    let parameters = ListCommand.methodParameters
    for flag in Set(parameters.values.joined()).subtracting(readers.map(\.flag)).sorted() {
        readers.append((flag, parameters.keys.filter { parameters[$0]!.contains(flag) }.sorted()))
    }
    for (flag, names) in readers where a.commandLine.contains(flag) {
        let read = methods.contains { m in
            let base = MethodRegistry.baseName(m)
            return names.contains(base) || (base != m && names.contains("unmix_tns"))
        }
        if !read {
            throw CLIError.usage("--\(flag) is read only by \(names.joined(separator: ", ")); "
                                 + (methods.count == 1 ? "\(methods[0]) does not read it" : "none of \(methods.joined(separator: ", ")) does"))
        }
    }
}

/// The images of an image-folder benchmark a run takes without `--subset`: on ImageNet-C RobustBench's 5000, except
/// where the reference switches to all 50,000 validation images (datasets/corruptions_datasets.py: a correlated
/// setting, or NUM_EX set, here --samples-per-domain); every image on Tiny-ImageNet-C. The reference lists the 50,000
/// in an order of its own (imagenet_val_ids_50k.txt, which --subset takes): "all" holds the same images in folder order,
/// so the shuffled stream draws the same pool in another order.
func defaultSubset(_ dataset: Dataset, _ setting: StreamSetting, samplesPerDomain: Int?) -> String {
    dataset == .imagenet && setting != .correlated && samplesPerDomain == nil ? "robustbench5000" : "all"
}

/// Throws for an optimizer setting given on the command line that the optimizer each method runs with does not read:
/// momentum, nesterov and dampening are SGD's, beta1 is Adam's; SAR's own SGD reads momentum.
func refuseUnusedOptimizerSettings(_ a: ParsedArguments, methods: [(name: String, configuration: MethodConfiguration)]) throws {
    func reads(_ flag: String, _ m: (name: String, configuration: MethodConfiguration)) -> Bool {
        guard let e = MethodRegistry.entry(m.name), e.usesGradients else { return false }
        if let own = e.ownOptimizer { return own.settings.contains(flag) }
        return m.configuration.optimizer == (flag == "beta1" ? .adam : .sgd)
    }
    for flag in ["momentum", "nesterov", "dampening", "beta1"] where a.commandLine.contains(flag) && !methods.contains(where: { reads(flag, $0) }) {
        let (optimizer, choice) = flag == "beta1" ? ("Adam", "adam") : ("SGD", "sgd")
        let who = methods.count == 1
            ? "\(methods[0].name) runs \(methods[0].configuration.optimizer == .adam ? "Adam" : "SGD")"
            : "none of \(methods.map(\.name).joined(separator: ", ")) runs \(optimizer)"
        throw CLIError.usage("--\(flag) is read by \(optimizer) only; \(who) here (--optimizer \(choice) selects it)")
    }
}

/// The reference's SAR trains transformers (ViT, Swin) with lr 0.001 whatever OPTIM.LR says; an explicit --lr still
/// applies here.
func applyTransformerRate(_ c: inout MethodConfiguration, method: String, model: any ImageClassifier, _ a: ParsedArguments) {
    if method == "sar" && model is VisionTransformer && a.number("lr") == nil { c.lr = 0.001 }
}

/// A method's hyper-parameters: the reference defaults of `family` for `method`, then the options given.
func methodConfiguration(_ method: String, family: MethodConfiguration.Family, numClasses: Int,
                         _ a: ParsedArguments) throws -> MethodConfiguration {
    var c = MethodConfiguration.defaults(for: family, method: method, numClasses: numClasses)
    if let v = a.word("optimizer"), let o = OptimizerChoice(rawValue: v) { c.optimizer = o }
    if let v = a.number("lr") { c.lr = Float(v) }
    if let v = a.int("steps") { c.steps = v }
    if let v = a.number("momentum") { c.momentum = Float(v) }
    if let v = a.number("dampening") { c.dampening = Float(v) }
    if let v = a.bool("nesterov") { c.nesterov = v }
    if let v = a.number("weight-decay") { c.weightDecay = Float(v) }
    if let v = a.number("beta1") { c.beta1 = Float(v) }
    if let v = a.number("bn-alpha") { c.bnAlpha = Float(v) }
    if let v = a.number("teacher-momentum") { c.teacherMomentum = Float(v) }
    if let v = a.number("restore-probability") { c.restoreProbability = Float(v) }
    if let v = a.number("confidence-threshold") { c.confidenceThreshold = Float(v) }
    if let v = a.int("augmentations") { c.augmentations = v }
    if let v = a.bool("symmetric-loss") { c.symmetricLoss = v }
    if let v = a.int("warmup-samples") { c.rmtWarmupSamples = v }
    if let v = a.number("entropy-margin") { c.entropyMarginFactor = Float(v) }
    if let v = a.number("redundancy-margin") { c.redundancyMargin = Float(v) }
    if let v = a.number("fisher-alpha") { c.fisherAlpha = Float(v) }
    if let v = a.number("sar-reset-constant") { c.sarResetConstant = Float(v) }
    if let v = a.number("sam-rho") { c.samRho = Float(v) }
    if let v = a.word("lame-affinity"), let k = LAMEAffinity(rawValue: v) { c.lameAffinity = k }
    if let v = a.int("lame-neighbours") { c.lameNeighbours = v }
    if let v = a.bool("lame-force-symmetry") { c.lameForceSymmetry = v }
    if let v = a.int("reset-after-updates") { c.resetAfterUpdates = v }
    if let v = a.int("rotta-memory-size") { c.rottaMemorySize = v }
    if let v = a.int("rotta-update-frequency") { c.rottaUpdateFrequency = v }
    if let v = a.number("rotta-nu") { c.rottaNu = Float(v) }
    if let v = a.number("rotta-alpha") { c.rottaAlpha = Float(v) }
    if let v = a.number("rotta-lambda-t") { c.rottaLambdaT = Float(v) }
    if let v = a.number("rotta-lambda-u") { c.rottaLambdaU = Float(v) }
    if let v = a.bool("roid-weighting") { c.roidWeighting = v }
    if let v = a.bool("roid-prior-correction") { c.roidPriorCorrection = v }
    if let v = a.bool("roid-consistency") { c.roidConsistency = v }
    if let v = a.number("roid-momentum-source") { c.roidMomentumSource = Float(v) }
    if let v = a.number("roid-momentum-probs") { c.roidMomentumProbabilities = Float(v) }
    if let v = a.number("roid-temperature") { c.roidTemperature = Float(v) }
    if let v = a.int("unmix-components") { c.unmixComponents = v }
    if let v = a.int("unmix-batch-size-max") { c.unmixBatchSizeMax = v }
    if let v = a.number("rmt-lambda-target") { c.rmtLambdaTarget = Float(v) }
    if let v = a.number("rmt-lambda-contrast") { c.rmtLambdaContrast = Float(v) }
    if let v = a.number("rmt-lambda-source") { c.rmtLambdaSource = Float(v) }
    if let v = a.number("contrast-temperature") { c.contrastTemperature = Float(v) }
    if let v = a.int("projection-dim") { c.projectionDim = v }
    do { try c.validate() } catch let e as AdaptationError {
        // The messages start with the field's option name ("bn-alpha must be in [0, 1], got 2").
        throw CLIError.usage("--" + e.message)
    }
    return c
}

/// Checks a `--model` name the way `ModelZoo.make` will, before any file is opened.
func checkModelName(_ name: String) throws {
    guard ModelZoo.recognizes(name) else {
        throw CLIError.invalidValue(option: "model", value: name, expected: ModelZoo.modelNamesHelp)
    }
    // Checked for one class and one channel: the smallest head, so only the depth and width can make it too big
    // (blocks per stage, then parameters: `ModelZoo.maxBlocks`, `ModelZoo.maxParameterCount`).
    if let expected = ModelZoo.sizeRefusal(name) {
        throw CLIError.invalidValue(option: "model", value: name, expected: expected)
    }
}

/// Why method `name` cannot adapt on one image at a time (nil when it can), and the methods that can:
/// the `--batch-size 1` refusals of `run`, `compare` and `predict`.
func singleImageRefusal(_ name: String) -> (why: String, alternatives: String)? {
    guard MethodRegistry.entry(name)?.singleImages == false else { return nil }
    let refused = MethodRegistry.entries.filter { MethodRegistry.baseName($0.name) != $0.name && !$0.singleImages }.map(\.name)
    let single = MethodRegistry.entries.filter { $0.singleImages && $0.name != "source" && MethodRegistry.baseName($0.name) == $0.name }
        .map(\.name) + ["<method>+unmix_tns" + (refused.isEmpty ? "" : " but " + refused.joined(separator: " and "))]
    let why = switch (MethodRegistry.baseName(name), name == MethodRegistry.baseName(name)) {
    case ("lame", _): "relates the images of each batch through their affinity, which one image does not have"
    case ("roid", false): "weights each image against the others of its batch, which one image does not have"
    default: "normalises with the statistics of the test batch, which one image does not give (the reference has the same limit)"
    }
    return (why, single.joined(separator: ", "))
}

/// Why method `name`, configured as `c`, cannot augment images of `channels` × `height` × `width` (nil when it can, or
/// does not augment; `MethodRegistry.augments` and `augmentationProblem`, by which the methods refuse such batches).
/// `found` says what the images are; `why` what the method needs (and how to run it without augmenting).
func augmentationRefusal(_ name: String, _ c: MethodConfiguration, channels: Int, height: Int, width: Int)
    -> (found: String, why: String)? {
    guard MethodRegistry.augments(name, c),
          let found = MethodRegistry.augmentationProblem(channels: channels, height: height, width: width) else { return nil }
    let base = MethodRegistry.baseName(name)
    let without = ["cotta": "--augmentations 0", "roid": "--roid-consistency false"][base]
    return (found, "augments them with CoTTA's augmentation pipeline, which takes square images of at least 2×2 pixels with 1 or 3 channels"
                + (without.map { " (\($0) runs \(base) without augmenting)" } ?? ""))
}

/// The file a benchmark's image size comes from, for messages: the first corruption file of a CIFAR-10-C-layout
/// folder (every one has the same shape), the first sample of an ImageNet-C-layout folder (every image must have its
/// size), else the folder.
func imageSizeSource(_ benchmark: any CorruptionDataset) -> String {
    if let b = benchmark as? CorruptionBenchmark, let first = b.availableCorruptions.first {
        return b.fileURL(corruption: first).path
    }
    if let b = benchmark as? ImageFolderBenchmark, let c = b.availableCorruptions.first, let s = b.severities.first, !b.samples.isEmpty {
        return b.url(corruption: c, severity: s, index: 0).path
    }
    return benchmark.folder.path
}

/// `--normalize`: `none`, `imagenet` (torchvision's mean/std), `half` (0.5/0.5), or `m,m,m:s,s,s`.
func parseNormalization(_ text: String) throws -> (mean: [Float], std: [Float])? {
    switch text {
    case "none": return nil
    case "imagenet": return ResNet.imageNetNormalization
    case "half": return ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    default:
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map { $0.split(separator: ",", omittingEmptySubsequences: false).map { Float($0) } }
        guard parts.count == 2, parts[0].count == parts[1].count, !parts[0].isEmpty,
              let mean = parts[0] as? [Float], let std = parts[1] as? [Float],
              (mean + std).allSatisfy(\.isFinite), std.allSatisfy({ $0 > 0 }) else {
            throw CLIError.invalidValue(option: "normalize", value: text,
                                        expected: "none, imagenet, half, or per-channel means and positive stds as m,m,m:s,s,s")
        }
        // The model computes (x - mean) * (1 / std): pixels in [0, 1] must stay finite, or every logit is NaN.
        if let c = mean.indices.first(where: { i in
            !((0 - mean[i]) * (1 / std[i])).isFinite || !((1 - mean[i]) * (1 / std[i])).isFinite
        }) {
            throw CLIError.invalidValue(option: "normalize", value: text,
                                        expected: "means and stds with which (x - mean) / std stays finite for pixels x in [0, 1] "
                                                  + "(channel \(c + 1), mean \(mean[c]) and std \(std[c]), overflows float32)")
        }
        return (mean, std)
    }
}

/// Reads `--weights` and builds the model: `auto` infers the architecture from the keys; a named
/// model is built for `numClasses` and `inputChannels` and loaded strictly (errors name the key).
struct LoadedWeights {
    let url: URL
    let file: SafeTensorsFile
    let modelName: String
    /// `--normalize`: `.some(nil)` removes the model's input normalisation, nil keeps it.
    let normalization: (mean: [Float], std: [Float])??
    /// `--normalize` as given, for messages.
    let normalizeText: String?

    init(path: String, modelName: String, normalize: String? = nil) throws {
        normalization = try normalize.map(parseNormalization)
        normalizeText = normalize
        url = URL(fileURLWithPath: path)
        guard FileManager.default.fileExists(atPath: url.path) else { throw CLIError.fileNotFound(what: "--weights", path: path) }
        do { file = try SafeTensorsFile.read(url) } catch let e as DataError {
            throw CLIError.data("--weights \(e.description)")
        } catch { throw CLIError.wrap(error) }
        self.modelName = modelName
    }

    /// A freshly loaded model. `numClasses` and `inputChannels` are what the data needs (checked for `auto`).
    func makeModel(numClasses: Int?, inputChannels: Int?) throws -> any ImageClassifier {
        let model: any ImageClassifier
        if modelName == "auto" {
            do { model = try ModelZoo.infer(file) } catch { throw CLIError.wrap(error) }
            if let n = numClasses, model.numClasses != n {
                throw CLIError.data("\(url.path): the weights have \(model.numClasses) classes (\(model is VisionTransformer ? "head.weight" : "fc.weight")) but the data has \(n)")
            }
            if let c = inputChannels, model.inputChannels != c {
                throw CLIError.data("\(url.path): the weights take \(model.inputChannels)-channel images (\(model is VisionTransformer ? "patch_embed.proj.weight" : "conv1.weight")) but the data has \(c) channel\(c == 1 ? "" : "s")")
            }
        } else {
            var classes = numClasses, channels = inputChannels
            if classes == nil || channels == nil, let inferred = try? ModelZoo.infer(file) {
                classes = classes ?? inferred.numClasses
                channels = channels ?? inferred.inputChannels
            }
            do {
                model = try ModelZoo.make(modelName, numClasses: classes ?? 10, inputChannels: channels ?? 3)
            } catch {
                try checkModelName(modelName)
                throw CLIError.wrap(error)
            }
        }
        do {
            try model.load(file)
        } catch let e as DataError {
            let what = e.key.map { "\(e.keyKind) '\($0)': " } ?? ""
            throw CLIError.data("cannot load \(url.path) as \(model.architecture): \(what)\(e.message)")
        }
        if let normalization {
            if let n = normalization, n.mean.count != model.inputChannels {
                throw CLIError.invalidValue(option: "normalize", value: normalizeText ?? "",
                                            expected: "\(model.inputChannels) means and stds, one per input channel of \(model.architecture)")
            }
            model.inputNormalization = normalization
        }
        return model
    }
}

/// A validated comparison: the benchmark is open, the stream planned, the weights loaded and every
/// method built once, so that nothing the user typed can fail after the long work has started.
final class Experiment {
    let options: ExperimentOptions
    let dataset: Dataset
    let benchmark: any CorruptionDataset
    let stream: BenchmarkStream
    let weights: LoadedWeights
    let architecture: String
    let methods: [(name: String, configuration: MethodConfiguration)]
    let runConfiguration: RunConfiguration
    /// The source data and cache, when a method needs them.
    let source: SourcePlan?
    /// The model loaded during validation, used by the first method.
    private var firstModel: (any ImageClassifier)?
    /// What identifies the run in its checkpoints (when checkpointing), and the checkpoint it resumes.
    let identity: RunCheckpoint.Identity?
    let resume: RunCheckpoint?

    private init(options: ExperimentOptions, dataset: Dataset, benchmark: any CorruptionDataset, stream: BenchmarkStream,
                 weights: LoadedWeights, model: any ImageClassifier,
                 methods: [(name: String, configuration: MethodConfiguration)], runConfiguration: RunConfiguration,
                 identity: RunCheckpoint.Identity?, resume: RunCheckpoint?, source: SourcePlan?) {
        self.identity = identity
        self.resume = resume
        self.options = options
        self.source = source
        self.dataset = dataset
        self.benchmark = benchmark
        self.stream = stream
        self.weights = weights
        self.architecture = model.architecture
        self.firstModel = model
        self.methods = methods
        self.runConfiguration = runConfiguration
    }

    /// Resolves the defaults, checks every option and file, and builds everything a run needs.
    static func prepare(_ options: ExperimentOptions, console: Console) throws -> Experiment {
        var o = options
        // 1. What the options say on their own.
        if o.dirichlet > 0 && o.setting != .correlated {
            throw CLIError.usage("--dirichlet applies only to --setting correlated (the setting is \(o.setting.rawValue))")
        }
        // Options that would be accepted and then do nothing are refused, naming what they need (only when given on
        // the command line: a --config file may serve several runs).
        if o.setting == .gradual, o.arguments.commandLine.contains("severity"), o.severities.count == 1 {
            let sequence = StreamConfiguration(setting: .gradual, severities: o.severities).effectiveSeverities
            throw CLIError.usage("--severity \(o.severities[0]): --setting gradual runs each corruption at severities "
                                 + "\(sequence.map(String.init).joined(separator: ",")); give the whole sequence to change it (e.g. --severity 1,3,5,3,1)")
        }
        if o.arguments.commandLine.contains("checkpoint-every") && o.checkpoint == nil {
            throw CLIError.usage("--checkpoint-every needs --checkpoint (the file to save the run's state in)")
        }
        try refuseUnreadOptions(o.arguments, methods: o.methods)
        try checkModelName(o.model)
        do { try o.collapse.validate() } catch let e as RuntimeError { throw CLIError.usage("--" + e.message) }
        if let path = o.resume, !FileManager.default.fileExists(atPath: path) { throw CLIError.fileNotFound(what: "--resume", path: path) }
        let outputs = [("output", o.output), ("report", o.report), ("checkpoint", o.checkpoint)].compactMap { f, p in p.map { (flag: f, path: $0) } }
        let subsetFile = o.subset.flatMap { ["robustbench5000", "all"].contains($0) ? nil : $0 }
        try checkOutputPaths(outputs, inputs: [("weights", o.weights), ("source-data", o.sourceData), ("resume", o.resume),
                                               ("config", o.arguments.word("config")), ("subset", subsetFile)]
                                .compactMap { f, p in p.map { (flag: f, path: $0) } })

        if let path = o.checkpoint, o.resume.map(samePath(path)) != true, FileManager.default.fileExists(atPath: path) {
            throw CLIError.usage("--checkpoint \(path) already exists (another run's checkpoint?): continue that run with --resume \(path), "
                                 + "or give another path")
        }
        if let s = o.sourceData, !FileManager.default.fileExists(atPath: s) {
            throw CLIError.fileNotFound(what: "--source-data", path: s)
        }

        // 2. Which benchmark, folder and weights.
        let dataset: Dataset
        if let d = o.dataset {
            dataset = d
        } else if let dir = o.dataDirectory {
            guard let d = Dataset.detect(in: URL(fileURLWithPath: dir)) else {
                throw CLIError.usage("--dataset is needed: cannot tell the benchmark from --data-dir \(dir) (expected a CIFAR-10-C, CIFAR-100-C, ImageNet-C, Tiny-ImageNet-C or FMNIST-C folder or its parent)")
            }
            dataset = d
        } else {
            dataset = .fmnist
        }
        let dataDirectory: URL
        if let dir = o.dataDirectory {
            dataDirectory = URL(fileURLWithPath: dir, isDirectory: true)
        } else if dataset == .fmnist {
            dataDirectory = try Embedded.benchmarkDirectory(environment: console.environment)
        } else {
            throw CLIError.usage("--dataset \(dataset.rawValue) needs --data-dir (the \(dataset.folderName) folder or its parent)")
        }
        let weightsPath: String
        if let w = o.weights {
            weightsPath = w
        } else if dataset == .fmnist {
            weightsPath = try Embedded.modelFile(environment: console.environment).path
        } else {
            throw CLIError.usage("--dataset \(dataset.rawValue) needs --weights (a .safetensors state dict; only fmnist-c has an embedded model)")
        }
        guard FileManager.default.fileExists(atPath: weightsPath) else { throw CLIError.fileNotFound(what: "--weights", path: weightsPath) }
        if let name = o.methods.first(where: { MethodRegistry.entry($0)?.needsSourceData == true }), o.sourceData == nil {
            if dataset == .fmnist && o.dataDirectory == nil {
                // The embedded benchmark's source domain: Fashion-MNIST training images (data/fashion-mnist-source).
                o.sourceData = try Embedded.sourceDirectory(environment: console.environment).path
            } else {
                throw CLIError.usage("method '\(name)' needs labelled source data: give --source-data"
                                     + (MethodRegistry.baseName(name) == "eata" ? ", or use eta (EATA without its Fisher term)" : ""))
            }
        }
        if let t = o.threads { KernelThreads.count = t }

        // 3. The hyper-parameters of every method (range errors are usage errors).
        var methods = try o.methods.map { name in
            (name: name, configuration: try methodConfiguration(name, family: dataset.family, numClasses: dataset.numClasses, o.arguments))
        }
        // SAR builds its own SGD (no Nesterov, dampening or weight decay) whatever --optimizer says for the other methods:
        // its results record what it ran with.
        for i in methods.indices where MethodRegistry.entry(methods[i].name)?.ownOptimizer != nil {
            methods[i].configuration.optimizer = .sgd
            (methods[i].configuration.nesterov, methods[i].configuration.dampening, methods[i].configuration.weightDecay) = (false, 0, 0)
        }
        try refuseUnusedOptimizerSettings(o.arguments, methods: methods)

        // 4. The benchmark and the stream.
        var seen = Set<String>()
        let unique = o.corruptions.filter { seen.insert($0).inserted }
        let benchmark: any CorruptionDataset
        do {
            if dataset.isImageFolder {
                let subset: ImageFolderBenchmark.Subset = switch o.subset ?? defaultSubset(dataset, o.setting, samplesPerDomain: o.samplesPerDomain) {
                case "robustbench5000": .robustBench5000
                case "all": .all
                case let path: .list(URL(fileURLWithPath: path))
                }
                let severities = StreamConfiguration(setting: o.setting, severities: o.severities).effectiveSeverities
                benchmark = try ImageFolderBenchmark(directory: dataDirectory, folderName: dataset.folderName, corruptions: unique,
                                                     severities: Array(Set(severities)).sorted(), subset: subset)
            } else {
                if o.subset != nil { throw CLIError.usage("--subset applies only to imagenet-c and tiny-imagenet-c (the dataset is \(dataset.rawValue))") }
                benchmark = try CorruptionBenchmark(directory: dataDirectory, folderName: dataset.folderName,
                                                    corruptions: unique, numClasses: dataset.numClasses)
            }
        } catch let e as DataError {
            let known = CorruptionBenchmark.standardCorruptions + CorruptionBenchmark.extraCorruptions
            if let typo = unique.first(where: { !known.contains($0) }), let guess = closest(to: typo, in: known) {
                throw CLIError.invalidValue(option: "corruptions", value: typo, expected: "a corruption name (did you mean '\(guess)'?)")
            }
            throw CLIError.data(e.description)
        }
        if let inside = outputs.first(where: { isInside($0.path, folder: benchmark.folder.path) }) {
            throw CLIError.usage("--\(inside.flag) \(inside.path) is inside the benchmark folder \(benchmark.folder.path): "
                                 + "results are not written among its files")
        }
        // The methods that augment their images need square ones (CoTTA's pipeline crops back to a square).
        for m in methods {
            if let refusal = augmentationRefusal(m.name, m.configuration, channels: benchmark.imageChannels,
                                                 height: benchmark.imageHeight, width: benchmark.imageWidth) {
                let who = o.methods.count == 1 && !o.arguments.has("methods") ? "--method \(m.name)" : "\(m.name) (--methods)"
                throw CLIError.data("\(imageSizeSource(benchmark)): \(refusal.found); \(who) \(refusal.why)")
            }
        }
        // Without --batch-size: the dataset's, or the reference's own for a method run alone (norm_alpha: 1).
        let batchSize = o.batchSize ?? (o.methods.count == 1 ? MethodRegistry.entry(o.methods[0])?.referenceBatchSize : nil)
            ?? (dataset == .fmnist ? embeddedBatchSize : dataset.isImageFolder ? imageNetBatchSize : standardBatchSize)
        if batchSize == 1 && o.windowLength == nil,
           let (name, refusal) = o.methods.lazy.compactMap({ m in singleImageRefusal(m).map { (m, $0) } }).first {
            throw CLIError.usage("--batch-size 1: \(name) \(refusal.why). Give --window-length N to adapt on a sliding window of the last N images "
                                 + "(the reference's TEST.WINDOW_LENGTH, e.g. 64), or use a method made for single images: \(refusal.alternatives); "
                                 + "--window-length 1 runs \(name) on single images anyway")
        }
        // The configured batch size (the reference's TEST.BATCH_SIZE): ROID divides its loss by it and UnMix-TNS
        // sets its momentum from it, also on a short last batch, a sliding window or RoTTA's memory.
        for i in methods.indices { methods[i].configuration.batchSize = batchSize }
        let streamConfiguration = StreamConfiguration(
            setting: o.setting, corruptions: o.corruptions, severities: o.severities, samplesPerDomain: o.samplesPerDomain,
            batchSize: batchSize, order: o.order, seed: o.seed, dirichletDelta: o.dirichlet, episodic: o.episodic,
            windowLength: o.windowLength ?? 1)
        let stream: BenchmarkStream
        do {
            stream = try BenchmarkStream(benchmark: benchmark, configuration: streamConfiguration)
        } catch let e as DataError where e.file == "stream configuration" {
            let flags = ["corruptions": "corruptions", "severities": "severity", "batchSize": "batch-size", "windowLength": "window-length",
                         "samplesPerDomain": "samples-per-domain", "dirichletDelta": "dirichlet"]
            throw CLIError.usage("--\(e.key.flatMap { flags[$0] } ?? e.key ?? "setting"): \(e.message)")
        }

        // 5. The weights, loaded into the model once; every method built once.
        let weights = try LoadedWeights(path: weightsPath, modelName: o.model, normalize: o.normalize)
        let model = try weights.makeModel(numClasses: benchmark.numClasses, inputChannels: benchmark.imageChannels)
        // A model made for one image size (a ViT's position embeddings) refuses any other: say so before any method is set up
        // (EATA's Fisher information and RMT's prototypes run the model on the source images when the method is configured).
        if let (h, w) = model.requiredImageSize, benchmark.imageHeight != h || benchmark.imageWidth != w {
            throw CLIError.data("\(imageSizeSource(benchmark)): images are \(benchmark.imageHeight)×\(benchmark.imageWidth) (H×W); "
                                + "\(model.architecture) (--weights \(weights.url.path)) takes \(h)×\(w) images")
        }
        for i in methods.indices { applyTransformerRate(&methods[i].configuration, method: methods[i].name, model: model, o.arguments) }

        // 6. The source data, for the methods that need it, checked against the model and the benchmark.
        let source = try o.methods.contains { MethodRegistry.entry($0)?.needsSourceData == true }
            ? SourcePlan(o, benchmark: benchmark, numClasses: benchmark.numClasses,
                         batchSize: batchSize > 1 ? batchSize : o.windowLength ?? 1, weights: weights.url, environment: console.environment,
                         model: model)
            : nil
        for m in methods {
            do { _ = try source.map { try $0.makeMethod(m.name, m.configuration, imageSize: benchmark.imageHeight) }
                    ?? MethodFactory.make(m.name, configuration: m.configuration, imageSize: benchmark.imageHeight) } catch {
                throw CLIError.wrap(error)
            }
        }
        let memoryLimit = try parseMemoryLimit(o.memoryLimit)

        // 7. What the run reads, hashed, so the results trace to their inputs.
        var config = RunConfiguration(dataset: dataset.rawValue, dataDirectory: benchmark.folder.path, model: model.architecture,
                                      weights: weights.url.path, stream: streamConfiguration, methods: o.methods,
                                      threads: KernelThreads.count)
        do {
            let data = (benchmark as? ImageFolderBenchmark)?.dataFileGroups(readBy: stream)
                ?? benchmark.dataFileGroups(corruptions: unique, severities: streamConfiguration.effectiveSeverities)
            config.inputs = try InputFingerprint(weights: weights.url, data: data + (source?.data.files ?? []).map(DataFileGroup.init(file:)))
        } catch { throw CLIError.wrap(error) }

        // 8. Checkpoints: what identifies this run, and the checkpoint to resume, which must match it.
        var identity: RunCheckpoint.Identity?
        var resume: RunCheckpoint?
        if o.checkpoint != nil, let inputs = config.inputs {
            identity = RunCheckpoint.Identity(
                dataset: dataset.rawValue, model: model.architecture,
                weightsFingerprint: inputs.weights.sha256, dataFingerprint: inputs.dataSHA256,
                stream: streamConfiguration, methods: o.methods,
                methodConfigurations: methods.map(\.configuration), seed: o.seed, collapse: o.collapse)
        }
        if let path = o.resume, let identity {
            let checkpoint: RunCheckpoint
            do { checkpoint = try RunCheckpoint.read(URL(fileURLWithPath: path)) } catch { throw CLIError.wrap(error) }
            if let difference = checkpoint.identity.difference(from: identity) {
                throw CLIError.failed("--resume \(path): the checkpoint is of another run: different \(difference)")
            }
            // Its finished runs are printed and written as read: they must be runs of this stream.
            if let problem = checkpoint.finishedRunsProblem(on: stream) {
                throw CLIError.failed("--resume \(path): the checkpoint's finished runs do not fit this stream: \(problem)")
            }
            resume = checkpoint
        }
        let experiment = Experiment(options: o, dataset: dataset, benchmark: benchmark, stream: stream, weights: weights,
                                    model: model, methods: methods, runConfiguration: config, identity: identity, resume: resume,
                                    source: source)

        // 9. Each method's peak memory, measured in probe steps on a throwaway adaptor; refused when it will not fit.
        if case .limit(let limit) = memoryLimit {
            try experiment.estimateMemory(limit: limit)
        }
        return experiment
    }

    /// The estimated peak memory of each method, by name (empty when `--memory-limit none`).
    private(set) var memoryEstimates: [String: MemoryEstimate] = [:]

    /// Probes every method on the stream's first images (each on a fresh model, reset afterwards) and
    /// refuses the run, before any of it, when one method's estimated peak exceeds `limit` (or the
    /// memory available when nil).
    func estimateMemory(limit: Int?) throws {
        firstModel = nil
        let probe: Tensor
        do {
            stream.restart()
            defer { stream.restart() }
            guard let first = try stream.next() else { return }
            probe = first.images
        } catch { throw CLIError.wrap(error) }
        // The most images a step takes: a batch never crosses a domain (mixed_domains: a severity's mixed segment), so
        // --batch-size 100000 on 8-image domains takes 8; a sliding window adapts on up to --window-length images.
        let c = stream.configuration
        let segments = c.setting == .mixed_domains
            ? Dictionary(grouping: stream.domains, by: \.severity).values.map { $0.reduce(0) { $0 + $1.sampleCount } }
            : stream.domains.map(\.sampleCount)
        let batchImages = min(c.batchSize, segments.max() ?? 1), windowImages = min(c.windowLength, stream.totalSamples)
        let imagesPerStep = max(batchImages, windowImages)
        let flag = windowImages > batchImages ? "--window-length \(c.windowLength)"
            : "--batch-size \(c.batchSize)" + (batchImages < c.batchSize ? " (batches of at most \(batchImages) images here)" : "")
        for m in methods {
            do {
                let model = try weights.makeModel(numClasses: benchmark.numClasses, inputChannels: benchmark.imageChannels)
                let method = try source.map { try $0.makeMethod(m.name, m.configuration, imageSize: benchmark.imageHeight) }
                    ?? MethodFactory.make(m.name, configuration: m.configuration, imageSize: benchmark.imageHeight)
                let adaptor = try Adaptor(model: model, method: method, seed: options.seed, windowLength: stream.configuration.windowLength)
                // A sliding window adapts on windowLength images at a time.
                guard let e = try MemoryEstimate.probe(adaptor, batch: probe,
                                                       batchSize: imagesPerStep,
                                                       threads: KernelThreads.count) else { return }
                memoryEstimates[m.name] = e
            } catch { throw CLIError.wrap(error) }
        }
        guard let budget = limit ?? MemoryBudget.available(),
              let (name, worst) = memoryEstimates.max(by: { $0.value.peakBytes < $1.value.peakBytes }),
              worst.peakBytes > budget else { return }
        let fits = worst.largestBatch(within: budget)
        let source = limit == nil ? "available" : "allowed by --memory-limit"
        throw CLIError.failed("\(name) at \(flag) needs about \(formatBytes(worst.peakBytes)) of memory "
                              + "(\(formatBytes(worst.baseBytes)) model and data, \(formatBytes(Int(worst.bytesPerImage))) per image); "
                              + "\(formatBytes(budget)) is \(source). "
                              + (fits > 0 ? "A batch size of at most \(fits) fits" : "No batch size fits") + "; or raise --memory-limit.")
    }

    /// Runs every method in turn, each from a freshly loaded source model, until done or stopped; with a
    /// checkpoint to resume, from where it stopped. Returns the runs (the last one partial when
    /// interrupted) and whether the run was interrupted.
    func run(console: Console, progress: ProgressPrinter) throws -> (runs: [RunResult], interrupted: Bool) {
        var runs = resume?.finishedRuns ?? []
        let every = max(1, stream.batchCount / 250)
        let checkpointURL = options.checkpoint.map { URL(fileURLWithPath: $0) }
        // The model in progress is stored against its adaptor's source state: a TENT checkpoint holds the BN
        // parameters, not the whole network.
        func saveCheckpoint(methodIndex: Int, _ inProgress: (progress: RunProgress, adaptor: Adaptor.State)?, source: Adaptor?) throws {
            guard let checkpointURL, let identity else { return }
            try RunCheckpoint(identity: identity, finishedRuns: runs, methodIndex: methodIndex, inProgress: inProgress)
                .write(to: checkpointURL, source: source)
        }
        for (i, m) in methods.enumerated() where i >= runs.count {
            let model: any ImageClassifier
            if let first = firstModel {
                model = first
                firstModel = nil
            } else {
                model = try weights.makeModel(numClasses: benchmark.numClasses, inputChannels: benchmark.imageChannels)
            }
            var result: RunResult
            do {
                let method = try source.map { try $0.makeMethod(m.name, m.configuration, imageSize: benchmark.imageHeight) }
                    ?? MethodFactory.make(m.name, configuration: m.configuration, imageSize: benchmark.imageHeight)
                let adaptor = try Adaptor(model: model, method: method, seed: options.seed, windowLength: stream.configuration.windowLength)
                stream.restart()
                progress.beginMethod(m.name, index: i, of: methods.count)
                let resumeState: (progress: RunProgress, adaptor: Adaptor.State)?
                if let resume, resume.methodIndex == i {
                    do { resumeState = try resume.resumeState(for: adaptor) } catch let e as RuntimeError {
                        throw CLIError.failed("--resume \(options.resume ?? ""): \(e.message)")
                    }
                } else {
                    resumeState = nil
                }
                let checkpointing = checkpointURL.map { _ in
                    BenchmarkRunner.Checkpointing(every: options.checkpointEvery) { try saveCheckpoint(methodIndex: i, ($0, $1), source: adaptor) }
                }
                result = try BenchmarkRunner.run(method: m.name, adaptor: adaptor, stream: stream, configuration: m.configuration,
                                                 runningErrorEvery: every, collapse: options.collapse, resume: resumeState,
                                                 resumeLabel: options.resume.map { "--resume \($0)" },
                                                 checkpointing: checkpointing, progress: { progress.handle($0) },
                                                 shouldStop: console.shouldStop)
            } catch {
                progress.clearLine()
                throw CLIError.wrap(error)
            }
            result.estimatedPeakMemoryBytes = memoryEstimates[m.name]?.peakBytes
            progress.endMethod(result)
            if !result.completed { return (runs + [result], true) }
            runs.append(result)
            do { try saveCheckpoint(methodIndex: i + 1, nil, source: nil) } catch { throw CLIError.wrap(error) }
        }
        return (runs, false)
    }

    /// The results file of `runs`.
    func resultsFile(_ runs: [RunResult]) -> ResultsFile {
        ResultsFile(runs: runs, config: runConfiguration)
    }
}

/// `tta run` and `tta compare`: the same options, no positional arguments, and one driver
/// (`executeExperiment`, which reads from the command name what to print).
protocol ExperimentCommand: Command {
    var options: ExperimentOptions { get }
    init(options: ExperimentOptions)
}

extension ExperimentCommand {
    init(_ arguments: ParsedArguments) throws {
        guard arguments.positionals.isEmpty else {
            throw CLIError.unexpectedArgument(arguments.positionals[0], command: Self.name.rawValue)
        }
        self.init(options: ExperimentOptions(arguments, command: Self.name))
    }

    func run(console: Console) throws -> Int32 {
        try executeExperiment(options, command: Self.name, console: console)
    }
}

/// What `tta run` and `tta compare` share: validate, run, print, write, and map an interruption to 130.
func executeExperiment(_ o: ExperimentOptions, command: CommandName, console: Console) throws -> Int32 {
    let experiment = try Experiment.prepare(o, console: console)
    let stream = experiment.stream
    if !o.quiet {
        let weights = experiment.weights.url.path
        console.err("tta \(command.rawValue): \(experiment.dataset.rawValue) (\(experiment.benchmark.folder.path)), "
                    + "\(experiment.architecture) from \(weights); \(stream.domains.count) domains, \(formatCount(stream.totalSamples)) images "
                    + "in \(stream.batchCount) batches of \(stream.configuration.batchSize)"
                    + (o.sourceData.map { "; source data \($0)" } ?? "") + "\n")
        let estimates = experiment.methods.compactMap { m in experiment.memoryEstimates[m.name].map { "\(m.name) \(formatBytes($0.peakBytes))" } }
        if !estimates.isEmpty { console.err("tta \(command.rawValue): estimated peak memory: " + estimates.joined(separator: ", ") + "\n") }
        for m in o.methods where o.batchSize == nil {
            if let b = MethodRegistry.entry(m)?.referenceBatchSize, b != stream.configuration.batchSize {
                console.err("tta \(command.rawValue): note: \(m) shares the stream's batches of \(stream.configuration.batchSize) here; the reference "
                            + "runs it on batches of \(b) ('tta run --method \(m)', or --batch-size \(b))\n")
            }
        }
    }
    console.beginLongWork()
    if o.output == nil && o.report == nil && o.checkpoint == nil {
        // Only stdout takes the results: once it cannot be written (the reader of a pipe has exited), stop as Ctrl-C does.
        let stop = console.shouldStop
        console.shouldStop = { [weak console] in stop() || console?.outputFailure() != nil }
    }
    let lines = command == .run && o.format == .table
    let progress = ProgressPrinter(console: console, quiet: o.quiet, domainLinesOnStdout: lines)
    let (runs, interrupted) = try experiment.run(console: console, progress: progress)
    let view = ResultsView(file: experiment.resultsFile(runs), domains: stream.domains)
    // The files first: a closed or full stdout must not cost them. A file that cannot be written does not cost the other
    // one, nor the table on stdout.
    var failures: [String] = []
    func write(_ flag: String, _ path: String, _ text: () throws -> String) {
        do {
            try writeAtomically(Data(try text().utf8), to: URL(fileURLWithPath: path))
            if !o.quiet { console.err("tta: \(flag == "output" ? "results" : "report") written to \(path)\n") }
        } catch { failures.append("--\(flag): \(CLIError.wrap(error).description)") }
    }
    if let path = o.output { write("output", path) { try view.render(o.outputFileFormat) } }
    if let path = o.report { write("report", path) { HTMLReport(view: view, sourceData: o.sourceData, generated: Date()).render() } }
    if lines { console.out("\n") }
    console.out(try view.render(o.format))
    if !failures.isEmpty { throw CLIError.failed(failures.joined(separator: "; ")) }
    if interrupted {
        let done = runs.last.map { "\($0.domains.count) of \(stream.domains.count) domains of \($0.method)" } ?? "nothing"
        console.err("tta: interrupted: kept \(done)\(o.output.map { "; partial results written to \($0)" } ?? "")"
                    + (o.checkpoint.map { "; continue with --resume \($0)" } ?? "") + "\n")
        return interruptedExitCode
    }
    return 0
}

/// `--source-data` read and checked against the benchmark, and how each method takes from it: a random
/// selection of `--source-samples` images (default: 2000 for eata, as `SOURCE.NUM_SAMPLES` in the
/// reference's EATA configs; all for rmt), drawn with `--seed`, in batches of `--batch-size`, or of
/// `--window-length` on a single-image stream (the reference's `batch_size_src`: RMT's replay and warm-up
/// batches, EATA's Fisher batches). RMT's prototypes and warm-up are cached under `--cache-dir`.
struct SourcePlan {
    let data: SourceDataset
    let samples: Int?
    let seed: UInt64
    let batchSize: Int
    let numClasses: Int
    let path: String
    let cache: DiskPreparationCache?
    /// Every eata built from this plan (`eata` itself; under UnMix-TNS it is computed again): the first one
    /// configured computes the Fisher information, and
    /// the later builds (the memory probe's, the run's) take it instead of computing it again.
    private final class Built { var eata: [EATAMethod] = [] }
    private let built = Built()

    init(_ o: ExperimentOptions, benchmark: any CorruptionDataset, numClasses: Int, batchSize: Int, weights: URL,
         environment: [String: String], model: (any ImageClassifier)? = nil) throws {
        let path = o.sourceData!
        do { data = try SourceDataset.load(path) } catch { throw CLIError.wrap(error) }
        let found = Array(data.images.shape.dropFirst())
        // The model runs on them when a method is set up (EATA's Fisher information, RMT's prototypes and warm-up).
        if let model {
            if found[0] != model.inputChannels {
                throw CLIError.data("--source-data \(path): images have \(found[0]) channel\(found[0] == 1 ? "" : "s"); "
                                    + "\(model.architecture) takes \(model.inputChannels)-channel images")
            }
            if let (h, w) = model.requiredImageSize, found[1] != h || found[2] != w {
                throw CLIError.data("--source-data \(path): images are \(found[1])×\(found[2]) (H×W); \(model.architecture) takes \(h)×\(w) images")
            }
        }
        let expected = [benchmark.imageChannels, benchmark.imageHeight, benchmark.imageWidth]
        guard found == expected else {
            throw CLIError.data("--source-data \(path): images are \(found.map(String.init).joined(separator: "×")) (C×H×W); "
                                + "the benchmark's are \(expected.map(String.init).joined(separator: "×"))")
        }
        if let bad = data.labels.first(where: { $0 >= numClasses }) {
            throw CLIError.data("--source-data \(path): label \(bad) is not a class of this \(numClasses)-class benchmark")
        }
        if let n = o.sourceSamples, n > data.count {
            throw CLIError.usage("--source-samples \(n): --source-data \(path) holds \(data.count) images")
        }
        (samples, seed, self.batchSize, self.numClasses, self.path) = (o.sourceSamples, o.seed, batchSize, numClasses, path)
        if o.methods.contains("rmt") {
            let directory = o.cacheDirectory.map { URL(fileURLWithPath: $0, isDirectory: true) }
                ?? DiskPreparationCache.defaultDirectory(environment: environment)
            let selection = "samples \(samples.map(String.init) ?? "all"), seed \(seed), batch \(batchSize), files \(data.format.rawValue)"
            do {
                cache = DiskPreparationCache(directory: directory, identity: try DiskPreparationCache.identity(
                    weights: weights, sourceFiles: data.files, selection: selection))
            } catch { throw CLIError.wrap(error) }
        } else {
            cache = nil
        }
    }

    /// `name` built with its share of the source data.
    func makeMethod(_ name: String, _ configuration: MethodConfiguration, imageSize: Int) throws -> any AdaptationMethod {
        var g = SeededGenerator(seed: seed)
        let chosen = data.sample(samples ?? (MethodRegistry.baseName(name) == "eata" ? 2000 : nil), using: &g)
        if name == "rmt", let missing = Set(0..<numClasses).subtracting(chosen.labels).min() {
            throw CLIError.data("--source-data \(path): the \(chosen.count) source images drawn have no image of class \(missing); "
                                + "rmt needs every class for its prototypes (raise --source-samples)")
        }
        if name == "eata", let fisher = built.eata.lazy.compactMap(\.regularizer).first {
            return EATAMethod(eata: configuration, regularizer: fisher)
        }
        let (images, labels) = chosen.batches(of: batchSize)
        let method = try MethodFactory.make(name, configuration: configuration, imageSize: imageSize, sourceBatches: images,
                                      sourceLabels: labels, cache: name == "rmt" ? cache : nil, sourceSeed: seed)
        if let eata = method as? EATAMethod { built.eata.append(eata) }
        return method
    }
}

/// What `--memory-limit` says: a size, or `none` to skip the estimate.
enum MemoryLimit: Equatable {
    /// Refuse above this many bytes; nil means the memory the system reports available.
    case limit(Int?)
    case none
}

/// Parses `--memory-limit`: `none`, a number of bytes, or a number with a unit (`K`, `M`, `G`, `T`,
/// with or without `i`/`B`: all powers of 1024, as `free -h` prints them).
func parseMemoryLimit(_ text: String?) throws -> MemoryLimit {
    guard let text else { return .limit(nil) }
    let t = text.trimmingCharacters(in: .whitespaces)
    if t.lowercased() == "none" { return .none }
    let kib = 1024.0, mib = kib * 1024, gib = mib * 1024, tib = gib * 1024
    let units: [(String, Double)] = [("tib", tib), ("gib", gib), ("mib", mib), ("kib", kib), ("tb", tib), ("gb", gib), ("mb", mib),
                                     ("kb", kib), ("t", tib), ("g", gib), ("m", mib), ("k", kib), ("b", 1)]
    var number = Substring(t.lowercased()), scale = 1.0
    if let (suffix, s) = units.first(where: { number.hasSuffix($0.0) }) {
        number = number.dropLast(suffix.count)
        scale = s
    }
    guard let x = Double(number.trimmingCharacters(in: .whitespaces)), x.isFinite, x > 0, x * scale < 9e18 else {
        throw CLIError.invalidValue(option: "memory-limit", value: text, expected: "a size such as 8GiB, 512MiB or 1000000000 (bytes), or none")
    }
    return .limit(Int(x * scale))
}
