import Foundation
import TTATensor

/// A corruption benchmark in the CIFAR-10-C on-disk layout: a folder holding `labels.npy` and one
/// `<corruption>.npy` per corruption (CIFAR-10-C, CIFAR-100-C, or any dataset written the same way).
///
/// Layout (hendrycks `make_cifar_c.py`): each corruption file is uint8 `(5·K, H, W, C)` NHWC with
/// `C` in {1, 3}; rows `[(s-1)·K, s·K)` are severity `s`, each block in the same test-set order.
/// `labels.npy` is a 1-D integer array of `5·K` labels aligned with the rows (the `K` test labels
/// repeated five times in the distributed files).
///
/// Everything is validated when the benchmark is opened (missing files, dtypes, shapes, row counts,
/// label range), so a run cannot fail half-way on a bad file. The image files stay memory-mapped;
/// `images(corruption:severity:indices:)` copies and converts only the requested rows.
public struct CorruptionBenchmark: Sendable {
    /// The 15 benchmark corruptions in the canonical order every TTA repository runs them.
    public static let standardCorruptions: [String] = [
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
        "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
        "jpeg_compression",
    ]
    /// The 4 held-out ("extra", validation) corruptions shipped with CIFAR-10-C / CIFAR-100-C.
    public static let extraCorruptions: [String] = ["speckle_noise", "gaussian_blur", "spatter", "saturate"]

    /// The number of severity levels (1...5) every file holds.
    public static let severityCount = 5

    /// The most classes a benchmark may have (ImageNet-21k has 21,841); labels and `numClasses`
    /// beyond it are refused as corrupt.
    public static let maxClasses = 100_000

    /// The folder holding `labels.npy` (the resolved one when a parent directory was given).
    public let folder: URL
    /// The corruptions this benchmark opened (those requested, or every `.npy` but `labels.npy`
    /// found in the folder): the 15 standard ones first in canonical order, then the extras in
    /// their order, then any others sorted by name.
    public let availableCorruptions: [String]
    public let imageHeight: Int
    public let imageWidth: Int
    public let imageChannels: Int
    /// Rows per severity block: `rows / 5` (10,000 for CIFAR-10-C).
    public let samplesPerSeverity: Int
    /// The number of classes: the value given when opening, or the largest label + 1.
    public let numClasses: Int
    /// True when the five severity blocks of `labels.npy` are identical (as in the distributed files).
    public let labelsRepeatAcrossSeverities: Bool

    private let files: [String: NPYFile]
    private let allLabels: [Int]

    /// Total rows of each file (`5 · samplesPerSeverity`).
    public var rowCount: Int { allLabels.count }

