import Foundation
import TTATensor

/// A clean labelled source-domain set (the training data of the source model) for methods that need
/// one: EATA's Fisher information, RMT's prototypes, warm-up and replay.
///
/// Accepted layouts, recognised from the path (`detect`):
/// - **npy**: a folder with `images.npy` and `labels.npy`. Images are either uint8 `(N, H, W, C)`
///   with C 1 or 3 (NHWC, as CIFAR-10-C and `torchvision`'s `.data`), scaled by 1/255, or float32
///   `(N, C, H, W)` (NCHW) already in [0, 1]. Labels: a 1-D integer array of N non-negative values.
/// - **CIFAR binary** (`cifar-10-batches-bin`, `cifar-100-binary`): records of 1 label byte (CIFAR-10)
///   or 2 (coarse, fine: CIFAR-100, the fine label is used) followed by 3072 bytes of a 3×32×32 CHW
///   image. A folder reads `data_batch_1.bin`…`data_batch_5.bin` (CIFAR-10) or `train.bin` (CIFAR-100);
///   a single `.bin` file is read as CIFAR-100 when named `train.bin` or `test.bin`, else CIFAR-10.
/// - **CIFAR python** (`cifar-10-batches-py`, `cifar-100-python`): pickled batches, read by the strict
///   non-executing `CIFARPickle` reader. A folder reads `data_batch_1`…`data_batch_5` or `train`;
///   a single file is read as one batch.
/// A `torchvision` root holding one of those folders (`cifar-10-batches-py/` …) is followed into it.
/// Images come out as float32 NCHW in [0, 1], as the benchmark streams give them.
public struct SourceDataset: Sendable {
    public enum Format: String, Sendable, CaseIterable { case npy, cifarBinary = "cifar-binary", cifarPython = "cifar-python" }

    public let images: Tensor
    public let labels: [Int]
    public let format: Format
    /// The files read, in order (the cache key hashes them).
    public let files: [URL]

    public var count: Int { labels.count }

