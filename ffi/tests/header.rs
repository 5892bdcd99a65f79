//! The committed `include/bcv.h` must be exactly what cbindgen generates from `ffi/src`.
//! Regenerate with `BCV_REGEN_HEADER=1 cargo build -p bcv-ffi`.

#[test]
fn header_is_current() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/bcv.h"));
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../include/bcv.h"))
        .expect("include/bcv.h exists");
    assert!(
        generated == committed,
        "include/bcv.h is out of date: run `BCV_REGEN_HEADER=1 cargo build -p bcv-ffi` and commit it"
    );
}
