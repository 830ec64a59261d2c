import Testing
@testable import TTAAdaptation
import TTAModels
import TTATensor

/// Batch statistics need more than one value per channel in every BN (PyTorch: "Expected more than 1
/// value per channel when training"). A batch that gives fewer is refused by name before any layer
/// runs, instead of trapping in `BatchNorm2d`.
@Suite struct BatchStatisticsLimitTests {
    /// The fixture model (a WRN-16-1) on `n` images of `side × side`, as the stream's images tiled.
    func images(_ n: Int, side: Int) throws -> Tensor {
        let x = try methodFixtureStream()[0]
        var storage: [Float] = []
        for i in 0..<n {
            for c in 0..<3 {
                for r in 0..<side { for col in 0..<side { storage.append(x.storage[((i % 8) * 3 + c) * 1024 + r * 32 + col]) } }
            }
        }
        return Tensor(shape: [n, 3, side, side], storage: storage)
    }

    /// The smallest BN map of each model: WideResNet and ResNeXt halve twice, ResNet-50 five times.
    @Test func modelsKnowTheirSmallestBatchNormMap() throws {
        let wrn = try methodFixtureModel()
        #expect(wrn.batchNormValuesPerImage(height: 32, width: 32) == 64)
        #expect(wrn.batchNormValuesPerImage(height: 4, width: 4) == 1)
        #expect(wrn.batchNormValuesPerImage(height: 5, width: 4) == 2)   // 5 → 3 → 2
        #expect(WideResNet(depth: 10, widenFactor: 1, numClasses: 10).batchNormHalvings == 2)
        #expect(ResNet(blocks: [1, 1, 1, 1], baseWidth: 8, numClasses: 10).batchNormHalvings == 5)
        #expect(ResNet(blocks: [1, 1, 1, 1], baseWidth: 8, numClasses: 10).batchNormValuesPerImage(height: 32, width: 32) == 1)
        #expect(ResNeXt(depth: 11, cardinality: 2, baseWidth: 32, stemWidth: 8, numClasses: 10).batchNormHalvings == 2)
    }

