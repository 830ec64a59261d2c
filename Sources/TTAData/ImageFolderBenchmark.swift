import Dispatch
import Foundation
import Synchronization

/// A corruption benchmark in the ImageNet-C layout: `<root>/<corruption>/<severity>/<wnid>/<file>.JPEG`
/// (ImageNet-C, Tiny-ImageNet-C, or any folder written the same way, e.g. by `imagecorruptions`).
///
/// - Classes are the `<wnid>` folders of a domain, sorted by name; a sample's label is its folder's
///   position (torchvision's `ImageFolder`; for the full ImageNet-C this equals RobustBench's
///   `imagenet_class_to_id_map.json`). Every opened domain must hold the same class folders.
/// - Samples are the same relative files in every domain, in the order of `subset`: RobustBench's
///   fixed 5,000-image list (`.robustBench5000`, the reference's default for ImageNet-C), a list file of
///   `<wnid>/<file>` lines (`.list`, e.g. the reference's `imagenet_val_ids_50k.txt`), or every image
///   (`.all`: classes sorted, files sorted within a class, as `ImageFolder` lists them).
/// - Images are decoded with `JPEGImage` (Pillow's pixels), greyscale files repeated to RGB as
///   Pillow's `convert("RGB")`, and scaled to [0, 1] as `ToTensor`. They are used as stored (the
///   reference's ImageNet-C transform is `ToTensor()` only: the files are already 224×224); every
///   image must have the size of the first sample of the first domain, of at most `maxImagePixels` pixels.
///
/// Everything that can be checked without decoding is checked when the benchmark is opened: the
/// folders of the requested corruptions and severities, identical class folders, no empty class, no
/// non-JPEG file, and every sample present in every domain. A file that fails to decode, or has the
/// wrong size, stops the read with an error naming it. Nothing is skipped.
public struct ImageFolderBenchmark: CorruptionDataset {
    /// Which samples of each domain, in which order.
    public enum Subset: Sendable, Equatable {
        /// RobustBench's 5,000-image ImageNet-C list (997 classes, 1–12 images each), in its order.
        case robustBench5000
        /// Every image, classes sorted and files sorted within each class.
        case all
        /// The `<wnid>/<file>` lines of a text file, in file order.
        case list(URL)
    }

    public let folder: URL
    public let availableCorruptions: [String]
    /// The severities whose folders were checked (1...5 unless fewer were requested).
    public let severities: [Int]
    /// The sorted class folder names (`n01440764`, …).
    public let classes: [String]
    /// Sample paths relative to a domain folder (`<wnid>/<file>`), in sample order.
    public let samples: [String]
    private let sampleLabels: [Int]
    public let imageChannels = 3
    public let imageHeight: Int
    public let imageWidth: Int

    /// The most pixels a benchmark image may have: 1024×1024, 20 times ImageNet-C's 224×224. Each image's frame
    /// header is checked against it before the image is decoded (a file of a few kilobytes may declare 16384×16384,
    /// which would cost gigabytes per decode, and a stream batch of such images far more).
    public static let maxImagePixels = 1024 * 1024

    public var samplesPerSeverity: Int { samples.count }
    public var numClasses: Int { classes.count }

