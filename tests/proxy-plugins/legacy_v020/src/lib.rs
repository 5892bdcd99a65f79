//! `legacy_v020`: a Proxy-Wasm ABI **0.2.0** module (no SDK), to test the host's support for the
//! `proxy_abi_version_0_2_0` marker and for WASI imported from the old `wasi_unstable` module
//! (as the AssemblyScript SDK does).
//!
//! `proxy_on_vm_start` writes `hello from wasi_unstable\n` to stdout through `wasi_unstable.fd_write`.
//! On request headers it adds `x-abi: 0.2.0` and `x-missing-status: <status of looking up x-missing>`
//! (0.2.x hosts answer NOT_FOUND = 1).
#![no_std]

#[path = "../../common/raw.rs"]
mod raw;

const MAP_HTTP_REQUEST_HEADERS: u32 = 0;
const STDOUT: u32 = 1;

/// A WASI `ciovec`: one buffer for `fd_write`, laid out in guest memory.
#[repr(C)]
struct Ciovec {
    buf: *const u8,
    buf_len: usize,
}

#[link(wasm_import_module = "wasi_unstable")]
unsafe extern "C" {
    fn fd_write(fd: u32, iovs: *const Ciovec, iovs_len: usize, nwritten: *mut usize) -> u32;
}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        return_value: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
}

/// Adds a request header. The status is ignored: there is nothing useful to do if it fails.
fn add_request_header(name: &[u8], value: &[u8]) {
    // SAFETY: both slices are valid for their lengths.
    unsafe {
        proxy_add_header_map_value(MAP_HTTP_REQUEST_HEADERS, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    };
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_0() {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    raw::bump_alloc(size)
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _parent_context_id: u32) {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(_root_context_id: u32, _vm_configuration_size: usize) -> u32 {
    let message = b"hello from wasi_unstable\n";
    // The iovec and the out-slot are locals whose address is taken, so they live in linear memory.
    let iovec = Ciovec { buf: message.as_ptr(), buf_len: message.len() };
    let mut written: usize = 0;
    // SAFETY: one valid iovec pointing at a static buffer, and a valid out-slot. The errno is ignored.
    unsafe { fd_write(STDOUT, &raw const iovec, 1, &raw mut written) };
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(_root_context_id: u32, _plugin_configuration_size: usize) -> u32 {
    1
}

/// 0.2.x signature: three parameters.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_context_id: u32, _num_headers: usize, _end_of_stream: u32) -> u32 {
    add_request_header(b"x-abi", b"0.2.0");

    let key = b"x-missing";
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the key is a valid static buffer and the out-pointers are valid locals.
    let status = unsafe {
        proxy_get_header_map_value(MAP_HTTP_REQUEST_HEADERS, key.as_ptr(), key.len(), &raw mut data, &raw mut size)
    };
    add_request_header(b"x-missing-status", raw::Decimal::new(status).as_bytes());
    0 // Continue
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_log(_context_id: u32) {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(_context_id: u32) {}
