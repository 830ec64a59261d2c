// tta-bench: kernel and end-to-end benchmarks. Every benchmark checks its result against the reference
// implementation before it times anything.
//
//     swift run -c release tta-bench gemm [--threads N] [--json FILE] [--numpy FILE] [--runs N]
//                                         [--shapes square|conv|all|MxNxK,...] [--trans NN|NT|TN|TT]
//     swift run -c release tta-bench conv [--batch N] [--threads N] [--runs N] [--layers LIST]
//                                         [--directions forward,inference,input,weight] [--json FILE] [--torch FILE]
//     swift run -c release tta-bench steps [--model wideresnet-D-W[,...]] [--batch N[,...]] [--methods LIST]
//                                          [--warmup W] [--runs R] [--threads T] [--json FILE]
//
// The default build (TTA_TARGET_CPU=auto) uses the FMA kernels on an AVX2+FMA x86-64 host (see Package.swift).

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
      conv    time each WRN-28-10 convolution (forward, inference forward, backward to input and to weights)
              --batch N         images per call (default: 200)
              --runs N          timed runs after one warm-up (default: 2)
              --layers LIST     comma-separated layer names (default: all ten distinct shapes)
              --directions LIST from forward,inference,input,weight (default: all four); inference
                                and input take Winograd on 3x3 stride-1 layers and are also timed lowered
              --threads N       kernel threads (default: all cores)
              --json FILE       write all results as JSON
              --torch FILE      JSON written by benchmarks/conv_torch.py; adds a PyTorch/Swift time ratio
      steps   time one adaptation step (Adaptor.adapt on one batch) per method and model; PyTorch
              counterpart: benchmarks/pytorch_reference.py, both together: benchmarks/compare_steps.sh
              --model LIST      wideresnet-D-W, comma-separated (default: wideresnet-28-10,wideresnet-16-2)
              --batch N[,...]   batch size, one or one per model (default: 200 for WRN-28-10, else 64)
              --methods LIST    from source,norm_test,tent,cotta,cotta-noaug (default: all five); cotta
                                runs its 32 augmented teacher passes on every batch, cotta-noaug none
              --warmup W        untimed steps per method first (default: 1)
              --runs R          timed steps per method (default: 3)
              --threads N       kernel threads (default: all cores)
              --seed S          seed of the model initialisation and the inputs (default: 1)
              --json FILE       write all results as JSON
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
    case "conv":
        try ConvBench(arguments: arguments).run()
    case "steps":
        try StepBench(arguments: arguments).run()
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
