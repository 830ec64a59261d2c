/// Help text, generated from the option table and each command's description.
enum Help {
    static let width = 100
    static let nameColumn = 34

    static func topLevel() -> String {
        var lines = [
            "OVERVIEW: SwiftTTA test-time adaptation: run adaptation methods on corruption benchmarks.",
            "",
            "USAGE: tta <command> [options]",
            "",
            "COMMANDS:",
        ]
        for c in Commands.all {
            lines.append("  " + pad(c.name.rawValue, 10) + c.abstract)
        }
        lines += [
            "",
            "  See 'tta <command> --help' for the options of a command.",
            "",
            "OPTIONS:",
            "  -h, --help  Show this help.",
            "  --version   Show the version of tta.",
            "",
            "EXAMPLES:",
            "  tta compare                      # the embedded Fashion-MNIST-C benchmark, source/norm_test/tent/cotta",
            "  tta compare --dataset cifar10-c --data-dir ~/data --weights Standard.safetensors --methods source,tent",
            "  tta run --method tent --setting reset_each_shift --format json --output tent.json",
            "  tta inspect Standard.safetensors",
            "",
            "Exit codes: 0 success, 1 failure, 64 usage error, 130 interrupted (partial results kept).",
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    static func command(_ c: any Command.Type) -> String {
        var lines = ["OVERVIEW: " + c.abstract, ""]
        if !c.discussion.isEmpty {
            for paragraph in c.discussion.split(separator: "\n", omittingEmptySubsequences: false) {
                lines += wrap(String(paragraph), width: width, indent: "")
            }
            lines.append("")
        }
        lines.append("USAGE: " + c.usage)
        let specs = OptionSpec.options(for: c.name)
        for group in OptionSpec.Group.allCases {
            let members = specs.filter { $0.group == group }
            guard !members.isEmpty else { continue }
            lines.append("")
            lines.append(group.title)
            for s in members { lines += optionLines(s) }
        }
        lines.append("")
        lines.append("  -h, --help" + String(repeating: " ", count: nameColumn - 12) + "Show this help.")
        return lines.joined(separator: "\n") + "\n"
    }

    /// `  --batch-size <n>    Images per batch. (default: 200)`, wrapped under the help column.
    static func optionLines(_ s: OptionSpec) -> [String] {
        let name = "  --\(s.name)" + (s.kind.placeholder.isEmpty ? "" : " " + s.kind.placeholder)
        var text = s.help
        if let d = s.defaultText { text += " (default: \(d))" }
        let indent = String(repeating: " ", count: nameColumn)
        var body = wrap(text, width: width - nameColumn, indent: "")
        if name.count + 2 <= nameColumn {
            body[0] = pad(name, nameColumn) + body[0]
            return [body[0]] + body.dropFirst().map { indent + $0 }
        }
        // A name line wider than the help (a long choice list) breaks after a `|`.
        var nameLines: [String] = [], rest = name
        while rest.count > width, let bar = rest.prefix(width).lastIndex(of: "|") {
            nameLines.append(String(rest[...bar]))
            rest = String(repeating: " ", count: s.name.count + 5) + rest[rest.index(after: bar)...]
        }
        return nameLines + [rest] + body.map { indent + $0 }
    }

    /// Greedy word wrap: lines of at most `width` characters after `indent`; the first line starts with `first` instead
    /// when given (a name column: when the first word does not fit beside it, the name stands on its own line). A word
    /// that does not fit starts the next line; only a word longer than a whole line (a path) goes past.
    static func wrap(_ text: String, width: Int, indent: String, first: String? = nil) -> [String] {
        var lines: [String] = []
        var line = first ?? indent, empty = true
        for word in text.split(separator: " ") {
            if line.count + (empty ? 0 : 1) + word.count > indent.count + width && line != indent {
                lines.append(line.trailingSpacesRemoved)
                (line, empty) = (indent, true)
            }
            line += (empty ? "" : " ") + word
            empty = false
        }
        return lines + [line]
    }
}
