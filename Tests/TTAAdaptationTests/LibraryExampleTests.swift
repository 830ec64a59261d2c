import Foundation
import Testing
import TTAAdaptation
import TTAData
import TTAModels
import TTATensor
import TTATestSupport

/// README's "As a library" example, call for call, on the embedded model (data/models): it builds, each batch is
/// predicted before the update (TENT's first logits are those of the unadapted model on batch statistics,
/// `norm_test`'s), the model then moves, and `reset()` brings back the source bit for bit (the next run repeats
/// the first one exactly).
@Suite struct LibraryExampleTests {
    @Test func readmeExampleDoesWhatItSays() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let weights = root.appendingPathComponent("data/models/fmnist-wrn-10-2.safetensors")

        // The README's lines.
        let model = try ModelZoo.load(SafeTensorsFile.read(weights))
        let config = MethodConfiguration.defaults(for: .cifar)
        let adaptor = try Adaptor(model: model, method: MethodRegistry.make("tent", configuration: config), seed: 1)
        var g = SeededGenerator(seed: 5)
        let myBatches = (0..<3).map { _ in
            Tensor(shape: [8, model.inputChannels, 32, 32], storage: (0..<(8 * model.inputChannels * 1024)).map { _ in g.nextUniform() })
        }
        var first: [Tensor] = []
        for batch in myBatches {
            let logits = try adaptor.adapt(batch)
            #expect(logits.shape == [8, model.numClasses] && logits.isFinite)
            // `use(logits.argmaxRows())`: per image, the class of the largest logit (the first on a tie), as read off
            // the rows here.
            let c = model.numClasses
            let byRow = (0..<8).map { i in (0..<c).max { logits.storage[i * c + $0] < logits.storage[i * c + $1] }! }
            #expect(logits.argmaxRows() == byRow)
            first.append(logits)
        }
        let source = try ModelZoo.load(SafeTensorsFile.read(weights)).store.snapshot()
        #expect(adaptor.model.store.snapshot() != source)
        adaptor.reset()
        #expect(adaptor.model.store.snapshot() == source)

        // Predicted before the update: the first batch as norm_test sees it, up to rounding (norm_test's pass records
        // nothing and takes Winograd convolutions, tent's the GEMM).
        let normTest = try Adaptor(model: try ModelZoo.load(SafeTensorsFile.read(weights)),
                                   method: MethodRegistry.make("norm_test", configuration: config), seed: 1)
        expectClose(first[0], try normTest.adapt(myBatches[0]), tolerance: 2e-5, "first batch")
        // After reset the run repeats itself exactly.
        for (batch, logits) in zip(myBatches, first) { #expect(try adaptor.adapt(batch) == logits) }
        #expect(first[1] != (try normTest.adapt(myBatches[1])))
    }
}
