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
        .target(
            name: "SluiceCore",
            dependencies: ["CSluiceLinux", "COpenSSL"]
        ),
        .target(name: "SluiceOrigin", dependencies: ["SluiceCore"]),
        .executableTarget(name: "sluice", dependencies: ["SluiceCore", "SluiceOrigin"]),
        .testTarget(name: "SluiceCoreTests", dependencies: ["SluiceCore"]),
    ],
    swiftLanguageModes: [.v6]
)
