import Testing
@testable import TTAAdaptation
import TTAModels
import TTANN
import TTATensor
import TTATestSupport

/// UnMix-TNS statistics with the assignments `p` held fixed: the function whose gradient the layer's
/// backward computes (the reference computes `p` under `no_grad`).
private final class FrozenAssignments: SampleStatisticsProvider {
    let layer: UnMixTNSLayer, p: [Double]
    init(_ layer: UnMixTNSLayer, p: [Double]) { (self.layer, self.p) = (layer, p) }
    func statistics(_ x: Tensor, layer _: BatchNorm2d) -> SampleStatistics {
        let (m, v) = UnMixTNSLayer.instanceStatistics(x)
        return layer.mixture(m, v, assignments: p)
    }
    func copy() -> any SampleStatisticsProvider { FrozenAssignments(layer, p: p) }
}

/// Counts the copies `ImageClassifier.copy()` makes of a model's BN providers; installed before a host's
/// `configure`, it tells whether the host copied the model. Not asked for statistics: no host computes
/// any in `configure` here.
private final class CopyCounter: SampleStatisticsProvider {
    final class Count { var copies = 0 }
    let count: Count
    init(_ count: Count) { self.count = count }
    func statistics(_ x: Tensor, layer: BatchNorm2d) -> SampleStatistics {
        Issue.record("\(layer.name): statistics asked for in configure")
        let zeros = [Float](repeating: 0, count: layer.features)
        return SampleStatistics(mean: zeros, variance: zeros, instanceMean: zeros, meanByMean: zeros, varianceByMean: zeros,
                                varianceByVariance: zeros)
    }
    func copy() -> any SampleStatisticsProvider {
        count.copies += 1
        return CopyCounter(count)
    }
}

/// The backward pass through UnMix-TNS normalisation, and the method on top of gradient-based hosts.
@Suite struct UnMixTNSTests {
    /// One BN layer (3 channels) with 3 UnMix-TNS components drawn around its running statistics.
    func unmixLayer() -> (ParameterStore, BatchNorm2d, UnMixTNSLayer) {
        let store = ParameterStore()
        let bn = BatchNorm2d(store, name: "bn", features: 3)
        store.finalize()
        store.setTrainable(.normAffine)
        store.set("bn.weight", Tensor(shape: [3], storage: [1.3, -0.7, 0.9]))
        store.set("bn.bias", Tensor(shape: [3], storage: [0.2, 0.1, -0.4]))
        store.set("bn.running_mean", Tensor(shape: [3], storage: [0.3, -0.2, 0.5]))
        store.set("bn.running_var", Tensor(shape: [3], storage: [0.8, 1.5, 0.6]))
        let layer = UnMixTNSLayer(components: 3, mean: [0.3, -0.2, 0.5], variance: [0.8, 1.5, 0.6], bnMomentum: 0.1,
                                  batchSizeMax: 4, configuredBatchSize: nil)
        let noise = randomFloats(9, seed: 21)
        layer.start(means: (0..<9).map { layer.sourceMean[$0 % 3] + layer.noiseScale[$0 % 3] * noise[$0] })
        return (store, bn, layer)
    }

