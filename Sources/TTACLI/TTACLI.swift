import Foundation
import TTARuntime

/// A `tta` subcommand: its description (for the help), `init` that parses and validates its
/// options, and `run`, which does the work and returns the exit code.
protocol Command {
    static var name: CommandName { get }
    /// One line, shown in `tta --help` and at the top of the command's help.
    static var abstract: String { get }
    /// Paragraphs shown under the abstract in the command's help.
    static var discussion: String { get }
    static var usage: String { get }
    /// Checks everything that can be checked without touching files.
    init(_ arguments: ParsedArguments) throws
    func run(console: Console) throws -> Int32
}

enum Commands {
    static var all: [any Command.Type] { [CompareCommand.self, RunCommand.self, ListCommand.self, InspectCommand.self,
                                          PredictCommand.self] }
    static var names: [String] { all.map { $0.name.rawValue } }
}

/// Output captured in memory.
private final class CapturedOutput { var out = "", err = "" }

/// The `tta` command-line tool, callable in-process.
public enum TTACLI {
    /// Runs `tta` with `arguments` (without the program name) and returns the exit code:
    /// 0 success, 1 failure, 64 usage error, 130 interrupted. Errors print one line,
    /// `tta: error: …`, on stderr.
    public static func main(arguments: [String], console: Console) -> Int32 {
        // Freed activations stay in the heap for the next batch (see `ProcessMemory.HeapPolicy`).
        ProcessMemory.setHeapPolicy(.keepFreed)
        do {
            let code = try dispatch(arguments, console: console)
            if let reason = console.outputFailure() {
                console.err("tta: error: cannot write to standard output: \(reason)\n")
                return code == 0 ? 1 : code
            }
            return code
        } catch {
            let e = CLIError.wrap(error)
            let line = e.description.split(whereSeparator: \.isNewline).joined(separator: " ")
            console.err("tta: error: \(line)\n")
            return e.exitCode
        }
    }

    /// Runs `tta` with its output captured into `stdout` and `stderr` (no terminal, no Ctrl-C handling).
    public static func main(arguments: [String], stdout: inout some TextOutputStream,
                            stderr: inout some TextOutputStream) -> Int32 {
        let b = CapturedOutput()
        let code = main(arguments: arguments, console: Console(out: { b.out += $0 }, err: { b.err += $0 }))
        stdout.write(b.out)
        stderr.write(b.err)
        return code
    }

    /// Ends the process with `code` (stdout flushed).
    public static func exit(_ code: Int32) -> Never {
        Foundation.exit(code)
    }

    static func dispatch(_ arguments: [String], console: Console) throws -> Int32 {
        guard let first = arguments.first else {
            console.out(Help.topLevel())
            return 0
        }
        switch first {
        case "-h", "--help":
            console.out(Help.topLevel())
            return 0
        case "--version":
            guard arguments.count == 1 else {
                throw CLIError.usage("unexpected argument '\(arguments[1])' after --version; see 'tta --help'")
            }
            console.out("tta \(SwiftTTAVersion.string)\n")
            return 0
        case "help":
            guard arguments.count > 1 else { console.out(Help.topLevel()); return 0 }
            guard let c = Commands.all.first(where: { $0.name.rawValue == arguments[1] }) else {
                throw CLIError.unknownCommand(arguments[1], suggestion: closest(to: arguments[1], in: Commands.names))
            }
            console.out(Help.command(c))
            return 0
        default:
            break
        }
        guard let c = Commands.all.first(where: { $0.name.rawValue == first }) else {
            if first.hasPrefix("-") {
                throw CLIError.usage("expected a command before '\(first)': \(Commands.names.joined(separator: ", ")); see 'tta --help'")
            }
            throw CLIError.unknownCommand(first, suggestion: closest(to: first, in: Commands.names))
        }
        let parsed = try Parser.parse(Array(arguments.dropFirst()), command: c.name)
        if parsed.help {
            console.out(Help.command(c))
            return 0
        }
        return try c.init(parsed).run(console: console)
    }
}
