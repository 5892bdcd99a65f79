//! `no_alloc`: a Proxy-Wasm ABI 0.2.1 module that exports neither `proxy_on_memory_allocate` nor `malloc`.
//! The host must refuse it (cpp-host: "Wasm module is missing malloc function").
#![no_std]

// Only for the panic handler; the arena is never used.
#[path = "../../common/raw.rs"]
mod raw;

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _parent_context_id: u32) {}
