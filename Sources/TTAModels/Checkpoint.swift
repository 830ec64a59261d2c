import Foundation
import TTAData
import TTANN
import TTATensor

extension ImageClassifier {
    /// Loads a PyTorch state dict exported with `safetensors.torch.save_file(model.state_dict(), path)`.
    ///
    /// Strict: every parameter and buffer must be present with its exact shape and no other key may
    /// be there (`num_batches_tracked` may be absent). The keys are read through the file's `CheckpointLayout`
    /// (`module.`, or the network under `model.` beside `normalize.mean`/`normalize.std`, or `mu`/`sigma` beside
    /// it); a stored input normalisation becomes `inputNormalization`. Errors name the key.
    public func load(_ file: SafeTensorsFile) throws {
        let layout = try CheckpointLayout(file)
        let normalization = try layout.inputNormalization(in: file, channels: inputChannels)
        let expected = store.entries.map { (name: $0.name, shape: $0.shape) } + store.counterNames.map { (name: $0, shape: [Int]()) }
        let tensors = try loadStateDict(from: file, expected: expected, optional: Set(store.counterNames))
        for e in store.entries {
            guard let t = tensors[e.name] else { continue }
            if !t.isFinite {
                throw DataError(file: file.name, key: e.name, message: "contains NaN or infinity")
            }
            store.set(e.name, t)
        }
        for c in store.counterNames {
            if let stripped = layout.fileKey(c) {
                // PyTorch writes I64; our own F32 writer stores the counter as a whole float.
                let v: [Int64]
                if try file.entry(stripped).dtype.hasPrefix("F") || file.entry(stripped).dtype == "BF16" {
                    let f = try file.tensor(stripped).storage
                    guard f.allSatisfy({ $0 >= 0 && $0 == $0.rounded() && $0 < 9e15 }) else {
                        throw DataError(file: file.name, key: c, message: "expected a non-negative whole-number counter, found \(f)")
                    }
                    v = f.map { Int64($0) }
                } else {
                    v = try file.int64Values(stripped)
                }
                guard v.count == 1 else {
                    throw DataError(file: file.name, key: c, message: "expected a scalar counter, found \(v.count) values")
                }
                // BatchNorm adds 1 per training batch: a negative count, or one near Int64.max, which that addition
                // would overflow, is no count PyTorch writes.
                guard (0...maxBatchCounter).contains(v[0]) else {
                    throw DataError(file: file.name, key: c, message: "expected a count of batches in 0...\(maxBatchCounter) (2^53), found \(v[0])")
                }
                store.counters[c] = v[0]
            }
        }
        if let normalization { inputNormalization = normalization }
    }

    /// Loads weights from a `.safetensors` file.
    public func load(contentsOf url: URL) throws {
        try load(SafeTensorsFile.read(url))
    }

    /// Writes the state dict (parameters, buffers, counters) as F32 safetensors (a ViT's head count as metadata).
    public func save(to url: URL) throws {
        var metadata = ["format": "pt", "architecture": architecture]
        if let vit = self as? VisionTransformer { metadata["num_heads"] = "\(vit.configuration.heads)" }   // not in the weights
        try SafeTensorsFile.write(store.stateDict(), metadata: metadata, to: url)
    }
}

/// The largest `num_batches_tracked` counter a state dict or a run checkpoint may hold: 2^53, the largest count a
/// Double (how a method's state keeps a teacher's counters) holds exactly, far beyond any run's batches.
public let maxBatchCounter: Int64 = 1 << 53

/// The architectures SwiftTTA builds, and their inference from a checkpoint's keys and shapes.
public enum ModelZoo {
    /// Names accepted by `--model` (besides `auto`).
    public static let names = ["wideresnet-<depth>-<widen>", "resnet50", "resnext-29-4x32", "vit-b-16", "auto"]

    /// Larger models are refused before anything is allocated, whatever the architecture (the WideResNet limit;
    /// ResNet-152 has 60 million parameters, ViT-B/16 87 million, WRN-28-10 36.5 million).
    public static let maxParameterCount = WideResNet.maxParameterCount

    /// The most residual blocks a model may have in one stage (and transformer blocks a ViT may have): ResNet-152
    /// has 36 in its third layer, ViT-G 48. Deeper models are refused before anything is allocated.
    public static let maxBlocks = 1_000

