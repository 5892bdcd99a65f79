//! The UniFFI bindings generator, pinned to the `uniffi` version this crate links (BINDINGS.md §3.4):
//! `cargo run -p bcv-uniffi --features cli --bin uniffi-bindgen -- generate --library <lib> --language swift --out-dir <dir>`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
