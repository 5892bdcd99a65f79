//! Builds the test plugins in `tests/proxy-plugins` from source (target wasm32-wasip1, the crates.io
//! `proxy-wasm` SDK) once per test process and hands out their bytes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/proxy-plugins")
}

/// The directory the plugins are built into (its own target dir, so the outer cargo's lock is not held).
fn target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    base.join("proxy-plugins")
}

fn build() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Idempotent and quick when the target is installed; needed on a fresh machine.
    let _ = Command::new("rustup").args(["target", "add", "wasm32-wasip1"]).output();
    let target = target_dir();
    let output = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip1", "--manifest-path"])
        .arg(plugins_dir().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("building the test plugins failed:\n{}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok(target.join("wasm32-wasip1/release"))
}

/// The bytes of test plugin `name` (`"testkit"`, `"legacy_v010"`, …). Panics when they cannot be built.
pub fn plugin(name: &str) -> Vec<u8> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(build).as_ref().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A directory for the proxy host's precompiled-module cache, shared by the tests of one build.
pub fn cache_dir() -> PathBuf {
    target_dir().join("module-cache")
}