    /// A model `make` builds by name: its size, computed without building it, and how to build it.
    private struct Blueprint {
        /// Blocks in the deepest stage (a ViT's transformer blocks).
        let blocks: Int
        /// The trainable parameters, nil when the count does not fit in an Int (asked only once `blocks` is within its limit).
        let parameterCount: () -> Int?
        let build: () -> any ImageClassifier
    }

    /// The blueprint of the model named `name` for `numClasses` classes and `inputChannels` input channels, or nil
    /// when `name` names no model `make` builds (including shapes that cannot be built, like `resnext-29-4x32-s1`).
    private static func blueprint(_ name: String, numClasses: Int, inputChannels: Int) -> Blueprint? {
        let parts = name.lowercased().split(separator: "-")
        if parts.count == 3, parts[0] == "wideresnet" || parts[0] == "wrn", let d = Int(parts[1]), let w = Int(parts[2]),
           d >= 10, (d - 4) % 6 == 0, w >= 1 {
            return Blueprint(blocks: (d - 4) / 6,
                             parameterCount: { WideResNet.parameterCount(depth: d, widenFactor: w, numClasses: numClasses, inputChannels: inputChannels) },
                             build: { WideResNet(depth: d, widenFactor: w, numClasses: numClasses, inputChannels: inputChannels) })
        }
        if ["vit-b-16", "vit_base_patch16_224"].contains(name.lowercased()) {
            var c = ViTConfiguration.base16(numClasses: numClasses)
            c.inputChannels = inputChannels
            let configuration = c
            return Blueprint(blocks: configuration.depth, parameterCount: { configuration.parameterCount },
                             build: { VisionTransformer(configuration) })
        }
        if let c = ResNet.configuration(named: name) {
            return Blueprint(blocks: c.blocks.max() ?? 0,
                             parameterCount: { ResNet.parameterCount(blocks: c.blocks, baseWidth: c.base, groups: c.groups, widthPerGroup: c.widthPerGroup,
                                                                     numClasses: numClasses, inputChannels: inputChannels) },
                             build: { ResNet(blocks: c.blocks, baseWidth: c.base, groups: c.groups, widthPerGroup: c.widthPerGroup,
                                             numClasses: numClasses, inputChannels: inputChannels) })
        }
        if let c = ResNeXt.configuration(named: name) {
            return Blueprint(blocks: (c.depth - 2) / 9,
                             parameterCount: { ResNeXt.parameterCount(depth: c.depth, cardinality: c.cardinality, baseWidth: c.baseWidth, stemWidth: c.stem,
                                                                      numClasses: numClasses, inputChannels: inputChannels) },
                             build: { ResNeXt(depth: c.depth, cardinality: c.cardinality, baseWidth: c.baseWidth, stemWidth: c.stem,
                                              numClasses: numClasses, inputChannels: inputChannels) })
        }
        return nil
    }

    /// Why `blueprint` is over the size limits: the `make` error's message and what `--model` expects instead; nil within them.
    private static func sizeProblem(_ blueprint: Blueprint) -> (message: String, expected: String)? {
        if blueprint.blocks > maxBlocks {
            return ("has \(blueprint.blocks) blocks in one stage, more than the limit of \(maxBlocks)",
                    "a model of at most \(maxBlocks) blocks per stage (resnet152 has 36)")
        }
        let count = blueprint.parameterCount()
        guard let count, count <= maxParameterCount else {
            return ("has \(count.map(String.init) ?? "more than Int.max") parameters, more than the limit of \(maxParameterCount)",
                    "a model of at most \(maxParameterCount) parameters (wideresnet-28-10 has 36479194)")
        }
        return nil
    }

    /// Builds the model named `name` (`wideresnet-28-10`, …) for `numClasses` classes. Throws, before anything is
    /// allocated, for an unknown name, fewer than 1 class or input channel, or a model over `maxBlocks` or
    /// `maxParameterCount`: a `DataError` naming `--model`.
    public static func make(_ name: String, numClasses: Int, inputChannels: Int = 3) throws -> any ImageClassifier {
        guard let plan = blueprint(name, numClasses: numClasses, inputChannels: inputChannels) else {
            throw DataError(file: "--model", key: name, keyKind: "model", message: "unknown model; expected \(modelNamesHelp)")
        }
        guard numClasses >= 1, inputChannels >= 1 else {
            throw DataError(file: "--model", key: name, keyKind: "model",
                            message: "needs at least 1 class and 1 input channel, got \(numClasses) and \(inputChannels)")
        }
        if let problem = sizeProblem(plan) {
            throw DataError(file: "--model", key: name, keyKind: "model", message: problem.message)
        }
        return plan.build()
    }

