import TTAAdaptation
import TTAData
import TTAModels

/// `tta list`: the methods with their defaults, the models, the datasets and the stream settings.
struct ListCommand: Command {
    static let name = CommandName.list
    static let abstract = "List the methods (with their defaults), models, datasets and settings."
    static let discussion = ""
    static let usage = "tta list"

    init(_ arguments: ParsedArguments) throws {
        guard arguments.positionals.isEmpty else {
            throw CLIError.unexpectedArgument(arguments.positionals[0], command: Self.name.rawValue)
        }
    }

    /// The hyper-parameters each method reads, beyond the optimizer settings of the gradient-based ones.
    static let methodParameters: [String: [String]] = [
        "norm_alpha": ["bn-alpha"],
        "cotta": ["teacher-momentum", "restore-probability", "confidence-threshold", "augmentations", "symmetric-loss"],
        "lame": ["lame-affinity", "lame-neighbours", "lame-force-symmetry"],
        "eta": ["entropy-margin", "redundancy-margin"],
        "eata": ["entropy-margin", "redundancy-margin", "fisher-alpha", "source-samples"],
        "sar": ["entropy-margin", "sar-reset-constant", "sam-rho"],
        "rdumb": ["entropy-margin", "redundancy-margin", "reset-after-updates"],
        "rotta": ["rotta-memory-size", "rotta-update-frequency", "rotta-nu", "rotta-alpha", "rotta-lambda-t", "rotta-lambda-u"],
        "roid": ["roid-weighting", "roid-prior-correction", "roid-consistency", "roid-momentum-source", "roid-momentum-probs",
                 "roid-temperature"],
        "unmix_tns": ["unmix-components", "unmix-batch-size-max"],
        "rmt": ["teacher-momentum", "rmt-lambda-target", "rmt-lambda-contrast", "rmt-lambda-source", "contrast-temperature",
                "projection-dim", "warmup-samples"],
    ]

    /// `--lr 0.001 --steps 1 …`: the defaults of `method` as options.
    static func defaults(of entry: MethodRegistry.Entry, numClasses: Int = 10) -> String {
        let c = MethodConfiguration.defaults(for: .cifar, method: entry.name, numClasses: numClasses)
        var names: [String] = []
        if let own = entry.ownOptimizer {
            names += own.settings
        } else if entry.usesGradients {
            names += ["optimizer", "lr"] + (c.optimizer == .adam ? ["beta1"] : ["momentum", "dampening", "nesterov"]) + ["weight-decay", "steps"]
        }
        names += methodParameters[entry.name] ?? []
        if entry.name != MethodRegistry.baseName(entry.name) { names += methodParameters["unmix_tns"]! }   // <method>+unmix_tns
        let values: [String: String] = [
            "optimizer": c.optimizer.rawValue, "lr": formatNumber(Double(c.lr)), "beta1": formatNumber(Double(c.beta1)),
            "momentum": formatNumber(Double(c.momentum)), "dampening": formatNumber(Double(c.dampening)), "nesterov": "\(c.nesterov)",
            "weight-decay": formatNumber(Double(c.weightDecay)), "steps": "\(c.steps)", "bn-alpha": formatNumber(Double(c.bnAlpha)),
            "teacher-momentum": formatNumber(Double(c.teacherMomentum)),
            "restore-probability": formatNumber(Double(c.restoreProbability)),
            "confidence-threshold": formatNumber(Double(c.confidenceThreshold)), "augmentations": "\(c.augmentations)",
            "symmetric-loss": "\(c.symmetricLoss)",
            "lame-affinity": c.lameAffinity.rawValue, "lame-neighbours": "\(c.lameNeighbours)", "lame-force-symmetry": "\(c.lameForceSymmetry)",
            "entropy-margin": formatNumber(Double(c.entropyMarginFactor)), "redundancy-margin": formatNumber(Double(c.redundancyMargin)),
            "fisher-alpha": formatNumber(Double(c.fisherAlpha)), "source-samples": "2000",
            "sar-reset-constant": formatNumber(Double(c.sarResetConstant)), "sam-rho": formatNumber(Double(c.samRho)),
            "reset-after-updates": "\(c.resetAfterUpdates)",
            "rotta-memory-size": "\(c.rottaMemorySize)", "rotta-update-frequency": "\(c.rottaUpdateFrequency)",
            "rotta-nu": formatNumber(Double(c.rottaNu)), "rotta-alpha": formatNumber(Double(c.rottaAlpha)),
            "rotta-lambda-t": formatNumber(Double(c.rottaLambdaT)), "rotta-lambda-u": formatNumber(Double(c.rottaLambdaU)),
            "roid-weighting": "\(c.roidWeighting)", "roid-prior-correction": "\(c.roidPriorCorrection)",
            "roid-consistency": "\(c.roidConsistency)", "roid-momentum-source": formatNumber(Double(c.roidMomentumSource)),
            "roid-momentum-probs": formatNumber(Double(c.roidMomentumProbabilities)), "roid-temperature": formatNumber(Double(c.roidTemperature)),
            "unmix-components": "\(c.unmixComponents)", "unmix-batch-size-max": "\(c.unmixBatchSizeMax)",
            "rmt-lambda-target": formatNumber(Double(c.rmtLambdaTarget)), "rmt-lambda-contrast": formatNumber(Double(c.rmtLambdaContrast)),
            "rmt-lambda-source": formatNumber(Double(c.rmtLambdaSource)), "contrast-temperature": formatNumber(Double(c.contrastTemperature)),
            "projection-dim": "\(c.projectionDim)", "warmup-samples": "\(c.rmtWarmupSamples)",
        ]
        return names.map { "--\($0) \(values[$0]!)" }.joined(separator: " ")
    }

