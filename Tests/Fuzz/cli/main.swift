// libFuzzer target: the `tta` command-line parser and option validation, and the `--config` reader.
// Built and run by scripts/fuzz.sh; not a SwiftPM target.
//
// The first byte picks what the rest is: an argument vector (arguments separated by NUL bytes) for
// one subcommand, given to `Parser.parse` and then to the command's validating `init` (which never
// runs the command); the contents of a `--config` JSON file for one subcommand; or a whole command line
// whose first word is not a subcommand (help, --version, typos), given to `TTACLI.main`.
import Foundation
@testable import TTACLI

/// Paths the harness must not hand to the commands: `--config` (read by the parser; config contents are
/// fuzzed on their own) and device or kernel files, whose reads never end.
func isSafe(_ argument: String) -> Bool {
    !argument.contains("config") && !argument.contains("/dev") && !argument.contains("/proc") && !argument.contains("/sys")
}

func exercise(_ error: any Error) {
    let e = CLIError.wrap(error)
    precondition(!e.description.isEmpty && (e.exitCode == 1 || e.exitCode == 64))
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCLI(_ bytes: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let commands = CommandName.allCases
    let mode = Int(bytes[0]) % (2 * commands.count + 1)
    let rest = UnsafeBufferPointer(start: bytes + 1, count: size - 1)
    if mode < commands.count {
        let arguments = rest.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard arguments.allSatisfy(isSafe) else { return 0 }
        let command = commands[mode]
        guard let type = Commands.all.first(where: { $0.name == command }) else { fatalError("no command \(command)") }
        do {
            let parsed = try Parser.parse(arguments, command: command)
            if parsed.help { _ = Help.command(type) } else { _ = try type.init(parsed) }
        } catch {
            exercise(error)
        }
    } else if mode < 2 * commands.count {
        let command = commands[mode - commands.count]
        do {
            let values = try Parser.parseConfig(Data(rest), path: "fuzz.json", command: command)
            for (name, _) in values { precondition(OptionSpec.spec(name, for: command) != nil) }
        } catch {
            exercise(error)
        }
    } else {
        let arguments = rest.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard let first = arguments.first, !Commands.names.contains(first), arguments.allSatisfy(isSafe) else { return 0 }
        var out = "", err = ""
        let code = TTACLI.main(arguments: arguments, stdout: &out, stderr: &err)
        precondition(code == 0 || code == 64, "exit code \(code) for \(arguments): \(err)")
    }
    return 0
}