    /// Opens and validates a benchmark.
    ///
    /// - Parameters:
    ///   - directory: the benchmark folder itself (it holds `labels.npy`), or its parent.
    ///   - folderName: the child folder to use when `directory` is a parent, e.g. `"CIFAR-10-C"`.
    ///     If `directory/folderName` exists it is used; otherwise `directory` must hold `labels.npy`.
    ///   - corruptions: the corruption files to open (each must exist); nil opens every `.npy` file
    ///     in the folder except `labels.npy` (hidden files such as `._x.npy` are skipped).
    ///   - numClasses: the class count (at most `maxClasses`); nil means the largest label + 1. Labels
    ///     must lie in `0..<numClasses` (`0..<maxClasses` when nil).
    /// - Throws: `DataError` naming the folder or file at fault.
    public init(directory: URL, folderName: String? = nil, corruptions: [String]? = nil, numClasses: Int? = nil) throws {
        let fm = FileManager.default
        func isDirectory(_ url: URL) -> Bool {
            var dir: ObjCBool = false
            return fm.fileExists(atPath: url.path, isDirectory: &dir) && dir.boolValue
        }
        func subfolders(of url: URL) -> [String] {
            ((try? fm.contentsOfDirectory(atPath: url.path)) ?? [])
                .filter { !$0.hasPrefix(".") && isDirectory(url.appendingPathComponent($0)) }.sorted()
        }
        let dirPath = directory.path
        guard isDirectory(directory) else {
            let what = fm.fileExists(atPath: dirPath) ? "is not a directory" : "directory does not exist"
            throw DataError(file: dirPath, message: "\(what); expected a CIFAR-10-C-layout folder (labels.npy and <corruption>.npy files) or its parent")
        }

        // Resolve the folder.
        let hasLabels: (URL) -> Bool = { fm.fileExists(atPath: $0.appendingPathComponent("labels.npy").path) }
        var resolved = directory
        if let folderName, !folderName.isEmpty {
            let child = directory.appendingPathComponent(folderName, isDirectory: true)
            if isDirectory(child) {
                resolved = child
            } else if !hasLabels(directory) {
                let subs = subfolders(of: directory)
                throw DataError(file: dirPath, message: "has no folder '\(folderName)' and no labels.npy of its own; "
                                + (subs.isEmpty ? "it has no sub-folders" : "sub-folders: \(subs.joined(separator: ", "))"))
            }
        }
        guard hasLabels(resolved) else {
            let withLabels = subfolders(of: resolved).filter { hasLabels(resolved.appendingPathComponent($0)) }
            let npyFiles = ((try? fm.contentsOfDirectory(atPath: resolved.path)) ?? []).filter { $0.hasSuffix(".npy") && !$0.hasPrefix(".") }
            let parent = folderName.flatMap { name -> String? in name.isEmpty ? nil : ", or its parent holding them in \(name)/" } ?? ""
            let hint = withLabels.isEmpty
                ? "expected the folder that holds labels.npy and the <corruption>.npy files\(parent)"
                : "sub-folders with labels.npy: \(withLabels.joined(separator: ", ")); give one of them as the benchmark folder"
            throw DataError(file: resolved.path, message: "missing labels.npy\(npyFiles.isEmpty ? " (the folder has no .npy files)" : ""); \(hint)")
        }
        folder = resolved

        // Which corruption files.
        let present = ((try? fm.contentsOfDirectory(atPath: resolved.path)) ?? [])
            .filter { $0.hasSuffix(".npy") && !$0.hasPrefix(".") && $0 != "labels.npy" }
            .map { String($0.dropLast(4)) }
        let presentSorted = Self.canonicalOrder(present)
        let names: [String]
        if let corruptions {
            guard !corruptions.isEmpty else {
                throw DataError(file: resolved.path, message: "the list of corruptions to open is empty; available: \(Self.listText(presentSorted))")
            }
            let missing = corruptions.filter { !present.contains($0) }
            if let first = missing.first {
                throw DataError(file: resolved.appendingPathComponent(first + ".npy").path,
                                message: "missing corruption file\(missing.count > 1 ? " (also missing: \(missing.dropFirst().joined(separator: ", ")))" : ""); the folder has: \(Self.listText(presentSorted))")
            }
            var seen = Set<String>()
            names = Self.canonicalOrder(corruptions.filter { seen.insert($0).inserted })
        } else {
            guard !presentSorted.isEmpty else {
                throw DataError(file: resolved.path, message: "no corruption files (<corruption>.npy) next to labels.npy")
            }
            names = presentSorted
        }

        // Labels.
        let labelsURL = resolved.appendingPathComponent("labels.npy")
        let labelsFile = try NPYFile(contentsOf: labelsURL)
        guard labelsFile.dtype.isInteger, labelsFile.shape.count == 1 else {
            throw DataError(file: labelsURL.path, message: "expected a 1-D integer array (uint8, int32 or int64) of labels, found dtype '\(labelsFile.dtype.rawValue)' with shape \(shapeString(labelsFile.shape))")
        }
        let labels = try labelsFile.ints()
        guard !labels.isEmpty, labels.count % Self.severityCount == 0 else {
            throw DataError(file: labelsURL.path, message: "has \(labels.count) labels; expected a positive multiple of 5 (one block per severity 1...5)")
        }
        if let numClasses, numClasses < 1 {
            throw DataError(file: labelsURL.path, message: "numClasses must be at least 1, got \(numClasses)")
        }
        if let numClasses, numClasses > Self.maxClasses {
            throw DataError(file: labelsURL.path, message: "numClasses must be at most \(Self.maxClasses), got \(numClasses)")
        }
        // Without numClasses the class count is the largest label + 1, so labels are bounded too (a label
        // of Int64.max would overflow that + 1, and a huge one would size per-class arrays).
        let classBound = numClasses ?? Self.maxClasses
        if let bad = labels.firstIndex(where: { $0 < 0 || $0 >= classBound }) {
            let range = numClasses.map { "0..<\($0) (\($0) classes)" }
                ?? "non-negative class indices below \(Self.maxClasses) (at most \(Self.maxClasses) classes)"
            throw DataError(file: labelsURL.path, message: "label \(labels[bad]) at row \(bad) is out of range; expected \(range)")
        }
        let k = labels.count / Self.severityCount
        self.numClasses = numClasses ?? ((labels.max() ?? 0) + 1)
        labelsRepeatAcrossSeverities = (1..<Self.severityCount).allSatisfy { s in labels[(s * k)..<((s + 1) * k)].elementsEqual(labels[0..<k]) }
        allLabels = labels
        samplesPerSeverity = k

        // Image files.
        var opened: [String: NPYFile] = [:]
        var reference: (name: String, shape: [Int])? = nil
        for name in names {
            let url = resolved.appendingPathComponent(name + ".npy")
            let file = try NPYFile(contentsOf: url)
            let shape = file.shape
            guard file.dtype == .uint8, shape.count == 4, shape[3] == 1 || shape[3] == 3 else {
                throw DataError(file: url.path, message: "expected uint8 images of shape (N, H, W, C) with C 1 or 3 (NHWC), found dtype '\(file.dtype.rawValue)' with shape \(shapeString(shape))")
            }
            guard shape[0] > 0, shape[0] % Self.severityCount == 0 else {
                throw DataError(file: url.path, message: "has \(shape[0]) rows; expected a positive multiple of 5 (one block per severity 1...5)")
            }
            guard shape[1] > 0, shape[2] > 0 else {
                throw DataError(file: url.path, message: "has empty images (shape \(shapeString(shape)))")
            }
            guard shape[0] == labels.count else {
                throw DataError(file: url.path, message: "has \(shape[0]) rows but labels.npy has \(labels.count) labels; they must match row for row")
            }
            if let ref = reference, ref.shape != shape {
                throw DataError(file: url.path, message: "has shape \(shapeString(shape)) but \(ref.name).npy has \(shapeString(ref.shape)); all corruption files must have the same shape")
            }
            if reference == nil { reference = (name, shape) }
            opened[name] = file
        }
        let shape = reference!.shape
        imageHeight = shape[1]
        imageWidth = shape[2]
        imageChannels = shape[3]
        availableCorruptions = names
        files = opened
    }

