import Testing
import TTAAdaptation
import TTAModels
import TTANN
import TTATensor
import TTATestSupport

/// Bad input to the library gets an error naming what is wrong and what was expected, never a trap or a silently
/// wrong number: batches whose shape and storage disagree or that have no pixels, batches an augmenting method's
/// pipeline cannot take, source data that does not fit the model, saved states and caches that do not fit,
/// optimizer settings past float32, and input normalisations that do not fit the model.
@Suite struct HostileInputTests {
    let cifar = MethodConfiguration.defaults(for: .cifar)
    /// CoTTA's pipeline stand-in: the images as they are.
    let identity: BatchAugmentation = { x, _ in x }

    func adaptor(_ name: String, _ configuration: MethodConfiguration? = nil, augmentImageSize: Int? = nil,
                 windowLength: Int = 1) throws -> Adaptor {
        try Adaptor(model: try methodFixtureModel(),
                    method: try MethodRegistry.make(name, configuration: configuration ?? cifar, augment: identity,
                                                    augmentImageSize: augmentImageSize),
                    seed: 1, windowLength: windowLength)
    }

    /// Ten labelled source images of the fixture stream, one per class, for RMT.
    func rmtSource() throws -> (images: Tensor, labels: [Int]) {
        let stream = try methodFixtureStream()
        return (Tensor(shape: [10, 3, 32, 32], storage: stream[0].storage + stream[1].storage.prefix(2 * 3072)), Array(0..<10))
    }

    // MARK: 1, 2: the batch itself

