import Foundation
import TTAData
import TTARuntime

/// The results of a run or comparison as the tables papers print: one row per method, one column
/// per domain in stream order, then the mean; errors in percent with two decimals.
struct ResultsView {
    struct Column {
        /// `gaussian_noise`, or `gaussian_noise5` when the severities of the stream vary.
        let label: String
        let domain: StreamDomain
    }

    let file: ResultsFile
    let columns: [Column]

    /// One column per domain of the stream that holds images: in `mixed_domains` a small
    /// `--samples-per-domain` can leave a corruption none, and runs report no error for it.
    init(file: ResultsFile, domains: [StreamDomain]) {
        self.file = file
        let shown = domains.filter { $0.sampleCount > 0 }
        let varying = Set(shown.map(\.severity)).count > 1
        columns = shown.map { Column(label: varying ? $0.description : $0.name, domain: $0) }
    }

    /// The errors of `run` in column order, nil where it has none. Runs report domains in stream order, an
    /// interrupted run a prefix of them; a domain may come back (`gradual`), so they are matched in turn,
    /// by name and severity, never by position alone.
    func errors(_ run: RunResult) -> [Double?] {
        var next = run.domains.startIndex
        return columns.map { c in
            guard next < run.domains.endIndex, run.domains[next].name == c.domain.name,
                  run.domains[next].severity == c.domain.severity else { return nil }
            defer { next += 1 }
            return run.domains[next].error
        }
    }

    static func percent(_ x: Double) -> String { String(format: "%.2f", x) }

    /// The mean as printed: marked `*` when the run was interrupted (a mean over the finished domains).
    func mean(_ run: RunResult) -> String {
        run.domains.isEmpty ? "–" : Self.percent(run.meanError) + (run.completed ? "" : "*")
    }

    var anyInterrupted: Bool { file.runs.contains { !$0.completed } }

    /// One line naming what was run.
    var title: String {
        let c = file.config, s = c.stream
        let severities = s.effectiveSeverities.map(String.init).joined(separator: ",")
        let counts = Set(columns.map(\.domain.sampleCount))
        let samples = s.setting == .mixed_domains ? "\(columns.reduce(0) { $0 + $1.domain.sampleCount }) images mixed"
            : counts.count == 1 ? "\(counts.first!) images per domain" : "all images"
        return "Error (%) · \(c.dataset) · \(c.model) · \(s.setting.rawValue)\(s.episodic ? " (episodic)" : "") · severity \(severities) · \(samples) · batch \(s.batchSize) · \(s.order.rawValue) order · seed \(s.seed)"
    }

    func render(_ format: OutputFormat) throws -> String {
        switch format {
        case .table: return table()
        case .markdown: return markdown()
        case .csv: return csv()
        case .json:
            guard let text = String(data: try file.jsonData(), encoding: .utf8) else { throw CLIError.failed("cannot encode the results as JSON") }
            return text + "\n"
        }
    }

    // MARK: Table (terminal)

    /// The terminal table. Column headers are split at `_` over two lines so that fifteen
    /// corruptions fit in about 150 columns.
    func table() -> String {
        let headers = columns.map { c -> (String, String) in
            guard let u = c.label.firstIndex(of: "_") else { return ("", c.label) }
            return (String(c.label[..<u]), String(c.label[c.label.index(after: u)...]))
        } + [("", "mean")]
        let methodWidth = max(6, file.runs.map(\.method.count).max() ?? 0)
        let widths = headers.map { max($0.0.count, $0.1.count, 6) }
        func row(_ first: String, _ cells: [String]) -> String {
            pad(first, methodWidth) + zip(cells, widths).map { "  " + leftPad($0, $1) }.joined()
        }
        var lines = [title, ""]
        if headers.contains(where: { !$0.0.isEmpty }) { lines.append(row("", headers.map(\.0))) }
        lines.append(row("method", headers.map(\.1)))
        lines.append(String(repeating: "-", count: lines.last!.count))
        for run in file.runs {
            let cells = errors(run).map { $0.map(Self.percent) ?? "–" } + [mean(run)]
            lines.append(row(run.method, cells))
        }
        lines.append("")
        lines.append(contentsOf: timingTable())
        let notes = self.notes
        if !notes.isEmpty { lines.append(""); lines.append(contentsOf: notes) }
        if anyInterrupted { lines.append(""); lines.append(interruptedNote) }
        return lines.map { $0.trailingSpacesRemoved }.joined(separator: "\n") + "\n"
    }

