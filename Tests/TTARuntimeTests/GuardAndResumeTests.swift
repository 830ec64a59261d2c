import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTAModels
import TTANN
import TTARuntime
import TTATensor
import TTATestSupport

/// Settings under which every registered method does real work on the tiny benchmark's 4-class random
/// model: CoTTA averages two augmentations every batch and restores 10% of the weights (both draw from
/// the generator); ETA/EATA/SAR keep every sample (margin 10·ln 4, no redundancy filter).
func busyConfiguration(_ method: String) -> MethodConfiguration {
    var c = MethodConfiguration.defaults(for: .cifar, method: method, numClasses: 4)
    c.augmentations = 2
    c.confidenceThreshold = 1
    c.restoreProbability = 0.1
    c.entropyMarginFactor = 10
    c.redundancyMargin = 1.5
    c.rmtWarmupSamples = 8          // RMT: two warm-up steps on the two source batches
    return c
}

/// Every registered method, built the way the runtime builds it, with two tiny seeded source batches
/// for the methods that need source data.
func makeAdaptor(_ method: String, configuration: MethodConfiguration? = nil, model: (any ImageClassifier)? = nil,
                 seed: UInt64 = 5) throws -> Adaptor {
    var g = SeededGenerator(seed: 11)
    let source = MethodRegistry.entry(method)!.needsSourceData
        ? (0..<2).map { _ in Tensor(shape: [4, 3, 8, 8], storage: (0..<(4 * 3 * 64)).map { _ in g.nextUniform() }) } : []
    let labels = source.map { _ in (0..<4).map { $0 % 4 } }
    let m = try MethodFactory.make(method, configuration: configuration ?? busyConfiguration(method), imageSize: 8,
                                   sourceBatches: source, sourceLabels: labels)
    return try Adaptor(model: model ?? TinyBenchmark.model(), method: m, seed: seed)
}

/// Bitwise equality of two adaptor states (`==` on floats would let −0 equal +0 and NaN differ from itself).
func sameBits(_ a: Adaptor.State, _ b: Adaptor.State) -> Bool {
    func bits(_ x: [Float]) -> [UInt32] { x.map(\.bitPattern) }
    return bits(a.model.values) == bits(b.model.values) && a.model.counters == b.model.counters && a.rng == b.rng
        && a.batchesSinceReset == b.batchesSinceReset && a.method.tensors.mapValues(bits) == b.method.tensors.mapValues(bits)
        && a.method.numbers.mapValues { $0.map(\.bitPattern) } == b.method.numbers.mapValues { $0.map(\.bitPattern) }
}

/// Two identical adaptors of `method` that have both adapted on the first batch of the tiny stream, and
/// the stream's first three batches.
func twoAdaptorsAfterOneBatch(_ method: String) throws -> (guarded: Adaptor, plain: Adaptor, batches: [StreamBatch]) {
    let tiny = try TinyBenchmark()
    let batches = try (0..<3).map { try tiny.stream(.continual).batch(at: $0) }
    let guarded = try makeAdaptor(method), plain = try makeAdaptor(method)
    for a in [guarded, plain] { _ = try a.process(batches[0].images) }
    return (guarded, plain, batches)
}

/// The guard of `Adaptor.process`: non-finite input refused, non-finite steps undone.
@Suite struct GuardTests {
    /// A batch with one NaN is refused before any work: model, method state, generator and counters are
    /// bit-identical afterwards, the runner scores all its samples wrong and reports it, and the next
    /// batch gives exactly what it gives without the bad batch in between.
    @Test(arguments: ["tent", "cotta", "norm_ema", "sar"])
    func nanBatchIsRejectedWithStateUnchanged(_ method: String) throws {
        let (guarded, plain, batches) = try twoAdaptorsAfterOneBatch(method)
        let before = guarded.captureState()
        var bad = batches[1]
        bad.images.storage[5] = .nan
        bad.images.storage[40] = .infinity
        let r = try guarded.process(bad.images)
        #expect(r.outcome == .rejectedInput && r.output == nil)
        #expect(sameBits(guarded.captureState(), before), "\(method): state changed by a rejected batch")
        #expect(guarded.rejectedBatches == 1 && guarded.rolledBackSteps == 0)
        #expect(throws: AdaptationError("the batch contains NaN or infinity; it was not used and the model is unchanged")) {
            try guarded.adapt(bad.images)
        }

        var progress = RunProgress(domainCount: 3, collapse: CollapsePolicy())
        _ = progress.record(bad, r)
        #expect(progress.stability.rejectedBatches == [2] && progress.stability.samplesWithoutPrediction == 4)
        #expect(progress.seen[0] == 4 && progress.correct[0] == 0 && progress.totalCorrect == 0)

