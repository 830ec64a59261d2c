import Testing
import TTAAdaptation
import TTAData
import TTAModels
import TTANN
import TTATensor
import TTATestSupport

/// The configuration of each RMT fixture case (`CASES` in scripts/make_rmt_fixtures.py).
func rmtFixtureConfiguration(_ name: String) -> MethodConfiguration {
    var c = MethodConfiguration.defaults(for: .cifar)
    c.teacherMomentum = 0.9
    c.rmtWarmupSamples = 16
    c.projectionDim = 16
    switch name {
    case "rmt_sgd":
        c.optimizer = .sgd; c.lr = 0.01; c.rmtWarmupSamples = 24
        (c.rmtLambdaSource, c.rmtLambdaTarget, c.rmtLambdaContrast) = (0.5, 2, 0.7)
        c.contrastTemperature = 0.2; c.projectionDim = 12
    case "rmt_source_free":
        c.teacherMomentum = 0.999; c.rmtWarmupSamples = 0; c.rmtLambdaSource = 0
    case "rmt_adam_small_lr":
        c.lr = 3e-5; c.rmtWarmupSamples = 0
    default: break
    }
    return c
}

/// The fixtures' labelled source batches, in order (no shuffling, as the PyTorch run takes them).
/// Golden: `make_source()` in scripts/make_rmt_fixtures.py.
func rmtFixtureSource() throws -> SourceSampler {
    let file = try fixture("methods/rmt_source.safetensors")
    let x = try file.tensor("x"), y = try file.tensor("y").storage.map { Int($0) }
    return try SourceSampler(batches: batchesOf8(x), labels: (0..<(y.count / 8)).map { Array(y[($0 * 8)..<(($0 + 1) * 8)]) }, shuffle: false)
}

/// The deterministic stand-in for CoTTA's augmentation that the fixtures use: a horizontal flip.
let horizontalFlip: BatchAugmentation = { x, _ in
    var y = x
    let w = x.shape[3]
    for row in 0..<(x.count / w) { for j in 0..<w { y.storage[row * w + j] = x.storage[row * w + w - 1 - j] } }
    return y
}

/// An in-memory `PreparationCache` that counts what it is asked.
final class MemoryCache: PreparationCache {
    var items: [String: [String: Tensor]] = [:]
    var hits = 0
    func load(_ item: String) -> [String: Tensor]? {
        if let t = items[item] { hits += 1; return t }
        return nil
    }
    func store(_ item: String, _ tensors: [String: Tensor]) { items[item] = tensors }
}

@Suite struct RMTTests {
    func makeRMT(_ name: String, cache: PreparationCache? = nil) throws -> (Adaptor, RMTMethod, SafeTensorsFile) {
        let expected = try fixture("methods/\(name).safetensors")
        var projector: [String: Tensor] = [:]
        for key in expected.names where key.hasPrefix("projector.") { projector[String(key.dropFirst("projector.".count))] = try expected.tensor(key) }
        let method = try RMTMethod(rmtFixtureConfiguration(name), augment: horizontalFlip, source: try rmtFixtureSource(),
                                   cache: cache, initialProjector: projector)
        return (try Adaptor(model: try methodFixtureModel(), method: method, seed: 1), method, expected)
    }