    /// The lines under the tables: the mean error at severity 5 where it is not the mean, the errors per corruption
    /// over its severities of a mixed stream of several severities (as the reference splits them), then the stability
    /// notes.
    var notes: [String] {
        let five = file.runs.compactMap { r in r.meanErrorAtSeverity5.map { "\(r.method) \(Self.percent($0))" } }
        let mixed = file.runs.compactMap { r in
            r.mixedErrorsByCorruption.map { m in
                "\(r.method): " + m.errors.map { "\($0.name) \(Self.percent($0.error))" }.joined(separator: ", ")
                    + "; average \(Self.percent(m.average)), over all samples \(Self.percent(r.errorOverAllSamples))"
            }
        }
        return (five.isEmpty ? [] : ["mean error at severity 5 (the reference's \"mean error at 5\"): " + five.joined(separator: ", ")])
            + (mixed.isEmpty ? [] : ["error per corruption over its severities (the reference's split by domain):"] + mixed)
            + stabilityNotes
    }

    /// One line per run whose guard or collapse monitor saw something (none when all ran cleanly).
    var stabilityNotes: [String] { file.runs.compactMap { r in stabilitySummary(r.stability).map { "\(r.method): \($0)" } } }

    var interruptedNote: String {
        "* interrupted: the mean is over the domains finished before Ctrl-C."
    }

    /// Images per second, total time and peak memory per method.
    func timingTable() -> [String] {
        let methodWidth = max(6, file.runs.map(\.method.count).max() ?? 0)
        let head = ["images/s", "time", "peak memory", "batches"]
        let rows = file.runs.map { r in
            [String(format: "%.1f", r.imagesPerSecond), formatDuration(r.seconds), formatBytes(r.peakMemoryBytes),
             "\(r.batches)/\(r.totalBatches)"]
        }
        let widths = head.indices.map { i in max(head[i].count, rows.map { $0[i].count }.max() ?? 0) }
        func line(_ first: String, _ cells: [String]) -> String {
            pad(first, methodWidth) + zip(cells, widths).map { "  " + leftPad($0, $1) }.joined()
        }
        var lines = [line("method", head)]
        lines.append(String(repeating: "-", count: lines[0].count))
        for (r, cells) in zip(file.runs, rows) { lines.append(line(r.method, cells)) }
        return lines
    }

    // MARK: Markdown and CSV

    func markdown() -> String {
        var lines: [String] = []
        lines.append("| method | " + (columns.map(\.label) + ["mean"]).joined(separator: " | ") + " |")
        lines.append("|---|" + String(repeating: "---:|", count: columns.count + 1))
        for run in file.runs {
            let cells = errors(run).map { $0.map(Self.percent) ?? "–" } + [mean(run)]
            lines.append("| \(run.method) | " + cells.joined(separator: " | ") + " |")
        }
        lines.append("")
        lines.append("| method | images/s | time (s) | peak memory (MiB) | batches |")
        lines.append("|---|---:|---:|---:|---:|")
        for r in file.runs {
            lines.append("| \(r.method) | \(String(format: "%.1f", r.imagesPerSecond)) | \(String(format: "%.1f", r.seconds)) | "
                         + "\(String(format: "%.1f", Double(r.peakMemoryBytes) / 1_048_576)) | \(r.batches)/\(r.totalBatches) |")
        }
        let notes = self.notes
        if !notes.isEmpty { lines.append(""); lines.append(contentsOf: notes) }
        if anyInterrupted { lines.append(""); lines.append(interruptedNote) }
        return lines.joined(separator: "\n") + "\n"
    }

