import Foundation
import TTARuntime

/// The `--report` page: one self-contained HTML file (no network, no scripts) with the error table,
/// the timing table, a grouped bar chart of the error per corruption and method, and the running
/// error along the stream per method, both as inline SVG.
struct HTMLReport {
    let view: ResultsView
    /// `--source-data`, recorded on the page when given.
    let sourceData: String?
    let generated: Date

    /// Okabe–Ito colours: distinguishable with the common colour-vision deficiencies, readable on white.
    static let palette = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
    static func colour(_ i: Int) -> String { palette[i % palette.count] }

    var runs: [RunResult] { view.file.runs }

    /// `200`, or the configured count, or `all` when domains differ in size.
    var imagesPerDomain: String {
        let counts = Set(view.columns.map(\.domain.sampleCount))
        return counts.count == 1 ? formatCount(counts.first!) : view.file.config.stream.samplesPerDomain.map(String.init) ?? "all"
    }

    func render() -> String {
        let c = view.file.config
        var meta: [(String, String)] = [
            ("dataset", c.dataset), ("data", c.dataDirectory), ("model", c.model), ("weights", c.weights),
            ("setting", c.stream.setting.rawValue + (c.stream.episodic ? " (episodic)" : "")),
            ("severities", c.stream.effectiveSeverities.map(String.init).joined(separator: ", ")),
            ("images per domain", imagesPerDomain),
            ("batch size", "\(c.stream.batchSize)"), ("order", "\(c.stream.order.rawValue), seed \(c.stream.seed)"),
            ("threads", "\(c.threads)"), ("SwiftTTA", view.file.version),
            ("generated", ISO8601DateFormatter().string(from: generated)),
        ]
        if c.stream.setting == .correlated { meta.insert(("Dirichlet δ", formatNumber(c.stream.dirichletDelta)), at: 5) }
        if let s = sourceData { meta.append(("source data", s)) }
        let metaHTML = meta.map { "<dt>\(esc($0.0))</dt><dd>\(esc($0.1))</dd>" }.joined()
        let interrupted = view.anyInterrupted ? "<p class=\"note\">\(esc(view.interruptedNote))</p>" : ""
        let stability = view.notes.map { "<p class=\"note\">\(esc($0))</p>" }.joined()
        return """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>SwiftTTA · \(esc(c.dataset)) · \(esc(runs.map(\.method).joined(separator: ", ")))</title>
        <style>
        body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color: #1d1d1f;
               background: #fff; margin: 24px auto; max-width: 1220px; padding: 0 20px; }
        h1 { font-size: 22px; margin: 0 0 4px; }
        h2 { font-size: 17px; margin: 28px 0 8px; }
        dl { display: grid; grid-template-columns: max-content minmax(0, 1fr) max-content minmax(0, 1fr); gap: 2px 14px;
             margin: 8px 0 0; font-size: 13px; color: #444; }
        dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
        .scroll { overflow-x: auto; }
        table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 13px; }
        th, td { padding: 4px 7px; text-align: right; border-bottom: 1px solid #e3e3e6; white-space: nowrap; }
        th { font-weight: 600; vertical-align: bottom; line-height: 1.2; border-bottom: 2px solid #bbb; }
        th:first-child, td:first-child { text-align: left; }
        td.best { font-weight: 700; }
        td.mean, th.mean { border-left: 1px solid #ccc; }
        .swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 7px; vertical-align: -1px; }
        .note { color: #8a4b00; }
        .caption { color: #555; font-size: 13px; margin: 4px 0 0; }
        svg text { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; }
        </style>
        </head>
        <body>
        <h1>SwiftTTA results</h1>
        <dl>\(metaHTML)</dl>
        <h2>Error (%) per domain</h2>
        <div class="scroll">\(errorTable())</div>
        \(interrupted)\(stability)
        <p class="caption">Lowest error per column in bold. Each method starts from the source model.</p>
        <h2>Throughput and memory</h2>
        \(timingTable())
        <h2>Error per corruption</h2>
        \(barChart())
        <h2>Running error along the stream</h2>
        \(runningErrorChart())
        <p class="caption">Cumulative error over all images seen so far; dotted lines mark domain changes.</p>
        </body>
        </html>

        """
    }

    // MARK: Tables

