import Foundation
import Testing
import TTARuntime
@testable import TTACLI

/// The built `tta` executable, run as a subprocess.
@Suite struct BinaryTests {
    @Test func versionHelpAndUsageError() throws {
        let v = try runBinary(["--version"])
        #expect(v.code == 0 && v.out == "tta 0.1.0\n" && v.err.isEmpty)
        let e = try runBinary(["compare", "--batchsize", "8"])
        #expect(e.code == 64)
        #expect(e.err == "tta: error: unknown option '--batchsize' for 'tta compare'; did you mean '--batch-size'?\n")
        #expect(e.out.isEmpty)
    }

    @Test func compareWritesJSON() throws {
        let tiny = try TinyBenchmark()
        defer { tiny.cleanup() }
        let r = try runBinary(["compare"] + tiny.dataOptions + ["--methods", "source,norm_test", "--format", "json"])
        #expect(r.code == 0, "\(r.err)")
        let file = try JSONDecoder().decode(ResultsFile.self, from: Data(r.out.utf8))
        #expect(file.runs.map(\.method) == ["source", "norm_test"])
        #expect(file.runs.allSatisfy { $0.completed && $0.domains.count == 3 })
    }

    /// A real Ctrl-C: SIGINT once the first domain is reported; the run stops after the current batch,
    /// writes the finished domains to --output and exits with 130.
    @Test func sigintKeepsPartialResults() throws {
        let corruptions = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "snow"]
        let tiny = try TinyBenchmark(corruptions: corruptions, perSeverity: 40)
        defer { tiny.cleanup() }
        let output = tiny.folder.path("partial.json")
        let p = Process()
        p.executableURL = try ttaExecutable()
        p.arguments = ["compare", "--dataset", "cifar10-c", "--data-dir", tiny.root, "--weights", tiny.weights,
                       "--corruptions", corruptions.joined(separator: ","), "--methods", "cotta", "--batch-size", "2", "--output", output]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = Pipe()
        try p.run()
        var text = ""
        var sent = false
        while true {
            let chunk = err.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
            if !sent && text.contains("cotta 1/8 gaussian_noise5") {
                kill(p.processIdentifier, SIGINT)
                sent = true
            }
        }
        p.waitUntilExit()
        #expect(sent, "no domain line on stderr: \(text)")
        #expect(p.terminationReason == .exit && p.terminationStatus == 130, "\(text)")
        let file = try JSONDecoder().decode(ResultsFile.self, from: Data(contentsOf: URL(fileURLWithPath: output)))
        let run = try #require(file.runs.first)
        #expect(!run.completed && run.domains.count >= 1 && run.domains.count < 8 && run.batches < run.totalBatches)
        #expect(text.contains("tta: interrupted: kept \(run.domains.count) of 8 domains of cotta; partial results written to \(output)"))
    }

    /// A run killed with SIGKILL in the middle of its second method leaves a readable checkpoint (written
    /// atomically after every batch) and no results file; resumed from it, it writes the same results
    /// JSON, bit for bit apart from the measured times and memory, as a run that was never killed.
    @Test func sigkilledRunResumesToTheSameResults() throws {
        let corruptions = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur"]
        let tiny = try TinyBenchmark(corruptions: corruptions, perSeverity: 20)
        defer { tiny.cleanup() }
        let options = ["compare", "--dataset", "cifar10-c", "--data-dir", tiny.root, "--weights", tiny.weights,
                       "--corruptions", corruptions.joined(separator: ","), "--methods", "tent,cotta", "--batch-size", "2",
                       "--augmentations", "4", "--quiet", "--format", "json"]
        let full = try runBinary(options + ["--output", tiny.folder.path("full.json")])
        #expect(full.code == 0, "\(full.err)")

        let checkpoint = tiny.folder.path("run.ckpt"), killedOutput = tiny.folder.path("killed.json")
        let p = Process()
        p.executableURL = try ttaExecutable()
        p.arguments = options + ["--output", killedOutput, "--checkpoint", checkpoint, "--checkpoint-every", "1"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Kill once cotta (40 batches) has saved a few batches.
        var killedAt: RunCheckpoint?
        let deadline = Date().addingTimeInterval(120)
        while p.isRunning && Date() < deadline {
            if let c = try? RunCheckpoint.read(URL(fileURLWithPath: checkpoint)), c.methodIndex == 1,
               let done = c.inProgress?.progress.batches, done >= 3 {
                kill(p.processIdentifier, SIGKILL)
                killedAt = c
                break
            }
            usleep(2_000)
        }
        p.waitUntilExit()
        let saved = try #require(killedAt, "the run ended before it could be killed mid-way (\(p.terminationStatus))")
        #expect(p.terminationReason == .uncaughtSignal && p.terminationStatus == SIGKILL)
        #expect(!FileManager.default.fileExists(atPath: killedOutput))
        let last = try RunCheckpoint.read(URL(fileURLWithPath: checkpoint))
        #expect(last.methodIndex == 1 && last.finishedRuns.map(\.method) == ["tent"])
        let position = try #require(last.inProgress?.progress.batches)
        #expect(position >= saved.inProgress!.progress.batches && position < 40)

        let resumed = try runBinary(options + ["--output", tiny.folder.path("resumed.json"), "--resume", checkpoint])
        #expect(resumed.code == 0, "\(resumed.err)")
        let expected = try deterministicResults(Data(contentsOf: URL(fileURLWithPath: tiny.folder.path("full.json"))))
        #expect(try deterministicResults(Data(contentsOf: URL(fileURLWithPath: tiny.folder.path("resumed.json")))) == expected)
        #expect(try deterministicResults(Data(resumed.out.utf8)) == expected)
    }
}