    /// Opens and validates a benchmark folder.
    ///
    /// - Parameters:
    ///   - directory: the benchmark folder (it holds `<corruption>/<severity>/…`) or its parent.
    ///   - folderName: the child folder to use when `directory` is a parent (`ImageNet-C`, `Tiny-ImageNet-C`).
    ///   - corruptions: the corruptions to open; nil opens every corruption folder present.
    ///   - severities: the severity folders to check; nil checks 1...5.
    ///   - subset: which samples each domain holds.
    /// - Throws: `DataError` naming the folder or file at fault.
    public init(directory: URL, folderName: String? = nil, corruptions: [String]? = nil, severities: [Int]? = nil,
                subset: Subset = .all) throws {
        let fm = FileManager.default
        func isDirectory(_ url: URL) -> Bool {
            var dir: ObjCBool = false
            return fm.fileExists(atPath: url.path, isDirectory: &dir) && dir.boolValue
        }
        func visible(_ url: URL) throws -> [String] {
            do { return try fm.contentsOfDirectory(atPath: url.path).filter { !$0.hasPrefix(".") }.sorted() } catch {
                throw DataError(file: url.path, message: "cannot list the folder: \(error.localizedDescription)")
            }
        }
        guard isDirectory(directory) else {
            throw DataError(file: directory.path, message: "\(fm.fileExists(atPath: directory.path) ? "is not a directory" : "directory does not exist"); "
                            + "expected an ImageNet-C-layout folder (<corruption>/<severity>/<wnid>/<file>.JPEG) or its parent")
        }
        var root = directory
        if let folderName, isDirectory(directory.appendingPathComponent(folderName)) {
            root = directory.appendingPathComponent(folderName, isDirectory: true)
        }
        folder = root
        let severityNames = (1...CorruptionBenchmark.severityCount).map(String.init)
        let present = try visible(root).filter { name in
            severityNames.contains { isDirectory(root.appendingPathComponent(name).appendingPathComponent($0)) }
        }
        let names: [String]
        if let corruptions {
            guard !corruptions.isEmpty else { throw DataError(file: root.path, message: "the list of corruptions to open is empty") }
            if let missing = corruptions.first(where: { !present.contains($0) }) {
                throw DataError(file: root.appendingPathComponent(missing).path,
                                message: "missing corruption folder; the folder has: \(CorruptionBenchmark.listText(CorruptionBenchmark.canonicalOrder(present)))")
            }
            var seen = Set<String>()
            names = CorruptionBenchmark.canonicalOrder(corruptions.filter { seen.insert($0).inserted })
        } else {
            guard !present.isEmpty else {
                let subs = try visible(root).filter { isDirectory(root.appendingPathComponent($0)) }
                throw DataError(file: root.path, message: "no corruption folders with severity sub-folders 1...5 found (expected <corruption>/<severity>/<wnid>/<file>.JPEG)"
                                + (subs.isEmpty ? "" : "; sub-folders: \(subs.prefix(10).joined(separator: ", "))"))
            }
            names = CorruptionBenchmark.canonicalOrder(present)
        }
        let levels = severities ?? Array(1...CorruptionBenchmark.severityCount)
        if let bad = levels.first(where: { !(1...CorruptionBenchmark.severityCount).contains($0) }) {
            throw DataError(file: root.path, message: "severity \(bad) is out of range; expected 1...5")
        }
        availableCorruptions = names
        self.severities = levels

        // Classes and files of every domain.
        let domains = names.flatMap { c in levels.map { root.appendingPathComponent(c).appendingPathComponent(String($0)) } }
        var classes: [String] = []
        var firstListing: [String] = []
        for (d, domain) in domains.enumerated() {
            guard isDirectory(domain) else {
                throw DataError(file: domain.path, message: "missing severity folder; every opened corruption needs severities \(levels.map(String.init).joined(separator: ", "))")
            }
            let entries = try visible(domain)
            if let file = entries.first(where: { !isDirectory(domain.appendingPathComponent($0)) }) {
                throw DataError(file: domain.appendingPathComponent(file).path, message: "unexpected file; a severity folder holds only class folders (<wnid>/<file>.JPEG)")
            }
            if d == 0 {
                guard !entries.isEmpty else { throw DataError(file: domain.path, message: "has no class folders") }
                classes = entries
            } else if entries != classes {
                let missing = classes.filter { !entries.contains($0) }, extra = entries.filter { !classes.contains($0) }
                throw DataError(file: domain.path, message: (missing.isEmpty ? "" : "missing class folder \(missing[0])\(missing.count > 1 ? " and \(missing.count - 1) more" : ""); ")
                                + (extra.isEmpty ? "" : "extra class folder \(extra[0]); ")
                                + "every domain must hold the class folders of \(domains[0].path) (\(classes.count))")
            }
            guard subset == .all else { continue }
            // Every image, checked domain by domain against the first.
            var listing: [String] = []
            for c in classes {
                let files = try visible(domain.appendingPathComponent(c))
                if let bad = files.first(where: { !Self.isJPEGName($0) }) {
                    throw DataError(file: domain.appendingPathComponent(c).appendingPathComponent(bad).path,
                                    message: "not a .JPEG/.jpg file; class folders must hold only JPEG images")
                }
                guard !files.isEmpty else { throw DataError(file: domain.appendingPathComponent(c).path, message: "empty class folder: no images") }
                listing += files.map { "\(c)/\($0)" }
            }
            if d == 0 {
                firstListing = listing
            } else if listing != firstListing {
                let a = Set(listing), b = Set(firstListing)
                if let m = firstListing.first(where: { !a.contains($0) }) {
                    throw DataError(file: domain.appendingPathComponent(m).path, message: "missing image (present in \(domains[0].path)); every domain must hold the same images")
                }
                let e = listing.first { !b.contains($0) }!
                throw DataError(file: domain.appendingPathComponent(e).path, message: "extra image (absent from \(domains[0].path)); every domain must hold the same images")
            }
        }
        self.classes = classes

        // The samples.
        let list: [String]
        switch subset {
        case .all: list = firstListing
        case .robustBench5000: list = Self.robustBench5000
        case .list(let url):
            // A directory, a device (/dev/zero never ends) or a FIFO is refused before reading.
            let contents = try readFileContents(url, mapped: false)
            guard let text = String(data: contents, encoding: .utf8) else {
                throw DataError(file: url.path, message: "the image list is not UTF-8 text; expected <wnid>/<file>.JPEG lines")
            }
            list = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !list.isEmpty else { throw DataError(file: url.path, message: "the image list is empty; expected <wnid>/<file>.JPEG lines") }
            if let bad = list.first(where: { $0.split(separator: "/").count != 2 }) {
                throw DataError(file: url.path, message: "line '\(bad)' is not <wnid>/<file>")
            }
        }
        let index = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        var labels: [Int] = []
        labels.reserveCapacity(list.count)
        let listName: String = switch subset {
        case .all: "the folder"
        case .robustBench5000: "RobustBench's 5,000-image subset"
        case .list(let url): url.path
        }
        for path in list {
            let wnid = String(path.split(separator: "/")[0])
            guard let label = index[wnid] else {
                let needed = Set(list.map { String($0.split(separator: "/")[0]) }).subtracting(classes).sorted()
                throw DataError(file: domains[0].path, message: "missing class folder \(wnid) (\(needed.count) class\(needed.count == 1 ? "" : "es") of \(listName) absent, "
                                + "the folder has \(classes.count)); use all images (subset .all) for a partial folder")
            }
            labels.append(label)
        }
        if subset != .all {
            for domain in domains {
                if let missing = list.first(where: { !fm.fileExists(atPath: domain.appendingPathComponent($0).path) }) {
                    throw DataError(file: domain.appendingPathComponent(missing).path, message: "missing image listed in \(listName)")
                }
            }
        }
        samples = list
        sampleLabels = labels

        // The image size, from the first sample.
        let first = try JPEGImage.read(domains[0].appendingPathComponent(list[0]), maxPixelCount: Self.maxImagePixels)
        (imageHeight, imageWidth) = (first.height, first.width)
    }