    private func errorTable() -> String {
        var head = "<tr><th>method</th>"
        for col in view.columns {
            head += "<th>" + col.label.split(separator: "_").map { esc(String($0)) }.joined(separator: "<br>") + "</th>"
        }
        head += "<th class=\"mean\">mean</th></tr>"
        // The best (lowest) value of each column, among the runs that have it.
        let errors = runs.map(view.errors)
        var best: [Double?] = view.columns.indices.map { k in errors.compactMap { $0[k] }.min() }
        best.append(runs.filter { !$0.domains.isEmpty }.map(\.meanError).min())
        var body = ""
        for (i, run) in runs.enumerated() {
            body += "<tr><td><span class=\"swatch\" style=\"background:\(Self.colour(i))\"></span>\(esc(run.method))</td>"
            for k in view.columns.indices {
                if let e = errors[i][k] {
                    body += "<td\(runs.count > 1 && e == best[k] ? " class=\"best\"" : "")>\(ResultsView.percent(e))</td>"
                } else {
                    body += "<td>–</td>"
                }
            }
            let isBest = runs.count > 1 && !run.domains.isEmpty && run.meanError == best.last!
            body += "<td class=\"mean\(isBest ? " best" : "")\">\(esc(view.mean(run)))</td></tr>"
        }
        return "<table>\(head)\(body)</table>"
    }

    private func timingTable() -> String {
        var rows = "<tr><th>method</th><th>images/s</th><th>time</th><th>peak memory</th><th>batches</th><th>error over all images</th></tr>"
        for (i, r) in runs.enumerated() {
            rows += "<tr><td><span class=\"swatch\" style=\"background:\(Self.colour(i))\"></span>\(esc(r.method))</td>"
                + "<td>\(String(format: "%.1f", r.imagesPerSecond))</td><td>\(esc(formatDuration(r.seconds)))</td>"
                + "<td>\(esc(formatBytes(r.peakMemoryBytes)))</td><td>\(r.batches)/\(r.totalBatches)</td>"
                + "<td>\(ResultsView.percent(r.errorOverAllSamples))</td></tr>"
        }
        return "<table>\(rows)</table>"
    }

    // MARK: Charts

    /// A legend row of swatches and method names, starting at (x, y).
    private func legend(x: Double, y: Double) -> String {
        var out = "", cx = x
        for (i, r) in runs.enumerated() {
            out += "<rect x=\"\(f(cx))\" y=\"\(f(y - 10))\" width=\"12\" height=\"12\" rx=\"2\" fill=\"\(Self.colour(i))\"/>"
            out += "<text x=\"\(f(cx + 17))\" y=\"\(f(y))\" font-size=\"13\" fill=\"#1d1d1f\">\(esc(r.method))</text>"
            cx += 17 + Double(r.method.count) * 7.6 + 22
        }
        return out
    }

    /// Horizontal grid lines, y tick labels and the y axis title of a chart area.
    private func yAxis(left: Double, right: Double, top: Double, bottom: Double, maximum: Double, step: Double, title: String) -> String {
        var out = ""
        var v = 0.0
        while v <= maximum + 1e-9 {
            let y = bottom - (bottom - top) * v / maximum
            out += "<line x1=\"\(f(left))\" x2=\"\(f(right))\" y1=\"\(f(y))\" y2=\"\(f(y))\" stroke=\"\(v == 0 ? "#888" : "#e6e6e9")\" stroke-width=\"1\"/>"
            out += "<text x=\"\(f(left - 7))\" y=\"\(f(y + 4))\" font-size=\"12\" text-anchor=\"end\" fill=\"#444\">\(formatNumber(v))</text>"
            v += step
        }
        let my = (top + bottom) / 2
        out += "<text transform=\"translate(\(f(left - 42)) \(f(my))) rotate(-90)\" font-size=\"13\" text-anchor=\"middle\" fill=\"#333\">\(esc(title))</text>"
        out += "<line x1=\"\(f(left))\" x2=\"\(f(left))\" y1=\"\(f(top))\" y2=\"\(f(bottom))\" stroke=\"#888\"/>"
        return out
    }

    /// Grouped bars: one group per domain (and the mean, set apart), one bar per method.
    private func barChart() -> String {
        let width = 1180.0, height = 400.0
        let left = 62.0, right = 12.0, top = 40.0, bottom = 92.0
        let plotW = width - left - right, plotH = height - top - bottom
        let groups = view.columns.count + 1
        let gap = 0.6  // extra group widths before the mean
        let groupW = plotW / (Double(groups) + gap)
        let barW = groupW * 0.82 / Double(max(runs.count, 1))
        let maxError = runs.flatMap { $0.domains.map(\.error) + [$0.meanError] }.max() ?? 0
        let (yMax, step) = niceScale(maxError)
        let y0 = top + plotH
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(f(width))\" height=\"\(f(height))\" viewBox=\"0 0 \(f(width)) \(f(height))\" role=\"img\" aria-label=\"Error per corruption and method\">"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>"
        svg += legend(x: left, y: 20)
        svg += yAxis(left: left, right: width - right, top: top, bottom: y0, maximum: yMax, step: step, title: "error (%)")
        let labels = view.columns.map(\.label) + ["mean"]
        let errors = runs.map(view.errors)
        for g in 0..<groups {
            let gx = left + groupW * (Double(g) + (g == groups - 1 ? gap : 0))
            let bx0 = gx + groupW * 0.09
            for (i, run) in runs.enumerated() {
                let value: Double? = g < view.columns.count ? errors[i][g] : (run.domains.isEmpty ? nil : run.meanError)
                guard let e = value else { continue }
                let h = plotH * e / yMax
                svg += "<rect x=\"\(f(bx0 + barW * Double(i)))\" y=\"\(f(y0 - h))\" width=\"\(f(max(barW - 1, 1)))\" height=\"\(f(h))\" fill=\"\(Self.colour(i))\">"
                svg += "<title>\(esc(run.method)) · \(esc(labels[g])): \(ResultsView.percent(e))%</title></rect>"
            }
            let lx = gx + groupW / 2, ly = y0 + 14
            svg += "<text transform=\"translate(\(f(lx + 4)) \(f(ly))) rotate(-40)\" font-size=\"12\" text-anchor=\"end\" fill=\"#333\"\(g == groups - 1 ? " font-weight=\"700\"" : "")>\(esc(labels[g]))</text>"
        }
        return svg + "</svg>"
    }

    /// The cumulative error against images seen, one line per method, domain boundaries dotted.
    private func runningErrorChart() -> String {
        let width = 1180.0, height = 380.0
        let left = 62.0, right = 20.0, top = 40.0, bottom = 92.0
        let plotW = width - left - right, plotH = height - top - bottom
        let domains = view.columns.map(\.domain)
        let mixed = view.file.config.stream.setting == .mixed_domains
        let total = max(domains.reduce(0) { $0 + $1.sampleCount }, runs.flatMap { $0.runningError.map(\.samples) }.max() ?? 0, 1)
        let maxError = runs.flatMap { $0.runningError.map(\.error) }.max() ?? 0
        let (yMax, step) = niceScale(maxError)
        let y0 = top + plotH
        func px(_ s: Int) -> Double { left + plotW * Double(s) / Double(total) }
        func py(_ e: Double) -> Double { y0 - plotH * e / yMax }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(f(width))\" height=\"\(f(height))\" viewBox=\"0 0 \(f(width)) \(f(height))\" role=\"img\" aria-label=\"Running error along the stream\">"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>"
        svg += legend(x: left, y: 20)
        svg += yAxis(left: left, right: width - right, top: top, bottom: y0, maximum: yMax, step: step, title: "cumulative error (%)")
        // Domain boundaries and names (not for mixed_domains, where every batch mixes domains).
        if !mixed {
            var s = 0
            for (k, d) in domains.enumerated() {
                let mid = px(s + d.sampleCount / 2)
                if k > 0 {
                    svg += "<line x1=\"\(f(px(s)))\" x2=\"\(f(px(s)))\" y1=\"\(f(top))\" y2=\"\(f(y0))\" stroke=\"#b9b9c0\" stroke-dasharray=\"2 3\"/>"
                }
                if domains.count <= 40 {
                    svg += "<text transform=\"translate(\(f(mid + 4)) \(f(y0 + 12))) rotate(-40)\" font-size=\"11\" text-anchor=\"end\" fill=\"#555\">\(esc(view.columns[k].label))</text>"
                }
                s += d.sampleCount
            }
        }
        // X ticks: images seen.
        let (xMax, xStep) = niceScale(Double(total), ticks: 8)
        var t = 0.0
        while t <= min(xMax, Double(total)) + 1e-9 {
            let x = px(Int(t))
            svg += "<line x1=\"\(f(x))\" x2=\"\(f(x))\" y1=\"\(f(y0))\" y2=\"\(f(y0 + 4))\" stroke=\"#888\"/>"
            if mixed || domains.count > 40 {
                svg += "<text x=\"\(f(x))\" y=\"\(f(y0 + 18))\" font-size=\"12\" text-anchor=\"middle\" fill=\"#444\">\(formatCount(Int(t)))</text>"
            }
            t += xStep
        }
        let xTitle = mixed || domains.count > 40 ? "images seen" : "images seen (\(formatCount(total)) in all); domains in stream order"
        svg += "<text x=\"\(f(left + plotW / 2))\" y=\"\(f(height - 8))\" font-size=\"13\" text-anchor=\"middle\" fill=\"#333\">\(esc(xTitle))</text>"
        for (i, run) in runs.enumerated() where !run.runningError.isEmpty {
            let points = run.runningError.map { "\(f(px($0.samples))),\(f(py($0.error)))" }.joined(separator: " ")
            svg += "<polyline points=\"\(points)\" fill=\"none\" stroke=\"\(Self.colour(i))\" stroke-width=\"2.2\" stroke-linejoin=\"round\">"
            svg += "<title>\(esc(run.method))</title></polyline>"
            if let last = run.runningError.last {
                svg += "<circle cx=\"\(f(px(last.samples)))\" cy=\"\(f(py(last.error)))\" r=\"3.5\" fill=\"\(Self.colour(i))\"><title>\(esc(run.method)): \(ResultsView.percent(last.error))% after \(formatCount(last.samples)) images</title></circle>"
            }
        }
        return svg + "</svg>"
    }

    private func f(_ x: Double) -> String { String(format: "%.1f", x) }
}

/// A round axis maximum ≥ `value` and a tick step giving about `ticks` ticks (1, 2, 2.5 or 5 × 10ᵏ).
func niceScale(_ value: Double, ticks: Int = 5) -> (maximum: Double, step: Double) {
    guard value > 0, value.isFinite else { return (10, 2) }
    let raw = value / Double(ticks)
    let magnitude = pow(10, floor(log10(raw)))
    let step = [1, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
    return (ceil(value / step - 1e-9) * step, step)
}

/// Escapes text for HTML and SVG.
func esc(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        default: out.append(c)
        }
    }
    return out
}
