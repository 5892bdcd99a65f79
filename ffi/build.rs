//! Generates `bcv.h` with cbindgen into `OUT_DIR`; with `BCV_REGEN_HEADER=1` it also rewrites the committed
//! `include/bcv.h`. The test `header_is_current` fails when the committed header has drifted.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=BCV_REGEN_HEADER");
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("ffi/cbindgen.toml is valid");
    let bindings = match cbindgen::Builder::new().with_crate(&crate_dir).with_config(config).generate() {
        Ok(b) => b,
        Err(e) => panic!("cbindgen could not generate bcv.h: {e}"),
    };
    bindings.write_to_file(out_dir.join("bcv.h"));
    if std::env::var("BCV_REGEN_HEADER").as_deref() == Ok("1") {
        bindings.write_to_file(crate_dir.join("../include/bcv.h"));
    }
    println!("cargo:include={}", crate_dir.join("../include").display());
}