        let next = try guarded.process(batches[2].images), reference = try plain.process(batches[2].images)
        #expect(next.outcome == .adapted)
        #expect(next.output!.storage.map(\.bitPattern) == reference.output!.storage.map(\.bitPattern))
        #expect(sameBits(guarded.captureState(), plain.captureState()))
    }

    /// A finite batch at the edge of float32 (pixels of ±3e38 alternating) overflows the first
    /// convolution, so outputs, loss, gradients and any updated statistics become NaN: for every method
    /// the step is undone bit for bit, and the adaptor goes on as if it had never seen the batch.
    @Test(arguments: MethodRegistry.names)
    func overflowingBatchIsRolledBack(_ method: String) throws {
        let (guarded, plain, batches) = try twoAdaptorsAfterOneBatch(method)
        let before = guarded.captureState()
        var huge = batches[1]
        huge.images.storage = huge.images.storage.indices.map { i in
            (i % 2 == 0 ? 3e38 : -3e38) * (0.5 + 0.5 * huge.images.storage[i])
        }
        #expect(huge.images.isFinite)
        let r = try guarded.process(huge.images)
        #expect(r.outcome == .rolledBack, "\(method): \(r.outcome)")
        #expect(guarded.rolledBackSteps == 1 && guarded.rejectedBatches == 0)
        #expect(sameBits(guarded.captureState(), before), "\(method): state changed by a rolled-back step")
        var progress = RunProgress(domainCount: 3, collapse: CollapsePolicy())
        _ = progress.record(huge, r)
        #expect(progress.stability.rolledBackBatches == [2])
        let nonFiniteRows = (0..<4).filter { i in !r.output!.storage[(i * 4)..<((i + 1) * 4)].allSatisfy(\.isFinite) }.count
        #expect(nonFiniteRows > 0 && progress.stability.samplesWithoutPrediction == nonFiniteRows)
        let next = try guarded.process(batches[2].images), reference = try plain.process(batches[2].images)
        #expect(next.output!.storage.map(\.bitPattern) == reference.output!.storage.map(\.bitPattern))
        #expect(sameBits(guarded.captureState(), plain.captureState()))
    }

    /// Under a sliding window, a prediction between updates that overflows (an image of ±3e38 pixels) and leaves NaN in
    /// what it moves, norm_ema's BN statistics or UnMix-TNS's components, is undone: model, method state and generator
    /// bit for bit as before. The image stays in the window. UnMix-TNS predicts the image alone and draws its components
    /// at the window's first prediction: when that one overflows, the draw is undone too, and the next image is
    /// predicted exactly as by an adaptor that never saw the bad one.
    @Test(arguments: ["norm_ema", "unmix_tns", "tent+unmix_tns"])
    func overflowingWindowPredictionIsRolledBack(_ method: String) throws {
        let images = try TinyBenchmark().stream(.continual).batch(at: 0).images
        func windowed() throws -> Adaptor {
            let m = try MethodFactory.make(method, configuration: busyConfiguration(method), imageSize: 8, sourceBatches: [], sourceLabels: [])
            return try Adaptor(model: TinyBenchmark.model(), method: m, seed: 5, windowLength: 4)
        }
        let first = images.slice(0..<1)
        var huge = images.slice(1..<2)
        huge.storage = huge.storage.indices.map { i in (i % 2 == 0 ? 3e38 : -3e38) * (0.5 + 0.5 * huge.storage[i]) }
        #expect(huge.isFinite)

        let a = try windowed()
        #expect(try a.process(first).outcome == .windowed)
        let before = a.captureState()
        #expect(try a.process(huge).outcome == .rolledBack, "\(method)")
        #expect(a.rolledBackSteps == 1)
        #expect(sameBits(a.captureState(), before), "\(method): state changed by a rolled-back prediction")
        #expect(a.captureState().windowPointer == 2, "the image stays in the window")

        guard method.hasSuffix("unmix_tns") else { return }
        let b = try windowed(), fresh = try windowed()
        #expect(try b.process(huge).outcome == .rolledBack)
        let r = try b.process(first), expected = try fresh.process(first)
        #expect(r.outcome == .windowed)
        #expect(try #require(r.output).storage.map(\.bitPattern) == (try #require(expected.output)).storage.map(\.bitPattern))
        #expect(sameBits(b.captureState(), fresh.captureState()))
    }

    /// A learning rate of 1e38 (SGD with an L2 term of 1e3: `lr·(∇ + 1e3·γ)` with γ = 1 is 1e41) takes
    /// TENT's BN weights past float32's range in one step: the step is undone and the model keeps its
    /// source values; the output, computed before the update, is still scored.
    @Test func hugeLearningRateStepIsRolledBack() throws {
        let tiny = try TinyBenchmark()
        var c = busyConfiguration("tent")
        (c.optimizer, c.lr, c.momentum, c.nesterov, c.weightDecay) = (.sgd, 1e38, 0, false, 1e3)
        let adaptor = try makeAdaptor("tent", configuration: c)
        let before = adaptor.captureState()
        let r = try adaptor.process(try tiny.stream(.continual).batch(at: 0).images)
        #expect(r.outcome == .rolledBack)
        #expect(r.output!.isFinite, "the output is computed before the update")
        #expect(sameBits(adaptor.captureState(), before))
        #expect(adaptor.model.store.tensor("bn1.weight")!.storage.allSatisfy { $0 == 1 })
    }
}

