import Foundation
import Testing
import TTAData
import TTAModels
import TTATensor
@testable import TTACLI

/// What one in-process `tta` invocation printed and returned.
struct Invocation {
    var code: Int32
    var out: String
    var err: String
}

/// Runs `tta` in-process with output captured.
func tta(_ arguments: [String]) -> Invocation {
    var out = "", err = ""
    let code = TTACLI.main(arguments: arguments, stdout: &out, stderr: &err)
    return Invocation(code: code, out: out, err: err)
}

/// Runs `tta` in-process with a console whose `shouldStop` turns true after `stopAfter` checks
/// (the runner asks once per batch), as a Ctrl-C would.
func tta(_ arguments: [String], stopAfter: Int) -> Invocation {
    final class Box { var out = "", err = "", checks = 0 }
    let b = Box()
    let console = Console(out: { b.out += $0 }, err: { b.err += $0 }, shouldStop: {
        b.checks += 1
        return b.checks > stopAfter
    })
    let code = TTACLI.main(arguments: arguments, console: console)
    return Invocation(code: code, out: b.out, err: b.err)
}

/// Expects exactly one line on stderr, `tta: error: <message>`, nothing on stdout, and `code`.
func expectError(_ r: Invocation, _ message: String, code: Int32, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.code == code, "exit code", sourceLocation: sourceLocation)
    #expect(r.err == "tta: error: \(message)\n", sourceLocation: sourceLocation)
    #expect(r.out.isEmpty, sourceLocation: sourceLocation)
}

/// A fresh temporary folder, removed by `cleanup()`.
struct TemporaryFolder {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("tta-cli-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    func cleanup() { try? FileManager.default.removeItem(at: url) }
}

/// A tiny benchmark in the CIFAR-10-C layout (`<root>/CIFAR-10-C/`), written at test time, and a
/// tiny WideResNet-10-1 with seeded random weights saved as safetensors.
struct TinyBenchmark {
    static let corruptions = ["gaussian_noise", "shot_noise", "fog"]
    let folder: TemporaryFolder
    let perSeverity: Int
    let channels: Int
    let size: Int

    var root: String { folder.url.path }
    var weights: String { folder.path("tiny.safetensors") }
    var dataFolder: URL { folder.url.appendingPathComponent("CIFAR-10-C") }

    init(corruptions: [String] = TinyBenchmark.corruptions, perSeverity: Int = 8, channels: Int = 3, size: Int = 16) throws {
        folder = try TemporaryFolder()
        self.perSeverity = perSeverity
        self.channels = channels
        self.size = size
        let dir = dataFolder
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var g = SeededGenerator(seed: 7)
        let labels = (0..<perSeverity).map { UInt8($0 % 10) }
        try NPYFile.write(uint8: Array([[UInt8]](repeating: labels, count: 5).joined()), shape: [5 * perSeverity],
                          to: dir.appendingPathComponent("labels.npy"))
        for name in corruptions {
            let n = 5 * perSeverity * size * size * channels
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: g.next() >> 56) }
            try NPYFile.write(uint8: bytes, shape: [5 * perSeverity, size, size, channels], to: dir.appendingPathComponent(name + ".npy"))
        }
        try Self.save(Self.makeModel(channels: channels), to: weights)
    }

    /// Writes the state dict as safetensors, without the BN `num_batches_tracked` counters (optional
    /// when loading): `ImageClassifier.save(to:)` writes them as F32, which `load` refuses.
    static func save(_ model: WideResNet, to path: String) throws {
        try SafeTensorsFile.write(model.store.stateDict().filter { !$0.name.hasSuffix("num_batches_tracked") },
                                  metadata: ["format": "pt", "architecture": model.architecture], to: URL(fileURLWithPath: path))
    }

    /// WideResNet-10-1 with seeded random parameters (BN running variance kept at 1).
    static func makeModel(channels: Int, seed: UInt64 = 3) -> WideResNet {
        let model = WideResNet(depth: 10, widenFactor: 1, numClasses: 10, inputChannels: channels)
        var g = SeededGenerator(seed: seed)
        for e in model.store.entries where e.kind == .parameter {
            let isBNWeight = e.isNormAffine && e.name.hasSuffix(".weight")
            let values = (0..<e.count).map { _ in isBNWeight ? 1 + 0.1 * g.nextNormal() : 0.3 * g.nextNormal() }
            model.store.set(e.name, Tensor(shape: e.shape, storage: values))
        }
        return model
    }

    /// The options that point `tta run`/`compare` at this benchmark.
    var dataOptions: [String] {
        ["--dataset", "cifar10-c", "--data-dir", root, "--weights", weights, "--corruptions", TinyBenchmark.corruptions.joined(separator: ","),
         "--batch-size", "4", "--quiet"]
    }

    /// `dataOptions` with `overrides` in place of the options of the same names (an option may be given once).
    func dataOptions(with overrides: [String]) -> [String] {
        let replaced = Set(overrides.filter { $0.hasPrefix("--") })
        var kept: [String] = [], i = 0
        let base = dataOptions
        while i < base.count {
            let flag = base[i] == "--quiet"
            if !replaced.contains(base[i]) { kept += base[i..<(flag ? i + 1 : i + 2)] }
            i += flag ? 1 : 2
        }
        return kept + overrides
    }

    func cleanup() { folder.cleanup() }
}

/// The built `tta` executable: SwiftPM puts the products of a configuration next to the test
/// bundle, in `.build/<triple>/<configuration>/`.
func ttaExecutable() throws -> URL {
    var dirs: [URL] = []
    if let exe = Bundle.main.executableURL { dirs.append(exe.deletingLastPathComponent()) }
    dirs.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
    dirs += Bundle.allBundles.map(\.bundleURL).filter { $0.pathExtension == "xctest" }.map { $0.deletingLastPathComponent() }
    dirs.append(URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent())
    for d in dirs {
        let candidate = d.appendingPathComponent("tta")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
    }
    throw TestFailure("the tta executable is not next to the test bundle (looked in \(Set(dirs.map(\.path)).sorted().joined(separator: ", "))); build it with the same configuration: swift build -c release --product tta")
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Runs the built `tta` with `arguments`; returns the exit status and both outputs.
func runBinary(_ arguments: [String]) throws -> Invocation {
    let p = Process()
    p.executableURL = try ttaExecutable()
    p.arguments = arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Invocation(code: p.terminationStatus, out: String(decoding: o, as: UTF8.self), err: String(decoding: e, as: UTF8.self))
}
