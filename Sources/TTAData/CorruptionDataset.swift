import Foundation
import TTATensor

/// A corruption benchmark a `BenchmarkStream` can stream: named corruptions, five severities, and the
/// same `samplesPerSeverity` samples (images of one size, with labels) in every (corruption, severity)
/// domain. `CorruptionBenchmark` (CIFAR-10-C layout, `.npy`) and `ImageFolderBenchmark` (ImageNet-C
/// layout, JPEG folders) conform.
public protocol CorruptionDataset: Sendable {
    /// The folder the benchmark was opened from (for messages and results files).
    var folder: URL { get }
    /// Every file a stream over `corruptions` at `severities` reads, in a fixed order, as the entries of
    /// the results' input fingerprint: one file each (`.npy` benchmarks), or one domain folder each
    /// (JPEG folders, whose tens of thousands of files would otherwise each be an entry).
    func dataFileGroups(corruptions: [String], severities: [Int]) -> [DataFileGroup]
    /// The corruptions that can be streamed.
    var availableCorruptions: [String] { get }
    /// Samples in every (corruption, severity) domain.
    var samplesPerSeverity: Int { get }
    var numClasses: Int { get }
    var imageChannels: Int { get }
    var imageHeight: Int { get }
    var imageWidth: Int { get }
    /// The labels of the samples `0..<samplesPerSeverity` of a severity, in sample order.
    func labels(ofSeverity severity: Int) -> ArraySlice<Int>
    /// Writes samples `indices` of one domain as float32 NCHW images in [0, 1] into consecutive image
    /// slots of `buffer`, starting at slot `firstSlot`.
    /// - Throws: `DataError` naming the file that cannot be read.
    func readImages(corruption: String, severity: Int, indices: [Int], into buffer: UnsafeMutableBufferPointer<Float>,
                    firstSlot: Int) throws
}

/// One entry of an input fingerprint: a single file, or the files of one folder that a stream reads,
/// in the order it reads them.
public struct DataFileGroup: Sendable, Equatable {
    /// The file, or the folder that holds the files.
    public let path: URL
    /// The name the entry goes by wherever the benchmark folder is: the file's name (`fog.npy`), or the
    /// folder's path within the benchmark (`fog/5`).
    public let name: String
    /// `[path]` for a single file; else the files, each below `path`.
    public let files: [URL]

    /// A single file, named by its last path component.
    public init(file: URL) {
        (path, name, files) = (file, file.lastPathComponent, [file])
    }

    /// The files of `folder` (each below it), in reading order.
    public init(folder: URL, name: String, files: [URL]) {
        precondition(files.allSatisfy { $0.path.hasPrefix(folder.path + "/") }, "DataFileGroup \(name): a file outside \(folder.path)")
        (path, self.name, self.files) = (folder, name, files)
    }

    /// Whether the entry is one file rather than a folder.
    public var isSingleFile: Bool { files == [path] }
}

extension CorruptionDataset {
    /// Samples `indices` of one domain as a float32 NCHW tensor in [0, 1].
    public func images(corruption: String, severity: Int, indices: [Int]) throws -> Tensor {
        var out = Tensor(shape: [indices.count, imageChannels, imageHeight, imageWidth])
        try out.withUnsafeMutableBufferPointer { try readImages(corruption: corruption, severity: severity, indices: indices, into: $0, firstSlot: 0) }
        return out
    }
}

extension CorruptionBenchmark: CorruptionDataset {
    public func labels(ofSeverity severity: Int) -> ArraySlice<Int> { blockLabels(severity: severity) }

    public func readImages(corruption: String, severity: Int, indices: [Int], into buffer: UnsafeMutableBufferPointer<Float>,
                           firstSlot: Int) throws {
        try copyImages(try file(corruption), severity: severity, indices: indices, into: buffer, firstSlot: firstSlot)
    }
}