    /// Per-batch outputs (student + teacher logits), the prototypes and the final projector against PyTorch,
    /// to 1e-4, or to twice the batch's measured conditioning where that is larger: how far PyTorch's own
    /// float64 output moves under 1e-7 relative input noise (`output_sensitivity()`; after Adam steps over
    /// every parameter it reaches 1e-3 to 5e-3, see there). `rmt_adam_small_lr` (Adam at lr 3e-5, no warm-up) is
    /// well-conditioned throughout: every batch and its final projector are held to 1e-4.
    /// Golden: `run_rmt()` in scripts/make_rmt_fixtures.py (`main()`, `CASES`).
    @Test(arguments: ["rmt", "rmt_sgd", "rmt_source_free", "rmt_adam_small_lr"])
    func outputsMatchPyTorchBatchByBatch(_ name: String) throws {
        let (adaptor, method, expected) = try makeRMT(name)
        expectClose(try #require(method.prototypes), try expected.tensor("prototypes"), "\(name) prototypes")
        let sensitivity = try expected.tensor("sensitivity").storage
        for (i, x) in try methodFixtureStream().enumerated() {
            expectClose(try adaptor.adapt(x), try expected.tensor("batch\(i)"), tolerance: max(1e-4, 2 * Double(sensitivity[i])),
                        "\(name) batch \(i)")
        }
        // The well-conditioned batches (SGD with warm-up and replay, Adam without warm-up) are held to 1e-4.
        #expect(sensitivity.filter { $0 < 5e-5 }.count == ["rmt": 0, "rmt_sgd": 3, "rmt_source_free": 1, "rmt_adam_small_lr": 4][name])
        #expect(method.warmupStepsRun == rmtFixtureConfiguration(name).rmtWarmupSamples / 8)
        // The projector after the last update (SGD, and Adam at lr 3e-5: after Adam steps at lr 1e-3 the state is
        // ill-conditioned, see adam_final_state_sensitivity() in scripts/make_method_fixtures.py).
        if rmtFixtureConfiguration(name).optimizer == .sgd || name == "rmt_adam_small_lr" {
            // The projector is Linear → ReLU → Linear (RMT.swift, makeProjector): four tensors, 0.weight, 0.bias,
            // 2.weight and 2.bias, each compared.
            let finals = expected.names.filter { $0.hasPrefix("final_projector.") }
            #expect(finals.count == 4 && method.projectorStore.entries.count == 4)
            #expect(Set(finals.map { String($0.dropFirst("final_projector.".count)) }) == Set(method.projectorStore.entries.map(\.name)))
            for key in finals {
                let param = String(key.dropFirst("final_projector.".count))
                expectClose(try #require(method.projectorStore.tensor(param)), try expected.tensor(key), "\(name) \(param)")
            }
        }
    }

    /// SupCon's value and gradient through the L2 normalisation.
    /// Golden: `contrastive_case()` in scripts/make_rmt_fixtures.py.
    @Test func contrastiveLossMatchesPyTorchAndFiniteDifferences() throws {
        let f = try fixture("methods/rmt_contrastive.safetensors")
        let h = try f.tensor("h")
        let result = contrastiveLoss(h, views: 3, temperature: 0.1)
        expectClose([result.value], try f.tensor("loss").storage, "loss")
        expectClose(result.gradient, try f.tensor("grad"), "gradient")
        let fd = finiteDifferenceError(at: h.storage, analytic: result.gradient.storage, step: 1e-3) { x in
            Double(contrastiveLoss(Tensor(shape: h.shape, storage: x), views: 3, temperature: 0.1).value)
        }
        #expect(fd < 1e-2)
    }

    @Test func nearestPrototypeIsTheLargestCosineSimilarity() {
        let prototypes = Tensor(shape: [3, 2], storage: [1, 0, 0, 1, -1, -1])
        let features = Tensor(shape: [3, 2], storage: [5, 1, 0.1, 3, -2, -2.5])
        #expect(nearestPrototypes(features, prototypes) == [0, 1, 2])
    }

    /// A second configure with the same cache loads prototypes and warm-up instead of recomputing, and
    /// gives the same outputs; the replay continues where the uncached run's would.
    @Test func cachedPreparationGivesTheSameRun() throws {
        let cache = MemoryCache()
        let (first, _, _) = try makeRMT("rmt", cache: cache)
        #expect(cache.items.count == 2 && cache.hits == 0)
        let (second, method, _) = try makeRMT("rmt", cache: cache)
        #expect(cache.hits == 2 && method.warmupStepsRun == 0)
        #expect(first.model.store.snapshot() == second.model.store.snapshot())
        for x in try methodFixtureStream() { #expect(try first.adapt(x) == second.adapt(x)) }
    }

    @Test func sourceDataIsRequiredAndChecked() throws {
        let c = rmtFixtureConfiguration("rmt")
        let needsSource = AdaptationError("rmt needs labelled source data (images and labels) for its prototypes, warm-up and replay")
        #expect(throws: needsSource) { try MethodRegistry.make("rmt", configuration: c) }
        let x = try methodFixtureStream()[0]
        #expect(throws: needsSource) { try MethodRegistry.make("rmt", configuration: c, sourceBatches: [x]) }   // images without labels
        // Labels of only some classes: no prototype for the others (the first missing is class 4).
        let partial = try RMTMethod(c, augment: nil, source: SourceSampler(batches: [x], labels: [[0, 1, 2, 3, 0, 1, 2, 3]], shuffle: false))
        #expect(throws: AdaptationError("rmt: the source data has no image of class 4; every class needs a prototype")) {
            try Adaptor(model: try methodFixtureModel(), method: partial, seed: 1)
        }
        let outOfRange = try RMTMethod(c, augment: nil, source: SourceSampler(batches: [x], labels: [[0, 1, 2, 3, 4, 5, 6, 10]], shuffle: false))
        #expect(throws: AdaptationError("rmt: source label 10 is outside 0..<10")) {
            try Adaptor(model: try methodFixtureModel(), method: outOfRange, seed: 1)
        }
    }

    @Test func samplerVisitsEveryImageOncePerPass() throws {
        let x = Tensor(shape: [5, 1, 1, 1], storage: [0, 1, 2, 3, 4])
        var s = try SourceSampler(batches: [x.slice(0..<2), x.slice(2..<4), x.slice(4..<5)],
                                  labels: [[0, 1], [2, 3], [4]], shuffle: true, seed: 3)
        var seen: [Float] = []
        for _ in 0..<3 { let b = s.next(); seen += b.images.storage; #expect(b.labels == b.images.storage.map { Int($0) }) }
        #expect(seen.sorted() == [0, 1, 2, 3, 4])
        #expect(seen != [0, 1, 2, 3, 4])   // shuffled (seed 3)
        var skipped = try SourceSampler(batches: [x], labels: [[0, 1, 2, 3, 4]], shuffle: true, seed: 3)
        var stepped = skipped
        skipped.skip(4)
        for _ in 0..<4 { _ = stepped.next() }
        #expect(skipped.next().images == stepped.next().images)
    }
}
