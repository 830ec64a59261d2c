import Dispatch
import Foundation
import Synchronization
import TTAData

/// The SHA-256 of every file a run reads, so that a results file can be traced to its exact inputs:
/// two runs with equal fingerprints, configuration, seed, version and thread count read the same bytes.
public struct InputFingerprint: Sendable, Codable, Equatable {
    /// One entry: a file, or a folder of files (a JPEG benchmark's domain).
    public struct File: Sendable, Codable, Equatable {
        /// The file's or the folder's path as given.
        public var path: String
        /// Its size, or the folder's files' sizes summed.
        public var bytes: Int
        /// The file's digest. A folder's is the digest of the listing `sha256sum` prints for its files
        /// in reading order, run in the folder: a line `<hex digest>  <path below the folder>` per file.
        public var sha256: String
        /// How many files the folder's entry covers; absent for a single file.
        public var files: Int?
    }
    /// The model weights.
    public var weights: File
    /// The benchmark files actually read (labels and one file per corruption of the stream, or one folder
    /// per domain), then the source data's files, in order.
    public var data: [File]
    /// One digest over the data entries' names (a file's name, a folder's `<corruption>/<severity>`; no
    /// folders above the benchmark) and digests, in order: equal for the same bytes wherever the
    /// benchmark folder is.
    public var dataSHA256: String

    /// Hashes `weights` and `data`. Reads every byte once, in chunks; a folder's files in parallel.
    public init(weights: URL, data: [DataFileGroup]) throws {
        self.weights = try File(weights)
        self.data = try data.map(File.init)
        dataSHA256 = SHA256.hex(Array(zip(data, self.data).map { "\($0.name)\t\($1.sha256)\n" }.joined().utf8))
    }
}

extension InputFingerprint.File {
    init(_ url: URL) throws {
        self.init(path: url.path, bytes: Self.size(url), sha256: try SHA256.hex(fileAt: url), files: nil)
    }

    init(_ group: DataFileGroup) throws {
        guard !group.isSingleFile else {
            try self.init(group.path)
            return
        }
        let digests = Mutex<[String?]>(Array(repeating: nil, count: group.files.count))
        let failure = Mutex<(any Error)?>(nil)
        DispatchQueue.concurrentPerform(iterations: group.files.count) { i in
            do {
                let hex = try SHA256.hex(fileAt: group.files[i])
                digests.withLock { $0[i] = hex }
            } catch {
                failure.withLock { if $0 == nil { $0 = error } }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
        let prefix = group.path.path.count + 1
        let listing = zip(group.files, digests.withLock { $0 }).map { "\($1!)  \($0.path.dropFirst(prefix))\n" }.joined()
        self.init(path: group.path.path, bytes: group.files.reduce(0) { $0 + Self.size($1) },
                  sha256: SHA256.hex(Array(listing.utf8)), files: group.files.count)
    }

    static func size(_ url: URL) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? NSNumber)?.intValue ?? 0
    }
}
