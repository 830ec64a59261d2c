import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTAModels
import TTANN
import TTATensor
import TTATestSupport

/// The fixed stream and source model of the method fixtures.
/// Golden: `method_cases()` in scripts/make_method_fixtures.py.
func methodFixtureStream() throws -> [Tensor] {
    let x = try fixture("methods/stream.safetensors").tensor("x")
    let b = 8
    return (0..<(x.shape[0] / b)).map { x.slice(($0 * b)..<(($0 + 1) * b)) }
}

func methodFixtureModel() throws -> any ImageClassifier {
    try ModelZoo.load(try fixture("methods/model.safetensors"))
}

/// The fixture model with a confident, class-diverse classifier (ETA, EATA, SAR cases).
/// Golden: `confident_state()` in scripts/make_method_fixtures.py.
func confidentFixtureModel() throws -> any ImageClassifier {
    try ModelZoo.load(try fixture("methods/model_confident.safetensors"))
}

/// Cases run on `confidentFixtureModel()` (the `CONFIDENT` set of the script).
let confidentCases: Set<String> = ["eta", "eta_sgd", "eata", "sar", "sar_recovery", "rdumb", "rotta", "roid", "eta_unmix_tns",
                                    "sar_unmix_tns", "rotta_unmix_tns", "roid_unmix_tns", "eata_unmix_tns", "rdumb_unmix_tns"]

/// Sets every BN's running statistics to those of `images` (one pass with momentum 1: batch mean and
/// unbiased variance), as `run_rotta` does before RoTTA so that its eval-mode teacher predicts diverse classes.
func calibrateRunningStatistics(_ model: any ImageClassifier, on images: Tensor) {
    let momenta = model.batchNorms.map(\.momentum)
    for bn in model.batchNorms { bn.momentum = 1 }
    model.setBatchNormMode(.batchStatisticsUpdatingRunning)
    _ = model.forward(images, .inference)
    for (bn, m) in zip(model.batchNorms, momenta) { bn.momentum = m }
    model.setBatchNormMode(.runningStatistics)
}

