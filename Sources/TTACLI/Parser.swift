import Foundation
import TTAData

/// The options and positional arguments of one command line, checked against the option table.
struct ParsedArguments: Sendable, Equatable {
    /// Checked values by option name: those of the `--config` file, overridden by the flags.
    var values: [String: OptionValue] = [:]
    var positionals: [String] = []
    /// The options given on the command line (not only in the `--config` file): a config file shared by several runs
    /// may set what one of them does not read.
    var commandLine: Set<String> = []
    /// True when `-h` / `--help` was given (everything else is then ignored).
    var help = false

    func has(_ name: String) -> Bool { values[name] != nil }

    func bool(_ name: String) -> Bool? { if case .bool(let b)? = values[name] { return b }; return nil }
    func int(_ name: String) -> Int? { if case .int(let v)? = values[name] { return v }; return nil }
    func seed(_ name: String) -> UInt64? { if case .seed(let v)? = values[name] { return v }; return nil }
    func number(_ name: String) -> Double? { if case .number(let v)? = values[name] { return v }; return nil }
    func word(_ name: String) -> String? { if case .word(let v)? = values[name] { return v }; return nil }
    func list(_ name: String) -> [String]? { if case .list(let v)? = values[name] { return v }; return nil }
    func ints(_ name: String) -> [Int]? { if case .ints(let v)? = values[name] { return v }; return nil }
    /// A flag's state: true when given (or set true in the config file).
    func flag(_ name: String) -> Bool { bool(name) ?? false }
}

/// The hand-written parser: `--name value`, `--name=value`, flags, `-h`/`--help`, positionals, `--` (everything
/// after it is positional); then the `--config` file, whose keys are option names and which the flags override.
/// An option given twice on the command line is refused: none takes several values that way.
enum Parser {
    /// A `--config` object every command that takes the file accepts, for the help and the errors.
    static let configExample = #"{"lr": 0.01, "batch-size": 64}"#

    static func parse(_ arguments: [String], command: CommandName) throws -> ParsedArguments {
        var result = ParsedArguments()
        let options = arguments.prefix { $0 != "--" }
        if options.contains(where: { $0 == "-h" || $0 == "--help" }) {
            result.help = true
            return result
        }
        let specs = OptionSpec.options(for: command)
        var flags: [String: OptionValue] = [:]
        var given: [String: String] = [:]   // the text of each option given, for the refusal of a repeat
        var i = 0
        while i < arguments.count {
            let arg = arguments[i]
            i += 1
            if arg == "--" {
                result.positionals += arguments[i...]
                break
            }
            guard arg.hasPrefix("-"), arg != "-" else {
                result.positionals.append(arg)
                continue
            }
            guard arg.hasPrefix("--") else {
                // Single-dash options: only -h exists; "-5" or "-x" are mistakes.
                throw CLIError.unknownOption(arg, command: command.rawValue, suggestion: closest(to: String(arg.drop { $0 == "-" }), in: specs.map(\.name)))
            }
            var name = String(arg.dropFirst(2))
            var inline: String? = nil
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard let spec = specs.first(where: { $0.name == name }) else {
                throw CLIError.unknownOption("--\(name)", command: command.rawValue, suggestion: closest(to: name, in: specs.map(\.name)))
            }
            let raw: String
            if spec.kind == .flag {
                raw = inline ?? "true"
            } else if let inline {
                raw = inline
            } else {
                guard i < arguments.count, !arguments[i].hasPrefix("--") else {
                    throw CLIError.missingValue(option: name, expected: spec.kind.expected)
                }
                raw = arguments[i]
                i += 1
            }
            if let first = given[name] {
                throw CLIError.usage(spec.kind == .flag ? "--\(name) given twice" : "--\(name) given twice ('\(first)', then '\(raw)')")
            }
            given[name] = raw
            flags[name] = try convert(raw, for: spec)
        }
        if case .word(let path)? = flags["config"] {
            result.values = try readConfig(path, command: command)
        }
        result.values.merge(flags) { _, flag in flag }
        result.commandLine = Set(flags.keys)
        return result
    }

