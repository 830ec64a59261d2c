// swift-tools-version: 6.2
import PackageDescription

// Build switches (all opt-in, documented in README.md):
//   TTA_TARGET_CPU=native  compiles for this machine's CPU (AVX2/FMA on x86-64), enabling the FMA kernel path.
//                          Binaries built this way may crash (SIGILL) on CPUs without those instructions.
//   TTA_CHECKS=1           turns on expensive shape / finiteness checks inside kernels.
let targetCPU = Context.environment["TTA_TARGET_CPU"].flatMap { $0.isEmpty ? nil : $0 }
var common: [SwiftSetting] = []
if let cpu = targetCPU {
    common.append(.unsafeFlags(["-target-cpu", cpu]))
    common.append(.define("TTA_FMA"))
}
if Context.environment["TTA_CHECKS"] == "1" { common.append(.define("TTA_CHECKS")) }
// Kernels are compiled without bounds/overflow checks in release: they work on raw buffers behind
// checked entry points, and `-O` makes the register-tiled loops spill (see Docs/Kernels.md).
let kernelSettings = common + [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
    name: "SwiftTTA",
    products: [
        .library(name: "SwiftTTA", targets: ["TTAKernels", "TTATensor", "TTANN", "TTAModels", "TTAData", "TTAAdaptation", "TTAAugment", "TTARuntime"]),
        .executable(name: "tta-bench", targets: ["tta-bench"]),
        .executable(name: "tta", targets: ["tta"]),
    ],
    targets: [
        .target(name: "TTAKernels", swiftSettings: kernelSettings),
        .target(name: "TTATensor", dependencies: ["TTAKernels"], swiftSettings: common),
        .target(name: "TTANN", dependencies: ["TTATensor"], swiftSettings: common),
        .target(name: "TTAData", dependencies: ["TTATensor"], swiftSettings: common),
        .target(name: "TTAAugment", dependencies: ["TTATensor"], swiftSettings: common),
        .target(name: "TTAModels", dependencies: ["TTAKernels", "TTANN", "TTAData"], swiftSettings: common),
        .target(name: "TTAAdaptation", dependencies: ["TTAModels"], swiftSettings: common),
        .target(name: "TTARuntime", dependencies: ["TTAAdaptation", "TTAAugment", "TTAData", "TTAModels"], swiftSettings: common),
        .executableTarget(name: "tta-bench", dependencies: ["TTAModels", "TTAKernels"], path: "benchmarks/tta-bench",
                          swiftSettings: common),
        .target(name: "TTACLI", dependencies: ["TTARuntime"], swiftSettings: common),
        .executableTarget(name: "tta", dependencies: ["TTACLI"], swiftSettings: common),
        .target(name: "TTATestSupport", dependencies: ["TTANN", "TTAData"], path: "Tests/TTATestSupport"),
        .testTarget(name: "TTAKernelsTests", dependencies: ["TTAKernels", "TTATestSupport"]),
        .testTarget(name: "TTANNTests", dependencies: ["TTANN", "TTATestSupport"]),
        .testTarget(name: "TTADataTests", dependencies: ["TTAData", "TTATestSupport"]),
        .testTarget(name: "TTAModelsTests", dependencies: ["TTAModels", "TTATestSupport"]),
        .testTarget(name: "TTAAdaptationTests", dependencies: ["TTAAdaptation", "TTATestSupport"]),
        .testTarget(name: "TTARuntimeTests", dependencies: ["TTARuntime", "TTATestSupport"]),
        .testTarget(name: "TTAAugmentationTests", dependencies: ["TTAAugment", "TTATestSupport"]),
        .testTarget(name: "TTACLITests", dependencies: ["TTACLI", "TTATestSupport"]),
    ]
)
