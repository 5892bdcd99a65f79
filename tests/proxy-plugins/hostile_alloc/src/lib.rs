//! `hostile_alloc`: a Proxy-Wasm ABI 0.2.1 module (no SDK) whose allocator misbehaves on request, to test how
//! the host guards the re-entrant `proxy_on_memory_allocate` call it makes while returning bytes to the guest.
//!
//! The allocator cannot read the plugin configuration (reading it is what calls the allocator), so the
//! behaviour is chosen by the configuration's SIZE. `proxy_on_configure` stores the size, then reads the
//! configuration, which makes the host allocate `size` bytes:
//!
//! | size | allocator behaviour                                                          |
//! |------|------------------------------------------------------------------------------|
//! | 1    | traps (`unreachable`)                                                        |
//! | 2    | calls `proxy_done()`, a hostcall forbidden inside the allocator, then allocates |
//! | 3    | calls `proxy_log(INFO, "in allocator")`, which is allowed, then allocates     |
//! | else | allocates normally                                                           |
//!
//! `proxy_on_configure` returns true only if reading the configuration returned OK.
#![no_std]

#[path = "../../common/raw.rs"]
mod raw;

use core::sync::atomic::{AtomicUsize, Ordering};

const STATUS_OK: u32 = 0;
const LOG_INFO: u32 = 2;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message: *const u8, message_size: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_done() -> u32;
}

/// The allocator behaviour (see the table above); set by `proxy_on_configure`.
static BEHAVIOUR: AtomicUsize = AtomicUsize::new(0);

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    match BEHAVIOUR.load(Ordering::Relaxed) {
        1 => core::arch::wasm32::unreachable(),
        2 => {
            // The status is irrelevant: a conforming host fails the VM here.
            // SAFETY: no pointers are involved.
            unsafe { proxy_done() };
        }
        3 => {
            let message = b"in allocator";
            // SAFETY: `message` is a valid static buffer of the given length.
            unsafe { proxy_log(LOG_INFO, message.as_ptr(), message.len()) };
        }
        _ => {}
    }
    raw::bump_alloc(size)
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _parent_context_id: u32) {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(_root_context_id: u32, _vm_configuration_size: usize) -> u32 {
    1
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(_root_context_id: u32, plugin_configuration_size: usize) -> u32 {
    BEHAVIOUR.store(plugin_configuration_size, Ordering::Relaxed);
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: both out-pointers are valid locals.
    let status = unsafe {
        proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, plugin_configuration_size, &raw mut data, &raw mut size)
    };
    u32::from(status == STATUS_OK)
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(_context_id: u32, _num_headers: usize, _end_of_stream: u32) -> u32 {
    0 // Continue
}