/// Collapse detection and the opt-in reset.
@Suite struct CollapseTests {
    /// The monitor on a constructed prediction stream: it judges only full windows, reports once when
    /// one class reaches the threshold, and again only after the share fell below it.
    @Test func monitorReportsEachCollapseOnce() {
        var m = CollapseMonitor(policy: CollapsePolicy(window: 3, threshold: 0.9))
        let healthy = [0, 1, 2, 3], collapsed = [2, 2, 2, 2]
        #expect(m.observe(collapsed) == nil && m.observe(collapsed) == nil)  // window not full yet
        let e = m.observe(collapsed)
        #expect(e?.dominantClass == 2 && e?.share == 1)
        #expect(m.observe(collapsed) == nil)                                     // still collapsed: not reported again
        #expect(m.observe(healthy) == nil)                                       // 9 of 12 = 0.75 < 0.9
        #expect(m.observe(collapsed) == nil)                                     // 9 of 12 again
        #expect(m.observe([2, 2, 2, -1]) == nil)                                 // 8 of 11 (−1: no prediction)
        let again = m.observe(collapsed)                                         // 11 of 11
        #expect(again?.dominantClass == 2 && again?.share == 1)
    }

    /// A constructed run in which the model predicts one class (its classifier weights are zero and its
    /// bias favours class 3): with window 3 the runner reports the collapse after batch 3, once; with
    /// reset-on-collapse it resets and, the window emptied, finds it again after batches 6 and 9.
    @Test func collapseIsDetectedAndOptionallyReset() throws {
        let tiny = try TinyBenchmark()
        func run(_ reset: Bool) throws -> (RunResult, Adaptor) {
            let model = TinyBenchmark.model()
            model.store.set("fc.weight", Tensor(shape: model.store.entry(named: "fc.weight")!.shape))
            model.store.set("fc.bias", Tensor(shape: [4], storage: [0, 0, 0, 1]))
            let adaptor = try makeAdaptor("norm_ema", model: model)
            let r = try BenchmarkRunner.run(method: "norm_ema", adaptor: adaptor, stream: try tiny.stream(.continual),
                                            configuration: busyConfiguration("norm_ema"),
                                            collapse: CollapsePolicy(window: 3, threshold: 0.95, resetOnCollapse: reset))
            return (r, adaptor)
        }
        let (reported, a1) = try run(false)
        #expect(reported.stability.collapses == [CollapseEvent(batch: 3, dominantClass: 3, share: 1, reset: false)])
        #expect(a1.batchesSinceReset == 9)
        let (reset, a2) = try run(true)
        #expect(reset.stability.collapses.map(\.batch) == [3, 6, 9] && reset.stability.collapses.allSatisfy(\.reset))
        #expect(a2.batchesSinceReset == 0, "reset after the last batch")
        #expect(reported.domains == reset.domains, "every prediction is class 3 either way")
    }
}

/// Seeded determinism and checkpoint/resume, for every registered method (new registrations are covered
/// without editing this file).
@Suite struct DeterminismAndResumeTests {
    /// Two adaptors built the same way with the same seed give bit-identical outputs batch by batch and
    /// end in bit-identical states; every method that adapts has moved away from the source.
    @Test(arguments: MethodRegistry.names)
    func seededRunsAreBitIdentical(_ method: String) throws {
        let tiny = try TinyBenchmark()
        let a = try makeAdaptor(method), b = try makeAdaptor(method)
        let source = a.captureState()
        let stream = try tiny.stream(.continual)
        while let batch = try stream.next() {
            let x = try a.process(batch.images), y = try b.process(batch.images)
            #expect(x.outcome == .adapted && y.outcome == .adapted)
            #expect(x.output!.storage.map(\.bitPattern) == y.output!.storage.map(\.bitPattern), "\(method): batch \(batch.batchIndex)")
        }
        #expect(sameBits(a.captureState(), b.captureState()))
        if MethodRegistry.entry(method)!.usesGradients || method == "norm_ema" {
            #expect(!sameBits(a.captureState(), source), "\(method) adapted nothing: the test would prove nothing")
        }
    }

