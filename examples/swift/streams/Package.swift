// swift-tools-version:6.0
// A runnable example that uses the bcv Swift package as a dependency, as an application would.
// (It lives in examples/swift/streams, not examples/swift: SwiftPM names a path dependency after its
// directory, and bindings/swift is already called `swift`.)
// Run it with scripts/test-swift.sh, or inside the Swift chroot (after the script generated the bindings):
//   swift run --package-path examples/swift/streams -Xlinker -L<dir holding only libbcv_all.a> streams
import PackageDescription

let package = Package(
    name: "streams",
    dependencies: [
        .package(path: "../../../bindings/swift"),
    ],
    targets: [
        .executableTarget(
            name: "streams",
            dependencies: [.product(name: "BCV", package: "swift")],
            path: "Sources/streams"
        ),
    ],
    swiftLanguageModes: [.v6]
)
