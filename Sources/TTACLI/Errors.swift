import TTAAdaptation
import TTAData
import TTARuntime

/// Everything a `tta` command can fail with. Each case renders as one line (`tta: error: <message>`)
/// and maps to an exit code: 64 (`EX_USAGE`) for what the user typed, 1 for everything else.
public enum CLIError: Error, Equatable, CustomStringConvertible {
    /// An option the command does not know; `suggestion` is the closest known one.
    case unknownOption(String, command: String, suggestion: String?)
    /// An unknown subcommand.
    case unknownCommand(String, suggestion: String?)
    /// An option given without its value.
    case missingValue(option: String, expected: String)
    /// A value that does not parse or is out of range: the option and what was expected.
    case invalidValue(option: String, value: String, expected: String)
    /// A positional argument the command does not take, or one that is missing.
    case unexpectedArgument(String, command: String)
    case missingArgument(String, command: String)
    /// Options that do not go together, or a required option that is missing.
    case usage(String)
    /// A config file key that is not an option of the command.
    case unknownConfigKey(file: String, key: String, suggestion: String?)
    /// A file that is not there.
    case fileNotFound(what: String, path: String)
    /// A data file that cannot be used (bad header, wrong shapes, a state dict that does not match).
    case data(String)
    /// Any other failure while running.
    case failed(String)

    /// The process exit code: 64 for usage errors, 1 otherwise.
    public var exitCode: Int32 {
        switch self {
        case .unknownOption, .unknownCommand, .missingValue, .invalidValue, .unexpectedArgument, .missingArgument,
             .usage, .unknownConfigKey:
            return 64
        case .fileNotFound, .data, .failed:
            return 1
        }
    }

    public var description: String {
        switch self {
        case let .unknownOption(name, command, suggestion):
            return "unknown option '\(name)' for 'tta \(command)'"
                + (suggestion.map { "; did you mean '--\($0)'?" } ?? "; see 'tta \(command) --help'")
        case let .unknownCommand(name, suggestion):
            return "unknown command '\(name)'"
                + (suggestion.map { "; did you mean '\($0)'?" } ?? "; commands: \(Commands.names.joined(separator: ", "))")
        case let .missingValue(option, expected):
            return "option '--\(option)' needs a value: \(expected)"
        case let .invalidValue(option, value, expected):
            return "invalid value '\(value)' for '--\(option)': expected \(expected)"
        case let .unexpectedArgument(arg, command):
            return "unexpected argument '\(arg)' for 'tta \(command)'; see 'tta \(command) --help'"
        case let .missingArgument(what, command):
            return "'tta \(command)' needs \(what); see 'tta \(command) --help'"
        case let .usage(message):
            return message
        case let .unknownConfigKey(file, key, suggestion):
            return "\(file): unknown key '\(key)'" + (suggestion.map { "; did you mean '\($0)'?" } ?? "")
        case let .fileNotFound(what, path):
            return "\(what): no such file: \(path)"
        case let .data(message), let .failed(message):
            return message
        }
    }

    /// Wraps an error from the libraries (data, adaptation, runtime) so that it prints as one line.
    static func wrap(_ error: any Error) -> CLIError {
        switch error {
        case let e as CLIError: return e
        case let e as DataError: return .data(e.description)
        case let e as AdaptationError: return .failed(e.message)
        case let e as RuntimeError: return .failed(e.message)
        default: return .failed("\(error)")
        }
    }
}

/// The process ends with this code after a run stopped by Ctrl-C (128 + SIGINT), partial results kept.
let interruptedExitCode: Int32 = 130

/// The closest of `candidates` to `word` (Levenshtein distance), if it is close enough to be a likely typo.
func closest(to word: String, in candidates: [String]) -> String? {
    let w = Array(word.lowercased())
    var best: (String, Int)? = nil
    for c in candidates {
        let d = editDistance(w, Array(c.lowercased()))
        if best == nil || d < best!.1 { best = (c, d) }
    }
    guard let (name, d) = best else { return nil }
    // A typo: at most a third of the word wrong (one edit in short words), or one word a prefix of the other.
    let limit = w.count <= 3 ? 1 : max(2, w.count / 3)
    if d <= limit || (w.count >= 3 && (name.hasPrefix(word) || word.hasPrefix(name))) { return name }
    return nil
}

/// Levenshtein distance (insertions, deletions, substitutions; an adjacent swap counts as one).
func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev2 = [Int](repeating: 0, count: b.count + 1)
    var prev = Array(0...b.count)
    var cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { cur[j] = min(cur[j], prev2[j - 2] + 1) }
        }
        (prev2, prev, cur) = (prev, cur, prev2)
    }
    return prev[b.count]
}
