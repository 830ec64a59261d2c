import Foundation

/// A failure that ends the benchmark run with a message and an exit code.
struct BenchError: Error {
    let message: String
    let exitCode: Int32

    static func usage(_ message: String) -> BenchError { BenchError(message: message, exitCode: 2) }
    static func failed(_ message: String) -> BenchError { BenchError(message: message, exitCode: 1) }
}

/// Minimal `--name value` option parsing over the arguments after the command.
struct Options {
    private var values: [String: String] = [:]

    init(_ arguments: [String], known: Set<String>) throws {
        var i = 0
        while i < arguments.count {
            let name = arguments[i]
            guard name.hasPrefix("--"), known.contains(String(name.dropFirst(2))) else {
                throw BenchError.usage("unknown option '\(name)'")
            }
            guard i + 1 < arguments.count else { throw BenchError.usage("\(name) needs a value") }
            values[String(name.dropFirst(2))] = arguments[i + 1]
            i += 2
        }
    }

    func string(_ name: String) -> String? { values[name] }

    func int(_ name: String) throws -> Int? {
        guard let text = values[name] else { return nil }
        guard let value = Int(text), value > 0 else {
            throw BenchError.usage("--\(name) needs a positive integer, got '\(text)'")
        }
        return value
    }
}

/// Wall-clock seconds of `body`, measured with the monotonic clock.
func seconds(_ body: () -> Void) -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
}

/// Timings of repeated runs: `warmup` untimed runs (default one), then at least `minRuns` runs and,
/// unless `fixedRuns`, more until about `budget` seconds have passed (at most `maxRuns`).
struct Timing {
    let runs: [Double]

    init(minRuns: Int, fixedRuns: Bool, warmup: Int = 1, budget: Double = 1.0, maxRuns: Int = 50, _ body: () -> Void) {
        for _ in 0..<max(0, warmup) { body() }
        var runs: [Double] = []
        var total = 0.0
        while runs.count < minRuns || (!fixedRuns && total < budget && runs.count < maxRuns) {
            let t = seconds(body)
            runs.append(t)
            total += t
        }
        self.runs = runs
    }

    var min: Double { runs.min() ?? .nan }
    var median: Double {
        let sorted = runs.sorted()
        if sorted.isEmpty { return .nan }
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : 0.5 * (sorted[mid - 1] + sorted[mid])
    }
}

/// Right-aligns `text` in a column of `width` characters.
func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

/// `value` with `digits` decimals.
func fixed(_ value: Double, _ digits: Int) -> String {
    value.isFinite ? String(format: "%.\(digits)f", value) : "-"
}

/// Writes `value` as pretty-printed JSON with sorted keys.
func writeJSON<T: Encodable>(_ value: T, to path: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let data = try encoder.encode(value)
    do {
        try data.write(to: URL(fileURLWithPath: path))
    } catch {
        throw BenchError.failed("cannot write \(path): \(error.localizedDescription)")
    }
}

/// A 64-byte aligned Float buffer, freed explicitly.
struct Matrix {
    let base: UnsafeMutablePointer<Float>

    init(count: Int, _ value: (Int) -> Float) {
        base = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: count)
        for i in 0..<count { base[i] = value(i) }
    }

    func free() { base.deallocate() }
}
