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

    /// Inference passes give the logits of recording passes up to rounding: their 3x3 convolutions
    /// take Winograd F(4x4), the recorded ones the lowered GEMM (`Conv2dGeometry.takesWinograd`).
    @Test func inferenceEqualsRecordingForward() throws {
        let io = try fixture("wrn16_2_io.safetensors")
        let model = try ModelZoo.load(try fixture("wrn16_2.safetensors"))
        let x = try io.tensor("x")
        let inference = model.forward(x, .inference), recorded = model.forward(x, .training)
        expectClose(inference, recorded, tolerance: 2e-5, "inference vs recorded logits")
        expectClose(inference, try io.tensor("eval.logits"), "inference vs PyTorch")
        #expect(inference != recorded, "the inference pass took the same path as the recorded one")
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

    @Test func parameterCountWithoutBuilding() throws {
        #expect(WideResNet.parameterCount(depth: 28, widenFactor: 10, numClasses: 10, inputChannels: 3) == 36_479_194)
        for (d, w, k, c) in [(10, 1, 10, 3), (16, 2, 7, 1), (22, 3, 100, 2)] {
            let built = WideResNet(depth: d, widenFactor: w, numClasses: k, inputChannels: c).store.parameterCount
            #expect(WideResNet.parameterCount(depth: d, widenFactor: w, numClasses: k, inputChannels: c) == built, "\(d)-\(w)")
        }
        #expect(WideResNet.parameterCount(depth: 10, widenFactor: Int.max / 8, numClasses: 1, inputChannels: 1) == nil)
        let tooBig = #expect(throws: DataError.self) { try ModelZoo.make("wideresnet-28-100000", numClasses: 10) }
        #expect(tooBig?.description == "--model: model 'wideresnet-28-100000': has 3642880499200474 parameters, more than the limit of 4294967296")
        #expect(throws: DataError(file: "--model", key: "wideresnet-10-1", keyKind: "model",
                                  message: "needs at least 1 class and 1 input channel, got 0 and 3")) {
            try ModelZoo.make("wideresnet-10-1", numClasses: 0)
        }
    }

    /// A few hundred bytes of header describing a WideResNet of enormous width through tensors with a
    /// zero dimension (no data needed) used to make `infer` allocate that model and trap: found
    /// while checking what the safetensors fuzzer cannot reach (`tta inspect` of such a file crashed).
    @Test func inferRefusesShapesTheFileDoesNotHold() throws {
        func inferError(_ tensors: [(String, [Int])]) throws -> DataError? {
            let url = tempURL("bomb.safetensors")
            defer { try? FileManager.default.removeItem(at: url) }
            try SafeTensorsFile.write(tensors.map { (name: $0.0, tensor: Tensor(shape: $0.1)) }, to: url)
            do { _ = try ModelZoo.infer(try SafeTensorsFile.read(url)); return nil } catch let e as DataError { return e }
        }
        let wide = 16 << 20
        let bomb = try #require(try inferError([("conv1.weight", [16, 0, 3, 3]), ("block1.layer.0.conv1.weight", [wide, 0, 3, 3]),
                                                 ("fc.weight", [10, 0])]))
        #expect(bomb.key == "block1.layer.0.conv1.weight")
        #expect(bomb.message == "has shape [16777216, 0, 3, 3]; a WideResNet-10-1048576 needs [16777216, 16, 3, 3] (no zero dimension)")
        // No classes: WideResNet's init used to stop on a precondition.
        let noClasses = try #require(try inferError([("conv1.weight", [16, 3, 3, 3]), ("block1.layer.0.conv1.weight", [16, 16, 3, 3]),
                                                      ("fc.weight", [0, 64])]))
        #expect(noClasses.key == "fc.weight" && noClasses.message.hasPrefix("has shape [0, 64]; a WideResNet-10-1 needs [1, 64]"))
        // The head and stem fit, but the big convolutions are missing.
        let missing = try #require(try inferError([("conv1.weight", [16, 3, 3, 3]), ("block1.layer.0.conv1.weight", [16, 16, 3, 3]),
                                                    ("fc.weight", [10, 64])]))
        #expect(missing.key == "block1.layer.0.conv2.weight" && missing.message == "missing; a WideResNet-10-1 needs it with shape [16, 16, 3, 3]")
        // A real checkpoint still infers.
        #expect(try ModelZoo.infer(try fixture("wrn16_1.safetensors")).architecture == "wideresnet-16-1")
    }

    @Test func unknownArchitecturesAreRefused() throws {
        // Neither names a model (resnet-<b1>.<b2>.<b3>.<b4>-w<base> has four stages and a width; 27 is not 6n + 4).
        for bad in ["resnet-9000", "wideresnet-27-10"] {
            #expect(throws: DataError(file: "--model", key: bad, keyKind: "model", message: "unknown model; expected \(ModelZoo.modelNamesHelp)")) {
                try ModelZoo.make(bad, numClasses: 10)
            }
        }
        let wrn = try ModelZoo.make("wideresnet-28-10", numClasses: 10)
        #expect(wrn.store.parameterCount == 36_479_194)   // RobustBench's Standard WRN-28-10
        #expect(wrn.batchNorms.count == 25)
    }
}
