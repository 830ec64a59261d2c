import Foundation
import Testing
import TTAData
import TTARuntime
@testable import TTACLI

/// The results file with the measured fields (times, throughput, memory) zeroed and the thread budget
/// (which other tests running in parallel change) cleared: what a resumed run must reproduce bit for bit.
func deterministicResults(_ data: Data) throws -> ResultsFile {
    var file = try JSONDecoder().decode(ResultsFile.self, from: data)
    file.config.threads = 0
    file.runs = file.runs.map(\.withoutMeasurements)
    return file
}

/// `--checkpoint`, `--resume` and the collapse options of `tta run` / `tta compare`.
@Suite struct CheckpointTests {
    /// Stopped after 4 batches of the second method (as Ctrl-C does), the comparison resumes from its
    /// checkpoint and writes the same JSON as a run that never stopped; the checkpoint then records
    /// both methods done, and resuming it again only prints the results.
    @Test func interruptedCompareResumesToTheSameResults() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let options = ["compare"] + tiny.dataOptions + ["--methods", "tent,cotta", "--augmentations", "2", "--format", "json"]
        let full = tta(options)
        #expect(full.code == 0, "\(full.err)")
        let checkpoint = tiny.folder.path("run.ckpt")
        // 6 batches per method, 7 stop checks each (the last finds the stream's end): cotta runs 3 batches.
        let stopped = tta(options + ["--checkpoint", checkpoint, "--checkpoint-every", "2"], stopAfter: 10)
        #expect(stopped.code == 130, "\(stopped.err)")
        #expect(stopped.err.hasSuffix("; continue with --resume \(checkpoint)\n"))
        let saved = try RunCheckpoint.read(URL(fileURLWithPath: checkpoint))
        #expect(saved.methodIndex == 1 && saved.finishedRuns.map(\.method) == ["tent"] && saved.inProgress?.progress.batches == 3)

        let resumed = tta(options + ["--resume", checkpoint])
        #expect(resumed.code == 0, "\(resumed.err)")
        #expect(try deterministicResults(Data(resumed.out.utf8)) == deterministicResults(Data(full.out.utf8)))
        let done = try RunCheckpoint.read(URL(fileURLWithPath: checkpoint))
        #expect(done.methodIndex == 2 && done.inProgress == nil)
        let again = tta(options + ["--resume", checkpoint])
        #expect(again.code == 0)
        let runs = { (r: Invocation) in try JSONDecoder().decode(ResultsFile.self, from: Data(r.out.utf8)).runs }
        #expect(try runs(again) == runs(resumed), "the stored results, measured fields included")
    }

    /// A checkpoint resumes only the run it was written for: another learning rate is refused before any
    /// work, naming the setting and both values.
    @Test func resumeWithOtherSettingsIsRefused() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let checkpoint = tiny.folder.path("run.ckpt")
        let options = ["run"] + tiny.dataOptions + ["--method", "tent", "--format", "json"]
        #expect(tta(options + ["--checkpoint", checkpoint], stopAfter: 2).code == 130)
        // Only the setting that differs is named, not the whole configuration.
        expectError(tta(options + ["--resume", checkpoint, "--lr", "0.01"]),
                    "--resume \(checkpoint): the checkpoint is of another run: different method settings (lr 0.001 in the checkpoint, 0.01 now)", code: 1)
        let missing = tta(options + ["--resume", tiny.folder.path("nope.ckpt")])
        #expect(missing.code != 0 && missing.err.contains("nope.ckpt"))
        // Edited by hand (an Adam moment cut short, which the next step would read past), it is refused naming
        // --resume and the entry.
        var edited = try RunCheckpoint.read(URL(fileURLWithPath: checkpoint))
        let key = try #require(edited.inProgress?.adaptor.method.tensors.keys.filter { $0.hasPrefix("optimizer.buffers.") }.sorted().first)
        edited.inProgress?.adaptor.method.tensors[key]?.removeLast()
        try edited.write(to: URL(fileURLWithPath: checkpoint))
        let cut = tta(options + ["--resume", checkpoint])
        #expect(cut.code == 1 && cut.out.isEmpty)
        #expect(cut.err.hasPrefix("tta: error: --resume \(checkpoint): tent: the saved optimizer state does not fit: 'method.\(key)' holds "),
                "\(cut.err)")
        let bad = tta(options + ["--collapse-threshold", "0"])
        expectError(bad, "invalid value '0' for '--collapse-threshold': expected a number in (0, 1]", code: 64)
    }

    /// A collapse is reported in the JSON and in the table. A threshold of 0.1 over 2 batches (8 images)
    /// always fires, as some class takes at least 1/8 of them: after batch 2, and with `--on-collapse
    /// reset` again after batches 4 and 6, the window being emptied by each reset.
    @Test func collapseIsReportedInTheResults() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let r = tta(["run"] + tiny.dataOptions + ["--method", "source", "--collapse-window", "2", "--collapse-threshold", "0.1",
                                                  "--on-collapse", "reset", "--format", "json"])
        #expect(r.code == 0, "\(r.err)")
        let file = try JSONDecoder().decode(ResultsFile.self, from: Data(r.out.utf8))
        let events = file.runs[0].stability.collapses
        #expect(events.map(\.batch) == [2, 4, 6] && events.allSatisfy(\.reset))
        let report = tiny.folder.path("report.html")
        let table = tta(["run"] + tiny.dataOptions + ["--method", "source", "--collapse-window", "2", "--collapse-threshold", "0.1",
                                                      "--report", report])
        let notes = table.out.split(separator: "\n").filter { $0.hasPrefix("source: ") }
        #expect(notes.count == 1 && notes[0].hasPrefix("source: collapse after batch 2 (class ") && !notes[0].contains("reset"))
        #expect(try String(contentsOfFile: report, encoding: .utf8).contains("<p class=\"note\">\(notes[0])</p>"))
    }
}
