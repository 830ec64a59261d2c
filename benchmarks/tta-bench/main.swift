// tta-bench: kernel and end-to-end benchmarks. Every benchmark checks its result against the reference
// implementation before it times anything.
//
//     swift run -c release tta-bench gemm [--threads N] [--json FILE] [--numpy FILE] [--runs N]
//                                         [--shapes square|conv|all|MxNxK,...] [--trans NN|NT|TN|TT]
//
// Build with TTA_TARGET_CPU=native for the FMA kernels (see Package.swift).

import Foundation

let usage = """
    usage: tta-bench <command> [options]

    commands:
      gemm    time the packed SIMD GEMM (gemmSIMD) against numpy/OpenBLAS figures
              --threads N       kernel threads (default: all cores)
              --runs N          timed runs per shape after warm-up (default: adaptive, at least 5)
              --shapes LIST     square | conv | all (default) | comma-separated MxNxK
              --trans XY        NN (default), NT, TN or TT: transpose A (X) and/or B (Y)
              --json FILE       write all results as JSON
              --numpy FILE      JSON written by benchmarks/gemm_numpy.py; adds a Swift/numpy column
    """

var arguments = Array(CommandLine.arguments.dropFirst())
guard let command = arguments.first else {
    print(usage)
    exit(2)
}
arguments.removeFirst()

do {
    switch command {
    case "gemm":
        try GemmBench(arguments: arguments).run()
    case "-h", "--help", "help":
        print(usage)
    default:
        throw BenchError.usage("unknown command '\(command)'")
    }
} catch let error as BenchError {
    FileHandle.standardError.write(Data("tta-bench: \(error.message)\n".utf8))
    exit(error.exitCode)
} catch {
    FileHandle.standardError.write(Data("tta-bench: \(error)\n".utf8))
    exit(1)
}
