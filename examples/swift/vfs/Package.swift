// swift-tools-version:6.0
// The block-cache VFS example, using the bcv Swift package as a dependency, as an application would.
// (It lives in examples/swift/vfs, not examples/swift: SwiftPM names a path dependency after its
// directory, and bindings/swift is already called `swift`.)
// Run it with scripts/test-swift.sh, or inside the Swift chroot (after the script generated the bindings):
//   swift run --package-path examples/swift/vfs -Xlinker -L<dir holding only libbcv_all.a> vfs
import PackageDescription

let package = Package(
    name: "vfs",
    dependencies: [
        .package(path: "../../../bindings/swift"),
    ],
    targets: [
        .executableTarget(
            name: "vfs",
            dependencies: [.product(name: "BCV", package: "swift")],
            path: "Sources/vfs"
        ),
    ],
    swiftLanguageModes: [.v6]
)
