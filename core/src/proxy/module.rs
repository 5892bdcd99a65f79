//! Plugin modules: compilation, ABI detection, validation and the precompiled-module cache.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::{ExternType, InstancePre, Module};

use super::error::{ProxyError, ProxyResult};
use super::host::{HostInner, ProxyHost};
use super::state::HostState;
use super::types::AbiVersion;

pub(crate) struct ModuleInner {
    pub name: String,
    pub abi: AbiVersion,
    pub pre: InstancePre<HostState>,
    pub host: Arc<HostInner>,
    pub from_cache: bool,
    pub sha256: [u8; 32],
}

/// A compiled, checked plugin module, ready to start VMs. Cheap to clone.
#[derive(Clone)]
pub struct PluginModule {
    pub(crate) inner: Arc<ModuleInner>,
}

impl std::fmt::Debug for PluginModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginModule").field("name", &self.inner.name).field("abi", &self.inner.abi).finish()
    }
}

impl PluginModule {
    /// The name it was loaded under.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The ABI version its marker export names.
    pub fn abi(&self) -> AbiVersion {
        self.inner.abi
    }

    /// True when the compiled code came from the module cache.
    pub fn from_cache(&self) -> bool {
        self.inner.from_cache
    }

    /// SHA-256 of the wasm bytes, in hex.
    pub fn sha256(&self) -> String {
        hex::encode(self.inner.sha256)
    }

    pub(crate) fn load(host: &ProxyHost, name: &str, wasm: &[u8]) -> ProxyResult<PluginModule> {
        let inner = &host.inner;
        let sha256: [u8; 32] = Sha256::digest(wasm).into();
        let (module, from_cache) = match &inner.config.module_cache_dir {
            Some(dir) => compile_cached(inner, name, wasm, &sha256, dir)?,
            None => (compile(inner, name, wasm)?, false),
        };
        let invalid = |reason: String| ProxyError::InvalidModule { module: name.to_string(), reason };
        let exported_function = |export: &str| matches!(module.get_export(export), Some(ExternType::Func(_)));
        let abi = AbiVersion::ALL.into_iter().find(|abi| exported_function(abi.marker())).ok_or_else(|| {
            invalid("missing or unknown Proxy-Wasm ABI version (no proxy_abi_version_* export)".into())
        })?;
        if !exported_function("proxy_on_memory_allocate") && !exported_function("malloc") {
            return Err(invalid(
                "the module is missing an allocator (neither proxy_on_memory_allocate nor malloc is exported)".into(),
            ));
        }
        if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
            return Err(invalid("the module exports no memory".into()));
        }
        let pre =
            inner.linker(abi).instantiate_pre(&module).map_err(|e| invalid(format!("ABI {}: {e}", abi.name())))?;
        let inner = ModuleInner { name: name.to_string(), abi, pre, host: inner.clone(), from_cache, sha256 };
        Ok(PluginModule { inner: Arc::new(inner) })
    }
}

fn compile(host: &HostInner, name: &str, wasm: &[u8]) -> ProxyResult<Module> {
    Module::new(&host.engine, wasm)
        .map_err(|e| ProxyError::Compile { module: name.to_string(), reason: format!("{e:#}") })
}

/// The cache file of a module: its hash plus everything that makes compiled code incompatible.
fn cache_path(host: &HostInner, sha256: &[u8; 32], dir: &Path) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    host.engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    dir.join(format!("{}-{:016x}.cwasm", hex::encode(sha256), hasher.finish()))
}

/// Each cache file starts with the SHA-256 of the rest, so a torn or damaged file is detected and
/// recompiled instead of being handed to wasmtime.
fn compile_cached(
    host: &HostInner,
    name: &str,
    wasm: &[u8],
    sha256: &[u8; 32],
    dir: &Path,
) -> ProxyResult<(Module, bool)> {
    let cache_error = |path: &Path, source| ProxyError::ModuleCache { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(|e| cache_error(dir, e))?;
    let path = cache_path(host, sha256, dir);
    if let Ok(bytes) = std::fs::read(&path)
        && bytes.len() > 32
        && Sha256::digest(&bytes[32..]).as_slice() == &bytes[..32]
    {
        // SAFETY: the bytes are a serialization this host wrote (the digest matches what was written), for
        // this engine configuration and version (both are in the file name); wasmtime checks compatibility
        // again.
        if let Ok(module) = unsafe { Module::deserialize(&host.engine, &bytes[32..]) } {
            return Ok((module, true));
        }
    }
    let module = compile(host, name, wasm)?;
    let serialized = module
        .serialize()
        .map_err(|e| ProxyError::Compile { module: name.to_string(), reason: format!("serialize: {e}") })?;
    let mut file = Vec::with_capacity(32 + serialized.len());
    file.extend_from_slice(&Sha256::digest(&serialized));
    file.extend_from_slice(&serialized);
    // A temporary name of its own (process and a per-process counter): hosts loading the same module at
    // once, in this process or others, each write a whole file and the last rename wins.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = path.with_extension(format!("tmp{}-{write}", std::process::id()));
    let written = std::fs::write(&temp, &file)
        .map_err(|e| cache_error(&temp, e))
        .and_then(|()| std::fs::rename(&temp, &path).map_err(|e| cache_error(&path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    Ok((module, false))
}
