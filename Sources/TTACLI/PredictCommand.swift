import Dispatch
import Foundation
import TTAAdaptation
import TTAData
import TTAKernels
import TTAModels
import TTARuntime
import TTATensor

/// `tta predict`: streams the user's own images through a model (and a method, which adapts as it
/// goes) in batches, and writes the outputs as float32 `.npy` (N, classes).
struct PredictCommand: Command {
    static let name = CommandName.predict
    static let abstract = "Run a model (and a method) over your own images and write the logits."
    static let discussion = """
    The images are read from --input: uint8 (N, H, W, C) NHWC (as CIFAR-10-C files; converted to NCHW and divided by \
    255) or float32 (N, C, H, W) NCHW already in the model's input range. They go through the method in batches, in \
    order, each batch predicted before the method adapts on it (no method: the source model). The outputs (logits; \
    CoTTA's are its teacher's) are written to --output as float32 (N, classes), atomically. The method's defaults \
    are the reference's CIFAR settings for images of up to 32×32 and its ImageNet-C settings for larger ones.
    """
    static let usage = "tta predict --weights <file.safetensors> --input <images.npy> --output <out.npy> [options]"

    let arguments: ParsedArguments
    let weights: String, input: String, output: String
    let model: String, method: String, seed: UInt64
    /// --batch-size; nil: by the images' size (`run`).
    let requestedBatchSize: Int?

    init(_ a: ParsedArguments) throws {
        guard a.positionals.isEmpty else { throw CLIError.unexpectedArgument(a.positionals[0], command: Self.name.rawValue) }
        func required(_ name: String, _ what: String) throws -> String {
            guard let v = a.word(name) else { throw CLIError.usage("'tta predict' needs --\(name) (\(what))") }
            return v
        }
        weights = try required("weights", "the model's .safetensors weights")
        input = try required("input", "a .npy file of images")
        output = try required("output", "where to write the logits .npy")
        model = a.word("model") ?? "auto"
        method = a.word("method") ?? "source"
        requestedBatchSize = a.int("batch-size")
        seed = a.seed("seed") ?? 1
        arguments = a
        try checkModelName(model)
        // predict reads no source data: the methods that need it are refused before any file is read.
        if MethodRegistry.entry(method)?.needsSourceData == true {
            let runInstead = "use 'tta run --method \(method) --source-data <path>' (on a benchmark) instead"
            guard MethodRegistry.baseName(method) == "eata" else {
                throw CLIError.usage("--method \(method) needs labelled source data, which 'tta predict' does not take; \(runInstead)")
            }
            if a.number("fisher-alpha").map({ Float($0) }) != 0 {
                throw CLIError.usage("--method \(method) needs source images for its Fisher information (--fisher-alpha > 0), which "
                                     + "'tta predict' does not take: give --fisher-alpha 0 (EATA without its Fisher term, as eta), "
                                     + "or \(runInstead)")
            }
        }
        try refuseUnreadOptions(a, methods: [method])
        if requestedBatchSize == 1, let refusal = singleImageRefusal(method) {
            throw CLIError.usage("--batch-size 1: \(method) \(refusal.why). Give a larger --batch-size ('tta run --window-length N' adapts "
                                 + "on a sliding window of single images), or use a method made for single images: \(refusal.alternatives)")
        }
    }

