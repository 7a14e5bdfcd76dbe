// swift-tools-version: 6.0
import PackageDescription

// The pinned MLX wheel is installed by `make setup` into .deps (git-ignored): mlx-cpu by default, MLX's CUDA build
// (mlx-cuda-13, the same version and C++ API) with `make setup BACKEND=cuda`, which builds with JANUSFLOW_BACKEND=cuda.
let backend = Context.environment["JANUSFLOW_BACKEND"] ?? "cpu"
let mlxRoot = Context.packageDirectory + "/.deps/mlx-\(backend)/mlx"
let mlxInclude = mlxRoot + "/include"
let mlxLib = mlxRoot + "/lib"
// The CUDA build's libmlx needs NVIDIA's libraries (cuBLAS, cuDNN, NVRTC, NCCL), which the GPU machine has and a
// build machine need not: they are resolved when the program starts there. A binary packed beside its libmlx.so
// (scripts/pack-gpu) finds it through $ORIGIN.
let backendLinkFlags: [String] = backend == "cuda"
    ? ["-Xlinker", "--allow-shlib-undefined", "-Xlinker", "-rpath", "-Xlinker", "$ORIGIN"]
    : []

// OpenBLAS must come before libmlx on the link line (and must not be dropped as unneeded) so that the
// process-wide cblas_sgemm binds to OpenBLAS rather than the reference BLAS bundled with the wheel.
let engineLinkFlags: [String] = [
    "-Xlinker", "--no-as-needed",
    "-lopenblas",
    "-L", mlxLib, "-lmlx",
    "-Xlinker", "-rpath", "-Xlinker", mlxLib,
] + backendLinkFlags

let package = Package(
    name: "JanusFlow",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "MLXEngine", targets: ["MLXEngine"]),
        .library(name: "JanusFlow", targets: ["JanusFlow"]),
        .library(name: "JanusFlowServer", targets: ["JanusFlowServer"]),
        .library(name: "JanusFlowTraining", targets: ["JanusFlowTraining"]),
        .library(name: "JanusFlowDemo", targets: ["JanusFlowDemo"]),
        // What the library types take and give: RGBImage (PNG/JPEG), the tokenizer and chat template.
        .library(name: "JanusFlowImageIO", targets: ["JanusFlowImageIO"]),
        .library(name: "JanusFlowTokenizer", targets: ["JanusFlowTokenizer"]),
        .executable(name: "janusflow", targets: ["JanusFlowCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        // `make docs`: the DocC catalogs, built by `swift package generate-documentation`.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // C API over mlx::core plus our own CPU kernels (MLX custom primitives).
        .target(
            name: "CMLXShim",
            cxxSettings: [
                .unsafeFlags(["-I", mlxInclude, "-O3", "-mavx2", "-mfma", "-mf16c", "-fno-math-errno"]),
            ],
            linkerSettings: [.unsafeFlags(engineLinkFlags)]
        ),
        // Swift tensor API, modules, layers, optimizers, safetensors.
        .target(name: "MLXEngine", dependencies: ["CMLXShim"]),
        // torch.randn-compatible random draws (MT19937 + PyTorch's normal sampling).
        .target(name: "PyTorchRandom"),
        // Hugging Face tokenizer.json (byte-level BPE) and the DeepSeek chat template.
        .target(name: "JanusFlowTokenizer"),
        // PNG/JPEG codecs from Debian's libpng and libjpeg-turbo.
        .target(name: "CImageCodecs", linkerSettings: [.linkedLibrary("png"), .linkedLibrary("jpeg")]),
        // Image files and the official preprocessing (Pillow-exact bicubic resize, pad, normalise).
        .target(name: "JanusFlowImageIO", dependencies: ["CImageCodecs"]),
        // The JanusFlow network, weight loading and inference pipeline.
        .target(
            name: "JanusFlow",
            dependencies: ["MLXEngine", "PyTorchRandom", "JanusFlowTokenizer", "JanusFlowImageIO"]
        ),
        // Training: objectives, the three-stage recipe, data, checkpoints.
        .target(name: "JanusFlowTraining", dependencies: ["JanusFlow", "MLXEngine", "JanusFlowImageIO", "JanusFlowTokenizer"]),
        // The procedurally generated world of shapes and its GenEval/POPE-style scorers.
        .target(name: "ShapesWorld"),
        // The embedded default as a Swift type: ShapesWorld data, pretraining, the three stages, scoring.
        .target(name: "JanusFlowDemo", dependencies: ["JanusFlow", "JanusFlowTraining", "ShapesWorld", "MLXEngine", "JanusFlowImageIO", "JanusFlowTokenizer"]),
        // HTTP API over the pipeline (Hummingbird).
        .target(
            name: "JanusFlowServer",
            dependencies: ["JanusFlow", "JanusFlowImageIO", "JanusFlowTokenizer", .product(name: "Hummingbird", package: "hummingbird")],
            // The web page at `/`: plain files, no build step.
            resources: [.copy("Web")]
        ),
        .executableTarget(
            name: "JanusFlowCLI",
            dependencies: [
                "JanusFlow", "JanusFlowServer", "MLXEngine", "JanusFlowTraining", "ShapesWorld", "JanusFlowDemo", "JanusFlowImageIO", "JanusFlowTokenizer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "MLXEngineTests", dependencies: ["MLXEngine"]),
        .testTarget(name: "PyTorchRandomTests", dependencies: ["PyTorchRandom"], resources: [.copy("Fixtures")]),
        .testTarget(name: "JanusFlowTokenizerTests", dependencies: ["JanusFlowTokenizer"], resources: [.copy("Fixtures")]),
        .testTarget(name: "JanusFlowImageIOTests", dependencies: ["JanusFlowImageIO"], resources: [.copy("Fixtures")]),
        .testTarget(name: "JanusFlowTests", dependencies: ["JanusFlow", "JanusFlowServer", "JanusFlowImageIO", "JanusFlowTokenizer", "JanusFlowTraining"], resources: [.copy("Fixtures")]),
        .testTarget(name: "JanusFlowTrainingTests", dependencies: ["JanusFlowTraining"]),
        .testTarget(name: "ShapesWorldTests", dependencies: ["ShapesWorld"]),
        .testTarget(name: "JanusFlowDemoTests", dependencies: ["JanusFlowDemo", "JanusFlow", "JanusFlowImageIO", "ShapesWorld"]),
    ],
    cxxLanguageStandard: .cxx20
)

// Fuzz targets, one executable per reader (Fuzz/Targets/NAME). `make fuzz` builds them with libFuzzer and
// AddressSanitizer; an ordinary build makes them replay files, which FuzzRegressionTests runs on the corpus.
let fuzzTargets: [(name: String, dependencies: [Target.Dependency])] = [
    ("Safetensors", ["MLXEngine"]),
    ("ModelConfig", ["JanusFlow"]),
    ("TokenizerJSON", ["JanusFlowTokenizer"]),
    ("TokenizerText", ["JanusFlowTokenizer"]),
    ("PNG", ["JanusFlowImageIO"]),
    ("JPEG", ["JanusFlowImageIO"]),
    ("Manifest", ["JanusFlowTraining"]),
    ("DemoSettings", ["JanusFlowDemo"]),
    ("ServerBodies", ["JanusFlowServer"]),
]
package.targets.append(.target(name: "FuzzSupport", path: "Fuzz/Support"))
for target in fuzzTargets {
    package.targets.append(.executableTarget(name: "Fuzz\(target.name)", dependencies: ["FuzzSupport"] + target.dependencies,
                                             path: "Fuzz/Targets/\(target.name)"))
}