    static func isJPEGName(_ name: String) -> Bool {
        let ext = (name as NSString).pathExtension.lowercased()
        return ext == "jpeg" || ext == "jpg"
    }

    /// RobustBench's 5,000 `<wnid>/ILSVRC2012_val_<8 digits>.JPEG` paths, in order.
    public static let robustBench5000: [String] = robustBench5000Tokens.split(whereSeparator: { $0 == " " || $0 == "\n" }).map { token in
        let parts = token.split(separator: "/")
        let number = String(parts[1])
        return "\(parts[0])/ILSVRC2012_val_\(String(repeating: "0", count: max(0, 8 - number.count)))\(number).JPEG"
    }

    /// One entry per (corruption, severity) domain, domain after domain: its folder `<corruption>/<severity>`
    /// and the JPEG of every sample, in sample order.
    public func dataFileGroups(corruptions: [String], severities: [Int]) -> [DataFileGroup] {
        corruptions.flatMap { c in
            severities.map { s in
                DataFileGroup(folder: folder.appendingPathComponent(c).appendingPathComponent(String(s)), name: "\(c)/\(s)",
                              files: samples.indices.map { url(corruption: c, severity: s, index: $0) })
            }
        }
    }

    /// The images `stream` reads, by domain folder, for the run's fingerprint: with `--samples-per-domain` on the
    /// 50,000-image pool a run hashes the images it runs, not the pool. A domain that comes back (`gradual`) is one
    /// group.
    public func dataFileGroups(readBy stream: BenchmarkStream) -> [DataFileGroup] {
        var byDomain = [Set<Int>](repeating: [], count: stream.domains.count)
        for s in stream.samples { byDomain[s.domainIndex].insert(s.index) }
        var names: [String] = [], read: [String: (corruption: String, severity: Int, indices: Set<Int>)] = [:]
        for (d, indices) in zip(stream.domains, byDomain) where !indices.isEmpty {
            let name = "\(d.name)/\(d.severity)"
            if read[name] == nil { names.append(name) }
            read[name, default: (d.name, d.severity, [])].indices.formUnion(indices)
        }
        return names.map { name in
            let (c, s, indices) = read[name]!
            return DataFileGroup(folder: folder.appendingPathComponent(c).appendingPathComponent(String(s)), name: name,
                                 files: indices.sorted().map { url(corruption: c, severity: s, index: $0) })
        }
    }

