import Foundation
import Synchronization

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

    /// A console over arbitrary sinks (tests capture output this way).
    package init(stderrIsTerminal: Bool = false, out: @escaping (String) -> Void, err: @escaping (String) -> Void,
                 shouldStop: @escaping () -> Bool = { false }, onLongWork: @escaping () -> Void = {},
                 environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.stderrIsTerminal = stderrIsTerminal
        self.environment = environment
        writeOut = out
        writeErr = err
        self.shouldStop = shouldStop
        self.onLongWork = onLongWork
    }

    /// The process's stdout and stderr; Ctrl-C (SIGINT) during a run stops it after the current batch.
    public static func standard() -> Console {
        Console(stderrIsTerminal: isatty(2) == 1,
                out: { FileHandle.standardOutput.write(Data($0.utf8)) },
                err: { FileHandle.standardError.write(Data($0.utf8)) },
                shouldStop: { Interrupt.requested },
                onLongWork: { Interrupt.install() })
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
