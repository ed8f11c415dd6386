// swift-tools-version:6.0
import PackageDescription

// Kernels are written with explicit SIMD8<Float>; `-target-cpu haswell` gives them AVX2 + FMA codegen.
// Without it Swift targets baseline x86-64 (SSE2) and `addingProduct` becomes an `fmaf` libcall.
// Every machine this project runs on (dev and CI) is AVX2 + FMA (see docs/DEVELOPERS.md); this is a root
// package, so unsafeFlags are allowed. Set LONGMIXER_PORTABLE=1 to build for baseline x86-64 instead.
import Foundation
let portable = ProcessInfo.processInfo.environment["LONGMIXER_PORTABLE"] == "1"
#if arch(x86_64)
let cpuFlags: [SwiftSetting] = portable ? [.define("LONGMIXER_NO_FMA")] : [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let cpuFlags: [SwiftSetting] = []
#endif
let settings: [SwiftSetting] = cpuFlags
// LongMixerWideKernels holds 16-lane (AVX-512) kernels, called only after a runtime CPU check.
#if arch(x86_64)
let wideFlags: [SwiftSetting] = portable ? [] : [.unsafeFlags(["-target-cpu", "skylake-avx512"]), .define("LONGMIXER_AVX512")]
#else
let wideFlags: [SwiftSetting] = []
#endif
// The SIMD kernels are 10–50× slower unoptimised, which would make debug-built tests crawl:
// Core is compiled with -O in debug builds too (still with -enable-testing for @testable), and so is NN:
// its safetensors parser and module reflection run ~2× faster, which keeps the checkpoint fuzz test short.
let coreSettings: [SwiftSetting] = cpuFlags + [.unsafeFlags(["-O"], .when(configuration: .debug))]

// Data-parallel training over MPI is opt-in: LONGMIXER_MPI=1 adds the MPI backend (Debian:
// libopenmpi-dev), so the default build and README's commands need no MPI.
let mpi = ProcessInfo.processInfo.environment["LONGMIXER_MPI"] == "1"
let mpiTargets: [Target] = mpi ? [
    .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
    .target(name: "LongMixerMPI", dependencies: ["LongMixerCore", "CMPI"], swiftSettings: settings),
    .testTarget(name: "LongMixerMPITests", dependencies: ["LongMixerMPI", "LongMixerTraining", "LongMixerTestSupport"], swiftSettings: settings),
] : []
let mpiDependencies: [Target.Dependency] = mpi ? ["LongMixerMPI"] : []

let package = Package(
    name: "LongMixer",
    products: [
        .library(name: "LongMixer", targets: ["LongMixerCore", "LongMixerNN", "LongMixerModels", "LongMixerData", "LongMixerTraining", "LongMixerBenchmarks"]),
        .executable(name: "longmixer", targets: ["longmixer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // `swift package generate-documentation` (DocC); a plugin only, nothing links against it.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        // zlib (zip archives, gzip, PNG) and liblzma (.xz) for reading the tasks' data files.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .systemLibrary(name: "CLZMA", path: "Sources/CLZMA"),
        // Streaming stores, store fence and prefetch as `static inline` C (Swift has no spelling for them).
        .target(name: "CLongMixerMemory"),
        // Vector gathers as `static inline` C (the PermuteFormer feature permutation).
        .target(name: "CLongMixerGather"),
        // fork + prctl(PR_SET_PDEATHSIG) + exec for child processes that die with their parent (ChildProcess).
        .target(name: "CLongMixerProcess"),
        .target(name: "LongMixerWideKernels", dependencies: ["CLongMixerMemory", "CLongMixerGather"], swiftSettings: wideFlags + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        .target(name: "LongMixerCore", dependencies: ["COpenBLAS", "CLongMixerMemory", "CLongMixerGather", "CLongMixerProcess", "LongMixerWideKernels"], swiftSettings: coreSettings),
        .target(name: "LongMixerNN", dependencies: ["LongMixerCore"], swiftSettings: coreSettings),
        // Data: -O in debug builds too, so generating and parsing real data sets (and their fuzz tests) stay quick.
        .target(name: "LongMixerData", dependencies: ["LongMixerCore", "CZlib", "CLZMA"], swiftSettings: coreSettings),
        .target(name: "LongMixerModels", dependencies: ["LongMixerNN", "LongMixerData"], swiftSettings: settings),
        // CLongMixerProcess: the SIGINT/SIGTERM flag a run polls to write a checkpoint before it stops.
        .target(name: "LongMixerTraining", dependencies: ["LongMixerCore", "LongMixerNN", "LongMixerModels", "LongMixerData", "CLongMixerProcess"],
                swiftSettings: settings),
        // Benchmark suites and the PyTorch side-by-side runs (the CLI's `bench`), apart from training.
        .target(name: "LongMixerBenchmarks", dependencies: ["LongMixerCore", "LongMixerNN", "LongMixerModels", "LongMixerData", "LongMixerTraining"],
                swiftSettings: settings),
        .executableTarget(
            name: "longmixer",
            dependencies: [
                "LongMixerCore", "LongMixerNN", "LongMixerModels", "LongMixerData", "LongMixerTraining", "LongMixerBenchmarks",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ] + mpiDependencies,
            swiftSettings: settings + (mpi ? [.define("LONGMIXER_MPI")] : [])),
        // One closeness measure, fixture locator, thread-count loop and AVX-512 trait for every test target.
        .target(name: "LongMixerTestSupport", dependencies: ["LongMixerCore"], path: "Tests/LongMixerTestSupport", swiftSettings: settings),
        .testTarget(name: "LongMixerCoreTests", dependencies: ["LongMixerCore", "LongMixerWideKernels", "LongMixerTestSupport"], swiftSettings: settings),
        .testTarget(name: "LongMixerNNTests", dependencies: ["LongMixerNN", "LongMixerTraining", "LongMixerTestSupport"], swiftSettings: settings),
        .testTarget(name: "LongMixerModelsTests", dependencies: ["LongMixerModels", "LongMixerTraining", "LongMixerTestSupport"], swiftSettings: settings),
        .testTarget(name: "LongMixerDataTests", dependencies: ["LongMixerData", "LongMixerTestSupport"], swiftSettings: settings),
        .testTarget(name: "LongMixerTrainingTests", dependencies: ["LongMixerTraining", "LongMixerTestSupport"], swiftSettings: settings),
        .testTarget(name: "LongMixerBenchmarksTests", dependencies: ["LongMixerBenchmarks", "LongMixerTestSupport"], swiftSettings: settings),
    ] + mpiTargets,
    swiftLanguageModes: [.v5]
)
