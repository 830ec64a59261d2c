import Foundation
import TTAAdaptation
import TTAData
import TTATensor

/// RMT's prototypes and warm-up (any `PreparationCache` item) kept on disk between runs.
///
/// Location: `directory` (the CLI's `--cache-dir`, by default `$XDG_CACHE_HOME/swifttta`, else
/// `~/.cache/swifttta`). Each item is one `<sha256>.safetensors` file, named by the SHA-256 of the
/// identity (`SHA-256(weights file) / SHA-256(each source file) / source selection`) and the item
/// name, which carries the settings the result depends on. A change to the weights, the source files,
/// the selection or those settings gives another name, so a stale entry is never read; the identity
/// and item are also stored in the file's metadata and checked on load. Unreadable or mismatching
/// entries count as absent; a failed write only costs the next run the recomputation.
public final class DiskPreparationCache: PreparationCache {
    public let directory: URL
    /// What the cached results were computed from.
    public let identity: String

    public init(directory: URL, identity: String) {
        (self.directory, self.identity) = (directory, identity)
    }

    /// The identity of a model's weights file and the source files with a description of how the source
    /// images were selected from them (count, seed, batch size).
    public static func identity(weights: URL, sourceFiles: [URL], selection: String) throws -> String {
        (try [SHA256.hex(fileAt: weights)] + sourceFiles.map { try SHA256.hex(fileAt: $0) } + [selection]).joined(separator: "/")
    }

    /// The default location: `$XDG_CACHE_HOME/swifttta`, else `$HOME/.cache/swifttta`.
    public static func defaultDirectory(environment: [String: String]) -> URL {
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return URL(fileURLWithPath: xdg).appendingPathComponent("swifttta") }
        let home = environment["HOME"].map { URL(fileURLWithPath: $0) } ?? FileManager.default.homeDirectoryForCurrentUser
        return home.appendingPathComponent(".cache/swifttta")
    }

    public func url(for item: String) -> URL {
        directory.appendingPathComponent(SHA256.hex(Data((identity + "\n" + item).utf8)) + ".safetensors")
    }

    public func load(_ item: String) -> [String: Tensor]? {
        guard let file = try? SafeTensorsFile.read(url(for: item)),
              file.metadata["identity"] == identity, file.metadata["item"] == item else { return nil }
        var out: [String: Tensor] = [:]
        for name in file.names {
            guard let t = try? file.tensor(name) else { return nil }
            out[name] = t
        }
        return out
    }

    public func store(_ item: String, _ tensors: [String: Tensor]) {
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try? SafeTensorsFile.write(tensors.sorted { $0.key < $1.key }.map { (name: $0.key, tensor: $0.value) },
                                   metadata: ["identity": identity, "item": item], to: url(for: item))
    }
}
