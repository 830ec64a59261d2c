import Foundation
import TTAData

/// The SHA-256 of every file a run reads, so that a results file can be traced to its exact inputs:
/// two runs with equal fingerprints, configuration, seed, version and thread count read the same bytes.
public struct InputFingerprint: Sendable, Codable, Equatable {
    /// One file: its path as given, its size and its digest.
    public struct File: Sendable, Codable, Equatable {
        public var path: String
        public var bytes: Int
        public var sha256: String
    }
    /// The model weights.
    public var weights: File
    /// The benchmark files actually read (labels and one file per corruption of the stream), in order.
    public var data: [File]
    /// One digest over the data files' digests in order, for a quick comparison.
    public var dataSHA256: String

    /// Hashes `weights` and `data`. Reads every byte once, in chunks.
    public init(weights: URL, data: [URL]) throws {
        self.weights = try File(weights)
        self.data = try data.map(File.init)
        dataSHA256 = SHA256.hex(Array(self.data.map { "\($0.path)\t\($0.sha256)\n" }.joined().utf8))
    }
}

extension InputFingerprint.File {
    init(_ url: URL) throws {
        path = url.path
        let attributes = try? FileManager.default.attributesOfItem(atPath: url.path)
        bytes = (attributes?[.size] as? NSNumber)?.intValue ?? 0
        sha256 = try SHA256.hex(fileAt: url)
    }
}