    /// The gradient to the input, γ and β through the per-sample statistics (instance mean and variance
    /// inside the mixtures, assignments fixed) against central finite differences of `Σ y ⊙ r`; and the
    /// real layer (which updates its components as it goes) gives exactly that gradient.
    @Test func gradientMatchesFiniteDifferences() throws {
        let (store, bn, layer) = unmixLayer()
        let shape = [4, 3, 3, 3]
        let x = randomFloats(shape.product, seed: 22, scale: 1.5).enumerated().map { $0.element + [0.3, -0.2, 0.5][($0.offset / 9) % 3] }
        let r = randomFloats(shape.product, seed: 23)
        let p = layer.assignments(UnMixTNSLayer.instanceStatistics(Tensor(shape: shape, storage: x)).mean)
        #expect(p.contains { $0 > 0.05 && $0 < 0.95 }, "assignments all one-hot: the mixture slopes would be trivial")
        let frozen = FrozenAssignments(layer, p: p)
        bn.sampleStatistics = frozen
        let f: ([Float]) -> Double = { weightedSum(bn.forward(Tensor(shape: shape, storage: $0), .inference).storage, r) }
        store.zeroGrads()
        _ = bn.forward(Tensor(shape: shape, storage: x), .training)
        let dx = try #require(bn.backward(Tensor(shape: shape, storage: r), needInputGradient: true))
        let errX = finiteDifferenceError(at: x, analytic: dx.storage, samples: 60, step: 1e-2, f)
        #expect(errX < 2e-3, "input gradient FD error \(errX)")
        for name in ["bn.weight", "bn.bias"] {
            let p0 = try #require(store.tensor(name))
            let err = finiteDifferenceError(at: p0.storage, analytic: try #require(store.gradient(name)).storage) { v in
                store.set(name, Tensor(shape: [3], storage: v))
                defer { store.set(name, p0) }
                return f(x)
            }
            #expect(err < 2e-3, "\(name) gradient FD error \(err)")
        }
        let (dGamma, dBeta) = (store.gradient("bn.weight")!, store.gradient("bn.bias")!)
        #expect(dGamma.storage.allSatisfy { $0 != 0 } && dBeta.storage.allSatisfy { $0 != 0 })

        // The real provider: same gradient, and its components move.
        let before = layer.means
        bn.sampleStatistics = layer
        store.zeroGrads()
        _ = bn.forward(Tensor(shape: shape, storage: x), .training)
        let dxReal = try #require(bn.backward(Tensor(shape: shape, storage: r), needInputGradient: true))
        #expect(dxReal.storage == dx.storage)
        #expect(store.gradient("bn.weight")! == dGamma && store.gradient("bn.bias")! == dBeta)
        #expect(layer.means != before)
    }

