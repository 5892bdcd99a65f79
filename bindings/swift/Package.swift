// swift-tools-version:6.0
// The Swift package of bcv (LIFETIMES.md §4.5; BINDINGS.md §3.4–3.5).
//
// Targets:
// * `bcv_uniffiFFI`: system library for the UniFFI-generated C header and module map. Its name must stay
//   `bcv_uniffiFFI`, because the generated Swift does `#if canImport(bcv_uniffiFFI)` (BINDINGS.md P10).
// * `BcvUniffi`: the UniFFI-generated Swift (`bcv_uniffi.swift`), linked against `libbcv_all.a`, the one
//   static library that carries both the C ABI and the UniFFI surface (P7).
// * `BCV`: the idiomatic layer users import: it re-exports `BcvUniffi` and adds cancellable async reads,
//   an `AsyncSequence` adapter, `close(timeout:)` and `withScope {}`.
//
// The generated files are not committed: `scripts/test-swift.sh` builds `libbcv_all.a`, regenerates them
// from it, and runs `swift test -Xlinker -L<dir holding only libbcv_all.a>` (P8, P12).
import PackageDescription

let package = Package(
    name: "BCV",
    products: [
        .library(name: "BCV", targets: ["BCV"]),
    ],
    targets: [
        .systemLibrary(name: "bcv_uniffiFFI", path: "Sources/bcv_uniffiFFI"),
        .target(
            name: "BcvUniffi",
            dependencies: ["bcv_uniffiFFI"],
            path: "Sources/BcvUniffi",
            linkerSettings: [.linkedLibrary("bcv_all")]
        ),
        .target(name: "BCV", dependencies: ["BcvUniffi"], path: "Sources/BCV"),
        .testTarget(name: "BCVTests", dependencies: ["BCV"], path: "Tests/BCVTests"),
    ],
    swiftLanguageModes: [.v6]
)