/// The fixture's BN state under `prefix` (`<prefix><bn name>.weight`, `.bias`, `.running_mean`, `.running_var`, all four
/// of every BN layer) against the model's.
func expectBatchNormState(_ model: any ImageClassifier, _ expected: SafeTensorsFile, prefix: String, _ label: String) throws {
    let keys = expected.names.filter { $0.hasPrefix(prefix) }
    #expect(keys.count == 4 * model.batchNorms.count, "\(label): \(keys.count) BN entries")
    for key in keys {
        let p = String(key.dropFirst(prefix.count))
        expectClose(try #require(model.store.tensor(p)), try expected.tensor(key), "\(label) \(p)")
    }
}

/// `(B·8, …)` images cut into batches of 8.
func batchesOf8(_ x: Tensor) -> [Tensor] {
    (0..<(x.shape[0] / 8)).map { x.slice(($0 * 8)..<(($0 + 1) * 8)) }
}

/// The configuration each fixture case was generated with.
func fixtureConfiguration(_ name: String) -> (method: String, MethodConfiguration) {
    var c = MethodConfiguration.defaults(for: .cifar)
    switch name {
    case "tent_sgd_steps2":
        c.optimizer = .sgd; c.lr = 0.01; c.steps = 2
        return ("tent", c)
    case "cotta", "cotta_symmetric_sgd":
        c.confidenceThreshold = 1; c.augmentations = 2; c.restoreProbability = 0; c.teacherMomentum = 0.9
        if name == "cotta_symmetric_sgd" { c.optimizer = .sgd; c.lr = 0.01; c.symmetricLoss = true }
        return ("cotta", c)
    case "cotta_anchor_sgd":
        // The anchor's mean confidences are 0.166924, 0.167728, 0.166625, 0.167761: batches 0 and 2 take the
        // augmented teacher, batches 1 and 3 the plain one.
        c.confidenceThreshold = 0.1672; c.augmentations = 2; c.restoreProbability = 0; c.teacherMomentum = 0.9
        c.optimizer = .sgd; c.lr = 0.01
        return ("cotta", c)
    case "lame_knn_symmetric":
        c.lameAffinity = .knn; c.lameNeighbours = 3; c.lameForceSymmetry = true
        return ("lame", c)
    case "lame_linear":
        c.lameAffinity = .linear
        return ("lame", c)
    case "eta_sgd":
        c.optimizer = .sgd; c.lr = 0.002; c.redundancyMargin = 0.5
        return ("eta", c)
    case "eata":
        c.fisherAlpha = 2000
        return ("eata", c)
    case "sar_recovery":
        c.sarResetConstant = 0.3
        return ("sar", c)
    case "rdumb":
        c.optimizer = .sgd; c.lr = 0.001; c.resetAfterUpdates = 2
        return ("rdumb", c)
    case "rotta":
        c.rottaMemorySize = 12; c.rottaUpdateFrequency = 6; c.rottaNu = 0.2
        return ("rotta", c)
    case "unmix_tns":
        c.unmixComponents = 4
        return ("unmix_tns", c)
    case "tent_unmix_tns":
        c.unmixComponents = 4; c.optimizer = .sgd; c.lr = 0.01; c.steps = 2
        return ("tent+unmix_tns", c)
    case "eta_unmix_tns":
        c.unmixComponents = 4; c.optimizer = .sgd; c.lr = 0.002; c.entropyMarginFactor = 0.25; c.redundancyMargin = 0.6
        return ("eta+unmix_tns", c)
    case "eata_unmix_tns":
        c.unmixComponents = 4; c.optimizer = .sgd; c.lr = 0.002; c.entropyMarginFactor = 0.25; c.redundancyMargin = 0.6
        c.fisherAlpha = 50
        return ("eata+unmix_tns", c)
    case "rdumb_unmix_tns":
        // A reset after batch 2 (the third update): the source parameters and the components' initial draws come back.
        c.unmixComponents = 4; c.optimizer = .sgd; c.lr = 0.002; c.entropyMarginFactor = 0.25; c.redundancyMargin = 0.6
        c.resetAfterUpdates = 3
        return ("rdumb+unmix_tns", c)
    case "sar_unmix_tns":
        c.unmixComponents = 4
        return ("sar+unmix_tns", c)
    case "lame_unmix_tns":
        c.unmixComponents = 4
        return ("lame+unmix_tns", c)
    case "cotta_unmix_tns":
        c.unmixComponents = 4; c.optimizer = .sgd; c.lr = 0.01
        c.confidenceThreshold = 1; c.augmentations = 2; c.restoreProbability = 0; c.teacherMomentum = 0.9
        return ("cotta+unmix_tns", c)
    case "rotta_unmix_tns":
        // The stream's batch size sets the components' momentum, also on the memory passes (6 or 12 images).
        c.unmixComponents = 4; c.batchSize = 8; c.rottaMemorySize = 12; c.rottaUpdateFrequency = 6; c.rottaNu = 0.2
        return ("rotta+unmix_tns", c)
    case "roid_unmix_tns":
        // The configured batch size sets the momentum of the augmented pass on the kept images too.
        c.unmixComponents = 4; c.batchSize = 8
        return ("roid+unmix_tns", c)
    case "roid_plain_sgd":
        c.optimizer = .sgd; c.lr = 0.01; c.roidWeighting = false; c.roidConsistency = false
        return ("roid", c)
    default:
        return (name, c)
    }
}

/// Per-batch outputs of every method against the PyTorch runs, to 1e-4.
/// Golden: `method_cases()` in scripts/make_method_fixtures.py (`run_cotta` for the CoTTA cases, `cotta_anchor_sgd`
/// with an anchor threshold between the batches' anchor confidences; `run_lame`, `run_eata`, `run_sar` for
/// the LAME, ETA/EATA and SAR cases; `run_eata` with `reset_after` for RDumb, `run_rotta`, `run_roid`,
/// `run_unmix_tns`; `with_unmix_tns(run_tent)`, `(run_eata)` and `(run_sar)` for TENT, ETA, RDumb (`rdumb_unmix_tns`,
/// a reset inside the stream) and SAR on UnMix-TNS, and `with_fisher_before_unmix_tns(with_unmix_tns(run_eata))` for
/// EATA on UnMix-TNS (`eata_unmix_tns`, whose Fisher information is compared too), all of whose trained parameters
/// are compared after every batch too; `with_unmix_tns(run_lame)` and `(run_cotta)`
/// for LAME and CoTTA on UnMix-TNS, `with_unmix_tns(run_rotta)` and `(run_roid)` for RoTTA and ROID on
/// UnMix-TNS, whose trained parameters are compared too).
@Suite struct MethodParityTests {
    @Test(arguments: ["source", "norm_test", "norm_alpha", "norm_ema", "tent", "tent_sgd_steps2", "cotta", "cotta_symmetric_sgd",
                      "lame", "lame_knn_symmetric", "lame_linear", "eta", "eta_sgd", "eata", "sar", "sar_recovery",
                      "rdumb", "rotta", "roid", "roid_plain_sgd", "unmix_tns", "tent_unmix_tns", "eta_unmix_tns", "sar_unmix_tns",
                      "lame_unmix_tns", "cotta_unmix_tns", "rotta_unmix_tns", "roid_unmix_tns", "cotta_anchor_sgd", "eata_unmix_tns",
                      "rdumb_unmix_tns"])
    func outputsMatchPyTorchBatchByBatch(_ name: String) throws {
        let expected = try fixture("methods/\(name).safetensors")
        let (method, config) = fixtureConfiguration(name)
        let model = try confidentCases.contains(name) ? confidentFixtureModel() : methodFixtureModel()
        let source = expected.names.contains("source") ? batchesOf8(try expected.tensor("source")) : []
        if method == "rotta" { calibrateRunningStatistics(model, on: try fixture("methods/stream.safetensors").tensor("x")) }
        // The fixtures' deterministic CoTTA augmentation: a horizontal flip.
        let adaptor = try Adaptor(model: model, method: try MethodRegistry.make(method, configuration: config, augment: horizontalFlip,
                                                                                sourceBatches: source), seed: 1)
        // UnMix-TNS: the script's draws of the initial component means, per BN layer.
        let unmix = adaptor.method as? UnMixTNSMethod
        unmix?.initialMeans = try model.batchNorms.map { try expected.tensor("init.\($0.name)").storage }
        var lossAverages: [Float] = []
        for (i, x) in try methodFixtureStream().enumerated() {
            let out = try adaptor.adapt(x)
            expectClose(out, try expected.tensor("batch\(i)"), "\(name) batch \(i)")
            // Methods on UnMix-TNS: the trained parameters after each batch.
            for key in expected.names where key.hasPrefix("params\(i).") {
                let param = String(key.dropFirst("params\(i).".count))
                expectClose(try #require(model.store.tensor(param)), try expected.tensor(key), "\(name) batch \(i) \(param)")
            }
            if let sar = (adaptor.method as? SARMethod) ?? (unmix?.host as? SARMethod) {
                lossAverages.append(sar.lossAverage.map(Float.init) ?? .nan)
            }
        }
        let trainsOnUnMix = method.hasSuffix("+unmix_tns") && MethodRegistry.entry(method)?.usesGradients == true
        #expect(expected.names.filter { $0.hasPrefix("params") }.count == (trainsOnUnMix ? 4 * 2 * model.batchNorms.count : 0))
        // EATA (alone or on UnMix-TNS): the Fisher information from the source batches, per parameter.
        if MethodRegistry.baseName(method) == "eata" {
            let eata = try #require((adaptor.method as? EATAMethod) ?? (unmix?.host as? EATAMethod))
            let r = try #require(eata.regularizer, "eata: no Fisher regulariser after configure")
            let keys = expected.names.filter { $0.hasPrefix("fisher.") }
            #expect(!keys.isEmpty && keys.count == model.store.trainableNames.count)
            for key in keys {
                let e = try #require(model.store.entry(named: String(key.dropFirst("fisher.".count))))
                expectClose(Array(r.fisher[e.offset..<(e.offset + e.count)]), try expected.tensor(key).storage, "\(name) \(key)")
            }
        }
        // UnMix-TNS: the component means after the stream.
        if let unmix {
            for (bn, layer) in zip(model.batchNorms, unmix.layers) {
                expectClose(layer.means, try expected.tensor("final.\(bn.name)").storage, "\(name) \(bn.name) means")
            }
        }
        // RoTTA: how many images of each pseudo-class the memory holds at the end.
        if let rotta = (adaptor.method as? RoTTAMethod) ?? (unmix?.host as? RoTTAMethod) {
            #expect(rotta.memory.classes.map { Float($0.count) } == (try expected.tensor("memory_counts").storage))
        }
        // SAR: the loss average after each batch (after any recovery, which unsets it; NaN while unset).
        if !lossAverages.isEmpty {
            let reference = try expected.tensor("ema").storage
            #expect(lossAverages.map(\.isNaN) == reference.map(\.isNaN))
            expectClose(lossAverages.filter { !$0.isNaN }, reference.filter { !$0.isNaN }, "\(name) ema")
        }
        // Where the reference saved the final BN state (affine parameters, running statistics; under UnMix-TNS
        // the components `<bn>.means`, `<bn>.vars`), compare it too, except after Adam steps: there it is
        // ill-conditioned (1e-7 relative noise on the inputs moves it by 1.9e-3 in float64 PyTorch:
        // `adam_final_state_sensitivity()` in scripts/make_method_fixtures.py). `norm_test` and `norm_ema`
        // take no steps: their running statistics are compared.
        let tookAdamSteps = config.optimizer == .adam && MethodRegistry.entry(method)?.usesGradients == true
        let components = Dictionary(uniqueKeysWithValues: zip(model.batchNorms, unmix?.layers ?? []).flatMap { bn, layer in
            [("\(bn.name).means", layer.means), ("\(bn.name).vars", layer.variances)]
        })
        var compared = 0
        for key in expected.names where key.hasPrefix("final.") && !tookAdamSteps {
            let param = String(key.dropFirst("final.".count))
            if unmix != nil, model.batchNorms.contains(where: { $0.name == param }) { continue }  // the means, compared above
            if let mine = components[param] {
                expectClose(mine, try expected.tensor(key).storage, "\(name) \(param)")
            } else {
                let mine = try #require(model.store.tensor(param), "\(name): the fixture's \(key) is not in the model")
                expectClose(mine, try expected.tensor(key), "\(name) \(param)")
            }
            compared += 1
        }
        let savesFinalState = name.hasPrefix("tent") || name == "norm_test" || name == "norm_ema"  // method_cases()
        #expect((compared > 0) == (savesFinalState && !tookAdamSteps), "\(name): \(compared) final-state entries compared")
    }

    /// RoTTA with SGD, update by update: Adam's first steps are nearly lr·sign(gradient), blind to the gradient's scale,
    /// SGD's are not (a 1 % larger lr moves batch 1's outputs by 2.5e-3). Batches of 6 with an update every 6 images:
    /// after each, the teacher's outputs and the student's BN state (robust running statistics, affine parameters).
    /// Golden: `rotta_sgd_updates()` in scripts/make_method_fixtures.py.
    @Test func rottaWithSGDMatchesPyTorchUpdateByUpdate() throws {
        let expected = try fixture("methods/rotta_sgd.safetensors")
        var (method, config) = fixtureConfiguration("rotta")
        config.optimizer = .sgd; config.lr = 0.01
        let model = try confidentFixtureModel()
        let x = try fixture("methods/stream.safetensors").tensor("x")
        calibrateRunningStatistics(model, on: x)
        let adaptor = try Adaptor(model: model, method: try MethodRegistry.make(method, configuration: config, augment: horizontalFlip), seed: 1)
        let rotta = try #require(adaptor.method as? RoTTAMethod)
        for i in 0..<5 {
            expectClose(try adaptor.adapt(x.slice((6 * i)..<(6 * i + 6))), try expected.tensor("batch\(i)"), "rotta sgd batch \(i)")
            #expect(rotta.insertedSamples == 6 * (i + 1))
            try expectBatchNormState(model, expected, prefix: "state\(i).", "rotta sgd batch \(i)")
        }
        #expect(rotta.memory.classes.map { Float($0.count) } == (try expected.tensor("memory_counts").storage))
    }
}

/// The contract every method keeps.
@Suite struct MethodContractTests {
    static let methods = MethodRegistry.names

    func config(_ method: String) -> MethodConfiguration {
        var c = MethodConfiguration.defaults(for: .cifar)
        c.confidenceThreshold = 1  // CoTTA: always take the augmented branch (exercises the RNG)
        c.augmentations = 2
        c.restoreProbability = 0.1
        c.bnAlpha = 0.3
        // ETA/EATA/SAR: the fixture model is unconfident (entropies near ln 10); let every sample through.
        c.entropyMarginFactor = 1
        c.redundancyMargin = 1.01
        c.resetAfterUpdates = 3                                   // RDumb: one periodic reset within the 4 batches
        c.rottaMemorySize = 16; c.rottaUpdateFrequency = 8        // RoTTA: an update every batch of 8
        c.rmtWarmupSamples = 16   // RMT: two warm-up steps on the two source batches
        return c
    }

    /// A stand-in augmentation with random draws, so seeding is exercised without the full pipeline.
    static let jitter: BatchAugmentation = { x, g in
        let s = 0.9 + 0.2 * g.nextUniform()
        return Tensor(shape: x.shape, storage: x.storage.map { min(max($0 * s, 0), 1) })
    }

    func run(_ method: String, seed: UInt64) throws -> (Adaptor, [Tensor]) {
        let adaptor = try Adaptor(model: try methodFixtureModel(),
                                  method: try MethodRegistry.make(method, configuration: config(method), augment: Self.jitter,
                                                                  sourceBatches: Array(try methodFixtureStream()[2...3]),
                                                                  sourceLabels: [(0..<8).map { $0 }, (8..<16).map { $0 % 10 }]), seed: seed)
        let outs = try methodFixtureStream().map { try adaptor.adapt($0) }
        return (adaptor, outs)
    }

    @Test(arguments: methods)
    func resetRestoresTheSourceBitForBit(_ method: String) throws {
        let (adaptor, _) = try run(method, seed: 3)
        adaptor.reset()
        #expect(adaptor.model.store.snapshot() == adaptor.sourceSnapshot)
        // After a reset, the method behaves as new: the same outputs as an adaptor that never adapted, given the
        // same draws (UnMix-TNS: the same initial components, which a reset restores). Two batches, so that the
        // second output shows the first update, which stale optimizer moments or method state would change.
        let fresh = try Adaptor(model: try methodFixtureModel(),
                                method: try MethodRegistry.make(method, configuration: config(method), augment: Self.jitter,
                                                                sourceBatches: Array(try methodFixtureStream()[2...3]),
                                                                sourceLabels: [(0..<8).map { $0 }, (8..<16).map { $0 % 10 }]), seed: 3)
        fresh.rng = adaptor.rng
        (fresh.method as? UnMixTNSMethod)?.initialMeans = (adaptor.method as? UnMixTNSMethod)?.initialMeans
        // RMT's source replay goes on across a reset, as the reference's `src_loader_iter` does (rmt.py: `reset`
        // reloads the models and optimizers only): the fresh adaptor's sampler starts where the reset one's stands.
        // SAR's SGD keeps its momentum across a reset, as the reference's (its SAM wrapper's load_state_dict leaves
        // the inner SGD's buffers): the fresh adaptor starts with the reset one's.
        if MethodRegistry.baseName(method) == "sar" { try fresh.method.restoreState(adaptor.method.captureState()) }
        if method == "rmt" {
            var state = fresh.method.captureState()
            for (key, value) in adaptor.method.captureState().numbers where key.hasPrefix("source.") { state.numbers[key] = value }
            try fresh.method.restoreState(state)
        }
        for x in try methodFixtureStream().prefix(2) {
            #expect(try adaptor.adapt(x) == fresh.adapt(x), "\(method)")
        }
    }

    @Test(arguments: methods)
    func sameSeedSameOutputs(_ method: String) throws {
        let (_, a) = try run(method, seed: 5)
        let (_, b) = try run(method, seed: 5)
        #expect(a == b)
    }

    @Test(arguments: methods)
    func onlySelectedParametersChange(_ method: String) throws {
        let (adaptor, _) = try run(method, seed: 7)
        let store = adaptor.model.store
        let source = adaptor.sourceSnapshot
        let bufferModes: Set<String> = ["norm_test", "norm_ema", "rotta"]   // modes that update BN running statistics
        for (i, e) in store.entries.enumerated() {
            let now = Array(store.allValues[e.offset..<(e.offset + e.count)])
            let then = Array(source.values[e.offset..<(e.offset + e.count)])
            switch e.kind {
            case .parameter where !store.trainable[i]:
                #expect(now == then, "\(method): frozen \(e.name) changed")
            case .buffer where !bufferModes.contains(method):
                #expect(now == then, "\(method): buffer \(e.name) changed")
            default: break
            }
        }
        // SAR's exclusions (ResNet layer4, ViT blocks 9-11) do not occur in a WideResNet.
        let expectedTrainable: [String: ParameterSelection] = ["tent": .normAffine, "cotta": .all, "eta": .normAffine,
                                                               "eata": .normAffine, "sar": .normAffine, "rdumb": .normAffine,
                                                               "rotta": .normAffine, "roid": .normAffine, "rmt": .all]
        // A method on UnMix-TNS trains what it trains alone.
        let selection = expectedTrainable[MethodRegistry.baseName(method)] ?? ParameterSelection.none
        #expect(store.trainableNames == store.entries.filter { $0.kind == .parameter && selection.selects($0) }.map(\.name))
        if expectedTrainable[MethodRegistry.baseName(method)] != nil {
            #expect(store.snapshot() != source, "\(method) adapted nothing")
        }
    }

    @Test func nonFiniteAndMisshapenBatchesAreRefused() throws {
        let adaptor = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("tent", configuration: config("tent")), seed: 1)
        var x = try methodFixtureStream()[0]
        let before = adaptor.model.store.snapshot()
        x.storage[17] = .nan
        #expect(throws: AdaptationError("the batch contains NaN or infinity; it was not used and the model is unchanged")) {
            try adaptor.adapt(x)
        }
        #expect(adaptor.model.store.snapshot() == before)
        // One channel for the fixture WideResNet's three: refused by the shape check, before the NaN check.
        #expect(throws: AdaptationError("batch has shape [2, 1, 32, 32]; wideresnet-16-1 expects (N, 3, H, W) with N, H, W ≥ 1")) {
            try adaptor.adapt(Tensor(shape: [2, 1, 32, 32]))
        }
        #expect(throws: AdaptationError("unknown method 'tennt'; known methods: \(MethodRegistry.names.joined(separator: ", "))")) {
            try MethodRegistry.make("tennt", configuration: config("tent"))
        }
    }
}