    /// What `--model` accepts, for error messages.
    public static let modelNamesHelp = "wideresnet-<depth>-<widen> with depth 6n+4 (e.g. wideresnet-28-10), resnet50 (also resnet101, "
        + "resnet152, resnext50_32x4d, wide_resnet50_2, or resnet-<b1>.<b2>.<b3>.<b4>-w<base>[-g<groups>x<width>] with base·width ≥ 64), "
        + "resnext-<9n+2>-<cardinality>x<width>[-s<stem>] with stem·width ≥ 64 (e.g. resnext-29-4x32, RobustBench's AugMix ResNeXt), "
        + "vit-b-16 (timm vit_base_patch16_224) or auto"

    /// True when `make` would accept `name` (checked without building the model; the size limits aside, see `sizeRefusal`).
    public static func recognizes(_ name: String) -> Bool {
        name == "auto" || blueprint(name, numClasses: 1, inputChannels: 1) != nil
    }

    /// For a name `recognizes`, what `--model` expects instead when the model is over the size limits whatever its
    /// head (checked for 1 class and 1 input channel, without building it); nil when it is within them.
    public static func sizeRefusal(_ name: String) -> String? {
        blueprint(name, numClasses: 1, inputChannels: 1).flatMap(sizeProblem)?.expected
    }

    /// Infers the architecture from a state dict's keys and shapes (`--model auto`) and loads it.
    public static func load(_ file: SafeTensorsFile) throws -> any ImageClassifier {
        let model = try infer(file)
        try model.load(file)
        return model
    }

    /// The architecture a checkpoint describes, freshly initialised (not loaded).
    public static func infer(_ file: SafeTensorsFile) throws -> any ImageClassifier {
        let layout = try CheckpointLayout(file)
        func shape(_ key: String) -> [Int]? {
            layout.fileKey(key).flatMap { try? file.entry($0).shape }
        }
        if shape("block1.layer.0.conv1.weight") != nil {
            // The WideResNet's own key is there: a stem or head missing or of the wrong rank is named, not
            // taken for another architecture. Zero dimensions are refused below, by the shapes the model needs.
            func ranked(_ key: String, _ rank: Int) throws -> [Int] {
                if let s = shape(key), s.count == rank { return s }
                return try requireShape(shape, file: file.name, key, rank: rank, of: "a RobustBench WideResNet")
            }
            let c1 = try ranked("conv1.weight", 4), fc = try ranked("fc.weight", 2), b1 = try ranked("block1.layer.0.conv1.weight", 4)
            var n = 0
            while shape("block1.layer.\(n).conv1.weight") != nil { n += 1 }
            let widen = b1[0] / 16
            guard b1[0] % 16 == 0, widen >= 1, c1[0] == 16 else {
                throw DataError(file: file.name, key: "block1.layer.0.conv1.weight",
                                message: "looks like a WideResNet but its width \(b1[0]) is not a multiple of 16")
            }
            // The model is built (its parameters allocated) before the weights are checked, and its size
            // comes from these shapes: check first that the file holds the tensors that dominate it, so a
            // small file cannot ask for a huge model. Any real checkpoint passes, as loading needs them all.
            let architecture = "WideResNet-\(6 * n + 4)-\(widen)"
            func expect(_ key: String, _ expected: [Int]) throws {
                guard let found = shape(key) else {
                    throw DataError(file: file.name, key: key, message: "missing; a \(architecture) needs it with shape \(shapeString(expected))")
                }
                guard found == expected, !found.contains(0) else {
                    throw DataError(file: file.name, key: key,
                                    message: "has shape \(shapeString(found)); a \(architecture) needs \(shapeString(expected)) (no zero dimension)")
                }
            }
            try expect("block1.layer.0.conv1.weight", [16 * widen, 16, 3, 3])  // holds 2304·widen values
            try expect("conv1.weight", [16, max(c1[1], 1), 3, 3])
            try expect("fc.weight", [max(fc[0], 1), 64 * widen])
            for (group, width) in [16 * widen, 32 * widen, 64 * widen].enumerated() {
                for i in 0..<n { try expect("block\(group + 1).layer.\(i).conv2.weight", [width, width, 3, 3]) }
            }
            return WideResNet(depth: 6 * n + 4, widenFactor: widen, numClasses: fc[0], inputChannels: c1[1])
        }
        if let m = try ResNet.infer(shape, file: file.name) { return m }
        if let m = try ResNeXt.infer(shape, file: file.name) { return m }
        if shape("cls_token") != nil || shape("patch_embed.proj.weight") != nil {
            return try inferVisionTransformer(file, shape: shape)
        }
        throw DataError(file: file.name, message: "cannot infer the architecture: no WideResNet keys (conv1.weight, block1.layer.0.conv1.weight, fc.weight), "
                        + "torchvision ResNet keys (conv1.weight, layer1.0.conv3.weight, fc.weight) or RobustBench ResNeXt keys "
                        + "(conv_1_3x3.weight, stage_1.0.conv_conv.weight, classifier.weight) or timm ViT keys (cls_token, patch_embed.proj.weight) found")
    }

