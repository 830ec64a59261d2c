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

/// The fp32 multiply-add rate the machine gives right now on `threads` threads (GFLOP/s): 12
/// independent SIMD8 accumulator chains per thread, the faster of two runs of about 0.1 s (the first
/// also wakes the threads). On a shared machine this moves
/// with the load; kernel figures are best read against it. (`addProduct` is one `vfmadd231ps` only
/// in a build whose target CPU has FMA; elsewhere it is a call to `fmaf` and this figure is low.)
func fmaPeakGFLOPS(threads: Int) -> Double {
    let steps = 2_000_000
    let elapsed = (0..<2).map { _ in
        seconds {
            DispatchQueue.concurrentPerform(iterations: threads) { _ in
                let sum = fmaChains(steps, SIMD8(repeating: 0.5), SIMD8(repeating: 1e-9))
                if sum.sum() == 42 { print("") }  // keeps the loop alive
            }
        }
    }.min()!
    return Double(threads * steps * 12 * 16) / elapsed * 1e-9
}

@inline(never)
private func fmaChains(_ steps: Int, _ x: SIMD8<Float>, _ y: SIMD8<Float>) -> SIMD8<Float> {
    var a0 = x, a1 = x, a2 = x, a3 = x, a4 = x, a5 = x, a6 = x, a7 = x, a8 = x, a9 = x, a10 = x, a11 = x
    for _ in 0..<steps {
        a0.addProduct(x, y); a1.addProduct(x, y); a2.addProduct(x, y); a3.addProduct(x, y)
        a4.addProduct(x, y); a5.addProduct(x, y); a6.addProduct(x, y); a7.addProduct(x, y)
        a8.addProduct(x, y); a9.addProduct(x, y); a10.addProduct(x, y); a11.addProduct(x, y)
    }
    return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11
}
