import Testing
import TTAAdaptation
import TTAModels
import TTATensor
import TTATestSupport

/// Single-image streams through the adaptor's sliding window (the reference's `TEST.WINDOW_LENGTH`).
@Suite struct SlidingWindowTests {
    /// The fixture stream as 32 single images.
    func singleImages() throws -> [Tensor] {
        let x = try fixture("methods/stream.safetensors").tensor("x")
        return (0..<x.shape[0]).map { x.slice($0..<($0 + 1)) }
    }

    /// Each image's output against PyTorch, window of 3: predictions with the buffer between updates,
    /// an update on the whole buffer at every third image. norm_ema's predictions between updates move its
    /// running statistics too (the reference's EMA BatchNorm does on every call): its final BN state is compared.
    /// Golden: `window_cases()` (with `sliding_window`) in scripts/make_method_fixtures.py.
    @Test(arguments: ["tent", "norm_test", "norm_ema"])
    func matchesPyTorchImageByImage(_ name: String) throws {
        let expected = try fixture("methods/window_\(name).safetensors")
        let window = try #require(Int(expected.metadata["window"] ?? ""))
        let adaptor = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make(name, configuration: .defaults(for: .cifar)), seed: 1, windowLength: window)
        var outcomes: [Adaptor.Outcome] = []
        for (i, x) in try singleImages().enumerated() {
            let r = try adaptor.process(x)
            outcomes.append(r.outcome)
            expectClose(try #require(r.output), try expected.tensor("image\(i)"), "\(name) image \(i)")
        }
        // Updates at every window-th image only.
        let updated = outcomes.enumerated().filter { $0.element == .adapted }.map(\.offset)
        #expect(updated == Array(stride(from: window - 1, to: 32, by: window)))
        #expect(outcomes.filter { $0 == .windowed }.count == 32 - updated.count)
        if name == "norm_ema" {
            let finals = expected.names.filter { $0.hasPrefix("final.") && $0.contains("running") }
            #expect(finals.count == 2 * adaptor.model.batchNorms.count)
            for key in finals {
                let p = String(key.dropFirst("final.".count))
                expectClose(try #require(adaptor.model.store.tensor(p)), try expected.tensor(key), "final \(p)")
            }
        }
    }

    /// RoTTA between updates: the student on the new image alone (the reference's `has_bn` is false once robust BNs
    /// replace the BNs), in the mode the reference leaves it in: train before the first step and after a step that
    /// updated, when its robust BNs mix in the image's statistics and keep them; eval after a step that did not. With
    /// a window of 3 and an update every 6 images, every second window ends in an update. The images the memory took at
    /// window steps are views of the window's buffer, which is written in place (a quirk of the reference, reproduced):
    /// at an update they are what the buffer holds. The outputs, the student's final BN state and the memory are compared.
    /// Golden: `window_rotta()` (with `rotta_learner` and `sliding_window(..., has_bn=False)`) in scripts/make_method_fixtures.py.
    @Test func rottaPredictsTheImageAloneInTheStudentsMode() throws {
        let expected = try fixture("methods/window_rotta.safetensors")
        let window = try #require(Int(expected.metadata["window"] ?? ""))
        let (method, config) = fixtureConfiguration("rotta")
        #expect(window == 3 && config.rottaUpdateFrequency == 6)
        let model = try confidentFixtureModel()
        calibrateRunningStatistics(model, on: try fixture("methods/stream.safetensors").tensor("x"))
        let adaptor = try Adaptor(model: model, method: try MethodRegistry.make(method, configuration: config, augment: horizontalFlip),
                                  seed: 1, windowLength: window)
        let rotta = try #require(adaptor.method as? RoTTAMethod)
        var modes: [Bool] = []
        for (i, x) in try singleImages().enumerated() {
            let r = try adaptor.process(x)
            modes.append(rotta.studentInTrainMode)
            expectClose(try #require(r.output), try expected.tensor("image\(i)"), "rotta image \(i)")
        }
        // Train mode after images 0-1 (fresh), 5-7 (the update at image 5), 11-13, …; eval after 2-4, 8-10, ….
        #expect(modes == (0..<32).map { ($0 + 1) / 3 % 2 == 0 })
        try expectBatchNormState(model, expected, prefix: "final.", "rotta final")
        #expect(rotta.memory.classes.map { Float($0.count) } == (try expected.tensor("memory_counts").storage))
        // The student's mode is part of the method's state: a restored state predicts as the original.
        let saved = rotta.captureState()
        #expect(saved.numbers["studentInTrainMode"] == [1])
        let other = RoTTAMethod(config, augment: horizontalFlip)
        try other.configure(try confidentFixtureModel())
        var eval = saved
        eval.numbers["studentInTrainMode"] = [0]
        try other.restoreState(eval)
        #expect(!other.studentInTrainMode)
        try other.restoreState(saved)
        #expect(other.studentInTrainMode)
        // So are the memory's views of the window buffer (the images it took at window steps): restored as saved.
        #expect(other.memory == rotta.memory)
        let slotKey = try #require(saved.numbers.keys.filter { $0.hasSuffix(".windowSlot") }.sorted().first)
        #expect(saved.numbers[slotKey]!.allSatisfy { $0 >= 0 && $0 < Double(window) })
        var badSlot = saved
        badSlot.numbers[slotKey]![0] = 1.5
        #expect(throws: AdaptationError("rotta: state '\(slotKey)' holds 1.5; expected window slots (whole, from 0) or −1 for none")) {
            try other.restoreState(badSlot)
        }
        var bad = saved
        bad.numbers["studentInTrainMode"] = [0.5]
        #expect(throws: AdaptationError("rotta: state 'studentInTrainMode' is [0.5]; expected [0] or [1]")) { try other.restoreState(bad) }
        #expect(other.studentInTrainMode)
    }

    /// UnMix-TNS under a window: its layers are not BatchNorm layers to the reference's window (`has_bn`), so between
    /// updates the new image is predicted alone and moves the components by itself; an update is on the whole buffer.
    /// TENT (SGD, lr 0.01) on 4 components at the single-image stream's batch size 1. The outputs, the final component
    /// means and the trained parameters are compared.
    /// Golden: `window_tent_unmix_tns()` (with `sliding_window(..., has_bn=False)`) in scripts/make_method_fixtures.py.
    @Test func unmixTNSPredictsTheImageAlone() throws {
        let expected = try fixture("methods/window_tent_unmix_tns.safetensors")
        let window = try #require(Int(expected.metadata["window"] ?? ""))
        var c = MethodConfiguration.defaults(for: .cifar)
        c.unmixComponents = 4; c.unmixBatchSizeMax = 64; c.batchSize = 1; c.optimizer = .sgd; c.lr = 0.01
        let model = try methodFixtureModel()
        let adaptor = try Adaptor(model: model, method: try MethodRegistry.make("tent+unmix_tns", configuration: c), seed: 1,
                                  windowLength: window)
        let unmix = try #require(adaptor.method as? UnMixTNSMethod)
        #expect(!unmix.predictsWithTheWindow)
        unmix.initialMeans = try model.batchNorms.map { try expected.tensor("init.\($0.name)").storage }
        for (i, x) in try singleImages().enumerated() {
            let r = try adaptor.process(x)
            #expect(r.outcome == (i % window == window - 1 ? .adapted : .windowed))
            expectClose(try #require(r.output), try expected.tensor("image\(i)"), "tent+unmix_tns image \(i)")
        }
        for (bn, layer) in zip(model.batchNorms, unmix.layers) {
            expectClose(layer.means, try expected.tensor("final.\(bn.name)").storage, "\(bn.name) means")
            for p in ["weight", "bias"] {
                expectClose(try #require(model.store.tensor("\(bn.name).\(p)")), try expected.tensor("final.\(bn.name).\(p)"),
                            "\(bn.name).\(p)")
            }
        }
    }

    /// Between updates RMT shows its student's plus its teacher's prediction of the window, as its step does (the
    /// reference's `forward_sliding_window` override). Before the first update the teacher is the student: twice the
    /// student's logits.
    @Test func rmtPredictsWithStudentAndTeacher() throws {
        var c = MethodConfiguration.defaults(for: .cifar)
        c.rmtWarmupSamples = 0
        let images = try singleImages()
        let source = Tensor(shape: [10] + images[0].shape.dropFirst(), storage: images[8..<18].flatMap(\.storage))
        let adaptor = try Adaptor(model: try methodFixtureModel(),
                                  method: try MethodRegistry.make("rmt", configuration: c, augment: { x, _ in x }, sourceBatches: [source],
                                                                  sourceLabels: [Array(0..<10)]),
                                  seed: 1, windowLength: 4)
        let student = adaptor.model.copy()
        _ = try adaptor.process(images[0])
        let r = try adaptor.process(images[1])
        #expect(r.outcome == .windowed)
        let buffer = Tensor(shape: [2] + images[0].shape.dropFirst(), storage: images[0].storage + images[1].storage)
        let single = student.forward(buffer, .inference).slice(1..<2)
        expectClose(try #require(r.output), Tensor(shape: single.shape, storage: single.storage.map { 2 * $0 }), tolerance: 1e-6, "window row 1")
    }

    /// Between updates CoTTA shows its teacher's prediction of the window (the reference's
    /// `forward_sliding_window` override), not the student's.
    @Test func cottaPredictsWithTheTeacher() throws {
        var c = MethodConfiguration.defaults(for: .cifar)
        c.augmentations = 2
        let adaptor = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("cotta", configuration: c,
                                  augment: { x, _ in x }), seed: 1, windowLength: 4)
        let images = try singleImages()
        for x in images.prefix(5) { _ = try adaptor.process(x) }   // one update (image 4), then image 5 in slot 0
        let cotta = try #require(adaptor.method as? CoTTAMethod)
        let teacher = try #require(cotta.teacher)
        // Image 6 goes into slot 1 of the buffer [5, 6, 3, 4].
        let buffer = Tensor(shape: [4] + images[0].shape.dropFirst(),
                            storage: images[4].storage + images[5].storage + images[2].storage + images[3].storage)
        let expectedRow = teacher.forward(buffer, .inference).slice(1..<2)
        let student = adaptor.model.forward(buffer, .inference).slice(1..<2)
        let r = try adaptor.process(images[5])
        #expect(r.outcome == .windowed)
        #expect(try #require(r.output).storage == expectedRow.storage)
        #expect(student.storage != expectedRow.storage)
    }

    /// A state captured mid-window continues bit for bit in a fresh adaptor; batches of several images
    /// are not windowed.
    @Test func stateCarriesTheWindow() throws {
        let images = try singleImages()
        let a = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("tent", configuration: .defaults(for: .cifar)), seed: 1, windowLength: 3)
        for x in images.prefix(7) { _ = try a.process(x) }
        let saved = a.captureState()
        #expect(saved.window?.shape == [3, 3, 32, 32] && saved.windowPointer == 1)
        let b = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("tent", configuration: .defaults(for: .cifar)), seed: 1, windowLength: 3)
        try b.restoreState(saved)
        for x in images[7..<13] {
            #expect(try a.adapt(x).storage == b.adapt(x).storage)
        }
        // An image of another size than the window's is refused by name, and the window is kept.
        let small = Tensor(shape: [1, 3, 16, 16], storage: Array(images[0].storage.prefix(3 * 16 * 16)))
        let kept = a.captureState()
        #expect(throws: AdaptationError("image of shape [3, 16, 16] for a sliding window of [3, 32, 32] images")) { try a.process(small) }
        #expect(a.captureState().window == kept.window && a.captureState().windowPointer == kept.windowPointer)
        let c = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("tent", configuration: .defaults(for: .cifar)), seed: 1, windowLength: 2)
        // A 3-image window does not fit W = 2.
        #expect(throws: AdaptationError("the saved sliding window has shape [3, 3, 32, 32] and slot 1; this adaptor's window holds up to 2 "
                                        + "images of 3 channels, and while it fills the slot is the number of images in it")) {
            try c.restoreState(saved)
        }

        let batch = try fixture("methods/stream.safetensors").tensor("x").slice(0..<8)
        let plain = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("tent", configuration: .defaults(for: .cifar)), seed: 1)
        let windowed = try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("tent", configuration: .defaults(for: .cifar)), seed: 1, windowLength: 3)
        #expect(try plain.adapt(batch).storage == windowed.adapt(batch).storage)
        #expect(throws: AdaptationError("window length 0: expected at least 1")) {
            try Adaptor(model: try methodFixtureModel(), method: try MethodRegistry.make("tent", configuration: .defaults(for: .cifar)), seed: 1, windowLength: 0)
        }
    }
}
