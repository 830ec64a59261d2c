import Foundation
import Synchronization
import TTAData

/// Where a command writes, and whether it should stop: the real terminal streams with Ctrl-C
/// handling (`Console.standard()`), or in-memory buffers for tests.
public final class Console {
    /// Whether stderr is a terminal (live `\r` progress line) or not (one plain line per domain).
    public let stderrIsTerminal: Bool
    private let writeOut: (String) -> Void
    private let writeErr: (String) -> Void
    /// Asked between batches; true ends the run early, keeping the domains it finished.
    package var shouldStop: () -> Bool
    private let onLongWork: () -> Void
    /// The environment (`TTA_EMBEDDED_DIR`).
    package var environment: [String: String]
    /// Why stdout could not be written (a closed pipe, a full disk), once it could not; the command goes on (its
    /// files are written) and then fails.
    package let outputFailure: () -> String?

    /// A console over arbitrary sinks (tests capture output this way).
    package init(stderrIsTerminal: Bool = false, out: @escaping (String) -> Void, err: @escaping (String) -> Void,
                 shouldStop: @escaping () -> Bool = { false }, onLongWork: @escaping () -> Void = {},
                 environment: [String: String] = ProcessInfo.processInfo.environment, outputFailure: @escaping () -> String? = { nil }) {
        self.stderrIsTerminal = stderrIsTerminal
        self.outputFailure = outputFailure
        self.environment = environment
        writeOut = out
        writeErr = err
        self.shouldStop = shouldStop
        self.onLongWork = onLongWork
    }

    /// The process's stdout and stderr; Ctrl-C (SIGINT) during a run stops it after the current batch.
    /// A write that fails (a closed pipe, `/dev/full`) is recorded, not fatal: SIGPIPE is ignored, and FileHandle's
    /// `write`, which traps on an error, is not used.
    public static func standard() -> Console {
        signal(SIGPIPE, SIG_IGN)
        final class Failure { var reason: String? }
        let stdout = Failure()
        return Console(stderrIsTerminal: isatty(2) == 1,
                       out: { text in if stdout.reason == nil { stdout.reason = writeAll(text, to: 1) } },
                       err: { _ = writeAll($0, to: 2) },
                       shouldStop: { Interrupt.requested },
                       onLongWork: { Interrupt.install() },
                       outputFailure: { stdout.reason })
    }

    /// Writes all of `text` to file descriptor `fd`; the error when it cannot.
    static func writeAll(_ text: String, to fd: Int32) -> String? {
        Array(text.utf8).withUnsafeBytes { writeFully($0, to: fd) }.map { String(cString: strerror($0)) }
    }

    func out(_ text: String) { writeOut(text) }
    func err(_ text: String) { writeErr(text) }

    /// Called before a run starts: the standard console starts catching Ctrl-C here.
    func beginLongWork() { onLongWork() }
}

/// SIGINT handling: the first Ctrl-C sets a flag the runner checks between batches; a second one
/// exits at once with 130.
enum Interrupt {
    private static let flag = Atomic<Bool>(false)

    static var requested: Bool { flag.load(ordering: .relaxed) }

    static func install() {
        // A parent may have started us with SIGINT blocked (it is inherited); catch it here.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        signal(SIGINT) { _ in
            if Interrupt.flag.exchange(true, ordering: .relaxed) { _exit(130) }
        }
    }
}
