import Foundation
import Testing
import TTAData
import TTAModels
import TTANN
import TTATensor
import TTATestSupport

/// torchvision's ResNet (ImageNet-C source model) and RobustBench's CIFAR ResNeXt (CIFAR-100-C source
/// model) at test sizes against PyTorch: logits and the gradients of the mean softmax entropy w.r.t.
/// every BN γ/β in the three BN modes, running statistics after a tracked pass, and (float64 golden,
/// batch statistics) the gradients w.r.t. every parameter.
/// Golden: `resnet_cases()` and `resnext_cases()` in scripts/make_cnn_fixtures.py.
@Suite struct BottleneckCNNParityTests {
    /// (fixture stem, architecture `auto` must infer)
    static let models = [("cnn/resnet_tiny", "resnet-2.1.1.1-w4"), ("cnn/resnext_tiny", "resnext-20-4x16-s8")]
    static let modes: [(String, BatchNormMode)] = [
        ("eval", .runningStatistics), ("train_untracked", .batchStatistics), ("train_tracked", .batchStatisticsUpdatingRunning),
    ]
    static let cases = models.flatMap { m in modes.indices.map { (m.0, m.1, $0) } }

    @Test(arguments: cases)
    func logitsAndNormGradientsMatchPyTorch(_ c: (String, String, Int)) throws {
        let (stem, architecture, modeIndex) = c
        let (name, mode) = Self.modes[modeIndex]
        let io = try fixture("\(stem)_io.safetensors")
        let model = try ModelZoo.load(try fixture("\(stem).safetensors"))
        #expect(model.architecture == architecture)
        #expect(model is any FeatureClassifier)
        model.setBatchNormMode(mode)
        model.store.setTrainable(.normAffine)
        let logits = model.forward(try io.tensor("x"), .training)
        expectClose(logits, try io.tensor("\(name).logits"), "\(stem) \(name) logits")
        let loss = Loss.softmaxEntropy(logits)
        expectClose([loss.value], try io.tensor("\(name).loss").storage, "\(name) loss")
        model.backward(loss.gradient)
        for p in model.store.trainableNames {
            expectClose(model.store.gradient(p)!, try io.tensor("\(name).grad.\(p)"), "\(stem) \(name) ∂L/∂\(p)")
        }
        #expect(model.store.trainableNames.count == 2 * model.batchNorms.count)
        #expect(model.store.trainableNames.count == io.names.filter { $0.hasPrefix("\(name).grad.") }.count)
        if mode == .batchStatisticsUpdatingRunning {
            for e in model.store.entries where e.kind == .buffer {
                expectClose(model.store.tensor(e.name)!, try io.tensor("\(name).state.\(e.name)"), "\(e.name)")
            }
        }
    }

    @Test(arguments: models.map(\.0))
    func allParameterGradientsMatchPyTorch(_ stem: String) throws {
        let io = try fixture("\(stem)_io.safetensors")
        let model = try ModelZoo.load(try fixture("\(stem).safetensors"))
        model.setBatchNormMode(.batchStatistics)
        model.store.setTrainable(.all)
        let logits = model.forward(try io.tensor("x_all"), .training)
        expectClose(logits, try io.tensor("all.logits"), "logits")
        model.backward(Loss.softmaxEntropy(logits).gradient)
        for p in model.store.trainableNames {
            expectClose(model.store.gradient(p)!, try io.tensor("all.grad.\(p)"), tolerance: 2e-4, "\(stem) ∂L/∂\(p)")
        }
        #expect(model.store.trainableNames.count == io.names.filter { $0.hasPrefix("all.grad.") }.count)
    }

    /// `features` are PyTorch's pre-logits features (the pooled, flattened input of `fc` / `classifier`) with
    /// running and with batch statistics, and `head` of them is `forward`; `copy` keeps weights, normalisation
    /// and BN modes. Golden: `write_cases()` (`<mode>.features`) via `resnet_cases()` and `resnext_cases()` in
    /// scripts/make_cnn_fixtures.py.
    @Test(arguments: models.map(\.0))
    func featuresHeadAndCopy(_ stem: String) throws {
        let io = try fixture("\(stem)_io.safetensors")
        let model = try #require(try ModelZoo.load(try fixture("\(stem).safetensors")) as? any FeatureClassifier)
        let x = try io.tensor("x")
        for (name, mode) in [("eval", BatchNormMode.runningStatistics), ("train_untracked", .batchStatistics)] {
            model.setBatchNormMode(mode)
            let f = model.features(x, .inference)
            #expect(f.shape == [x.shape[0], model.featureCount])
            expectClose(f, try io.tensor("\(name).features"), "\(stem) \(name) features")
            #expect(model.head(f, .inference) == model.forward(x, .inference))
        }
        model.setBatchNormMode(.batchStatistics)
        let twin = model.copy()
        #expect(twin.forward(x, .inference) == model.forward(x, .inference))
        #expect(twin.batchNorms.allSatisfy { $0.mode == .batchStatistics })
    }