    /// A run checkpointed after batch 4 (through the file format, with the model whole and stored against
    /// the source), resumed by new objects, ends with the same result (times aside) and the same adaptor
    /// state, bit for bit, as the uninterrupted run.
    @Test(arguments: MethodRegistry.names)
    func resumedRunIsBitIdentical(_ method: String) throws {
        let tiny = try TinyBenchmark()
        let config = busyConfiguration(method)
        let collapse = CollapsePolicy(window: 2, threshold: 0.6)
        let whole = try makeAdaptor(method)
        let full = try BenchmarkRunner.run(method: method, adaptor: whole, stream: try tiny.stream(.continual), configuration: config,
                                           runningErrorEvery: 2, collapse: collapse)

        let identity = RunCheckpoint.Identity(dataset: "tiny", model: "wrn-10-1", weightsFingerprint: "-", dataFingerprint: "-",
                                              stream: try tiny.stream(.continual).configuration, methods: [method],
                                              methodConfigurations: [config], seed: 5, collapse: collapse)
        var saved: [Data] = []
        var batches = 0
        let interrupted = try makeAdaptor(method)
        let first = try BenchmarkRunner.run(
            method: method, adaptor: interrupted, stream: try tiny.stream(.continual), configuration: config,
            runningErrorEvery: 2, collapse: collapse,
            checkpointing: .init(every: 2) { p, s in
                guard p.batches == 4 else { return }
                let checkpoint = RunCheckpoint(identity: identity, finishedRuns: [], methodIndex: 0, inProgress: (p, s))
                saved = [try checkpoint.encoded(), try checkpoint.encoded(source: interrupted)]
            },
            progress: { if case .batch = $0.kind { batches += 1 } }, shouldStop: { batches >= 5 })
        #expect(!first.completed && saved.count == 2)
        for (form, data) in zip(["whole", "against the source"], saved) {
            let checkpoint = try RunCheckpoint.read(try writeTemporary(data, tiny))
            #expect(checkpoint.identity == identity && checkpoint.methodIndex == 0)
            #expect((checkpoint.changedModelEntries == nil) == (form == "whole"))
            let resumed = try makeAdaptor(method)
            let rest = try BenchmarkRunner.run(method: method, adaptor: resumed, stream: try tiny.stream(.continual), configuration: config,
                                               runningErrorEvery: 2, collapse: collapse, resume: try checkpoint.resumeState(for: resumed))
            #expect(rest.withoutMeasurements == full.withoutMeasurements, "\(form)")
            #expect(sameBits(resumed.captureState(), whole.captureState()), "\(form)")
        }
    }