    /// A timm ViT from its keys: width from `cls_token`, patch size and channels from `patch_embed.proj.weight`,
    /// image size from `pos_embed`, depth from the `blocks.<i>.norm1.weight` present, MLP width from
    /// `blocks.0.mlp.fc1.weight`, classes from `head.weight`. The head count is not in the weights: it is read
    /// from the metadata entry `num_heads` when present, else taken as width/64 for the widths of timm's ViT-Ti/S/B/L
    /// (refused otherwise: ViT-H/14 is 1280 wide with 16 heads).
    private static func inferVisionTransformer(_ file: SafeTensorsFile, shape: (String) -> [Int]?) throws -> VisionTransformer {
        func require(_ key: String, rank: Int) throws -> [Int] {
            guard let s = shape(key) else {
                throw DataError(file: file.name, key: key, message: "missing; a ViT checkpoint needs it")
            }
            guard s.count == rank, s.allSatisfy({ $0 >= 1 }) else {
                throw DataError(file: file.name, key: key, message: "expected a \(rank)-D tensor, found shape \(s)")
            }
            return s
        }
        let cls = try require("cls_token", rank: 3), proj = try require("patch_embed.proj.weight", rank: 4)
        let pos = try require("pos_embed", rank: 3), fc1 = try require("blocks.0.mlp.fc1.weight", rank: 2)
        let head = try require("head.weight", rank: 2)
        let dim = cls[2], patch = proj[2], patches = pos[1] - 1
        let grid = Int(Double(patches).squareRoot().rounded())
        guard grid >= 1, grid * grid == patches, proj[3] == patch else {
            throw DataError(file: file.name, key: "pos_embed",
                            message: "expected 1 + g² tokens of a square g×g grid of square patches, found \(pos[1]) tokens and patch \(proj[2])×\(proj[3])")
        }
        var depth = 0
        while depth <= maxBlocks, shape("blocks.\(depth).norm1.weight") != nil { depth += 1 }
        guard depth >= 1 else {
            throw DataError(file: file.name, key: "blocks.0.norm1.weight", message: "missing; a ViT checkpoint needs at least one block (blocks.0.*)")
        }
        guard depth <= maxBlocks else {
            throw DataError(file: file.name, key: "blocks.\(maxBlocks).norm1.weight",
                            message: "one block too many: a ViT may have at most \(maxBlocks) blocks")
        }
        let heads: Int
        if let text = file.metadata["num_heads"] {
            guard let h = Int(text), h >= 1, dim % h == 0 else {
                throw DataError(file: file.name, key: "num_heads", keyKind: "metadata entry",
                                message: "expected a head count dividing the width \(dim), found '\(text)'")
            }
            heads = h
        } else {
            // timm's ViT-Ti/S/B/L (192, 384, 768, 1024 wide) have 64-wide heads; ViT-H (1280) and ViT-g (1408) do not.
            guard [192, 384, 768, 1024].contains(dim) else {
                throw DataError(file: file.name, key: "cls_token",
                                message: "width \(dim): the head count is not in the weights and is inferred (width/64) only for timm's "
                                    + "ViT-Ti/S/B/L widths 192, 384, 768 and 1024 (not a multiple of 64 here, or a ViT-H/g, whose heads are "
                                    + "wider); add a 'num_heads' metadata entry: save_file(model.state_dict(), path, metadata={'num_heads': '16'})")
            }
            heads = dim / 64
        }
        let (imageSize, overflow) = grid.multipliedReportingOverflow(by: patch)
        let c = ViTConfiguration(imageSize: imageSize, patchSize: patch, dim: dim, depth: depth, heads: heads,
                                 mlpHidden: fc1[0], numClasses: head[0], inputChannels: proj[1])
        // The model is built (its parameters allocated) before the weights are checked, and its size comes from
        // these shapes: within the limit, and the tensors that dominate it in the file with the shapes it needs.
        let count = overflow ? nil : c.parameterCount
        guard let count, count <= maxParameterCount else {
            throw DataError(file: file.name, key: "cls_token",
                            message: "with patch_embed.proj.weight \(shapeString(proj)), pos_embed \(shapeString(pos)), blocks.0.mlp.fc1.weight "
                                + "\(shapeString(fc1)), head.weight \(shapeString(head)) and \(depth) blocks, describes a ViT of "
                                + "\(count.map(String.init) ?? "more than Int.max") parameters, more than the limit of \(maxParameterCount)")
        }
        let architecture = c.architecture
        try expectShape(shape, file: file.name, "cls_token", [1, 1, dim], architecture: architecture)
        try expectShape(shape, file: file.name, "patch_embed.proj.weight", [dim, c.inputChannels, patch, patch], architecture: architecture)
        try expectShape(shape, file: file.name, "pos_embed", [1, c.tokens, dim], architecture: architecture)
        for i in 0..<depth {
            try expectShape(shape, file: file.name, "blocks.\(i).attn.qkv.weight", [3 * dim, dim], architecture: architecture)
            try expectShape(shape, file: file.name, "blocks.\(i).attn.proj.weight", [dim, dim], architecture: architecture)
            try expectShape(shape, file: file.name, "blocks.\(i).mlp.fc1.weight", [c.mlpHidden, dim], architecture: architecture)
            try expectShape(shape, file: file.name, "blocks.\(i).mlp.fc2.weight", [dim, c.mlpHidden], architecture: architecture)
        }
        try expectShape(shape, file: file.name, "head.weight", [c.numClasses, dim], architecture: architecture)
        return VisionTransformer(c)
    }
}

