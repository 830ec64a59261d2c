// swift-tools-version: 6.2
import PackageDescription
import Foundation

// Build switches (documented in README.md):
//   TTA_TARGET_CPU         which CPU the code is compiled for. Unset or `auto`: on an x86-64 Linux host whose
//                          /proc/cpuinfo lists the x86-64-v3 flags (AVX2, FMA, ...), `haswell` (the x86-64-v3 feature level: any CPU
//                          since Haswell or Zen), which enables the FMA kernel path; anywhere else the portable
//                          baseline. `portable` forces the baseline (plain SIMD multiply-add; any x86-64 or
//                          arm64). Any other value (e.g. `native`) is passed to `-target-cpu` as is. A binary
//                          built for haswell or native stops with SIGILL on a CPU without those instructions.
//   TTA_CHECKS=1           turns on expensive shape / finiteness checks inside kernels.
func hostSupportsX86_64v3() -> Bool {
    #if os(Linux) && arch(x86_64)
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let flagsLine = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
    let flags = Set(flagsLine.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init))
    return ["avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe"].allSatisfy(flags.contains)
    #else
    return false
    #endif
}
let targetCPU: String? = {
    switch Context.environment["TTA_TARGET_CPU"] ?? "auto" {
    case "", "auto": return hostSupportsX86_64v3() ? "haswell" : nil
    case "portable": return nil
    case let cpu: return cpu
    }
}()
var common: [SwiftSetting] = []
if let cpu = targetCPU {
    common.append(.unsafeFlags(["-target-cpu", cpu]))
    common.append(.define("TTA_FMA"))
}
if Context.environment["TTA_CHECKS"] == "1" { common.append(.define("TTA_CHECKS")) }
// Kernels are compiled without bounds/overflow checks in release: they work on raw buffers behind
// checked entry points, and `-O` makes the register-tiled loops spill.
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
        .target(name: "TTAAdaptation", dependencies: ["TTAModels", "TTAData"], swiftSettings: common),
        .target(name: "TTARuntime", dependencies: ["TTAAdaptation", "TTAAugment", "TTAData", "TTAModels"], swiftSettings: common),
        .executableTarget(name: "tta-bench", dependencies: ["TTAModels", "TTAKernels", "TTARuntime"], path: "benchmarks/tta-bench",
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
