import Foundation
import TTAData
import TTANN
import TTATensor

extension ImageClassifier {
    /// Loads a PyTorch state dict exported with `safetensors.torch.save_file(model.state_dict(), path)`.
    ///
    /// Strict: every parameter and buffer must be present with its exact shape and no other key may
    /// be there (`num_batches_tracked` may be absent; a `module.` prefix is stripped). Errors name the key.
    public func load(_ file: SafeTensorsFile) throws {
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
            let stripped = file.contains(c) ? c : "module.\(c)"
            if file.contains(stripped) {
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
                store.counters[c] = v[0]
            }
        }
    }

    /// Loads weights from a `.safetensors` file.
    public func load(contentsOf url: URL) throws {
        try load(SafeTensorsFile.read(url))
    }

    /// Writes the state dict (parameters, buffers, counters) as F32 safetensors.
    public func save(to url: URL) throws {
        try SafeTensorsFile.write(store.stateDict(), metadata: ["format": "pt", "architecture": architecture], to: url)
    }
}

/// The architectures SwiftTTA builds, and their inference from a checkpoint's keys and shapes.
public enum ModelZoo {
    /// Names accepted by `--model` (besides `auto`).
    public static let names = ["wideresnet-<depth>-<widen>", "resnet50", "resnext-29-4x32", "auto"]

    /// Builds the model named `name` (`wideresnet-28-10`, …) for `numClasses` classes.
    public static func make(_ name: String, numClasses: Int, inputChannels: Int = 3) throws -> any ImageClassifier {
        let parts = name.lowercased().split(separator: "-")
        if parts.count == 3, parts[0] == "wideresnet" || parts[0] == "wrn", let d = Int(parts[1]), let w = Int(parts[2]),
           d >= 10, (d - 4) % 6 == 0, w >= 1 {
            return WideResNet(depth: d, widenFactor: w, numClasses: numClasses, inputChannels: inputChannels)
        }
        if let c = ResNet.configuration(named: name) {
            return ResNet(blocks: c.blocks, baseWidth: c.base, groups: c.groups, widthPerGroup: c.widthPerGroup,
                          numClasses: numClasses, inputChannels: inputChannels)
        }
        if let c = ResNeXt.configuration(named: name) {
            return ResNeXt(depth: c.depth, cardinality: c.cardinality, baseWidth: c.baseWidth, stemWidth: c.stem,
                           numClasses: numClasses, inputChannels: inputChannels)
        }
        throw DataError(file: "--model", key: name, keyKind: "model", message: "unknown model; expected \(modelNamesHelp)")
    }

    /// What `--model` accepts, for error messages.
    public static let modelNamesHelp = "wideresnet-<depth>-<widen> with depth 6n+4 (e.g. wideresnet-28-10), resnet50 (also resnet101, "
        + "resnet152, resnext50_32x4d, wide_resnet50_2, or resnet-<b1>.<b2>.<b3>.<b4>-w<base>[-g<groups>x<width>]), "
        + "resnext-<9n+2>-<cardinality>x<width>[-s<stem>] (e.g. resnext-29-4x32, RobustBench's AugMix ResNeXt) or auto"

    /// True when `make` would accept `name` (checked without building the model).
    public static func recognizes(_ name: String) -> Bool {
        let parts = name.lowercased().split(separator: "-")
        if parts.count == 3, parts[0] == "wideresnet" || parts[0] == "wrn", let d = Int(parts[1]), let w = Int(parts[2]),
           d >= 10, (d - 4) % 6 == 0, w >= 1 { return true }
        return name == "auto" || ResNet.configuration(named: name) != nil || ResNeXt.configuration(named: name) != nil
    }

    /// Infers the architecture from a state dict's keys and shapes (`--model auto`) and loads it.
    public static func load(_ file: SafeTensorsFile) throws -> any ImageClassifier {
        let model = try infer(file)
        try model.load(file)
        return model
    }

    /// The architecture a checkpoint describes, freshly initialised (not loaded).
    public static func infer(_ file: SafeTensorsFile) throws -> any ImageClassifier {
        func shape(_ key: String) -> [Int]? {
            (try? file.entry(key))?.shape ?? (try? file.entry("module." + key))?.shape
        }
        if let c1 = shape("conv1.weight"), c1.count == 4, let fc = shape("fc.weight"), fc.count == 2,
           let b1 = shape("block1.layer.0.conv1.weight"), b1.count == 4 {
            var n = 0
            while shape("block1.layer.\(n).conv1.weight") != nil { n += 1 }
            let widen = b1[0] / 16
            guard b1[0] % 16 == 0, widen >= 1, c1[0] == 16 else {
                throw DataError(file: file.name, key: "block1.layer.0.conv1.weight",
                                message: "looks like a WideResNet but its width \(b1[0]) is not a multiple of 16")
            }
            return WideResNet(depth: 6 * n + 4, widenFactor: widen, numClasses: fc[0], inputChannels: c1[1])
        }
        if let m = try ResNet.infer(shape, file: file.name) { return m }
        if let m = try ResNeXt.infer(shape, file: file.name) { return m }
        throw DataError(file: file.name, message: "cannot infer the architecture: no WideResNet keys (conv1.weight, block1.layer.0.conv1.weight, fc.weight), "
                        + "torchvision ResNet keys (conv1.weight, layer1.0.conv3.weight, fc.weight) or RobustBench ResNeXt keys "
                        + "(conv_1_3x3.weight, stage_1.0.conv_conv.weight, classifier.weight) found")
    }
}