    /// Checks `raw` against the option's kind and converts it.
    static func convert(_ raw: String, for spec: OptionSpec) throws -> OptionValue {
        let bad = CLIError.invalidValue(option: spec.name, value: raw, expected: spec.kind.expected)
        let trimmed = raw.trimmingCharacters(in: .whitespaces)
        func items() throws -> [String] {
            let parts = trimmed.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard !parts.isEmpty, !parts.contains(where: \.isEmpty) else { throw bad }
            return parts
        }
        switch spec.kind {
        case .flag, .bool:
            switch trimmed.lowercased() {
            case "true": return .bool(true)
            case "false": return .bool(false)
            default: throw bad
            }
        case .int(let min, let max):
            guard let v = Int(trimmed), v >= min, v <= max else { throw bad }
            return .int(v)
        case .seed:
            guard let v = UInt64(trimmed) else { throw bad }
            return .seed(v)
        case .number(let range):
            guard let v = Double(trimmed), v.isFinite, v >= 0 else { throw bad }
            switch range {
            case .nonNegative: break
            case .unit: guard v <= 1 else { throw bad }
            case .unitOpen: guard v < 1 else { throw bad }
            case .positive: guard v > 0 else { throw bad }
            case .positiveUnit: guard v > 0 && v <= 1 else { throw bad }
            }
            return .number(v)
        case .choice(let words):
            guard words.contains(trimmed) else {
                let hint = closest(to: trimmed, in: words).map { " (did you mean '\($0)'?)" } ?? ""
                throw CLIError.invalidValue(option: spec.name, value: raw, expected: spec.kind.expected + hint)
            }
            return .word(trimmed)
        case .list(let allowed):
            let parts = try items()
            if let allowed {
                if let wrong = parts.first(where: { !allowed.contains($0) }) {
                    let hint = closest(to: wrong, in: allowed).map { " (did you mean '\($0)'?)" } ?? ""
                    throw CLIError.invalidValue(option: spec.name, value: wrong, expected: spec.kind.expected + hint)
                }
            }
            var seen = Set<String>()
            if let twice = parts.first(where: { !seen.insert($0).inserted }), allowed != nil {
                throw CLIError.usage("'--\(spec.name)' lists '\(twice)' twice")
            }
            return .list(parts)
        case .intList(let range):
            let values = try items().map { Int($0) }
            guard values.allSatisfy({ $0 != nil && range.contains($0!) }) else { throw bad }
            return .ints(values.map { $0! })
        case .text:
            guard !trimmed.isEmpty else { throw bad }
            return .word(raw)
        }
    }

    /// Reads a `--config` JSON object: each key an option of `command` (without dashes), each value a
    /// string, number, boolean or array (a list), checked exactly like the flag's value.
    static func readConfig(_ path: String, command: CommandName) throws -> [String: OptionValue] {
        let url = URL(fileURLWithPath: path)
        guard FileManager.default.fileExists(atPath: url.path) else { throw CLIError.fileNotFound(what: "--config", path: path) }
        let data: Data
        do { data = try readFileContents(url, mapped: false) } catch let e as DataError {
            throw CLIError.failed("--config \(path): \(e.message)")
        }
        return try parseConfig(data, path: path, command: command)
    }

    /// Checks the contents of a `--config` file (`path` names it in errors); no file access.
    static func parseConfig(_ data: Data, path: String, command: CommandName) throws -> [String: OptionValue] {
        let root: ConfigValue
        do { root = try JSONDecoder().decode(ConfigValue.self, from: data) } catch {
            throw CLIError.usage("\(path): not valid JSON; expected an object such as \(configExample)")
        }
        guard case .object(let members) = root else {
            throw CLIError.usage("\(path): expected a JSON object of options, e.g. {\"lr\": 0.01}")
        }
        let specs = OptionSpec.options(for: command).filter { $0.name != "config" }
        var values: [String: OptionValue] = [:]
        for (key, value) in members.sorted(by: { $0.key < $1.key }) {
            guard let spec = specs.first(where: { $0.name == key }) else {
                throw CLIError.unknownConfigKey(file: path, key: key, suggestion: closest(to: key, in: specs.map(\.name)))
            }
            guard let raw = value.optionText else {
                throw CLIError.usage("\(path): key '\(key)': expected \(spec.kind.expected), found \(value.kindName)")
            }
            do {
                values[key] = try convert(raw, for: spec)
            } catch CLIError.invalidValue(_, let v, let expected) {
                throw CLIError.usage("\(path): key '\(key)': invalid value '\(v)': expected \(expected)")
            }
        }
        return values
    }
}

/// A JSON value of a config file.
enum ConfigValue: Decodable {
    case object([String: ConfigValue])
    case array([ConfigValue])
    case string(String)
    case bool(Bool)
    case int(Int)
    case unsigned(UInt64)
    case number(Double)
    case null

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        // Integers past Int.max (a seed up to UInt64.max) stay exact: through Double they would lose digits.
        else if let u = try? c.decode(UInt64.self) { self = .unsigned(u) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([ConfigValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: ConfigValue].self)) }
    }

    /// The value as it would be typed after the flag; arrays join with commas. Nil for objects and null.
    var optionText: String? {
        switch self {
        case .string(let s): return s
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .unsigned(let u): return String(u)
        case .number(let d): return "\(d)"
        case .array(let items):
            let parts = items.compactMap { item -> String? in
                switch item {
                case .array, .object, .null: return nil
                default: return item.optionText
                }
            }
            return parts.count == items.count ? parts.joined(separator: ",") : nil
        case .object, .null: return nil
        }
    }

    var kindName: String {
        switch self {
        case .object: "an object"
        case .array: "an array of non-scalar values"
        case .string: "a string"
        case .bool: "a boolean"
        case .int, .unsigned, .number: "a number"
        case .null: "null"
        }
    }
}