    /// `shape` and `storage` are both public: a batch whose storage does not hold what its shape says (or whose
    /// shape's product overflows) is refused before any kernel reads it, as is one without pixels (H or W of 0,
    /// which used to reach `Conv2dGeometry`'s precondition) or images.
    @Test func batchesWhoseShapeAndStorageDisagreeOrThatHaveNoPixelsAreRefused() throws {
        let a = try adaptor("tent")
        let before = a.captureState()
        var x = try methodFixtureStream()[0]
        x.shape[0] = 9   // the storage holds 8 images
        #expect(throws: AdaptationError("batch has shape [9, 3, 32, 32] but holds 24576 values; that shape needs 27648")) { try a.adapt(x) }
        x.shape[0] = Int.max
        #expect(throws: AdaptationError("batch has shape [\(Int.max), 3, 32, 32] but holds 24576 values; "
                                        + "that shape needs more values than an Int counts")) { try a.adapt(x) }
        let expects = "wideresnet-16-1 expects (N, 3, H, W) with N, H, W ≥ 1"
        for shape in [[2, 3, 0, 0], [2, 3, 32, 0], [2, 3, 0, 32], [0, 3, 32, 32]] {
            #expect(throws: AdaptationError("batch has shape \(shape); \(expects)")) { try a.adapt(Tensor(shape: shape)) }
        }
        var negative = try methodFixtureStream()[0]
        negative.shape = [-8, 3, -32, 32]   // the same product as the storage's count
        #expect(throws: AdaptationError("batch has shape [-8, 3, -32, 32]; \(expects)")) { try a.process(negative) }
        #expect(a.captureState() == before)
    }

    /// A saved sliding window is checked as a batch is: its storage against its shape, its pixels, and finite values.
    /// A saved model counter below zero is refused too.
    @Test func savedWindowsAndCountersThatDoNotFitAreRefused() throws {
        let a = try adaptor("tent", windowLength: 4)
        let x = try methodFixtureStream()[0]
        for i in 0..<2 { _ = try a.process(x.slice(i..<(i + 1))) }
        let saved = a.captureState()
        #expect(saved.window?.shape == [2, 3, 32, 32] && saved.windowPointer == 2)
        var state = saved
        state.window!.storage.removeLast(5)
        #expect(throws: AdaptationError("the saved sliding window has shape [2, 3, 32, 32] but holds 6139 values; that shape needs 6144")) {
            try a.restoreState(state)
        }
        state = saved
        state.window!.storage[7] = .nan
        #expect(throws: AdaptationError("the saved sliding window contains NaN or infinity")) { try a.restoreState(state) }
        state = saved
        state.window = Tensor(shape: [2, 3, 0, 0])
        #expect(throws: AdaptationError("the saved sliding window has shape [2, 3, 0, 0]; wideresnet-16-1 expects (N, 3, H, W) with N, H, W ≥ 1")) {
            try a.restoreState(state)
        }
        state = saved
        let counter = try #require(a.model.store.counterNames.sorted().first)
        var counters = saved.model.counters
        counters[counter] = -1
        state.model = ParameterStore.Snapshot(values: saved.model.values, counters: counters)
        #expect(throws: AdaptationError("the saved model state has counter '\(counter)' = -1; expected a non-negative count")) {
            try a.restoreState(state)
        }
        #expect(a.captureState() == saved)
        try a.restoreState(saved)
    }

    // MARK: 3: what CoTTA's augmentation takes

    /// The augmenting methods (and their UnMix-TNS forms) refuse, before any work, a batch CoTTA's pipeline cannot
    /// take (`CoTTAAugmentation.apply` traps on it): not square, smaller than 2×2, other than 1 or 3 channels, or,
    /// when the augmentation says what it was built for, of another size.
    @Test(arguments: ["cotta", "rotta", "roid", "rmt", "cotta+unmix_tns", "rotta+unmix_tns", "roid+unmix_tns"])
    func augmentingMethodsRefuseBatchesTheirAugmentationCannotTake(_ name: String) throws {
        var c = cifar
        c.rmtWarmupSamples = 0
        let source = try rmtSource()
        func make(_ imageSize: Int?) throws -> Adaptor {
            try Adaptor(model: try methodFixtureModel(),
                        method: try MethodRegistry.make(name, configuration: c, augment: identity, sourceBatches: [source.images],
                                                        sourceLabels: [source.labels], augmentImageSize: imageSize),
                        seed: 1)
        }
        let host = MethodRegistry.baseName(name)
        let a = try make(nil)
        let before = a.captureState()
        for shape in [[2, 3, 8, 6], [2, 3, 1, 1]] {
            #expect(throws: AdaptationError("\(host) augments its batches with CoTTA's augmentation pipeline, which takes square images "
                                            + "of at least 2×2 pixels with 1 or 3 channels; the batch has shape \(shape)")) {
                try a.process(Tensor(shape: shape, repeating: 0.5))
            }
        }
        #expect(a.captureState() == before)
        let built = try make(32)
        #expect(throws: AdaptationError("\(host) augments its batches with CoTTA's augmentation pipeline, built here for 32×32 images "
                                        + "with 1 or 3 channels; the batch has shape [2, 3, 16, 16]")) {
            try built.process(Tensor(shape: [2, 3, 16, 16], repeating: 0.5))
        }
        #expect(try built.adapt(try methodFixtureStream()[0]).isFinite)
    }

    /// Two channels (a model built for them) are refused by the augmenting methods; an augmentation declared for
    /// images smaller than 2×2 is refused when an augmenting method is made; CoTTA without augmented passes and the
    /// methods that do not augment take any batch; a saved sliding window of images the augmentation cannot take is
    /// refused, the method's state left as it was.
    @Test func augmentationChannelsSizeAndWindows() throws {
        let twoChannels = WideResNet(depth: 10, widenFactor: 1, numClasses: 10, inputChannels: 2)
        let cotta = try Adaptor(model: twoChannels, method: try MethodRegistry.make("cotta", configuration: cifar, augment: identity), seed: 1)
        #expect(throws: AdaptationError("cotta augments its batches with CoTTA's augmentation pipeline, which takes square images "
                                        + "of at least 2×2 pixels with 1 or 3 channels; the batch has shape [2, 2, 8, 8]")) {
            try cotta.process(Tensor(shape: [2, 2, 8, 8], repeating: 0.5))
        }
        #expect(throws: AdaptationError("cotta: its augmentation was built for 1×1 images; "
                                        + "CoTTA's augmentation pipeline needs images of at least 2×2 pixels")) {
            try MethodRegistry.make("cotta", configuration: cifar, augment: identity, augmentImageSize: 1)
        }
        _ = try MethodRegistry.make("tent", configuration: cifar, augment: identity, augmentImageSize: 1)
        var plain = cifar
        plain.augmentations = 0
        #expect(try adaptor("cotta", plain).adapt(Tensor(shape: [2, 3, 8, 6], repeating: 0.5)).isFinite)
        #expect(try adaptor("tent").adapt(Tensor(shape: [2, 3, 8, 6], repeating: 0.5)).isFinite)

        let windowed = try adaptor("cotta", windowLength: 4)
        let saved = windowed.captureState()
        var state = saved
        (state.window, state.windowPointer) = (Tensor(shape: [1, 3, 8, 6], repeating: 0.5), 1)
        #expect(throws: AdaptationError("the saved sliding window: cotta augments its batches with CoTTA's augmentation pipeline, which "
                                        + "takes square images of at least 2×2 pixels with 1 or 3 channels; the batch has shape [1, 3, 8, 6]")) {
            try windowed.restoreState(state)
        }
        #expect(windowed.captureState() == saved)
    }

    /// RoTTA stacks its memory's images into one batch at each update: a batch of images of another shape than the
    /// memory's is refused before it enters the memory (it used to trap building the update's batch).
    @Test func rottaRefusesBatchesOfAnotherShapeThanItsMemory() throws {
        var c = cifar
        (c.rottaMemorySize, c.rottaUpdateFrequency) = (16, 1000)
        let a = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("rotta", configuration: c), seed: 1)
        _ = try a.adapt(try methodFixtureStream()[0])
        let before = a.captureState()
        for shape in [[2, 3, 16, 16], [2, 3, 16, 64]] {
            #expect(throws: AdaptationError("rotta: the batch has shape \(shape); its memory holds images of shape [3, 32, 32] (from earlier "
                                            + "batches or a restored state), and an update stacks them into one batch")) {
                try a.process(Tensor(shape: shape, repeating: 0.5))
            }
        }
        #expect(a.captureState() == before)
        // A state that does not say the images' shape: their size is checked.
        var state = before.method
        state.numbers["memory.imageShape"] = nil
        try a.method.restoreState(state)
        #expect(throws: AdaptationError("rotta: the batch has shape [2, 3, 16, 16]; its memory holds images of 3072 values (from earlier "
                                        + "batches or a restored state), and an update stacks them into one batch")) {
            try a.process(Tensor(shape: [2, 3, 16, 16], repeating: 0.5))
        }
    }

    // MARK: 4: source data

    /// EATA's Fisher pass takes the source batches as they are: wrong channels, no pixels, a storage that does not
    /// match the shape, another size than a ViT's, or NaN (a NaN Fisher term) are refused by name.
    @Test func eataRefusesSourceBatchesThatDoNotFitTheModel() throws {
        func make(_ batches: [Tensor], model: (any ImageClassifier)? = nil) throws -> Adaptor {
            try Adaptor(model: model ?? methodFixtureModel(), method: try MethodRegistry.make("eata", configuration: cifar, sourceBatches: batches),
                        seed: 1)
        }
        let good = Tensor(shape: [2, 3, 8, 8], repeating: 0.5)
        let expects = "wideresnet-16-1 expects (N, 3, H, W) with N, H, W ≥ 1"
        #expect(throws: AdaptationError("eata: source batch 0 has shape [2, 1, 8, 8]; \(expects)")) {
            try make([Tensor(shape: [2, 1, 8, 8], repeating: 0.5)])
        }
        #expect(throws: AdaptationError("eata: source batch 1 has shape [2, 3, 0, 8]; \(expects)")) {
            try make([good, Tensor(shape: [2, 3, 0, 8])])
        }
        var torn = good
        torn.shape[0] = 3
        #expect(throws: AdaptationError("eata: source batch 0 has shape [3, 3, 8, 8] but holds 384 values; that shape needs 576")) {
            try make([torn])
        }
        var nan = good
        nan.storage[5] = .nan
        #expect(throws: AdaptationError("eata: source batch 1 contains NaN or infinity; the Fisher information needs finite pixels")) {
            try make([good, nan])
        }
        let vit = VisionTransformer(ViTConfiguration(imageSize: 8, patchSize: 4, dim: 8, depth: 1, heads: 2, numClasses: 3))
        #expect(throws: AdaptationError("eata: source batch 0 has 16×16 images; \(vit.architecture) expects 8×8")) {
            try make([Tensor(shape: [2, 3, 16, 16], repeating: 0.5)], model: vit)
        }
        _ = try make([good])
    }

    /// RMT's prototypes, warm-up and replay take the source images as they are: the same checks, when it is
    /// configured; a source batch whose storage does not match its shape is refused when the sampler is made.
    @Test func rmtRefusesSourceDataThatDoesNotFitTheModel() throws {
        var c = cifar
        c.rmtWarmupSamples = 0
        func make(_ images: Tensor, model: (any ImageClassifier)? = nil) throws -> Adaptor {
            try Adaptor(model: model ?? methodFixtureModel(),
                        method: try MethodRegistry.make("rmt", configuration: c, augment: identity, sourceBatches: [images],
                                                        sourceLabels: [(0..<images.shape[0]).map { $0 % 3 }]),
                        seed: 1)
        }
        let expects = "wideresnet-16-1 expects (N, 3, H, W) with N, H, W ≥ 1"
        #expect(throws: AdaptationError("rmt: the source data has shape [4, 1, 32, 32]; \(expects)")) {
            try make(Tensor(shape: [4, 1, 32, 32], repeating: 0.5))
        }
        #expect(throws: AdaptationError("rmt: the source data has shape [4, 3, 0, 0]; \(expects)")) { try make(Tensor(shape: [4, 3, 0, 0])) }
        var nan = Tensor(shape: [4, 3, 32, 32], repeating: 0.5)
        nan.storage[100] = .nan
        #expect(throws: AdaptationError("rmt: the source images contain NaN or infinity; its prototypes, warm-up and replay need finite pixels")) {
            try make(nan)
        }
        var torn = Tensor(shape: [4, 3, 32, 32], repeating: 0.5)
        torn.storage.removeLast()
        #expect(throws: AdaptationError("source data: batch 0 has shape [4, 3, 32, 32] but holds 12287 values")) { try make(torn) }
        let vit = VisionTransformer(ViTConfiguration(imageSize: 8, patchSize: 4, dim: 8, depth: 1, heads: 2, numClasses: 3))
        #expect(throws: AdaptationError("rmt: the source data has 16×16 images; \(vit.architecture) expects 8×8")) {
            try make(Tensor(shape: [4, 3, 16, 16], repeating: 0.5), model: vit)
        }
    }

    // MARK: 5: RoTTA's saved memory

    /// Ages that are not counts (`Int(NaN)` trapped), uncertainties that are not finite, images of the wrong size
    /// (which trapped at the next update), a shape for another model and more images than the memory holds are
    /// refused, naming the state key; nothing changes.
    @Test func rottaRefusesSavedMemoriesThatDoNotFit() throws {
        var c = cifar
        (c.rottaMemorySize, c.rottaUpdateFrequency) = (16, 1000)
        let a = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("rotta", configuration: c), seed: 1)
        _ = try a.adapt(try methodFixtureStream()[0])
        let saved = a.method.captureState()
        let k = try #require((0..<10).first { saved.numbers["memory.\($0).age"] != nil })
        let empty = try #require((0..<10).first { saved.numbers["memory.\($0).age"] == nil })
        let (ageKey, uncertaintyKey, imagesKey) = ("memory.\(k).age", "memory.\(k).uncertainty", "memory.\(k).images")
        let n = saved.numbers[ageKey]!.count
        #expect(saved.numbers["memory.imageShape"] == [3, 32, 32])
        func refused(_ message: String, _ edit: (inout MethodState) -> Void) {
            var s = saved
            edit(&s)
            #expect(throws: AdaptationError(message)) { try a.method.restoreState(s) }
            #expect(a.method.captureState() == saved)
        }
        let ages: [(Double, String)] = [(.nan, "nan"), (1e30, "1e+30"), (-1, "-1.0"), (2.5, "2.5"), (.infinity, "inf")]
        for (age, text) in ages {
            refused("rotta: state '\(ageKey)' holds \(text); expected ages that are non-negative whole counts") { $0.numbers[ageKey]![0] = age }
        }
        refused("rotta: state '\(uncertaintyKey)' holds inf; expected finite uncertainties") { $0.numbers[uncertaintyKey]![0] = .infinity }
        refused("rotta: state '\(ageKey)' has \(n + 1) values and '\(uncertaintyKey)' \(n); expected one age and one uncertainty per memory image") {
            $0.numbers[ageKey]!.append(0)
        }
        refused("rotta: state '\(imagesKey)' holds \(n * 3072 - 3) values for \(n) memory image(s); expected images of 3·32·32 = 3072 values "
                + "each, as 'memory.imageShape' says") {
            $0.tensors[imagesKey]!.removeLast(3)
        }
        refused("rotta: state '\(imagesKey)' holds \(n * 5) values for \(n) memory image(s); expected images of C·H·W values each (C = 3)") {
            $0.numbers["memory.imageShape"] = nil
            $0.tensors[imagesKey] = [Float](repeating: 0, count: n * 5)
        }
        refused("rotta: state 'memory.imageShape' is [1.0, 32.0, 32.0]; expected the (C, H, W) of the memory's images, with C = 3") {
            $0.numbers["memory.imageShape"] = [1, 32, 32]
        }
        let stored = (0..<10).reduce(0) { $0 + (saved.numbers["memory.\($1).age"]?.count ?? 0) }
        refused("rotta: the saved memory holds \(stored + 20) images; its capacity (rotta-memory-size) is 16") {
            $0.numbers["memory.\(empty).age"] = [Double](repeating: 0, count: 20)
            $0.numbers["memory.\(empty).uncertainty"] = [Double](repeating: 0, count: 20)
            $0.tensors["memory.\(empty).images"] = [Float](repeating: 0, count: 20 * 3072)
        }
        try a.method.restoreState(saved)
        #expect(a.method.captureState() == saved)
    }

    // MARK: 6: RMT's cache

    /// A cached warm-up or prototype entry that does not fit (a step count that is NaN, huge, negative or
    /// fractional; an Adam buffer of the wrong length or for a parameter it does not update; NaN; a tensor whose
    /// storage does not match its shape) is a cache miss: recomputed, giving the uncached run's state, not a trap.
    @Test func badRMTCacheEntriesAreRecomputed() throws {
        let configuration = rmtFixtureConfiguration("rmt")
        func run(_ cache: MemoryCache) throws -> (Adaptor, RMTMethod) {
            let method = try RMTMethod(configuration, augment: horizontalFlip, source: try rmtFixtureSource(), cache: cache)
            return (try Adaptor(model: try methodFixtureModel(), method: method, seed: 1), method)
        }
        let pristine = MemoryCache()
        let (reference, referenceMethod) = try run(pristine)
        #expect(referenceMethod.warmupStepsRun == 2 && pristine.items.count == 2)
        let warmupKey = try #require(pristine.items.keys.first { $0.hasPrefix("rmt-warmup") })
        let prototypesKey = try #require(pristine.items.keys.first { $0.hasPrefix("rmt-prototypes") })
        let saved = try #require(pristine.items[warmupKey])
        let moment = try #require(saved.keys.filter { $0.hasPrefix("optimizer.m.") }.sorted().first)
        let weight = try #require(saved.keys.filter { $0.hasPrefix("model.") }.sorted().first)

        var entries: [(String, [String: Tensor])] = []
        for step: Float in [.nan, 1e30, -1, 2.5, .infinity] {
            var e = saved
            e["optimizer.step"] = Tensor(shape: [1], storage: [step])
            entries.append(("step \(step)", e))
        }
        var e = saved
        e[moment] = Tensor(shape: [saved[moment]!.count - 1], storage: Array(saved[moment]!.storage.dropLast()))
        entries.append(("short Adam buffer", e))
        e = saved
        e["optimizer.m.999999"] = Tensor(shape: [1], storage: [0])
        entries.append(("buffer of no parameter", e))
        e = saved
        e[moment]!.storage[0] = .nan
        entries.append(("NaN Adam buffer", e))
        e = saved
        e[weight]!.storage[0] = .nan
        entries.append(("NaN weight", e))
        e = saved
        e[weight]!.storage.removeLast()
        entries.append(("weight storage not matching its shape", e))
        for (label, entry) in entries {
            let cache = MemoryCache()
            cache.items = pristine.items
            cache.items[warmupKey] = entry
            let (adaptor, method) = try run(cache)
            #expect(method.warmupStepsRun == 2, "\(label): the warm-up was not recomputed")
            #expect(adaptor.model.store.snapshot() == reference.model.store.snapshot(), "\(label)")
        }

        let edits: [(inout Tensor) -> Void] = [{ $0.storage[3] = .nan }, { _ = $0.storage.removeLast() }]
        for edit in edits {
            let cache = MemoryCache()
            cache.items = pristine.items
            edit(&cache.items[prototypesKey]!["prototypes"]!)
            let (_, method) = try run(cache)
            #expect(method.prototypes == referenceMethod.prototypes)
            #expect(cache.items[prototypesKey]?["prototypes"] == referenceMethod.prototypes, "the recomputed prototypes are stored again")
        }
    }

    // MARK: 7: EATA's saved probability average

    /// `meanProbabilities` is one finite value per class: a shorter one used to be truncated silently by the
    /// redundancy filter's cosine similarity. RDumb's ETA likewise, and ROID's average.
    @Test func savedProbabilityAveragesMustHaveOneFiniteValuePerClass() throws {
        let eta = try adaptor("eta")
        var s = eta.method.captureState()
        s.numbers["meanProbabilities"] = [0.5, 0.5]
        #expect(throws: AdaptationError("eta: state 'meanProbabilities' holds 2 values; expected 10 finite values, one per class")) {
            try eta.method.restoreState(s)
        }
        s.numbers["meanProbabilities"] = [Double](repeating: 0.1, count: 9) + [.nan]
        #expect(throws: AdaptationError("eta: state 'meanProbabilities' holds 10 values, not all finite; expected 10 finite values, one per class")) {
            try eta.method.restoreState(s)
        }
        s.numbers["meanProbabilities"] = [Double](repeating: 0.1, count: 10)
        try eta.method.restoreState(s)
        #expect((eta.method as? EATAMethod)?.meanProbabilities == [Double](repeating: 0.1, count: 10))

        let rdumb = try adaptor("rdumb")
        var r = rdumb.method.captureState()
        r.numbers["eta.meanProbabilities"] = [0.5, 0.5]
        #expect(throws: AdaptationError("eta: state 'meanProbabilities' holds 2 values; expected 10 finite values, one per class")) {
            try rdumb.method.restoreState(r)
        }

        let roid = try adaptor("roid")
        var o = roid.method.captureState()
        o.numbers["classProbabilities"]![0] = .nan
        #expect(throws: AdaptationError("roid: state 'classProbabilities' is missing or not 10 finite values")) { try roid.method.restoreState(o) }
    }

    // MARK: 8, 9: configuration

    /// Settings are checked after their conversion to Float (`--momentum 1e39` is infinity); weight decay and
    /// dampening are checked at all; LAME's rbf affinity needs k ≥ 2.
    @Test func optimizerSettingsAndLAMENeighboursAreValidated() throws {
        let huge = 1e39   // a Double: `--momentum 1e39` as the CLI reads it
        let cases: [((inout MethodConfiguration) -> Void, String)] = [
            ({ $0.momentum = Float(huge) }, "momentum must be a non-negative number, got inf"),
            ({ $0.momentum = .nan }, "momentum must be a non-negative number, got nan"),
            ({ $0.weightDecay = .nan }, "weight-decay must be a non-negative number, got nan"),
            ({ $0.weightDecay = -1 }, "weight-decay must be a non-negative number, got -1.0"),
            ({ $0.weightDecay = Float(huge) }, "weight-decay must be a non-negative number, got inf"),
            ({ $0.dampening = 2 }, "dampening must be in [0, 1], got 2.0"),
            ({ $0.dampening = -0.5 }, "dampening must be in [0, 1], got -0.5"),
            ({ $0.dampening = .nan }, "dampening must be in [0, 1], got nan"),
            ({ $0.lameNeighbours = 1 }, "lame-neighbours must be at least 2 with the rbf affinity, got 1: each point is its own nearest "
                + "neighbour, so σ would be 0 and the affinity NaN (the reference's rbf_affinity divides by zero there)"),
        ]
        for (edit, message) in cases {
            var c = cifar
            edit(&c)
            let broken = c
            #expect(throws: AdaptationError(message)) { try broken.validate() }
            #expect(throws: AdaptationError(message)) { try MethodRegistry.make("tent", configuration: broken) }
        }
        var knn = cifar
        (knn.lameAffinity, knn.lameNeighbours) = (.knn, 1)
        try knn.validate()
        var damped = cifar
        (damped.optimizer, damped.dampening, damped.weightDecay) = (.sgd, 1, 0.5)
        try damped.validate()
    }

    // MARK: 10: num_batches_tracked

    /// A `num_batches_tracked` at Int64.max saturates instead of trapping on `+ 1`.
    @Test func batchNormCounterSaturates() throws {
        let model = try methodFixtureModel()
        model.setBatchNormMode(.batchStatisticsUpdatingRunning)
        for name in model.store.counterNames { model.store.counters[name] = .max }
        let out = model.forward(try methodFixtureStream()[0], .inference)
        #expect(out.isFinite)
        #expect(model.store.counterNames.allSatisfy { model.store.counters[$0] == .max })
    }

    // MARK: 11: input normalisation

    /// An input normalisation with another channel count than the model (which indexed out of range), or a
    /// standard deviation of 0 (infinite inputs), is refused when the adaptor is made and at each batch.
    @Test func inputNormalisationsThatDoNotFitTheModelAreRefused() throws {
        let prefix = "input normalisation of wideresnet-16-1: "
        let model = try methodFixtureModel()
        model.inputNormalization = ([0.5], [0.5])
        #expect(throws: AdaptationError(prefix + "1 mean(s) and 1 standard deviation(s) for 3 input channel(s); expected one of each per channel")) {
            try Adaptor(model: model, method: try MethodRegistry.make("tent", configuration: cifar), seed: 1)
        }
        let a = try adaptor("tent")
        let x = try methodFixtureStream()[0]
        let tiny = Float.leastNonzeroMagnitude   // positive, but 1/tiny is infinite
        let cases: [((mean: [Float], std: [Float]), String)] = [
            (([0, 0, 0], [1, 1]), "3 mean(s) and 2 standard deviation(s) for 3 input channel(s); expected one of each per channel"),
            (([0, 0, 0], [1, 0, 1]), "the standard deviation of channel 1 is 0.0; expected a positive finite number with a finite reciprocal "
                + "(the input is divided by it)"),
            (([0, 0, 0], [tiny, 1, 1]), "the standard deviation of channel 0 is \(tiny); expected a positive finite number with a finite "
                + "reciprocal (the input is divided by it)"),
            (([0, 0, 0], [1, 1, -2]), "the standard deviation of channel 2 is -2.0; expected a positive finite number with a finite "
                + "reciprocal (the input is divided by it)"),
            (([0, 0, .nan], [1, 1, 1]), "the mean of channel 2 is nan; expected a finite number"),
        ]
        let before = a.captureState()
        for (normalization, message) in cases {
            a.model.inputNormalization = normalization
            #expect(throws: AdaptationError(prefix + message)) { try a.adapt(x) }
        }
        #expect(a.captureState() == before)
        a.model.inputNormalization = ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
        #expect(try a.adapt(x).isFinite)
    }
}
