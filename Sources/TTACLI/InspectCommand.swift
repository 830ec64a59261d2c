import Foundation
import TTAData
import TTAModels

/// `tta inspect FILE`: what a `.safetensors` or `.npy` file holds.
struct InspectCommand: Command {
    static let name = CommandName.inspect
    static let abstract = "Show what a .safetensors or .npy file holds."
    static let discussion = """
    For safetensors: every tensor (name, dtype, shape), the metadata, and the architecture the keys describe \
    (with its parameter count and whether the weights load into it). For .npy: dtype, shape, value range, and \
    whether it looks like CIFAR-C-layout images or labels.
    """
    static let usage = "tta inspect [--] <file>"

    let path: String

    init(_ arguments: ParsedArguments) throws {
        guard let p = arguments.positionals.first else { throw CLIError.missingArgument("a file to inspect", command: Self.name.rawValue) }
        guard arguments.positionals.count == 1 else {
            throw CLIError.unexpectedArgument(arguments.positionals[1], command: Self.name.rawValue)
        }
        path = p
    }

    func run(console: Console) throws -> Int32 {
        let url = URL(fileURLWithPath: path)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw CLIError.fileNotFound(what: "inspect", path: path)
        }
        guard !isDir.boolValue else { throw CLIError.failed("\(path) is a folder; expected a .safetensors or .npy file") }
        let magic = (try? FileHandle(forReadingFrom: url).read(upToCount: 6)) ?? nil
        let isNPY = magic.map { Array($0) == [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59] } ?? false
        do {
            console.out(isNPY ? try Self.describeNPY(url) : try Self.describeSafeTensors(url))
        } catch let e as DataError {
            if !isNPY && url.pathExtension != "safetensors" {
                // The safetensors reader says what the file is not, and what it seems to be instead.
                throw CLIError.data("\(path): not a .npy file (no \\x93NUMPY magic), and \(e.message)")
            }
            throw CLIError.wrap(e)
        }
        return 0
    }

    static func describeSafeTensors(_ url: URL) throws -> String {
        let file = try SafeTensorsFile.read(url)
        let dataBytes = file.entries.reduce(0) { $0 + $1.byteRange.count }
        var lines = ["\(url.path): safetensors, \(file.entries.count) tensors, \(formatCount(dataBytes)) bytes of data"]
        if !file.metadata.isEmpty {
            lines.append("metadata: " + file.metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))
        }
        do {
            let model = try ModelZoo.infer(file)
            var loads = "the weights load into it"
            do { try model.load(file) } catch let e as DataError {
                loads = "but the weights do not load: " + (e.key.map { "\(e.keyKind) '\($0)': " } ?? "") + e.message
            }
            lines.append("architecture: \(model.architecture) (\(model.inputChannels) input channel\(model.inputChannels == 1 ? "" : "s"), "
                         + "\(model.numClasses) classes), \(formatCount(model.store.parameterCount)) parameters; \(loads)")
            // What `tta run` applies to the [0, 1] images before the network (unless --normalize says otherwise).
            let stored = (try? CheckpointLayout(file))?.normalizationKeys
            let values = model.inputNormalization.map { n in
                "(x - mean) / std, mean " + n.mean.map { "\($0)" }.joined(separator: ", ") + ", std " + n.std.map { "\($0)" }.joined(separator: ", ")
            } ?? "none"
            lines.append("input normalisation: \(values) "
                         + (stored.map { "(stored in the weights: \($0.mean), \($0.std))" } ?? "(the architecture's default; --normalize changes it)"))
        } catch let e as DataError {
            lines.append("architecture: unknown (\(e.message))")
        }
        lines.append("")
        let entries = file.entries.sorted { $0.name < $1.name }
        let nameWidth = max(4, entries.map(\.name.count).max() ?? 0)
        let shapes = entries.map { "[" + $0.shape.map(String.init).joined(separator: ", ") + "]" }
        let shapeWidth = max(5, shapes.map(\.count).max() ?? 0)
        lines.append(pad("name", nameWidth) + "  dtype  " + pad("shape", shapeWidth) + "  elements")
        for (e, shape) in zip(entries, shapes) {
            lines.append(pad(e.name, nameWidth) + "  " + pad(e.dtype, 5) + "  " + pad(shape, shapeWidth) + "  " + leftPad(formatCount(e.count), 8))
        }
        return lines.map(\.trailingSpacesRemoved).joined(separator: "\n") + "\n"
    }

    static func describeNPY(_ url: URL) throws -> String {
        let file = try NPYFile(contentsOf: url)
        let h = file.header
        let shape = "(" + file.shape.map(String.init).joined(separator: ", ") + (file.shape.count == 1 ? ",)" : ")")
        let dtypeName: String = switch file.dtype {
        case .uint8: "uint8"
        case .int32: "int32"
        case .int64: "int64"
        case .float32: "float32"
        case .float64: "float64"
        }
        var lines = ["\(url.path): .npy version \(h.majorVersion).0, dtype \(dtypeName) ('\(file.dtype.rawValue)'), shape \(shape), "
                     + "\(formatCount(file.count)) elements, \(formatCount(h.byteCount)) bytes of data"]
        // Value range, for arrays small enough to scan quickly.
        if file.count > 0 && file.count <= 50_000_000 {
            // Over the finite values only: a NaN or an infinity says nothing about the range of the others.
            let v = try file.floats()
            var lo = Float.infinity, hi = -Float.infinity, nonFinite = 0
            for x in v {
                if !x.isFinite { nonFinite += 1; continue }
                lo = min(lo, x); hi = max(hi, x)
            }
            if nonFinite == v.count {
                lines.append("values: none finite, \(formatCount(nonFinite)) NaN or infinite")
            } else {
                lines.append("values: min \(formatNumber(Double(lo))), max \(formatNumber(Double(hi)))"
                             + (nonFinite > 0 ? " (of the finite values), \(formatCount(nonFinite)) NaN or infinite" : ""))
            }
        }
        let s = file.shape
        if file.dtype == .uint8, s.count == 4, s[3] == 1 || s[3] == 3 {
            var text = "looks like: \(s[0]) uint8 images \(s[1])x\(s[2]) with \(s[3]) channel\(s[3] == 1 ? "" : "s") (NHWC)"
            if s[0] % 5 == 0 { text += "; as a CIFAR-C corruption file: 5 severities x \(s[0] / 5) images" }
            lines.append(text + "; tta predict divides it by 255")
        } else if file.dtype == .float32, s.count == 4 {
            lines.append("looks like: \(s[0]) float32 images \(s[2])x\(s[3]) with \(s[1]) channel\(s[1] == 1 ? "" : "s") (NCHW), as tta predict takes them")
        } else if file.dtype == .float32, s.count == 2 {
            lines.append("looks like: \(s[0]) rows of \(s[1]) scores (e.g. logits from tta predict)")
        } else if file.dtype == .uint8 || file.dtype == .int32 || file.dtype == .int64, s.count == 1 {
            lines.append("looks like: \(s[0]) integer labels" + (s[0] % 5 == 0 ? " (as labels.npy: 5 severities x \(s[0] / 5))" : ""))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