    /// `  name   text`: the name padded to `column`, the text from column `column + 2` on, wrapped under itself within
    /// `Help.width`. A name that fills the column is followed by one space (and the first line holds less text).
    static func entry(_ name: String, column: Int, _ text: String) -> [String] {
        Help.wrap(text, width: Help.width - column - 2, indent: String(repeating: " ", count: column + 2),
                  first: "  " + (name.count < column ? pad(name, column) : name + " "))
    }

    func run(console: Console) throws -> Int32 {
        var lines = ["METHODS (defaults: the reference CIFAR settings; override them with the options of the same name)"]
        // The UnMix-TNS combinations (`<method>+unmix_tns`) take one line together.
        let single = MethodRegistry.entries.filter { MethodRegistry.baseName($0.name) == $0.name }
        let w = (single.map(\.name.count).max() ?? 0) + 3
        for e in single {
            lines += Self.entry(e.name, column: w, e.summary)
            let d = Self.defaults(of: e)
            if !d.isEmpty {
                lines += Help.wrap(d, width: Help.width - w - 2, indent: String(repeating: " ", count: w + 2))
            }
        }
        lines += Self.entry("<method>+unmix_tns:", column: w,
                            "\(MethodRegistry.unmixHosts.joined(separator: ", ")) adapting through UnMix-TNS normalisation (e.g. tent+unmix_tns): "
                            + "the method's options and defaults, plus --unmix-components and --unmix-batch-size-max.")
        let c100 = MethodConfiguration.defaults(for: .cifar, method: "eta", numClasses: 100)
        lines.append("  On cifar100-c: cotta's --confidence-threshold is \(formatNumber(Double(c100.confidenceThreshold))), eta's and eata's "
                     + "--redundancy-margin \(formatNumber(Double(c100.redundancyMargin))).")
        lines += ["", "MODELS (--model)"]
        let models = [("auto", "inferred from the keys and shapes of --weights (the default)"),
                      ("wideresnet-<depth>-<widen>", "RobustBench WideResNet, depth 6n+4 (e.g. wideresnet-28-10)"),
                      ("resnet50", "torchvision ResNet-50 (also resnet101, resnet152, resnext50_32x4d, wide_resnet50_2)"),
                      ("resnext-29-4x32", "RobustBench's AugMix ResNeXt-29 (resnext-<9n+2>-<cardinality>x<width>)"),
                      ("vit-b-16", "timm vit_base_patch16_224 (224×224 inputs, mean/std 0.5 applied inside)")]
        let mw = (models.map { $0.0.count }.max() ?? 0) + 3
        for (name, text) in models { lines += Self.entry(name, column: mw, text) }
        if let url = try? Embedded.modelFile(environment: console.environment),
           let file = try? SafeTensorsFile.read(url), let model = try? ModelZoo.infer(file) {
            lines += Self.entry("embedded:", column: 2, "\(url.path) (\(model.architecture), \(model.inputChannels) input "
                                + "channel\(model.inputChannels == 1 ? "" : "s"), \(model.numClasses) classes)")
        }
        lines += ["", "DATASETS (--dataset)"]
        let dw = (Dataset.allCases.map(\.rawValue.count).max() ?? 0) + 3
        for d in Dataset.allCases { lines += Self.entry(d.rawValue, column: dw, d.summary) }
        if let dir = try? Embedded.benchmarkDirectory(environment: console.environment) {
            lines += Self.entry("fmnist-c is read from", column: 2, dir.appendingPathComponent(Dataset.fmnist.folderName).path)
        }
        lines += ["", "SETTINGS (--setting)"]
        let settings: [(StreamSetting, String)] = [
            (.continual, "domains back to back, one reset at the start"),
            (.reset_each_shift, "a reset at the start of every domain"),
            (.gradual, "severities 1,2,3,4,5,4,3,2,1 per corruption, no resets"),
            (.mixed_domains, "all corruptions of a severity shuffled into one stream"),
            (.correlated, "continual, each domain ordered by label (--dirichlet δ > 0: Dirichlet-correlated)"),
        ]
        for (s, text) in settings { lines += Self.entry(s.rawValue, column: 19, text) }
        lines += ["", "ORDERS (--order)",
                  "  " + pad("file", 19) + "the first images of each severity block, in file order (Tent / CoTTA code)",
                  "  " + pad("shuffled", 19) + "shuffled with --seed, as mariodoebler/test-time-adaptation (the default)",
                  "", "CORRUPTIONS (--corruptions; the default is the 15 standard ones)",
                  ]
        lines += Help.wrap(CorruptionBenchmark.standardCorruptions.joined(separator: " "), width: Help.width - 2, indent: "  ")
        lines.append("  extra (CIFAR-10-C, CIFAR-100-C): " + CorruptionBenchmark.extraCorruptions.joined(separator: " "))
        console.out(lines.joined(separator: "\n") + "\n")
        return 0
    }
}