/// The hooks, each on its own.
@Suite struct HookTests {
    @Test func subsetEntropyLossOverAllRowsIsTheMeanEntropy() {
        let logits = Tensor(shape: [4, 5], storage: randomFloats(20, seed: 4, scale: 3))
        let all = subsetEntropyLoss(logits, samples: [0, 1, 2, 3])
        let reference = Loss.softmaxEntropy(logits)
        #expect(abs(all.value - reference.value) < 1e-6)
        expectClose(all.gradient, reference.gradient, tolerance: 1e-5)
        // A subset with weights: rows outside get no gradient; empty subsets give NaN and no gradient.
        let part = subsetEntropyLoss(logits, samples: [2], weights: [3])
        #expect(abs(part.value - 3 * softmaxEntropies(logits)[2]) < 1e-5)
        #expect(part.gradient.storage[0..<10].allSatisfy { $0 == 0 } && part.gradient.storage[15..<20].allSatisfy { $0 == 0 })
        // Row 2: L = (w/|S|)·H_2 = 3·H_2. Loss.softmaxEntropy of row 2 alone is the mean entropy of one row, H_2,
        // so its gradient is ∂H_2/∂z_2 and L's row 2 is (w/|S|) = 3 times it.
        let rowEntropy = Loss.softmaxEntropy(logits.slice(2..<3))
        expectClose(Array(part.gradient.storage[10..<15]), rowEntropy.gradient.storage.map { 3 * $0 }, tolerance: 1e-5, "weighted row 2")
        // And the whole gradient (the zero rows included) against central differences of the value.
        let fd = finiteDifferenceError(at: logits.storage, analytic: part.gradient.storage, samples: 20, step: 1e-2) {
            Double(subsetEntropyLoss(Tensor(shape: [4, 5], storage: $0), samples: [2], weights: [3]).value)
        }
        #expect(fd < 2e-3, "weighted subset: FD error \(fd)")
        let none = subsetEntropyLoss(logits, samples: [])
        #expect(none.value.isNaN && none.gradient.storage.allSatisfy { $0 == 0 })
        #expect(reliableSamples([0.5, 2, 0.1, 3], below: 1) == [0, 2])
        #expect(reliableSamples([0.5, 2, 0.1, 3], below: 1, among: [1, 2]) == [2])
        // E0 = factor·ln C (EATA.MARGIN_E0 · log(num_classes)): 0.4·ln 10 ≈ 0.921034.
        #expect(abs(entropyMargin(factor: 0.4, numClasses: 10) - Float(0.4 * log(10.0))) < 1e-6)
    }