    /// `names` with the standard corruptions first (canonical order), then the extras, then the rest sorted.
    static func canonicalOrder(_ names: [String]) -> [String] {
        let known = standardCorruptions + extraCorruptions
        return known.filter(names.contains) + names.filter { !known.contains($0) }.sorted()
    }

    static func listText(_ names: [String]) -> String {
        names.isEmpty ? "(no corruption files)" : names.joined(separator: ", ")
    }

    /// `labels.npy`, then each corruption's `.npy` (every severity is in the one file).
    public func dataFileGroups(corruptions: [String], severities: [Int]) -> [DataFileGroup] {
        ([folder.appendingPathComponent("labels.npy")] + corruptions.map(fileURL(corruption:))).map(DataFileGroup.init(file:))
    }

    /// The path of a corruption's file.
    public func fileURL(corruption: String) -> URL {
        folder.appendingPathComponent(corruption + ".npy")
    }

    func file(_ corruption: String) throws -> NPYFile {
        guard let f = files[corruption] else {
            throw DataError(file: folder.path, key: corruption, keyKind: "corruption",
                            message: "not available; available: \(Self.listText(availableCorruptions))")
        }
        return f
    }

    func checkSeverity(_ severity: Int) throws {
        guard (1...Self.severityCount).contains(severity) else {
            throw DataError(file: folder.path, message: "severity \(severity) is out of range; expected 1...5")
        }
    }