    /// A repeated pass (ROID's recording of the pass it predicted with) gets the kept pass's statistics and
    /// slopes bit for bit and leaves the components where that pass put them; the pass after it computes
    /// and moves again, and a repeat with nothing kept computes as usual.
    @Test func repeatedPassReusesTheKeptStatistics() throws {
        let (_, bn, layer) = unmixLayer()
        let x = Tensor(shape: [4, 3, 3, 3], storage: randomFloats(108, seed: 24, scale: 1.5))
        layer.keepNextPass()
        let first = layer.statistics(x, layer: bn)
        let moved = layer.means
        layer.repeatKeptPass()
        let again = layer.statistics(x, layer: bn)
        #expect(again.mean == first.mean && again.variance == first.variance && again.meanByMean == first.meanByMean
                && again.varianceByMean == first.varianceByMean)
        #expect(layer.means == moved)
        let third = layer.statistics(x, layer: bn)
        #expect(third.mean != first.mean && layer.means != moved)
        let before = layer.means
        layer.repeatKeptPass()   // nothing kept: an ordinary pass
        _ = layer.statistics(x, layer: bn)
        #expect(layer.means != before)
    }

    /// Every `<host>+unmix_tns` name builds UnMix-TNS around its host; other combinations are refused by name.
    @Test func combinationsAreBuiltAroundTheirHost() throws {
        let c = MethodConfiguration.defaults(for: .cifar)
        for host in MethodRegistry.unmixHosts where host != "eata" {
            let m = try #require(try MethodRegistry.make(host + "+unmix_tns", configuration: c) as? UnMixTNSMethod)
            #expect(m.name == host + "+unmix_tns" && m.host?.name == host && MethodRegistry.baseName(m.name) == host)
            #expect(MethodRegistry.entry(m.name)?.usesGradients == (host != "lame"))
            #expect(MethodRegistry.entry(m.name)?.singleImages == (host != "lame" && host != "roid"))
        }
        #expect(MethodRegistry.entry("eata+unmix_tns")?.needsSourceData == true)
        #expect(throws: AdaptationError("unknown method 'rmt+unmix_tns'; UnMix-TNS combines with tent, eta, eata, sar, rdumb, lame, cotta, rotta, roid (as <method>+unmix_tns)")) {
            try MethodRegistry.make("rmt+unmix_tns", configuration: c)
        }
    }

    /// A combination takes its host's reference defaults: on ImageNet-C, CoTTA's SGD at 0.01
    /// (cfgs/imagenet_c/cotta.yaml) and RoTTA's Adam at 1e-3 (cfgs/imagenet_c/rotta.yaml), not TENT's 2.5e-4.
    @Test func combinationsTakeTheirHostsDefaults() {
        for host in MethodRegistry.unmixHosts {
            for family in [MethodConfiguration.Family.cifar, .imagenet] {
                #expect(MethodConfiguration.defaults(for: family, method: host + "+unmix_tns", numClasses: 100)
                        == MethodConfiguration.defaults(for: family, method: host, numClasses: 100), "\(host) on \(family)")
            }
        }
        let cotta = MethodConfiguration.defaults(for: .imagenet, method: "cotta+unmix_tns", numClasses: 1000)
        #expect(cotta.optimizer == .sgd && cotta.lr == 0.01)
        let rotta = MethodConfiguration.defaults(for: .imagenet, method: "rotta+unmix_tns", numClasses: 1000)
        #expect(rotta.optimizer == .adam && rotta.lr == 1e-3)
        #expect(MethodConfiguration.defaults(for: .imagenet, method: "tent+unmix_tns", numClasses: 1000).lr == 2.5e-4)
    }

    /// A model without BatchNorm layers is refused, alone and under a host, naming the method to run instead.
    @Test func modelsWithoutBatchNormAreRefused() throws {
        let vit = VisionTransformer(ViTConfiguration(imageSize: 8, patchSize: 4, dim: 8, depth: 1, heads: 2, numClasses: 3))
        #expect(throws: AdaptationError("tent+unmix_tns: \(vit.architecture) has no BatchNorm layer for UnMix-TNS to replace; run tent alone")) {
            try Adaptor(model: vit, method: try MethodRegistry.make("tent+unmix_tns", configuration: .defaults(for: .imagenet)), seed: 0)
        }
        #expect(throws: AdaptationError("unmix_tns: \(vit.architecture) has no BatchNorm layer for UnMix-TNS to replace")) {
            try Adaptor(model: vit, method: try MethodRegistry.make("unmix_tns", configuration: .defaults(for: .imagenet)), seed: 0)
        }
    }

    /// At batch size 1 (which the reference supports: every statistic is per sample) the hosts adapt
    /// through UnMix-TNS; nothing needs a batch statistic.
    @Test(arguments: ["tent+unmix_tns", "eta+unmix_tns", "sar+unmix_tns"])
    func singleImagesAdapt(_ name: String) throws {
        var c = MethodConfiguration.defaults(for: .cifar)
        c.entropyMarginFactor = 1; c.redundancyMargin = 1.01; c.unmixComponents = 4
        let adaptor = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make(name, configuration: c), seed: 1)
        let unmix = try #require(adaptor.method as? UnMixTNSMethod)
        let x = try fixture("methods/stream.safetensors").tensor("x")
        for i in 0..<3 {
            let out = try adaptor.adapt(x.slice(i..<(i + 1)))
            #expect(out.shape == [1, 10] && out.isFinite && adaptor.lastOutcome == .adapted)
        }
        #expect(adaptor.model.store.snapshot() != adaptor.sourceSnapshot, "\(name) trained nothing")
        #expect(!unmix.layers.isEmpty)
        for layer in unmix.layers {
            let initial = try #require(layer.initial, "\(name): components never initialised")
            #expect(layer.means != initial.means, "\(name): components did not move")
        }
    }

    /// SAR's model recovery (here after every batch) restores the source model and, as the reference's
    /// state-dict reload does, the UnMix-TNS components' initial draws; RDumb's periodic reset too.
    @Test(arguments: ["sar+unmix_tns", "rdumb+unmix_tns"])
    func hostSourceRestoresRestoreTheComponents(_ name: String) throws {
        var c = MethodConfiguration.defaults(for: .cifar)
        c.entropyMarginFactor = 1; c.redundancyMargin = 1.01; c.unmixComponents = 4
        c.sarResetConstant = 100; c.resetAfterUpdates = 1; c.optimizer = .sgd
        let adaptor = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make(name, configuration: c), seed: 1)
        let unmix = try #require(adaptor.method as? UnMixTNSMethod)
        let stream = try methodFixtureStream()
        _ = try adaptor.adapt(stream[0])
        #expect((unmix.host as? RestoresSource)?.sourceRestores == 1)
        #expect(adaptor.model.store.snapshot() == adaptor.sourceSnapshot)
        #expect(unmix.layers.allSatisfy { $0.means == $0.initial?.means && $0.variances == $0.initial?.variances })
        // Without recovery, the same batch moves them.
        c.sarResetConstant = -1; c.resetAfterUpdates = 0
        let plain = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make(name, configuration: c), seed: 1)
        _ = try plain.adapt(stream[0])
        let plainLayers = try #require(plain.method as? UnMixTNSMethod).layers
        #expect(!plainLayers.isEmpty)
        for layer in plainLayers {
            let initial = try #require(layer.initial, "\(name): components never initialised")
            #expect(layer.means != initial.means, "\(name): components did not move without recovery")
        }
    }

    /// Each host says whether its `configure` copies the model (`copiesTheModel`): UnMix-TNS goes in
    /// before such a host, so that its copies carry layers of their own. Checked by counting the copies.
    @Test func hostsSayWhetherTheyCopyTheModel() throws {
        var c = MethodConfiguration.defaults(for: .cifar)
        c.fisherAlpha = 0  // EATA without source data
        for name in MethodRegistry.unmixHosts {
            let host = try MethodRegistry.make(name, configuration: c)
            let model = try methodFixtureModel(), count = CopyCounter.Count()
            for bn in model.batchNorms { bn.sampleStatistics = CopyCounter(count) }
            try host.configure(model)
            #expect(host.copiesTheModel == (count.copies > 0), "\(name): \(count.copies) BN copies, copiesTheModel \(host.copiesTheModel)")
        }
        #expect(try MethodRegistry.make("cotta", configuration: c).copiesTheModel)
    }

    /// CoTTA's teacher and anchor get UnMix-TNS layers of their own: the same draws as the student's,
    /// moved by their own passes (the teacher's 1 + 2 augmented, the anchor's one), back to the draws on a reset.
    @Test func cottaCopiesCarryTheirOwnLayers() throws {
        var c = MethodConfiguration.defaults(for: .cifar)
        c.unmixComponents = 4; c.augmentations = 2; c.confidenceThreshold = 1
        let flip: BatchAugmentation = { x, _ in x }
        let adaptor = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("cotta+unmix_tns", configuration: c, augment: flip),
                                  seed: 1)
        let unmix = try #require(adaptor.method as? UnMixTNSMethod)
        let cotta = try #require(unmix.host as? CoTTAMethod)
        let teacher = try #require(cotta.teacher), anchor = try #require(cotta.anchor)
        // Two batches: on the first the anchor and the student see the same weights and input.
        for x in try methodFixtureStream().prefix(2) { _ = try adaptor.adapt(x) }
        for (i, layer) in unmix.layers.enumerated() {
            let copies = [teacher.batchNorms[i].sampleStatistics, anchor.batchNorms[i].sampleStatistics].map { $0 as? UnMixTNSLayer }
            #expect(copies.map { $0.map(ObjectIdentifier.init) } == layer.replicas.map(ObjectIdentifier.init))
            let initial = try #require(layer.initial, "layer \(i): components never initialised")
            for copy in layer.replicas {
                let copyInitial = try #require(copy.initial, "layer \(i): a replica's components never initialised")
                #expect(copy !== layer && copyInitial.means == initial.means)
                #expect(copy.means != layer.means && copy.means != copyInitial.means)
            }
        }
        // The teacher ran three passes, the anchor one: their components differ.
        #expect(unmix.layers.allSatisfy { $0.replicas.count == 2 && $0.replicas[0].means != $0.replicas[1].means })
        adaptor.reset()
        #expect(unmix.layers.allSatisfy { $0.family.allSatisfy { $0.means == $0.initial?.means } })
    }
}
