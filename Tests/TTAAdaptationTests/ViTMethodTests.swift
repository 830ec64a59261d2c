import Testing
import TTAAdaptation
import TTAData
import TTAModels
import TTANN
import TTATensor
import TTATestSupport

/// The norm-layer methods on a Vision Transformer: what they adapt (the reference's `collect_params` on
/// timm names) and TENT's trajectory against PyTorch.
@Suite struct ViTMethodTests {
    static func tinyViT() throws -> any ImageClassifier { try ModelZoo.load(try fixture("vit/tiny.safetensors")) }

    /// TENT on the tiny timm ViT for 3 batches: the logits before each update and the final LayerNorm
    /// parameters. Golden: `tent_cases()` in scripts/make_vit_fixtures.py (SGD lr 0.01, momentum 0.9, Nesterov).
    @Test func tentMatchesPyTorchOnViT() throws {
        let expected = try fixture("vit/tent.safetensors")
        var config = MethodConfiguration.defaults(for: .imagenet, method: "tent")
        config.lr = 0.01
        let model = try Self.tinyViT()
        let adaptor = try Adaptor(model: model, method: MethodRegistry.make("tent", configuration: config), seed: 0)
        let x = try expected.tensor("x")
        for i in 0..<3 {
            let logits = try adaptor.adapt(x.slice((4 * i)..<(4 * i + 4)))
            expectClose(logits, try expected.tensor("logits.\(i)"), "batch \(i) logits")
        }
        let finals = expected.names.filter { $0.hasPrefix("final.") }
        #expect(finals.count == 10 && model.store.trainableNames.count == 10)
        for name in finals {
            let p = String(name.dropFirst("final.".count))
            expectClose(model.store.tensor(p)!, try expected.tensor(name), "final \(p)")
        }
        // The update moved the norm parameters and nothing else.
        let source = try Self.tinyViT()
        #expect(model.store.tensor("norm.weight") != source.store.tensor("norm.weight"))
        #expect(model.store.tensor("blocks.0.attn.qkv.weight") == source.store.tensor("blocks.0.attn.qkv.weight"))
    }

    /// SAR on a more confident tiny ViT for 3 batches: per-batch logits, the loss EMA, and the final
    /// LayerNorm parameters, the final `norm` left frozen. Golden: `sar_cases()` in scripts/make_vit_fixtures.py
    /// (`run_sar` of make_method_fixtures.py with SAR's `collect_params` on timm names).
    @Test func sarMatchesPyTorchOnViT() throws {
        let expected = try fixture("vit/sar.safetensors")
        var config = MethodConfiguration.defaults(for: .cifar, method: "sar")
        config.lr = 1e-3
        let model = try ModelZoo.load(try fixture("vit/sar_model.safetensors"))
        let sar = try #require(try MethodRegistry.make("sar", configuration: config) as? SARMethod)
        let adaptor = try Adaptor(model: model, method: sar, seed: 0)
        let x = try expected.tensor("x"), ema = try expected.tensor("ema").storage
        for i in 0..<3 {
            let logits = try adaptor.adapt(x.slice((4 * i)..<(4 * i + 4)))
            expectClose(logits, try expected.tensor("logits.\(i)"), "batch \(i) logits")
            expectClose([Float(sar.lossAverage ?? .nan)], [ema[i]], "batch \(i) loss EMA")
        }
        #expect(sar.recoveries == 0)
        let source = try ModelZoo.load(try fixture("vit/sar_model.safetensors"))
        for name in expected.names where name.hasPrefix("final.") {
            let p = String(name.dropFirst("final.".count))
            expectClose(model.store.tensor(p)!, try expected.tensor(name), "final \(p)")
            #expect((model.store.tensor(p) == source.store.tensor(p)) == p.hasPrefix("norm."), "\(p) moved iff SAR adapts it")
        }
    }

    /// A ViT-B-deep (12 blocks) but narrow model, so that SAR's exclusions all apply.
    static func deepNarrowViT() -> VisionTransformer {
        VisionTransformer(ViTConfiguration(imageSize: 8, patchSize: 4, dim: 8, depth: 12, heads: 2, numClasses: 3))
    }

