// swift-tools-version:6.0
// A runnable example of the Proxy-Wasm host from Swift, using the bcv Swift package as an application would.
// Run it with scripts/test-swift.sh, or inside the Swift chroot (after the script generated the bindings):
//   swift run --package-path examples/swift/proxy -Xlinker -L<dir holding only libbcv_all.a> proxy <plugins dir>
// where <plugins dir> holds testkit.wasm (scripts/build-proxy-plugins.sh builds it and prints the directory).
import PackageDescription

let package = Package(
    name: "proxy",
    dependencies: [
        .package(path: "../../../bindings/swift"),
    ],
    targets: [
        .executableTarget(
            name: "proxy",
            dependencies: [.product(name: "BCV", package: "swift")],
            path: "Sources/proxy"
        ),
    ],
    swiftLanguageModes: [.v6]
)