    func run(console: Console) throws -> Int32 {
        let inputURL = URL(fileURLWithPath: input), outputURL = URL(fileURLWithPath: output)
        guard FileManager.default.fileExists(atPath: inputURL.path) else { throw CLIError.fileNotFound(what: "--input", path: input) }
        try checkOutputPaths([(flag: "output", path: output)], inputs: [(flag: "input", path: input), (flag: "weights", path: weights)])
        if let t = arguments.int("threads") { KernelThreads.count = t }

        // Validate everything first: weights, model, images, method.
        let loaded = try LoadedWeights(path: weights, modelName: model, normalize: arguments.word("normalize"))
        let net = try loaded.makeModel(numClasses: nil, inputChannels: nil)
        let file: NPYFile
        do { file = try NPYFile(contentsOf: inputURL) } catch { throw CLIError.wrap(error) }
        let layout = try ImageLayout(file, channels: net.inputChannels, architecture: net.architecture)
        // A model made for one image size (a ViT's position embeddings) refuses any other: before the first batch.
        if let (h, w) = net.requiredImageSize, layout.height != h || layout.width != w {
            throw CLIError.data("--input \(input): images are \(layout.height)×\(layout.width) (H×W); \(net.architecture) takes \(h)×\(w) images")
        }
        // As the benchmarks: CIFAR-sized images (CIFAR-10/100-C, the embedded Fashion-MNIST-C) take the reference's CIFAR
        // settings, larger ones (ImageNet-C, Tiny-ImageNet-C) its ImageNet-C settings.
        let family: MethodConfiguration.Family = max(layout.height, layout.width) > 32 ? .imagenet : .cifar
        let batchSize = requestedBatchSize ?? (family == .imagenet ? imageNetBatchSize : standardBatchSize)
        var configuration = try methodConfiguration(method, family: family, numClasses: net.numClasses, arguments)
        applyTransformerRate(&configuration, method: method, model: net, arguments)
        try refuseUnusedOptimizerSettings(arguments, methods: [(method, configuration)])
        // The configured batch size (ROID's loss divisor, UnMix-TNS's momentum), no more than the images there are.
        configuration.batchSize = min(batchSize, max(layout.count, 1))
        // The methods that augment their images need square ones (CoTTA's pipeline crops back to a square).
        if let refusal = augmentationRefusal(method, configuration, channels: layout.channels, height: layout.height, width: layout.width) {
            throw CLIError.data("--input \(input): \(refusal.found); --method \(method) \(refusal.why)")
        }
        let adaptor: Adaptor
        do {
            let m = try MethodFactory.make(method, configuration: configuration, imageSize: layout.height)
            adaptor = try Adaptor(model: net, method: m, seed: seed)
        } catch { throw CLIError.wrap(error) }

        let quiet = arguments.flag("quiet")
        let n = layout.count
        // Written so that no sum passes Int.max: --batch-size may be anything up to it.
        let batches = n == 0 ? 0 : (n - 1) / batchSize + 1
        var logits: [Float] = []
        logits.reserveCapacity(n * net.numClasses)
        // The batches whose step the adaptor undid (NaN or infinity after the update), numbered from 1.
        var rolledBack: [Int] = []
        let start = DispatchTime.now().uptimeNanoseconds
        for b in 0..<batches {
            let rows = (b * batchSize)..<(b * batchSize + min(batchSize, n - b * batchSize))
            let x = try layout.batch(file, rows: rows)
            let y: Tensor
            let batchName = "batch \(b + 1) of \(batches) (images \(rows.lowerBound)..<\(rows.upperBound))"
            do { y = try adaptor.adapt(x) } catch { throw CLIError.failed("\(batchName): \(CLIError.wrap(error).description)") }
            // Non-finite logits are never written: the output file would look like a result.
            guard y.isFinite else {
                let classes = y.count / rows.count
                let bad = (0..<rows.count).filter { r in y.storage[(r * classes)..<((r + 1) * classes)].contains { !$0.isFinite } }
                let cause = arguments.word("normalize").map { "--normalize \($0) (the model computes (x - mean) / std)" }
                    ?? "the weights"
                throw CLIError.failed("\(batchName): the model's outputs hold NaN or infinity for \(bad.count) of its \(rows.count) images "
                                      + "(first: image \(rows.lowerBound + (bad.first ?? 0))); nothing was written to \(output). Check \(cause) "
                                      + "and the input's values (here in [\(x.storage.min() ?? 0), \(x.storage.max() ?? 0)]; uint8 images are "
                                      + "divided by 255, float32 ones used as they are)")
            }
            if adaptor.lastOutcome == .rolledBack { rolledBack.append(b + 1) }
            logits += y.storage
            if !quiet && console.stderrIsTerminal {
                console.err("\r\u{1B}[Kpredict \(method): batch \(b + 1)/\(batches)")
            }
        }
        if !quiet && console.stderrIsTerminal { console.err("\r\u{1B}[K") }
        if !rolledBack.isEmpty {
            let list = rolledBack.prefix(5).map(String.init).joined(separator: ", ") + (rolledBack.count > 5 ? ", … \(rolledBack.count - 5) more" : "")
            console.err("tta predict: warning: \(rolledBack.count) of \(batches) steps rolled back (NaN or infinity after \(method)'s update; "
                        + "the model went back to before the batch, whose logits were computed before the update): batch\(rolledBack.count == 1 ? "" : "es") \(list)\n")
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        do { try NPYFile.write(floats: logits, shape: [n, net.numClasses], to: outputURL) } catch { throw CLIError.wrap(error) }
        let settings = method == "source" ? "" : family == .imagenet ? " (ImageNet-C settings)" : " (CIFAR settings)"
        console.out("wrote \(output): float32 (\(n), \(net.numClasses)) logits of \(net.architecture) with \(method)\(settings), "
                    + "\(n) images in \(batches) batch\(batches == 1 ? "" : "es") of up to \(batchSize), \(formatDuration(seconds))"
                    + " (\(String(format: "%.1f", seconds > 0 ? Double(n) / seconds : 0)) images/s)\n")
        return 0
    }
}

/// How `--input` stores its images: uint8 NHWC (divided by 255) or float NCHW (as is).
struct ImageLayout {
    let nhwcBytes: Bool
    let count: Int, channels: Int, height: Int, width: Int

    init(_ file: NPYFile, channels c: Int, architecture: String) throws {
        let s = file.shape
        let expected = "uint8 (N, H, W, \(c)) NHWC or float32 (N, \(c), H, W) NCHW for \(architecture)"
        func fail() -> CLIError {
            CLIError.data("\(file.name): expected \(expected), found \(file.dtype == .uint8 ? "uint8" : file.dtype.rawValue) with shape [\(s.map(String.init).joined(separator: ", "))]")
        }
        switch file.dtype {
        case .uint8:
            if s.count == 4, s[3] == c { (count, height, width) = (s[0], s[1], s[2]) }
            else if s.count == 3, c == 1 { (count, height, width) = (s[0], s[1], s[2]) }
            else { throw fail() }
            nhwcBytes = true
        case .float32, .float64:
            guard s.count == 4, s[1] == c else { throw fail() }
            (count, height, width) = (s[0], s[2], s[3])
            nhwcBytes = false
        default:
            throw fail()
        }
        guard count > 0, height > 0, width > 0 else { throw CLIError.data("\(file.name): holds no images (shape \(s))") }
        channels = c
    }

    /// Rows as float32 NCHW: bytes transposed and divided by 255 (as the benchmark reader), floats as stored.
    func batch(_ file: NPYFile, rows: Range<Int>) throws -> Tensor {
        let plane = height * width
        if !nhwcBytes {
            return Tensor(shape: [rows.count, channels, height, width], storage: try file.rowsAsFloats(rows))
        }
        let bytes = try file.uint8Rows(rows)
        var out = [Float](repeating: 0, count: bytes.count)
        let image = plane * channels
        for i in 0..<rows.count {
            for p in 0..<plane {
                for ch in 0..<channels {
                    out[i * image + ch * plane + p] = Float(bytes[i * image + p * channels + ch]) / 255
                }
            }
        }
        return Tensor(shape: [rows.count, channels, height, width], storage: out)
    }
}