    /// Input normalisation is part of the model: ImageNet mean/std for torchvision ResNets, 0.5/0.5
    /// for the RobustBench ResNeXt; clearing it changes the logits.
    @Test func defaultNormalisationAndOverride() throws {
        let r = try ModelZoo.load(try fixture("cnn/resnet_tiny.safetensors"))
        #expect(r.inputNormalization?.mean == [0.485, 0.456, 0.406] && r.inputNormalization?.std == [0.229, 0.224, 0.225])
        let x = try fixture("cnn/resnet_tiny_io.safetensors").tensor("x")
        let before = r.forward(x, .inference)
        r.inputNormalization = nil
        #expect(r.forward(x, .inference) != before)
        let n = try ModelZoo.load(try fixture("cnn/resnext_tiny.safetensors"))
        #expect(n.inputNormalization?.mean == [0.5, 0.5, 0.5] && n.inputNormalization?.std == [0.5, 0.5, 0.5])
    }
}

/// Full-size architectures by name: parameter counts and state-dict sizes as PyTorch reports them.
@Suite struct BottleneckCNNZooTests {
    @Test func fullSizeModelsHaveTheReferenceShapes() throws {
        let r50 = try ModelZoo.make("resnet50", numClasses: 1000)
        #expect(r50.architecture == "resnet50")
        #expect(r50.store.parameterCount == 25_557_032)          // torchvision resnet50
        #expect(r50.store.entries.count + r50.store.counterNames.count == 320)
        #expect(r50.store.entries.first { $0.name == "layer2.0.conv2.weight" }?.shape == [128, 128, 3, 3])
        let rx = try ModelZoo.make("resnext-29-4x32", numClasses: 100)
        #expect(rx.store.parameterCount == 6_900_132)            // RobustBench Hendrycks2020AugMix_ResNeXt
        #expect(rx.store.entries.count + rx.store.counterNames.count == 188)
        #expect(rx.store.entries.first { $0.name == "stage_1.0.conv_conv.weight" }?.shape == [128, 32, 3, 3])   // 4 groups of 32
        #expect(rx.store.entries.first { $0.name == "stage_3.1.conv_conv.weight" }?.shape == [512, 128, 3, 3])
        #expect(try ModelZoo.make("resnext50_32x4d", numClasses: 1000).store.entries.first { $0.name == "layer1.0.conv2.weight" }?.shape == [128, 4, 3, 3])
        for bad in ["resnet-1.1.1-w8", "resnext-28-4x32", "resnet-1.1.1.1-w8-g0x4", "resnet51"] {
            #expect(!ModelZoo.recognizes(bad), "\(bad)")
            #expect(throws: DataError(file: "--model", key: bad, keyKind: "model", message: "unknown model; expected \(ModelZoo.modelNamesHelp)"),
                    "\(bad)") {
                try ModelZoo.make(bad, numClasses: 10)
            }
        }
    }

    /// A BasicBlock torchvision ResNet (resnet18-style keys) is refused naming the key it lacks.
    @Test func basicBlockResNetsAreRefusedByName() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("swifttta-\(UUID().uuidString)-r18.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try SafeTensorsFile.write([(name: "conv1.weight", tensor: Tensor(shape: [4, 3, 7, 7])),
                                   (name: "layer1.0.conv1.weight", tensor: Tensor(shape: [4, 4, 3, 3])),
                                   (name: "layer1.0.conv2.weight", tensor: Tensor(shape: [4, 4, 3, 3])),
                                   (name: "fc.weight", tensor: Tensor(shape: [10, 4]))], to: url)
        let e = try #require(throws: DataError.self) { try ModelZoo.infer(try SafeTensorsFile.read(url)) }
        #expect(e.key == "layer1.0.conv3.weight" && e.message.contains("resnet18/34"))
    }
}
