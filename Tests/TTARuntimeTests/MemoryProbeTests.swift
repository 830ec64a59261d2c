import Foundation
import Testing
import TTAAdaptation
import TTAModels
import TTARuntime
import TTATensor
import TTATestSupport

/// The memory probe makes a method's every step as costly as its costliest (`AdaptationMethod.setMemoryProbe`).
@Suite struct MemoryProbeTests {
    /// RoTTA, wrapped to record the probe's calls and the updates its steps make.
    final class Recorder: AdaptationMethod {
        let inner: RoTTAMethod
        var probeCalls: [Bool] = []
        /// Per step: whether the student's BN affine parameters changed (an update ran).
        var updated: [Bool] = []
        init(_ inner: RoTTAMethod) { self.inner = inner }
        var name: String { inner.name }
        var steps: Int { inner.steps }
        var copiesTheModel: Bool { inner.copiesTheModel }
        func configure(_ model: any ImageClassifier) throws { try inner.configure(model) }
        func step(_ x: Tensor, model: any ImageClassifier, rng: inout SeededGenerator, timer: inout PhaseTimer) throws -> Tensor {
            let before = model.store.snapshot()
            let out = try inner.step(x, model: model, rng: &rng, timer: &timer)
            updated.append(model.store.snapshot() != before)
            return out
        }
        func setMemoryProbe(_ on: Bool) { probeCalls.append(on); inner.setMemoryProbe(on) }
        func reset() { inner.reset() }
        func captureState() -> MethodState { inner.captureState() }
        func restoreState(_ state: MethodState) throws { try inner.restoreState(state) }
    }

    /// RoTTA updates every 64 images on a memory of 64, whatever the batch: probe steps of a few images would see no
    /// update. Under the probe each step ends in one, on a full memory; the run afterwards is as without the probe.
    @Test func rottaUpdatesOnAFullMemoryInEveryProbeStep() throws {
        let config = MethodConfiguration.defaults(for: .cifar)
        #expect(config.rottaMemorySize == 64 && config.rottaUpdateFrequency == 64)
        let model = TinyBenchmark.model()
        let recorder = Recorder(RoTTAMethod(config, augment: nil))
        let adaptor = try Adaptor(model: model, method: recorder, seed: 1)
        let images = Tensor(shape: [4, 3, 8, 8], storage: (0..<(4 * 192)).map { Float($0 % 97) / 97 })
        let estimate = try MemoryEstimate.probe(adaptor, batch: images, batchSize: 16, threads: 1)
        if estimate != nil {
            #expect(recorder.probeCalls == [true, false])
            #expect(!recorder.updated.isEmpty && recorder.updated.allSatisfy { $0 }, "probe steps without an update: \(recorder.updated)")
        }
        // After the probe: the source model, an empty memory, and steps of 4 images that update only every 64 images.
        #expect(model.store.snapshot() == adaptor.sourceSnapshot && recorder.inner.memory.count == 0)
        recorder.updated = []
        for _ in 0..<3 { _ = try adaptor.adapt(images) }
        #expect(recorder.updated == [false, false, false])
        #expect(recorder.inner.memory.count > 0 && recorder.inner.insertedSamples == 12)
    }
}
