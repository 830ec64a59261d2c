import Foundation
import Testing
import TTAData
import TTAModels
import TTATensor
import TTATestSupport

/// Checkpoints saved as the field saves them, with the input normalisation stored beside the network, load without
/// key edits and apply the stored normalisation: RobustBench's `mu`/`sigma` buffers (its AugMix ResNeXt-29 and
/// WRN-40-2) and the `Sequential(normalize=ImageNormalizer, model=net)` wrapper of the reference's ImageNet models.
/// The stored means and stds are CIFAR's, not the architectures' defaults, so ignoring them changes the logits.
/// Golden: `layout_mu_sigma_cases()` and `layout_normalizer_cases()` in scripts/make_layout_fixtures.py.
@Suite struct CheckpointLayoutTests {
    static let mean: [Float] = [0.4914, 0.4822, 0.4465], std: [Float] = [0.2471, 0.2435, 0.2616]
    static let cases = [("cnn/layout_mu_sigma", "resnext-20-4x16-s8"), ("cnn/layout_normalizer", "resnet-2.1.1.1-w4")]

    @Test(arguments: cases)
    func storedNormalizationIsApplied(_ c: (String, String)) throws {
        let (stem, architecture) = c
        let model = try ModelZoo.load(try fixture("\(stem).safetensors"))
        #expect(model.architecture == architecture)
        let n = try #require(model.inputNormalization)
        expectClose(n.mean, Self.mean, tolerance: 1e-7, "\(stem) mean")
        expectClose(n.std, Self.std, tolerance: 1e-7, "\(stem) std")
        let io = try fixture("\(stem)_io.safetensors")
        model.setBatchNormMode(.runningStatistics)
        expectClose(model.forward(try io.tensor("x"), .inference), try io.tensor("eval.logits"), "\(stem) logits")
        // The architecture's own default normalisation gives logits 10x the tolerance away or more (0.7 % relative
        // for the ResNet, whose default is ImageNet's): the test sees the stored one at work.
        model.inputNormalization = try ModelZoo.make(architecture, numClasses: 10).inputNormalization
        let other = model.forward(try io.tensor("x"), .inference).storage
        #expect(relativeError(other, try io.tensor("eval.logits").storage) > 1e-3)
    }

    /// Under `nn.DataParallel` as well (`module.normalize.mean`, `module.model.conv1.weight`, …).
    @Test func wrappedAndDataParallel() throws {
        let file = try fixture("cnn/layout_normalizer.safetensors")
        let renamed = try file.names.map { (name: "module." + $0, tensor: try file.tensor($0)) }
        let model = try ModelZoo.load(SafeTensorsFile(data: SafeTensorsFile.encode(renamed), name: "dp.safetensors"))
        let io = try fixture("cnn/layout_normalizer_io.safetensors")
        model.setBatchNormMode(.runningStatistics)
        expectClose(model.forward(try io.tensor("x"), .inference), try io.tensor("eval.logits"), "module.-prefixed logits")
    }

    /// A stored normalisation that cannot be right is refused, naming the key: a zero std, a subnormal std (whose
    /// reciprocal is infinite), a NaN mean, a mean with one value too many; and a `normalize.` key the wrapper does
    /// not have is unexpected.
    @Test func badStoredNormalizationIsRefused() throws {
        let file = try fixture("cnn/layout_mu_sigma.safetensors")
        func load(replacing key: String, with tensor: Tensor?, adding extra: [(name: String, tensor: Tensor)] = []) throws {
            var tensors = try file.names.filter { $0 != key }.map { (name: $0, tensor: try file.tensor($0)) }
            if let tensor { tensors.append((key, tensor)) }
            _ = try ModelZoo.load(SafeTensorsFile(data: SafeTensorsFile.encode(tensors + extra), name: "bad.safetensors"))
        }
        let stdProblem = "expected positive finite values with finite reciprocals for the input normalisation (the input is divided by them), found "
        #expect(throws: DataError(file: "bad.safetensors", key: "sigma", message: stdProblem + "[0.25, 0.0, 0.25]")) {
            try load(replacing: "sigma", with: Tensor(shape: [1, 3, 1, 1], storage: [0.25, 0, 0.25]))
        }
        #expect(throws: DataError(file: "bad.safetensors", key: "sigma", message: stdProblem + "[0.25, 1e-45, 0.25]")) {
            try load(replacing: "sigma", with: Tensor(shape: [1, 3, 1, 1], storage: [0.25, Float.leastNonzeroMagnitude, 0.25]))
        }
        #expect(throws: DataError(file: "bad.safetensors", key: "mu",
                                  message: "expected finite values for the input normalisation, found [0.5, nan, 0.5]")) {
            try load(replacing: "mu", with: Tensor(shape: [1, 3, 1, 1], storage: [0.5, .nan, 0.5]))
        }
        #expect(throws: DataError(file: "bad.safetensors", key: "mu",
                                  message: "expected the input normalisation's shape [1, 3, 1, 1] (one value per input channel), found [1, 4, 1, 1]")) {
            try load(replacing: "mu", with: Tensor(shape: [1, 4, 1, 1], storage: [0.5, 0.5, 0.5, 0.5]))
        }
        let wrapped = try fixture("cnn/layout_normalizer.safetensors")
        let extra = try wrapped.names.map { (name: $0, tensor: try wrapped.tensor($0)) } + [("normalize.scale", Tensor(shape: [1], storage: [2]))]
        #expect(throws: DataError(file: "extra.safetensors", key: "normalize.scale",
                                  message: "unexpected: the model has no parameter or buffer of this name")) {
            try ModelZoo.load(SafeTensorsFile(data: SafeTensorsFile.encode(extra), name: "extra.safetensors"))
        }
    }
}