/// The shape of `key` in a checkpoint whose architecture is being inferred: it must be there (`model` says which
/// checkpoint needs it, for the message) with `rank` dimensions, each at least 1.
func requireShape(_ shape: (String) -> [Int]?, file: String, _ key: String, rank: Int, of model: String) throws -> [Int] {
    guard let s = shape(key) else {
        throw DataError(file: file, key: key, message: "missing; \(model) checkpoint needs it")
    }
    guard s.count == rank, s.allSatisfy({ $0 >= 1 }) else {
        throw DataError(file: file, key: key,
                        message: "expected a \(rank)-D tensor with every dimension at least 1 for \(model), found shape \(shapeString(s))")
    }
    return s
}

/// Throws unless the checkpoint holds `key` with shape `expected`. A model inferred from a checkpoint is built (its
/// parameters allocated) before the weights are checked, and its size comes from a few shapes: checking first that the
/// file holds the tensors that dominate it means a small file cannot ask for a huge model. Any real checkpoint passes,
/// as loading needs them all.
func expectShape(_ shape: (String) -> [Int]?, file: String, _ key: String, _ expected: [Int], architecture: String) throws {
    guard let found = shape(key) else {
        throw DataError(file: file, key: key, message: "missing; a \(architecture) needs it with shape \(shapeString(expected))")
    }
    guard found == expected, !found.contains(0) else {
        throw DataError(file: file, key: key,
                        message: "has shape \(shapeString(found)); a \(architecture) needs \(shapeString(expected)) (no zero dimension)")
    }
}