    func csv() -> String {
        let head = ["method"] + columns.map(\.label) + ["mean", "images_per_second", "seconds", "peak_memory_bytes", "completed"]
        var lines = [head.map(csvField).joined(separator: ",")]
        for run in file.runs {
            let cells = [run.method] + errors(run).map { $0.map(Self.percent) ?? "" }
                + [run.domains.isEmpty ? "" : Self.percent(run.meanError), String(format: "%.1f", run.imagesPerSecond),
                   String(format: "%.3f", run.seconds), String(run.peakMemoryBytes), String(run.completed)]
            lines.append(cells.map(csvField).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func csvField(_ s: String) -> String {
        s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }
}

/// What the guard and the collapse monitor saw, in words (`2 batches rejected (NaN or infinity in the
/// images: 3, 9); collapse after batch 37 (class 4, 97% of the window), reset to source`), or nil when nothing happened.
func stabilitySummary(_ s: StabilityReport) -> String? {
    func batches(_ list: [Int]) -> String {
        list.prefix(5).map(String.init).joined(separator: ", ") + (list.count > 5 ? ", … \(list.count - 5) more" : "")
    }
    var parts: [String] = []
    if !s.rejectedBatches.isEmpty {
        parts.append("\(s.rejectedBatches.count) batch\(s.rejectedBatches.count == 1 ? "" : "es") rejected (NaN or infinity in the images: \(batches(s.rejectedBatches)))")
    }
    if !s.rolledBackBatches.isEmpty {
        parts.append("\(s.rolledBackBatches.count) step\(s.rolledBackBatches.count == 1 ? "" : "s") rolled back (NaN or infinity after the update: \(batches(s.rolledBackBatches)))")
    }
    if s.samplesWithoutPrediction > 0 { parts.append("\(s.samplesWithoutPrediction) images without a prediction scored wrong") }
    for c in s.collapses {
        parts.append("collapse after batch \(c.batch) (class \(c.dominantClass), \(Int((c.share * 100).rounded()))% of the window)\(c.reset ? ", reset to source" : "")")
    }
    return parts.isEmpty ? nil : parts.joined(separator: "; ")
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
func leftPad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }

extension String {
    var trailingSpacesRemoved: String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}

/// `12.3 s`, `4 min 05 s`, `1 h 02 min`.
func formatDuration(_ seconds: Double) -> String {
    if seconds < 60 { return String(format: "%.1f s", seconds) }
    let s = Int(seconds.rounded())
    if s < 3600 { return String(format: "%d min %02d s", s / 60, s % 60) }
    return String(format: "%d h %02d min", s / 3600, (s % 3600) / 60)
}

/// `0:42`, `12:05`, `1:02:05`.
func formatClock(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "–" }
    let s = Int(seconds.rounded())
    return s < 3600 ? String(format: "%d:%02d", s / 60, s % 60) : String(format: "%d:%02d:%02d", s / 3600, (s % 3600) / 60, s % 60)
}

/// `812.4 MiB`, `5.1 GiB`.
func formatBytes(_ bytes: Int) -> String {
    let b = Double(bytes)
    if b >= Double(1 << 30) { return String(format: "%.1f GiB", b / Double(1 << 30)) }
    return String(format: "%.1f MiB", b / Double(1 << 20))
}

/// `1,221,616`.
func formatCount(_ n: Int) -> String {
    let digits = String(n.magnitude)
    var out = ""
    for (i, c) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return (n < 0 ? "-" : "") + out
}

// MARK: - Progress

/// Progress on stderr while methods run. On a terminal, one line rewritten in place (`\r`):
/// method, domain k/n, batch i/m, running error, images/s, ETA. Otherwise one plain line per
/// finished domain. `--quiet` silences both. `tta run` also prints each finished domain on stdout.
final class ProgressPrinter {
    private let console: Console
    private let quiet: Bool
    /// Print finished domains on stdout (`tta run` with the table format).
    private let domainLinesOnStdout: Bool
    private var method = "", methodLabel = ""
    private var lineShown = false
    private var lastDraw: UInt64 = 0

    init(console: Console, quiet: Bool, domainLinesOnStdout: Bool) {
        self.console = console
        self.quiet = quiet
        self.domainLinesOnStdout = domainLinesOnStdout
    }

    func beginMethod(_ name: String, index: Int, of count: Int) {
        method = name
        methodLabel = count > 1 ? "\(name) (\(index + 1)/\(count))" : name
        lastDraw = 0
    }

    func handle(_ e: ProgressEvent) {
        switch e.kind {
        case .batch:
            guard !quiet, console.stderrIsTerminal else { return }
            let now = DispatchTime.now().uptimeNanoseconds
            // At most ten redraws a second, and always the last batch.
            guard now - lastDraw > 100_000_000 || e.batch == e.batchCount else { return }
            lastDraw = now
            let line = "\(methodLabel)  domain \(e.domain)/\(e.domainCount) \(e.domainName)  batch \(e.batchInDomain)/\(e.batchesInDomain)"
                + "  running error \(ResultsView.percent(e.runningError))%  \(String(format: "%.1f", e.imagesPerSecond)) img/s  ETA \(formatClock(e.eta))"
            console.err("\r\u{1B}[K" + line)
            lineShown = true
        case .domainFinished(let d):
            // mixed_domains: a corruption the cut left without images has no error to print.
            guard d.samples > 0 else { return }
            let text = "\(d.name)\(d.severity)  error \(ResultsView.percent(d.error))%  (\(d.samples) images, \(formatClock(e.elapsed)) into the run)"
            if domainLinesOnStdout {
                clearLine()
                console.out("[\(leftPad("\(e.domain)", "\(e.domainCount)".count))/\(e.domainCount)] \(text)\n")
            } else if !quiet && !console.stderrIsTerminal {
                console.err("\(method) \(e.domain)/\(e.domainCount) \(text), \(String(format: "%.1f", e.imagesPerSecond)) img/s\n")
            }
        }
    }

    /// Ends a method: on a terminal the live line is replaced by a summary line.
    func endMethod(_ r: RunResult) {
        guard !quiet else { return }
        clearLine()
        let state = r.completed ? "" : " (interrupted after \(r.batches) of \(r.totalBatches) batches)"
        console.err("\(method): mean error \(r.domains.isEmpty ? "–" : ResultsView.percent(r.meanError) + "%"), "
                    + "\(String(format: "%.1f", r.imagesPerSecond)) images/s, \(formatDuration(r.seconds))\(state)"
                    + (stabilitySummary(r.stability).map { "; " + $0 } ?? "") + "\n")
    }

    /// Removes the live line, if one is shown.
    func clearLine() {
        if lineShown { console.err("\r\u{1B}[K"); lineShown = false }
    }
}