    /// The path of one sample of one domain.
    public func url(corruption: String, severity: Int, index: Int) -> URL {
        folder.appendingPathComponent(corruption).appendingPathComponent(String(severity)).appendingPathComponent(samples[index])
    }

    public func labels(ofSeverity severity: Int) -> ArraySlice<Int> { sampleLabels[...] }

    /// Decodes the images (in parallel) into NCHW float slots: `x / 255` of the RGB bytes.
    public func readImages(corruption: String, severity: Int, indices: [Int], into buffer: UnsafeMutableBufferPointer<Float>,
                           firstSlot: Int) throws {
        guard availableCorruptions.contains(corruption), severities.contains(severity) else {
            throw DataError(file: folder.path, message: "domain \(corruption)/\(severity) was not opened (opened: \(availableCorruptions.joined(separator: ", ")), severities \(severities))")
        }
        let (h, w) = (imageHeight, imageWidth), plane = h * w
        precondition(buffer.count >= (firstSlot + indices.count) * 3 * plane)
        let out = UncheckedSendable(buffer.baseAddress!)
        let errors = Mutex<[Int: DataError]>([:])
        let urls = indices.map { url(corruption: corruption, severity: severity, index: $0) }
        DispatchQueue.concurrentPerform(iterations: indices.count) { i in
            do {
                let image = try JPEGImage.read(urls[i], maxPixelCount: Self.maxImagePixels)
                guard image.width == w, image.height == h else {
                    throw DataError(file: urls[i].path, message: "image is \(image.width)x\(image.height); expected \(w)x\(h) like the first image of the benchmark")
                }
                let d = out.value + (firstSlot + i) * 3 * plane
                image.pixels.withUnsafeBufferPointer { p in
                    for ch in 0..<3 {
                        let src = image.channels == 1 ? 0 : ch
                        for k in 0..<plane { d[ch * plane + k] = CorruptionBenchmark.byteToUnit[Int(p[k * image.channels + src])] }
                    }
                }
            } catch let e as DataError {
                errors.withLock { $0[i] = e }
            } catch {
                errors.withLock { $0[i] = DataError(file: urls[i].path, message: "\(error)") }
            }
        }
        if let first = errors.withLock({ $0.min { $0.key < $1.key } }) { throw first.value }
    }
}

/// A pointer handed to `concurrentPerform` workers that write disjoint image slots.
private struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