    /// Stored against the source, a TENT checkpoint holds the BN affine parameters TENT trains (what differs
    /// from the source state), under their PyTorch names, and no other model entry; an entry the model does
    /// not have is refused on resume, naming it.
    @Test func checkpointAgainstTheSourceHoldsWhatChanged() throws {
        let tiny = try TinyBenchmark()
        let config = busyConfiguration("tent")
        let adaptor = try makeAdaptor("tent")
        let identity = RunCheckpoint.Identity(dataset: "tiny", model: "wrn-10-1", weightsFingerprint: "-", dataFingerprint: "-",
                                              stream: try tiny.stream(.continual).configuration, methods: ["tent"],
                                              methodConfigurations: [config], seed: 5, collapse: CollapsePolicy())
        var saved: Data?
        _ = try BenchmarkRunner.run(method: "tent", adaptor: adaptor, stream: try tiny.stream(.continual), configuration: config,
                                    runningErrorEvery: 2, collapse: CollapsePolicy(),
                                    checkpointing: .init(every: 2) { p, s in
                                        if p.batches == 2 {
                                            saved = try RunCheckpoint(identity: identity, finishedRuns: [], methodIndex: 0, inProgress: (p, s))
                                                .encoded(source: adaptor)
                                        }
                                    })
        let checkpoint = try RunCheckpoint.read(try writeTemporary(try #require(saved), tiny))
        let changed = try #require(checkpoint.changedModelEntries)
        let store = adaptor.model.store
        let affine = store.entries.filter(\.isNormAffine).map(\.name)
        #expect(!affine.isEmpty && Set(changed.keys) == Set(affine), "\(changed.keys.sorted())")
        #expect(changed.keys.contains("bn1.weight"))
        let first = try #require(changed.keys.min())
        let firstValues = try #require(changed[first])
        let vit = VisionTransformer(ViTConfiguration(imageSize: 8, patchSize: 4, dim: 8, depth: 1, heads: 2, numClasses: 4))
        let other = try makeAdaptor("tent", model: vit)
        #expect(throws: RuntimeError("the checkpoint's model entry '\(first)' (shape \(firstValues.shape)) is not one of \(vit.architecture)'s")) {
            try checkpoint.resumeState(for: other)
        }

        // Read back and written again, it keeps its form and resumes to the same state.
        let again = try RunCheckpoint.read(try writeTemporary(try checkpoint.encoded(), tiny))
        let fresh = try makeAdaptor("tent")
        let before = try #require(try checkpoint.resumeState(for: fresh))
        let after = try #require(try again.resumeState(for: fresh))
        #expect(again.changedModelEntries?.keys.sorted() == changed.keys.sorted() && sameBits(before.adaptor, after.adaptor))

        // Hostile variants of the file are refused, naming the file and the entry.
        let file = try SafeTensorsFile.read(try writeTemporary(try #require(saved), tiny))
        let tensors = try file.names.map { (name: $0, tensor: try file.tensor($0)) }
        let metadata = try #require(file.metadata["swifttta.checkpoint"])
        func variant(_ tensors: [(name: String, tensor: Tensor)], listing: (inout [String]) -> Void = { _ in }) throws -> URL {
            var header = try #require(try JSONSerialization.jsonObject(with: Data(metadata.utf8)) as? [String: Any])
            var names = try #require(header["changedModelEntries"] as? [String])
            listing(&names)
            header["changedModelEntries"] = names
            let json = String(decoding: try JSONSerialization.data(withJSONObject: header), as: UTF8.self)
            return try writeTemporary(try SafeTensorsFile.encode(tensors, metadata: ["swifttta.checkpoint": json]), tiny)
        }
        let cases: [(URL, String)] = [
            (try variant(tensors.filter { $0.name != "adaptor.model.\(first)" }), "model entry 'adaptor.model.\(first)', listed in its metadata, is missing"),
            (try variant(tensors, listing: { $0.removeAll { $0 == first } }), "tensor 'adaptor.model.\(first)' is not listed in its metadata"),
            (try variant(tensors, listing: { $0.append(first) }), "model entry '\(first)' is listed twice"),
            (try variant(tensors + [(name: "adaptor.model", tensor: Tensor(shape: [1], storage: [0]))]),
             "it holds both a whole model (adaptor.model) and changed model entries"),
        ]
        for (url, message) in cases {
            #expect(throws: RuntimeError("\(url.path) is not a usable SwiftTTA checkpoint: \(message)")) { try RunCheckpoint.read(url) }
        }
    }

    /// A checkpoint names the first setting that differs from the run it is asked to continue.
    @Test func identityDifferenceNamesTheField() throws {
        let tiny = try TinyBenchmark()
        let a = RunCheckpoint.Identity(dataset: "tiny", model: "m", weightsFingerprint: "1:ab", dataFingerprint: "-",
                                       stream: try tiny.stream(.continual).configuration, methods: ["tent"],
                                       methodConfigurations: [busyConfiguration("tent")], seed: 1, collapse: CollapsePolicy())
        var b = a
        #expect(a.difference(from: b) == nil)
        b.weightsFingerprint = "1:cd"
        #expect(a.difference(from: b) == "weights (content fingerprint) (checkpoint: 1:ab, now: 1:cd)")
        b = a
        b.seed = 2
        #expect(a.difference(from: b) == "seed (checkpoint: 1, now: 2)")
    }

    /// A file that is not a checkpoint is refused with its path in the message.
    @Test func notACheckpointIsRefused() throws {
        let tiny = try TinyBenchmark()
        let url = try writeTemporary(try SafeTensorsFile.encode([(name: "x", tensor: Tensor(shape: [1], storage: [1]))]), tiny)
        #expect(throws: RuntimeError("\(url.path) is not a usable SwiftTTA checkpoint: no 'swifttta.checkpoint' metadata")) {
            try RunCheckpoint.read(url)
        }
    }

    private func writeTemporary(_ data: Data, _ tiny: TinyBenchmark) throws -> URL {
        let url = tiny.root.appendingPathComponent("checkpoint-\(UUID().uuidString).safetensors")
        try writeAtomically(data, to: url)
        return url
    }
}
