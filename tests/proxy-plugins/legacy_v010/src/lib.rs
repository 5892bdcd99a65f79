//! `legacy_v010`: a Proxy-Wasm ABI **0.1.0** module (no SDK), to test the host's support for the old ABI:
//! the `proxy_abi_version_0_1_0` marker, `malloc` as the only allocator, the 0.1.0-only import
//! `env.proxy_get_configuration`, two-parameter header callbacks (no `end_of_stream`), and the 0.1.0
//! semantics of `proxy_get_header_map_value` (a missing key is reported as OK with an empty value).
//!
//! On request headers it adds `x-abi: 0.1.0` and `x-missing-status: <status of looking up x-missing>`.
#![no_std]

#[path = "../../common/raw.rs"]
mod raw;

const LOG_INFO: u32 = 2;
const MAP_HTTP_REQUEST_HEADERS: u32 = 0;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message: *const u8, message_size: usize) -> u32;
    /// 0.1.0 only: the plugin configuration (0.2.x reads it as buffer PLUGIN_CONFIGURATION instead).
    fn proxy_get_configuration(return_data: *mut *mut u8, return_size: *mut usize) -> u32;
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
pub extern "C" fn proxy_abi_version_0_1_0() {}

/// The 0.1.0 allocator name. There is deliberately no `proxy_on_memory_allocate`.
#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut u8 {
    raw::bump_alloc(size)
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _parent_context_id: u32) {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(_root_context_id: u32, _vm_configuration_size: usize) -> u32 {
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(_root_context_id: u32, _plugin_configuration_size: usize) -> u32 {
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers are valid locals; the host fills (data, size) with a buffer it allocated
    // through `malloc` (or null/0 for an empty configuration), which `proxy_log` then reads.
    unsafe {
        proxy_get_configuration(&raw mut data, &raw mut size);
        proxy_log(LOG_INFO, data, size);
    }
    1
}

/// 0.1.0 signature: no `end_of_stream` parameter.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_context_id: u32, _num_headers: usize) -> u32 {
    add_request_header(b"x-abi", b"0.1.0");

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

/// 0.1.0 signature: no `end_of_stream` parameter.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(_context_id: u32, _num_headers: usize) -> u32 {
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