    func checkIndices(_ indices: [Int], file: String) throws {
        if let bad = indices.first(where: { $0 < 0 || $0 >= samplesPerSeverity }) {
            throw DataError(file: file, message: "sample index \(bad) is out of range; expected 0..<\(samplesPerSeverity) (rows per severity block)")
        }
    }

    /// Images `indices` (positions within the severity block, `0..<samplesPerSeverity`) of one
    /// corruption and severity, as float32 NCHW in [0, 1]: `x / 255` of the uint8 NHWC rows
    /// `(severity - 1) · samplesPerSeverity + index`, exactly as RobustBench's
    /// `np.transpose(x, (0, 3, 1, 2)).astype(np.float32) / 255`. Only those rows are read.
    public func images(corruption: String, severity: Int, indices: [Int]) throws -> Tensor {
        let f = try file(corruption)
        try checkSeverity(severity)
        try checkIndices(indices, file: f.name)
        var out = Tensor(shape: [indices.count, imageChannels, imageHeight, imageWidth])
        try out.withUnsafeMutableBufferPointer { buf in
            try copyImages(f, severity: severity, indices: indices, into: buf, firstSlot: 0)
        }
        return out
    }

    /// The images of a range of rows within a severity block (a file-order batch).
    public func images(corruption: String, severity: Int, range: Range<Int>) throws -> Tensor {
        try images(corruption: corruption, severity: severity, indices: Array(range))
    }

    /// Converts rows into consecutive NCHW image slots of `buf`, starting at image slot `firstSlot`.
    /// Consecutive indices are read as one run of rows.
    func copyImages(_ f: NPYFile, severity: Int, indices: [Int], into buf: UnsafeMutableBufferPointer<Float>,
                    firstSlot: Int) throws {
        let (h, w, c) = (imageHeight, imageWidth, imageChannels)
        let plane = h * w, imageSize = plane * c
        let base = (severity - 1) * samplesPerSeverity
        var i = 0
        while i < indices.count {
            var j = i + 1
            while j < indices.count, indices[j] == indices[j - 1] + 1 { j += 1 }
            let bytes = try f.uint8Rows((base + indices[i])..<(base + indices[j - 1] + 1))
            bytes.withUnsafeBufferPointer { src in
                for r in 0..<(j - i) {
                    let s = r * imageSize, d = (firstSlot + i + r) * imageSize
                    for p in 0..<plane {
                        for ch in 0..<c {
                            buf[d + ch * plane + p] = Self.byteToUnit[Int(src[s + p * c + ch])]
                        }
                    }
                }
            }
            i = j
        }
    }

    /// `Float(b) / 255` for every byte (a true float32 division, as numpy's, not a multiplication).
    static let byteToUnit: [Float] = (0..<256).map { Float($0) / 255 }

    /// Labels of `indices` (positions within a severity block) for that severity: row
    /// `(severity - 1) · samplesPerSeverity + index` of `labels.npy`. With the distributed files the
    /// blocks are identical, so this equals RobustBench's `labels[:n]` for every severity.
    public func labels(severity: Int = 1, indices: [Int]) throws -> [Int] {
        try checkSeverity(severity)
        try checkIndices(indices, file: folder.appendingPathComponent("labels.npy").path)
        let base = (severity - 1) * samplesPerSeverity
        return indices.map { allLabels[base + $0] }
    }

    /// All labels of one severity block, in file order (unchecked internal access).
    func blockLabels(severity: Int) -> ArraySlice<Int> {
        let base = (severity - 1) * samplesPerSeverity
        return allLabels[base..<(base + samplesPerSeverity)]
    }
}
