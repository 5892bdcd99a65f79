//! `no_marker`: a module with an allocator and `proxy_on_context_create` but WITHOUT any
//! `proxy_abi_version_*` export. The host must refuse it ("missing or unknown Proxy-Wasm ABI version").
#![no_std]

#[path = "../../common/raw.rs"]
mod raw;

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    raw::bump_alloc(size)
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _parent_context_id: u32) {}