    /// TENT (and every batch-statistics method) refuses one 4×4 image, whose last BN map is 1×1, and takes
    /// two; methods that keep the running or per-sample statistics take one; a sliding window's first
    /// image is refused likewise.
    @Test(arguments: ["tent", "norm_test", "norm_alpha", "norm_ema", "cotta", "eta", "sar", "rdumb"])
    func oneImageWithASingleValuePerChannelIsRefused(_ name: String) throws {
        let c = MethodConfiguration.defaults(for: .cifar)
        let adaptor = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make(name, configuration: c, augment: { x, _ in x }),
                                  seed: 1)
        #expect(adaptor.smallestBatch(height: 4, width: 4) == 2 && adaptor.smallestBatch(height: 32, width: 32) == 1)
        let before = adaptor.model.store.snapshot()
        let refusal = AdaptationError("\(name) normalises with the statistics of the batch: one 4×4 image leaves wideresnet-16-1's "
                                      + "smallest BatchNorm feature map a single value per channel (PyTorch refuses it too: "
                                      + "\"Expected more than 1 value per channel when training\"): give batches of at least 2 images, "
                                      + "or larger images")
        #expect(throws: refusal) {
            try adaptor.process(try images(1, side: 4))
        }
        #expect(adaptor.model.store.snapshot() == before)
        _ = try adaptor.process(try images(2, side: 4))
        _ = try adaptor.process(try images(1, side: 5))
        let windowed = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make(name, configuration: c, augment: { x, _ in x }),
                                   seed: 1, windowLength: 3)
        // The same check, made before the image goes into the window.
        #expect(throws: refusal) { try windowed.process(try images(1, side: 4)) }
    }

    /// ROID's augmented pass runs on the images its certainty filter keeps: one of two 4×4 images (1×1 at the
    /// last BN) is an error naming the cause, not a trap, raised before the method's state changes; under
    /// UnMix-TNS (per-sample statistics) the same batch adapts.
    @Test func roidRefusesOneKeptImageWithASingleValuePerChannel() throws {
        let adaptor = try Adaptor(model: try methodFixtureModel(),
                                  method: try MethodRegistry.make("roid", configuration: .defaults(for: .cifar), augment: { x, _ in x }), seed: 1)
        let before = adaptor.method.captureState()
        let error = #expect(throws: AdaptationError.self) { try adaptor.process(try images(2, side: 4)) }
        #expect(error?.message == "roid: the augmented view of the 1 image(s) its certainty filter kept: one 4×4 image leaves "
                + "wideresnet-16-1's smallest BatchNorm feature map a single value per channel (PyTorch refuses it too: "
                + "\"Expected more than 1 value per channel when training\")")
        #expect(adaptor.method.captureState() == before)
        _ = try adaptor.process(try images(2, side: 5))
        let unmix = try Adaptor(model: try methodFixtureModel(),
                                method: try MethodRegistry.make("roid+unmix_tns", configuration: .defaults(for: .cifar), augment: { x, _ in x }),
                                seed: 1)
        #expect(try unmix.adapt(try images(2, side: 4)).isFinite)
    }

    /// Source batches are normalised with their own statistics too: EATA's Fisher pass and RMT's prototypes,
    /// warm-up and replay refuse, when configured, a one-image source batch (RMT: the remainder of a pass) of
    /// 4×4 images.
    @Test func oneImageSourceBatchesAreRefused() throws {
        let c = MethodConfiguration.defaults(for: .cifar)
        let message = ": one 4×4 image leaves wideresnet-16-1's smallest BatchNorm feature map a single value per channel "
            + "(PyTorch refuses it too: \"Expected more than 1 value per channel when training\")"
        #expect(throws: AdaptationError("eata: a source batch for the Fisher information" + message)) {
            try Adaptor(model: try methodFixtureModel(),
                        method: try MethodRegistry.make("eata", configuration: c, sourceBatches: [try images(2, side: 4), try images(1, side: 4)]), seed: 1)
        }
        #expect(throws: AdaptationError("rmt: a source batch" + message)) {
            try Adaptor(model: try methodFixtureModel(),
                        method: try MethodRegistry.make("rmt", configuration: c, augment: { x, _ in x },
                                                        sourceBatches: [try images(2, side: 4), try images(1, side: 4)], sourceLabels: [[0, 1], [2]]),
                        seed: 1)
        }
        _ = try Adaptor(model: try methodFixtureModel(),
                        method: try MethodRegistry.make("eata", configuration: c, sourceBatches: [try images(2, side: 4)]), seed: 1)
    }

    /// RoTTA's robust BN takes one value per channel (biased variance, as the reference's RobustBN): a memory of
    /// one 4×4 image updated after every image.
    @Test func rottaUpdatesOnAOneImageMemory() throws {
        var c = MethodConfiguration.defaults(for: .cifar)
        c.rottaMemorySize = 1; c.rottaUpdateFrequency = 1
        let adaptor = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("rotta", configuration: c, augment: { x, _ in x }),
                                  seed: 1)
        let before = adaptor.model.store.snapshot()
        for _ in 0..<2 { #expect(try adaptor.adapt(try images(1, side: 4)).isFinite) }
        #expect(adaptor.model.store.snapshot() != before)
    }

    @Test(arguments: ["source", "lame", "rotta", "unmix_tns", "tent+unmix_tns"])
    func methodsWithoutBatchStatisticsTakeOneImage(_ name: String) throws {
        var c = MethodConfiguration.defaults(for: .cifar)
        c.rottaMemorySize = 16; c.rottaUpdateFrequency = 8
        let adaptor = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make(name, configuration: c, augment: { x, _ in x }),
                                  seed: 1)
        #expect(adaptor.smallestBatch(height: 4, width: 4) == 1)
        let out = try adaptor.adapt(try images(1, side: 4))
        #expect(out.shape == [1, 10] && out.isFinite)
    }

    /// A saved sliding window whose slot does not follow its fill, or a slot without a window, is refused.
    @Test func inconsistentWindowStatesAreRefused() throws {
        let a = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("tent", configuration: .defaults(for: .cifar)),
                            seed: 1, windowLength: 4)
        for x in try images(2, side: 32).split() { _ = try a.process(x) }
        var state = a.captureState()
        #expect(state.window?.shape[0] == 2 && state.windowPointer == 2)
        state.windowPointer = 3   // two images in the window: the next slot is 2
        #expect(throws: AdaptationError("the saved sliding window has shape [2, 3, 32, 32] and slot 3; this adaptor's window holds up to 4 "
                                        + "images of 3 channels, and while it fills the slot is the number of images in it")) {
            try a.restoreState(state)
        }
        state.window = nil
        #expect(throws: AdaptationError("the saved state has sliding-window slot 3 but no window")) { try a.restoreState(state) }
        state.windowPointer = 0
        try a.restoreState(state)
    }
}

private extension Tensor {
    /// The images of a batch, one tensor each.
    func split() -> [Tensor] { (0..<shape[0]).map { slice($0..<($0 + 1)) } }
}