    @Test func eataWithoutSourceDataIsRefusedAndEtaIsNot() throws {
        let c = MethodConfiguration.defaults(for: .cifar)
        #expect(throws: AdaptationError("eata needs source images for its Fisher information (fisherAlpha 1.0 > 0) and none were given; "
                                        + "give source batches, a fisherAlpha of 0, or use eta (EATA without its Fisher term)")) {
            try MethodRegistry.make("eata", configuration: c)
        }
        var noFisher = c
        noFisher.fisherAlpha = 0
        #expect(try MethodRegistry.make("eata", configuration: noFisher).name == "eata")
        #expect(try MethodRegistry.make("eta", configuration: c).name == "eta")
    }

    @Test func referenceDefaultsOfTheNewMethods() {
        let c10 = MethodConfiguration.defaults(for: .cifar), c100 = MethodConfiguration.defaults(for: .cifar, numClasses: 100)
        let imagenet = MethodConfiguration.defaults(for: .imagenet, method: "sar")
        #expect(c10.redundancyMargin == 0.4 && c100.redundancyMargin == 0.1 && imagenet.redundancyMargin == 0.05)
        // cfgs/cifar100_c/rdumb.yaml keeps EATA.D_MARGIN 0.4 (eta.yaml and eata.yaml set 0.1).
        #expect(MethodConfiguration.defaults(for: .cifar, method: "rdumb", numClasses: 100).redundancyMargin == 0.4)
        #expect(MethodConfiguration.defaults(for: .cifar, method: "eata", numClasses: 100).redundancyMargin == 0.1)
        #expect(c10.fisherAlpha == 1 && imagenet.fisherAlpha == 2000 && imagenet.lr == 2.5e-4)
        #expect(c10.entropyMarginFactor == 0.4 && c10.sarResetConstant == 0.2 && c10.samRho == 0.05)
        #expect(c10.lameAffinity == .rbf && c10.lameNeighbours == 5 && !c10.lameForceSymmetry)
        #expect(SARMethod.isExcluded(layer: "layer4.0.bn1") && SARMethod.isExcluded(layer: "norm")
                && SARMethod.isExcluded(layer: "blocks.10.norm1") && !SARMethod.isExcluded(layer: "block3.layer.1.bn2"))
    }

    @Test func meanTeacherUpdatesParametersOnly() {
        let (a, b) = (ParameterStore(), ParameterStore())
        for s in [a, b] { s.add("w", shape: [2], kind: .parameter); s.add("rm", shape: [1], kind: .buffer); s.finalize() }
        a.set("w", Tensor(shape: [2], storage: [1, 2])); a.set("rm", Tensor(shape: [1], storage: [5]))
        b.set("w", Tensor(shape: [2], storage: [3, 6])); b.set("rm", Tensor(shape: [1], storage: [9]))
        updateMeanTeacher(a, from: b, momentum: 0.75)
        #expect(a.tensor("w")!.storage == [1.5, 3])
        #expect(a.tensor("rm")!.storage == [5])
    }

    @Test func stochasticRestoreRestoresAboutPOfTheTrainableElements() {
        let s = ParameterStore()
        s.add("w", shape: [100_000], kind: .parameter)
        s.add("frozen", shape: [10], kind: .parameter)
        s.finalize()
        let source = s.snapshot()  // zeros
        for i in 0..<s.totalCount { s.allValuesMutable[i] = 1 }
        s.setTrainable(.names(["w"]))
        var g = SeededGenerator(seed: 9)
        stochasticRestore(s, source: source, probability: 0.01, using: &g)
        let restored = s.tensor("w")!.storage.filter { $0 == 0 }.count
        #expect(restored > 850 && restored < 1150)  // 1000 ± 4.8σ
        #expect(s.tensor("frozen")!.storage.allSatisfy { $0 == 1 })
    }
}