    @Test func tentAndEataAdaptEveryLayerNorm() throws {
        for name in ["tent", "eta"] {
            let model = Self.deepNarrowViT()
            _ = try Adaptor(model: model, method: MethodRegistry.make(name, configuration: .defaults(for: .imagenet)), seed: 0)
            let expected = (0..<12).flatMap { i in ["norm1", "norm2"].flatMap { ["blocks.\(i).\($0).weight", "blocks.\(i).\($0).bias"] } }
                + ["norm.weight", "norm.bias"]
            #expect(model.store.trainableNames == expected, "\(name)")
        }
    }

    /// SAR's `collect_params`: no LayerNorm of `blocks.9`–`blocks.11`, nor the final `norm`.
    @Test func sarLeavesTheTopBlocksAndTheFinalNormFrozen() throws {
        let model = Self.deepNarrowViT()
        _ = try Adaptor(model: model, method: MethodRegistry.make("sar", configuration: .defaults(for: .imagenet)), seed: 0)
        let expected = (0..<9).flatMap { i in ["norm1", "norm2"].flatMap { ["blocks.\(i).\($0).weight", "blocks.\(i).\($0).bias"] } }
        #expect(model.store.trainableNames == expected)
    }

    /// CoTTA's `collect_params` and RMT's (the base class's) take every `weight` and `bias`: the class token and
    /// position embedding stay. (RMT trained them too until the defaults were read against the reference's cfgs.)
    @Test(arguments: ["cotta", "rmt"])
    func adaptsWeightsAndBiasesOnly(_ name: String) throws {
        let model = Self.deepNarrowViT()
        var config = MethodConfiguration.defaults(for: .imagenet, method: name)
        config.rmtWarmupSamples = 0
        let source = Tensor(shape: [4, 3, 8, 8], storage: (0..<768).map { Float($0 % 17) / 17 })
        _ = try Adaptor(model: model, method: MethodRegistry.make(name, configuration: config, augment: { x, _ in x },
                                                                  sourceBatches: [source], sourceLabels: [[0, 1, 2, 0]]), seed: 0)
        let frozen = model.store.entries.map(\.name).filter { !model.store.trainableNames.contains($0) }
        // RMT on a timm ViT classifies with a copy of the head that no optimizer holds (the reference's split_up_model).
        #expect(frozen == ["cls_token", "pos_embed"] + (name == "rmt" ? ["head.weight", "head.bias"] : []), "\(name)")
    }

    /// Every norm-layer method runs on the tiny ViT: finite outputs, and the adapted parameters move.
    @Test(arguments: ["tent", "eta", "sar", "cotta"])
    func methodRunsOnViT(_ name: String) throws {
        var config = MethodConfiguration.defaults(for: .imagenet, method: name)
        config.lr = 0.05
        config.augmentations = 2
        config.entropyMarginFactor = 1   // every sample is reliable for ETA and SAR (10 classes, entropy < ln 10)
        let model = try Self.tinyViT()
        let before = model.store.snapshot()
        let adaptor = try Adaptor(model: model, method: MethodRegistry.make(name, configuration: config,
                                                                           augment: { x, _ in x }), seed: 1)
        let x = try fixture("vit/tent.safetensors").tensor("x")
        for i in 0..<2 {
            let out = try adaptor.adapt(x.slice((4 * i)..<(4 * i + 4)))
            #expect(out.shape == [4, 10] && out.isFinite, "\(name)")
        }
        #expect(model.store.snapshot() != before, "\(name) changed nothing")
    }

    /// A ViT's image size is fixed by its position embedding: other sizes are refused, naming both.
    @Test func wrongImageSizeIsRefused() throws {
        let adaptor = try Adaptor(model: try Self.tinyViT(), method: MethodRegistry.make("tent", configuration: .defaults(for: .imagenet)), seed: 0)
        #expect { try adaptor.adapt(Tensor(shape: [2, 3, 16, 16])) } throws: { "\($0)".contains("16×16") && "\($0)".contains("32×32") }
    }
}
