import Foundation
import Testing
import TTAData
import TTAModels
import TTANN
import TTATensor
import TTATestSupport

/// A tiny timm ViT (embed 32, depth 2, heads 2, patch 8, image 32) against timm itself: logits, the
/// gradients of the mean softmax entropy w.r.t. every LayerNorm γ/β (float32, as TENT adapts), and
/// w.r.t. every parameter (float64 answers). Golden: `model_cases()` in scripts/make_vit_fixtures.py.
@Suite struct VisionTransformerParityTests {
    static func model() throws -> any ImageClassifier { try ModelZoo.load(try fixture("vit/tiny.safetensors")) }

    @Test func architectureIsInferredFromTimmKeys() throws {
        let model = try Self.model()
        let vit = try #require(model as? VisionTransformer)
        #expect(vit.configuration == ViTConfiguration(imageSize: 32, patchSize: 8, dim: 32, depth: 2, heads: 2, mlpHidden: 128, numClasses: 10))
        #expect(model.architecture == "vit-32d-2x2h-p8-32px")
        #expect(model.batchNorms.isEmpty && vit.layerNorms.count == 5)
        #expect(model.inputNormalization?.mean == [0.5, 0.5, 0.5] && model.inputNormalization?.std == [0.5, 0.5, 0.5])
    }

    @Test func logitsAndLayerNormGradientsMatchTimm() throws {
        let io = try fixture("vit/tiny_io.safetensors")
        let model = try Self.model()
        model.store.setTrainable(.normAffine)
        let logits = model.forward(try io.tensor("x"), .training)
        expectClose(logits, try io.tensor("logits"), "logits")
        let loss = Loss.softmaxEntropy(logits)
        expectClose([loss.value], try io.tensor("loss").storage, "loss")
        model.backward(loss.gradient)
        for p in model.store.trainableNames {
            expectClose(model.store.gradient(p)!, try io.tensor("grad.\(p)"), "∂L/∂\(p)")
        }
        #expect(model.store.trainableNames.count == 10)
        #expect(model.store.trainableNames.count == io.names.filter { $0.hasPrefix("grad.") }.count)
    }

    @Test func allParameterGradientsMatchTimm() throws {
        let io = try fixture("vit/tiny_io.safetensors")
        let model = try Self.model()
        model.store.setTrainable(.all)
        let logits = model.forward(try io.tensor("x"), .training)
        expectClose(logits, try io.tensor("f64.logits"), "logits")
        model.backward(Loss.softmaxEntropy(logits).gradient)
        for p in model.store.trainableNames {
            expectClose(model.store.gradient(p)!, try io.tensor("f64.grad.\(p)"), tolerance: 2e-4, "∂L/∂\(p)")
        }
        #expect(model.store.trainableNames.count == io.names.filter { $0.hasPrefix("f64.grad.") }.count)
    }

    /// The features/head split: `features(x)` is timm's pre-logits features (`forward_head(forward_features(x),
    /// pre_logits=True)`: the class token after the final norm), of width `dim`, and `head(features(x)) == forward(x)`.
    /// Golden: `model_cases()` in scripts/make_vit_fixtures.py (`features`).
    @Test func featuresThenHeadIsTheForwardPass() throws {
        let io = try fixture("vit/tiny_io.safetensors")
        let model = try #require(try Self.model() as? VisionTransformer)
        let x = try io.tensor("x")
        let f = model.features(x, .inference)
        #expect(f.shape == [4, 32])
        expectClose(f, try io.tensor("features"), "features")
        #expect(model.head(f, .inference) == model.forward(x, .inference))
    }

    @Test func savesAndReloadsAndCopies() throws {
        let model = try Self.model()
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("vit-\(UUID()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try model.save(to: url)
        let x = try fixture("vit/tiny_io.safetensors").tensor("x")
        // The head count, which the weights do not show, travels as metadata.
        let again = try ModelZoo.load(try SafeTensorsFile.read(url))
        #expect(again.architecture == model.architecture)
        #expect(again.forward(x, .inference) == model.forward(x, .inference))
        #expect(model.copy().forward(x, .inference) == model.forward(x, .inference))
    }

    /// timm's ViT-B/16 by name: 152 state-dict entries and 86,567,656 parameters (formats-and-models §2.4).
    @Test func vitB16HasTimmsShape() throws {
        let model = try ModelZoo.make("vit-b-16", numClasses: 1000)
        #expect(model.architecture == "vit-b-16")
        #expect(model.store.entries.count == 152)
        #expect(model.store.parameterCount == 86_567_656)
    }

    @Test func malformedViTCheckpointsAreRefusedNamingTheKey() throws {
        let good = try fixture("vit/tiny.safetensors")
        func rewritten(_ edit: (inout [(name: String, tensor: Tensor)], inout [String: String]) -> Void) throws -> SafeTensorsFile {
            var tensors = try good.names.map { (name: $0, tensor: try good.tensor($0)) }
            var meta = good.metadata
            edit(&tensors, &meta)
            return try SafeTensorsFile(data: SafeTensorsFile.encode(tensors, metadata: meta), name: "edited.safetensors")
        }
        let badHeads = try rewritten { _, meta in meta["num_heads"] = "3" }
        #expect { try ModelZoo.load(badHeads) } throws: { "\($0)".contains("num_heads") && "\($0)".contains("32") }
        let noHeads = try rewritten { _, meta in meta["num_heads"] = nil }   // width 32: no multiple of 64 to fall back on
        #expect { try ModelZoo.load(noHeads) } throws: { "\($0)".contains("num_heads") && "\($0)".contains("width 32: the head count is not in the weights") }
        let noFc1 = try rewritten { t, _ in t.removeAll { $0.name == "blocks.0.mlp.fc1.weight" } }
        #expect { try ModelZoo.load(noFc1) } throws: { "\($0)".contains("blocks.0.mlp.fc1.weight") }
        let badPos = try rewritten { t, _ in
            let i = t.firstIndex { $0.name == "pos_embed" }!
            t[i].tensor = Tensor(shape: [1, 18, 32])
        }
        #expect { try ModelZoo.load(badPos) } throws: { "\($0)".contains("pos_embed") }
    }
}