    /// The format and files at `path`.
    public static func detect(_ path: String) throws -> (Format, [URL]) {
        let url = URL(fileURLWithPath: path)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw DataError(file: path, message: "no such file or folder")
        }
        guard isDir.boolValue else {
            if url.pathExtension == "bin" { return (.cifarBinary, [url]) }
            if url.pathExtension == "npy" {
                throw DataError(file: path, message: "give the folder holding images.npy and labels.npy, not a single .npy file")
            }
            return (.cifarPython, [url])
        }
        let fm = FileManager.default
        func has(_ name: String) -> Bool { fm.fileExists(atPath: url.appendingPathComponent(name).path) }
        if has("images.npy") || has("labels.npy") {
            guard has("images.npy"), has("labels.npy") else {
                throw DataError(file: path, message: "expected both images.npy and labels.npy in the folder, found only \(has("images.npy") ? "images.npy" : "labels.npy")")
            }
            return (.npy, [url.appendingPathComponent("images.npy"), url.appendingPathComponent("labels.npy")])
        }
        let trainBatches = (1...5).map { "data_batch_\($0)" }
        for (names, format) in [(trainBatches.map { $0 + ".bin" }, Format.cifarBinary), (["train.bin"], .cifarBinary),
                                (trainBatches, .cifarPython), (["train"], .cifarPython)] {
            let present = names.filter(has)
            if !present.isEmpty { return (format, present.map { url.appendingPathComponent($0) }) }
        }
        for sub in ["cifar-10-batches-bin", "cifar-100-binary", "cifar-10-batches-py", "cifar-100-python"] where has(sub) {
            return try detect(url.appendingPathComponent(sub).path)
        }
        throw DataError(file: path, message: "no source data recognised: expected images.npy and labels.npy, CIFAR binary batches "
                        + "(data_batch_N.bin or train.bin), CIFAR python batches (data_batch_N or train), or a folder holding one of those")
    }

    /// Reads the source data at `path` (see the type's documentation for the layouts).
    public static func load(_ path: String) throws -> SourceDataset {
        let (format, files) = try detect(path)
        switch format {
        case .npy: return try loadNPY(images: files[0], labels: files[1])
        case .cifarBinary:
            var pixels: [UInt8] = [], labels: [Int] = []
            for f in files {
                let b = try readCIFARBinary(f)
                pixels += b.pixels; labels += b.labels
            }
            return SourceDataset(images: chwBytes(pixels, count: labels.count), labels: labels, format: format, files: files)
        case .cifarPython:
            var pixels: [UInt8] = [], labels: [Int] = []
            for f in files {
                let b = try CIFARPickle.readBatch(f)
                pixels += b.pixels; labels += b.labels
            }
            return SourceDataset(images: chwBytes(pixels, count: labels.count), labels: labels, format: format, files: files)
        }
    }

    /// Records of `[label bytes] + 3072` bytes; CIFAR-100 (two label bytes, the second is the fine label)
    /// for files named `train.bin`/`test.bin`, CIFAR-10 (one) otherwise.
    public static func readCIFARBinary(_ url: URL) throws -> (pixels: [UInt8], labels: [Int]) {
        // A directory, a device (/dev/zero never ends) or a FIFO is refused before reading.
        let data = try readFileContents(url, mapped: false)   // copied into pixels and labels anyway
        let labelBytes = ["train.bin", "test.bin"].contains(url.lastPathComponent) ? 2 : 1
        let record = labelBytes + 3072
        guard !data.isEmpty, data.count % record == 0 else {
            throw DataError(file: url.path, message: "size \(data.count) bytes is not a multiple of \(record) "
                            + "(\(labelBytes) label byte\(labelBytes == 1 ? "" : "s") + 3072 image bytes per CIFAR-\(labelBytes == 1 ? "10" : "100") record)")
        }
        let n = data.count / record
        var pixels = [UInt8](repeating: 0, count: n * 3072), labels = [Int](repeating: 0, count: n)
        data.withUnsafeBytes { raw in
            for i in 0..<n {
                labels[i] = Int(raw[i * record + labelBytes - 1])
                for j in 0..<3072 { pixels[i * 3072 + j] = raw[i * record + labelBytes + j] }
            }
        }
        if labelBytes == 1, let bad = labels.first(where: { $0 > 9 }) {
            throw DataError(file: url.path, message: "label \(bad) is not a CIFAR-10 class (0…9); CIFAR-100 binary files are named train.bin / test.bin")
        }
        return (pixels, labels)
    }

    static func loadNPY(images: URL, labels: URL) throws -> SourceDataset {
        let imageFile = try NPYFile.read(images), labelFile = try NPYFile.read(labels)
        let shape = imageFile.shape
        guard shape.count == 4, shape[0] > 0 else {
            throw DataError(file: images.path, message: "expected images of shape (N, H, W, C) uint8 or (N, C, H, W) float32, found \(shapeString(shape))")
        }
        let tensor: Tensor
        switch imageFile.dtype {
        case .uint8:
            guard shape[3] == 1 || shape[3] == 3 else {
                throw DataError(file: images.path, message: "uint8 images must be NHWC with C 1 or 3, found shape \(shapeString(shape))")
            }
            let (n, h, w, c) = (shape[0], shape[1], shape[2], shape[3])
            let bytes = try imageFile.uint8Rows(0..<n)
            var out = [Float](repeating: 0, count: bytes.count)
            for i in 0..<n { for y in 0..<h { for x in 0..<w { for ch in 0..<c {
                out[((i * c + ch) * h + y) * w + x] = Float(bytes[((i * h + y) * w + x) * c + ch]) / 255
            } } } }
            tensor = Tensor(shape: [n, c, h, w], storage: out)
        case .float32:
            guard shape[1] == 1 || shape[1] == 3 else {
                throw DataError(file: images.path, message: "float32 images must be NCHW with C 1 or 3, found shape \(shapeString(shape))")
            }
            tensor = try imageFile.tensor()
            if let bad = tensor.storage.firstIndex(where: { !($0 >= 0 && $0 <= 1) }) {
                throw DataError(file: images.path, message: "float32 images must lie in [0, 1]; element \(bad) is \(tensor.storage[bad])")
            }
        default:
            throw DataError(file: images.path, key: "descr", keyKind: "header field",
                            message: "expected uint8 (N, H, W, C) or float32 (N, C, H, W) images, found dtype '\(imageFile.dtype.rawValue)'")
        }
        guard labelFile.shape == [shape[0]] else {
            throw DataError(file: labels.path, message: "expected \(shape[0]) labels (shape [\(shape[0])], one per image), found shape \(shapeString(labelFile.shape))")
        }
        let y = try labelFile.ints()
        if let bad = y.first(where: { $0 < 0 }) {
            throw DataError(file: labels.path, message: "labels must be non-negative class indices, found \(bad)")
        }
        return SourceDataset(images: tensor, labels: y, format: .npy, files: [images, labels])
    }

    /// `(N, 3, 32, 32)` floats in [0, 1] from CHW bytes.
    static func chwBytes(_ pixels: [UInt8], count n: Int) -> Tensor {
        Tensor(shape: [n, 3, 32, 32], storage: pixels.map { Float($0) / 255 })
    }

    /// `count` images chosen at random without repetition (the reference's `random.sample` of
    /// `SOURCE.NUM_SAMPLES`), in the drawn order; all images, shuffled, when `count` is nil or at least N.
    public func sample(_ count: Int?, using g: inout SeededGenerator) -> SourceDataset {
        var order = Array(0..<self.count)
        order.shuffle(using: &g)
        if let count, count < order.count { order = Array(order[..<count]) }
        let inner = images.count / max(self.count, 1)
        var storage: [Float] = []
        storage.reserveCapacity(order.count * inner)
        for i in order { storage += images.storage[(i * inner)..<((i + 1) * inner)] }
        return SourceDataset(images: Tensor(shape: [order.count] + Array(images.shape.dropFirst()), storage: storage),
                             labels: order.map { labels[$0] }, format: format, files: files)
    }

    /// The images and labels cut into batches of `size` (the last may be smaller).
    public func batches(of size: Int) -> (images: [Tensor], labels: [[Int]]) {
        let starts = Array(stride(from: 0, to: count, by: size))
        return (starts.map { images.slice($0..<min($0 + size, count)) }, starts.map { Array(labels[$0..<min($0 + size, count)]) })
    }
}
