import Foundation

/// The benchmark committed in the repository, run when no `--dataset`, `--data-dir` or `--weights`
/// is given: `data/fashion-mnist-c/FMNIST-C/` (CIFAR-10-C layout, 1-channel 32x32, 200 images per
/// severity) and the source model `data/models/fmnist-wrn-*.safetensors`.
///
/// The `data/` folder is found from this source file's path (`#filePath`, walking up to the
/// directory that holds `Package.swift`), so `swift run tta` works from any working directory of a
/// checkout; `TTA_EMBEDDED_DIR` points elsewhere (a folder with `fashion-mnist-c/` and `models/`).
enum Embedded {
    static let environmentKey = "TTA_EMBEDDED_DIR"

    /// The folder holding `fashion-mnist-c/` and `models/`.
    static func dataDirectory(environment: [String: String]) throws -> URL {
        if let dir = environment[environmentKey], !dir.isEmpty {
            return URL(fileURLWithPath: dir, isDirectory: true)
        }
        let starts = [URL(fileURLWithPath: #filePath).deletingLastPathComponent(),
                      URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)]
        for start in starts {
            if let root = repositoryRoot(from: start) { return root.appendingPathComponent("data", isDirectory: true) }
        }
        throw CLIError.failed("cannot find the embedded benchmark: no repository root (a folder with Package.swift) above \(starts[0].path); set \(environmentKey) to the folder holding fashion-mnist-c/ and models/, or pass --data-dir and --weights")
    }

    /// The nearest directory at or above `start` holding `Package.swift`.
    static func repositoryRoot(from start: URL) -> URL? {
        var dir = start.standardizedFileURL
        while true {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { return dir }
            let parent = dir.deletingLastPathComponent()
            if parent.path == dir.path { return nil }
            dir = parent
        }
    }

    /// The parent of the `FMNIST-C` folder.
    static func benchmarkDirectory(environment: [String: String]) throws -> URL {
        try dataDirectory(environment: environment).appendingPathComponent("fashion-mnist-c", isDirectory: true)
    }

    /// The embedded benchmark's labelled source data (`fashion-mnist-source/`: 2,000 Fashion-MNIST training
    /// images, `images.npy` and `labels.npy`), read by the methods that need source data when no
    /// `--source-data` is given.
    static func sourceDirectory(environment: [String: String]) throws -> URL {
        let dir = try dataDirectory(environment: environment).appendingPathComponent("fashion-mnist-source", isDirectory: true)
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("images.npy").path) else {
            throw CLIError.fileNotFound(what: "embedded source data", path: dir.appendingPathComponent("images.npy").path)
        }
        return dir
    }

    /// The embedded model: `models/fmnist-wrn-*.safetensors`, the newest when there are several.
    static func modelFile(environment: [String: String]) throws -> URL {
        let models = try dataDirectory(environment: environment).appendingPathComponent("models", isDirectory: true)
        let fm = FileManager.default
        let names = ((try? fm.contentsOfDirectory(atPath: models.path)) ?? [])
            .filter { $0.hasPrefix("fmnist-wrn-") && $0.hasSuffix(".safetensors") }
        func modified(_ name: String) -> Date {
            ((try? fm.attributesOfItem(atPath: models.appendingPathComponent(name).path))?[.modificationDate] as? Date) ?? .distantPast
        }
        guard let newest = names.max(by: { (modified($0), $0) < (modified($1), $1) }) else {
            throw CLIError.fileNotFound(what: "embedded model", path: models.appendingPathComponent("fmnist-wrn-*.safetensors").path)
        }
        return models.appendingPathComponent(newest)
    }
}
