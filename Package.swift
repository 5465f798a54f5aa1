// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "sluice",
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .library(name: "SluiceCore", targets: ["SluiceCore"]),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(name: "CSluiceLinux"),
        // Generates BuildInfo's commit (`git rev-parse --short HEAD`, or SLUICE_COMMIT, or `unknown`) before
        // every build: SwiftPM has no other way to put a build-time value into the binary.
        .plugin(name: "BuildInfoPlugin", capability: .buildTool()),
        .target(
            name: "SluiceCore",
            dependencies: ["CSluiceLinux", "COpenSSL"],
            // Release builds skip the dynamic exclusivity checks: each class-property access on the
            // data path otherwise costs a runtime call (about 10% of the forwarding CPU in a profile).
            // Debug builds and `swift test` keep them.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))],
            plugins: ["BuildInfoPlugin"]
        ),
        .target(name: "SluiceOrigin", dependencies: ["SluiceCore"]),
        .executableTarget(
            name: "sluice",
            dependencies: ["SluiceCore", "SluiceOrigin"],
            // Resolve every dynamic symbol at start-up (BIND_NOW) instead of on first call, so the first
            // requests a fresh process serves do not pay the dynamic linker's lookups.
            linkerSettings: [.unsafeFlags(["-Xlinker", "-z", "-Xlinker", "now"])]
        ),
        // libFuzzer targets, one per parser; `fuzz/run.sh` builds them with `--sanitize fuzzer`. Each main.swift
        // holds only the entry point, so a plain `swift build` links them as programs that do nothing.
        .target(name: "SluiceFuzzSupport", dependencies: ["SluiceCore"]),
        .executableTarget(name: "SluiceFuzzRequest", dependencies: ["SluiceFuzzSupport"]),
        .executableTarget(name: "SluiceFuzzResponse", dependencies: ["SluiceFuzzSupport"]),
        .executableTarget(name: "SluiceFuzzChunked", dependencies: ["SluiceFuzzSupport"]),
        .executableTarget(name: "SluiceFuzzTap", dependencies: ["SluiceFuzzSupport"]),
        .executableTarget(name: "SluiceFuzzConfig", dependencies: ["SluiceFuzzSupport"]),
        // The unit tests share SluiceFuzzSupport's test helpers (the chunked-body reassembly), so a unit test and
        // the fuzz target check the decoder against one reference.
        .testTarget(name: "SluiceCoreTests", dependencies: ["SluiceCore", "SluiceFuzzSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
