import Foundation
import Testing
import TTAData
import TTAModels
import TTANN
import TTATensor
import TTATestSupport

/// A whole small WideResNet against PyTorch: logits and the gradients of the mean softmax entropy
/// w.r.t. every BN γ/β in the three BN modes, and running statistics after a tracked pass.
/// Golden: `wideresnet_cases()` in scripts/make_fixtures.py (RobustBench's WideResNet, WRN-16-2).
@Suite struct WideResNetParityTests {
    static let modes: [(String, BatchNormMode)] = [
        ("eval", .runningStatistics), ("train_untracked", .batchStatistics), ("train_tracked", .batchStatisticsUpdatingRunning),
    ]

    @Test(arguments: [0, 1, 2])
    func logitsAndNormGradientsMatchPyTorch(_ modeIndex: Int) throws {
        let (name, mode) = Self.modes[modeIndex]
        let io = try fixture("wrn16_2_io.safetensors")
        let model = try ModelZoo.load(try fixture("wrn16_2.safetensors"))
        #expect(model.architecture == "wideresnet-16-2")
        #expect(model.store.counters["block1.layer.0.bn1.num_batches_tracked"] == 7)
        model.setBatchNormMode(mode)
        model.store.setTrainable(.normAffine)
        let logits = model.forward(try io.tensor("x"), .training)
        expectClose(logits, try io.tensor("\(name).logits"), "\(name) logits")
        let loss = Loss.softmaxEntropy(logits)
        expectClose([loss.value], try io.tensor("\(name).loss").storage, "\(name) loss")
        model.backward(loss.gradient)
        var checked = 0
        for p in model.store.trainableNames {
            expectClose(model.store.gradient(p)!, try io.tensor("\(name).grad.\(p)"), "\(name) ∂L/∂\(p)")
            checked += 1
        }
        #expect(checked == 2 * model.batchNorms.count)
        if mode == .batchStatisticsUpdatingRunning {
            for e in model.store.entries where e.kind == .buffer {
                expectClose(model.store.tensor(e.name)!, try io.tensor("\(name).state.\(e.name)"), "\(e.name)")
            }
            #expect(model.store.counters["bn1.num_batches_tracked"] == 8)
        }
    }

    /// Gradients w.r.t. every parameter (convolutions, BN, fc) with batch statistics, as CoTTA updates.
    /// Golden: `wideresnet_cases()` (WRN-16-1, `wrn16_1_io.safetensors`).
    @Test func allParameterGradientsMatchPyTorch() throws {
        let io = try fixture("wrn16_1_io.safetensors")
        let model = try ModelZoo.load(try fixture("wrn16_1.safetensors"))
        #expect(model.architecture == "wideresnet-16-1" && model.numClasses == 5)
        model.setBatchNormMode(.batchStatistics)
        model.store.setTrainable(.all)
        let logits = model.forward(try io.tensor("x"), .training)
        expectClose(logits, try io.tensor("logits"), "logits")
        model.backward(Loss.softmaxEntropy(logits).gradient)
        for p in model.store.trainableNames {
            expectClose(model.store.gradient(p)!, try io.tensor("grad.\(p)"), "∂L/∂\(p)")
        }
        #expect(model.store.trainableNames.count == io.names.filter { $0.hasPrefix("grad.") }.count)
    }

    /// Inference passes keep nothing and give the same logits as recording passes.
    @Test func inferenceEqualsRecordingForward() throws {
        let io = try fixture("wrn16_2_io.safetensors")
        let model = try ModelZoo.load(try fixture("wrn16_2.safetensors"))
        let x = try io.tensor("x")
        #expect(model.forward(x, .inference) == model.forward(x, .training))
    }
}

/// Strict loading: every problem names the key; `module.` is stripped; `auto` inference.
@Suite struct CheckpointTests {
    func tempURL(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("swifttta-\(UUID().uuidString)-\(name)")
    }

    func stateDict() throws -> [(name: String, tensor: Tensor)] {
        let f = try fixture("wrn16_1.safetensors")
        return try f.names.map { (name: $0, tensor: try f.tensor($0)) }
    }

    func loadError(_ tensors: [(name: String, tensor: Tensor)]) throws -> DataError? {
        let url = tempURL("m.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try SafeTensorsFile.write(tensors, to: url)
        do {
            _ = try ModelZoo.load(try SafeTensorsFile.read(url))
            return nil
        } catch let e as DataError { return e }
    }

    @Test func missingUnexpectedAndMismatchedKeysAreNamed() throws {
        let sd = try stateDict()
        let missing = try #require(try loadError(sd.filter { $0.name != "block2.layer.1.bn2.bias" }))
        #expect(missing.key == "block2.layer.1.bn2.bias")
        #expect(missing.description.contains("missing"))

        let extra = try #require(try loadError(sd + [(name: "block9.weight", tensor: Tensor(shape: [2]))]))
        #expect(extra.key == "block9.weight")
        #expect(extra.description.contains("unexpected"))

        let wrong = try #require(try loadError(sd.map { $0.name == "bn1.weight" ? (name: $0.name, tensor: Tensor(shape: [63])) : $0 }))
        #expect(wrong.description.contains("bn1.weight") && wrong.description.contains("[64]") && wrong.description.contains("[63]"))

        let nan = try #require(try loadError(sd.map { $0.name == "fc.bias" ? (name: $0.name, tensor: Tensor(shape: [5], repeating: .nan)) : $0 }))
        #expect(nan.key == "fc.bias" && nan.description.contains("NaN"))
    }

    @Test func dataParallelPrefixAndMissingCountersAreAccepted() throws {
        let sd = try stateDict().filter { !$0.name.hasSuffix("num_batches_tracked") }.map { (name: "module." + $0.name, tensor: $0.tensor) }
        #expect(try loadError(sd) == nil)
    }

    @Test func saveLoadRoundTripIsExact() throws {
        let model = try ModelZoo.load(try fixture("wrn16_1.safetensors"))
        let url = tempURL("rt.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try model.save(to: url)
        let again = try ModelZoo.load(try SafeTensorsFile.read(url))
        #expect(again.store.snapshot() == model.store.snapshot())
    }

    @Test func unknownArchitecturesAreRefused() throws {
        #expect(throws: DataError.self) { try ModelZoo.make("resnet-9000", numClasses: 10) }
        #expect(throws: DataError.self) { try ModelZoo.make("wideresnet-27-10", numClasses: 10) }
        let wrn = try ModelZoo.make("wideresnet-28-10", numClasses: 10)
        #expect(wrn.store.parameterCount == 36_479_194)   // RobustBench's Standard WRN-28-10
        #expect(wrn.batchNorms.count == 25)
    }
}