/// Batches of one image, for the methods of issue #6's second part.
@Suite struct SmallBatchTests {
    func oneImage(_ i: Int) throws -> Tensor {
        let x = try fixture("methods/stream.safetensors").tensor("x")
        return x.slice(i..<(i + 1))
    }

    /// RoTTA adapts on its memory, not on the batch: single images work, and its updates still come
    /// every `rottaUpdateFrequency` images.
    @Test func rottaAdaptsOnSingleImages() throws {
        var c = MethodConfiguration.defaults(for: .cifar)
        c.rottaMemorySize = 4; c.rottaUpdateFrequency = 3
        let adaptor = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("rotta", configuration: c), seed: 1)
        for i in 0..<6 {
            let out = try adaptor.adapt(try oneImage(i))
            #expect(out.shape == [1, 10] && out.isFinite)
        }
        let rotta = try #require(adaptor.method as? RoTTAMethod)
        #expect(rotta.insertedSamples == 6 && rotta.memory.count <= 4 && rotta.memory.count >= 1)
        #expect(adaptor.model.store.snapshot() != adaptor.sourceSnapshot, "two updates in six images changed nothing")
    }

    /// ROID's weights are normalised over the batch, so a single image has none: it is predicted with the
    /// model's own logits and nothing adapts (the reference would turn the model into NaN); two images adapt.
    @Test func roidPredictsSingleImagesWithoutAdapting() throws {
        let adaptor = try Adaptor(model: try methodFixtureModel(),
                                  method: try MethodRegistry.make("roid", configuration: .defaults(for: .cifar)), seed: 1)
        let roid = try #require(adaptor.method as? ROIDMethod)
        let before = adaptor.model.store.snapshot(), priorBefore = roid.classProbabilities
        let image = try oneImage(0)
        let expected = adaptor.model.forward(image, .inference)
        let out = try adaptor.adapt(image)
        #expect(out == expected)
        #expect(adaptor.model.store.snapshot() == before && roid.classProbabilities == priorBefore && roid.skippedBatches == 1)
        let pair = try fixture("methods/stream.safetensors").tensor("x").slice(0..<2)
        #expect(try adaptor.adapt(pair).isFinite)
        #expect(adaptor.model.store.snapshot() != before && roid.skippedBatches == 1)
        // The consistency loss without the weighting is refused when the method is built (the reference fails on it).
        var c = MethodConfiguration.defaults(for: .cifar)
        c.roidWeighting = false
        #expect(throws: AdaptationError("roid: the consistency loss uses the weighting's mask and weights; "
                                        + "turn the weighting on or the consistency off (the reference fails on this combination too)")) {
            try MethodRegistry.make("roid", configuration: c)
        }
    }

    /// RDumb (ETA) at batch size 1: batch statistics over one image's H·W positions, as the reference.
    @Test func rdumbRunsOnSingleImagesAndResets() throws {
        var c = MethodConfiguration.defaults(for: .cifar)
        c.resetAfterUpdates = 2; c.entropyMarginFactor = 1; c.redundancyMargin = 1.01
        let adaptor = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("rdumb", configuration: c), seed: 1)
        for i in 0..<3 { #expect(try adaptor.adapt(try oneImage(i)).isFinite) }
        let rdumb = try #require(adaptor.method as? RDumbMethod)
        #expect(rdumb.performedUpdates == 3 && rdumb.periodicResets == 1)
        _ = try adaptor.adapt(try oneImage(3))
        #expect(adaptor.model.store.snapshot() == adaptor.sourceSnapshot, "the second reset restores the source")
    }
}
