//! `fuzz_guest`: a Proxy-Wasm ABI 0.2.1 module (no SDK) that lets a host-side fuzz target call any `env.proxy_*`
//! host function with arbitrary arguments.
//!
//! The fuzzer writes 12 `i32`s into the 4 KiB buffer returned by `fuzz_scratch()` (or anywhere else in guest
//! memory) and calls `fuzz_call(which, args)`. `which` selects a host function by its index in [`HOSTCALLS`]
//! (taken modulo the list length; negative values wrap with `rem_euclid`). The function is called with the
//! first N of the 12 values, where N is its parameter count. The two metric functions whose second parameter
//! is an `i64` (`proxy_record_metric`, `proxy_increment_metric`) receive `args[0]` as the metric id and the
//! `i64` `(args[2] << 32) | args[1]` (args[1] is the low word, args[2] the high word, both taken as u32).
//! `fuzz_call` returns the host function's status.
//!
//! Buffers the host returns through `proxy_on_memory_allocate` come from a 64 KiB bump arena. So that a long
//! fuzzing run does not exhaust it, `fuzz_call` empties the arena when it starts: buffers returned by one call
//! stay valid until the next `fuzz_call`.
#![no_std]

#[path = "../../common/raw.rs"]
mod raw;

use core::cell::UnsafeCell;

/// The host functions `fuzz_call` can reach, by index. The order is part of the contract with the host's
/// fuzz target: append new entries at the end, never reorder. Entry `i` is row `i + 1` of §1a of
/// `PROXY-WASM-ABI.md` (the ABI v0.2.1 import set).
pub const HOSTCALLS: [&str; 39] = [
    "proxy_log",                          // 0
    "proxy_get_log_level",                // 1
    "proxy_get_current_time_nanoseconds", // 2
    "proxy_set_tick_period_milliseconds", // 3
    "proxy_get_property",                 // 4
    "proxy_set_property",                 // 5
    "proxy_get_buffer_bytes",             // 6
    "proxy_get_buffer_status",            // 7
    "proxy_set_buffer_bytes",             // 8
    "proxy_get_header_map_size",          // 9
    "proxy_get_header_map_pairs",         // 10
    "proxy_set_header_map_pairs",         // 11
    "proxy_get_header_map_value",         // 12
    "proxy_add_header_map_value",         // 13
    "proxy_replace_header_map_value",     // 14
    "proxy_remove_header_map_value",      // 15
    "proxy_continue_stream",              // 16
    "proxy_close_stream",                 // 17
    "proxy_get_status",                   // 18
    "proxy_send_local_response",          // 19
    "proxy_http_call",                    // 20
    "proxy_grpc_call",                    // 21
    "proxy_grpc_stream",                  // 22
    "proxy_grpc_send",                    // 23
    "proxy_grpc_cancel",                  // 24
    "proxy_grpc_close",                   // 25
    "proxy_set_shared_data",              // 26
    "proxy_get_shared_data",              // 27
    "proxy_register_shared_queue",        // 28
    "proxy_resolve_shared_queue",         // 29
    "proxy_enqueue_shared_queue",         // 30
    "proxy_dequeue_shared_queue",         // 31
    "proxy_define_metric",                // 32
    "proxy_record_metric",                // 33
    "proxy_increment_metric",             // 34
    "proxy_get_metric",                   // 35
    "proxy_call_foreign_function",        // 36
    "proxy_set_effective_context",        // 37
    "proxy_done",                         // 38
];

// Every parameter is declared as a plain i32 (pointers included): the fuzzer decides what they mean.
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: i32, message: i32, message_size: i32) -> i32;
    fn proxy_get_log_level(return_level: i32) -> i32;
    fn proxy_get_current_time_nanoseconds(return_time: i32) -> i32;
    fn proxy_set_tick_period_milliseconds(period: i32) -> i32;
    fn proxy_get_property(path: i32, path_size: i32, return_value: i32, return_value_size: i32) -> i32;
    fn proxy_set_property(path: i32, path_size: i32, value: i32, value_size: i32) -> i32;
    fn proxy_get_buffer_bytes(buffer_type: i32, start: i32, max_size: i32, return_data: i32, return_size: i32) -> i32;
    fn proxy_get_buffer_status(buffer_type: i32, return_size: i32, return_flags: i32) -> i32;
    fn proxy_set_buffer_bytes(buffer_type: i32, start: i32, size: i32, data: i32, data_size: i32) -> i32;
    fn proxy_get_header_map_size(map_type: i32, return_size: i32) -> i32;
    fn proxy_get_header_map_pairs(map_type: i32, return_data: i32, return_size: i32) -> i32;
    fn proxy_set_header_map_pairs(map_type: i32, data: i32, size: i32) -> i32;
    fn proxy_get_header_map_value(map_type: i32, key: i32, key_size: i32, return_value: i32, return_size: i32) -> i32;
    fn proxy_add_header_map_value(map_type: i32, key: i32, key_size: i32, value: i32, value_size: i32) -> i32;
    fn proxy_replace_header_map_value(map_type: i32, key: i32, key_size: i32, value: i32, value_size: i32) -> i32;
    fn proxy_remove_header_map_value(map_type: i32, key: i32, key_size: i32) -> i32;
    fn proxy_continue_stream(stream_type: i32) -> i32;
    fn proxy_close_stream(stream_type: i32) -> i32;
    fn proxy_get_status(return_code: i32, return_message: i32, return_message_size: i32) -> i32;
    fn proxy_send_local_response(
        status_code: i32,
        details: i32,
        details_size: i32,
        body: i32,
        body_size: i32,
        headers: i32,
        headers_size: i32,
        grpc_status: i32,
    ) -> i32;
    fn proxy_http_call(
        upstream: i32,
        upstream_size: i32,
        headers: i32,
        headers_size: i32,
        body: i32,
        body_size: i32,
        trailers: i32,
        trailers_size: i32,
        timeout_ms: i32,
        return_call_id: i32,
    ) -> i32;
    fn proxy_grpc_call(
        upstream: i32,
        upstream_size: i32,
        service: i32,
        service_size: i32,
        method: i32,
        method_size: i32,
        metadata: i32,
        metadata_size: i32,
        message: i32,
        message_size: i32,
        timeout_ms: i32,
        return_call_id: i32,
    ) -> i32;
    fn proxy_grpc_stream(
        upstream: i32,
        upstream_size: i32,
        service: i32,
        service_size: i32,
        method: i32,
        method_size: i32,
        metadata: i32,
        metadata_size: i32,
        return_stream_id: i32,
    ) -> i32;
    fn proxy_grpc_send(stream_id: i32, message: i32, message_size: i32, end_stream: i32) -> i32;
    fn proxy_grpc_cancel(call_or_stream_id: i32) -> i32;
    fn proxy_grpc_close(call_or_stream_id: i32) -> i32;
    fn proxy_set_shared_data(key: i32, key_size: i32, value: i32, value_size: i32, cas: i32) -> i32;
    fn proxy_get_shared_data(
        key: i32,
        key_size: i32,
        return_value: i32,
        return_value_size: i32,
        return_cas: i32,
    ) -> i32;
    fn proxy_register_shared_queue(name: i32, name_size: i32, return_queue_id: i32) -> i32;
    fn proxy_resolve_shared_queue(vm_id: i32, vm_id_size: i32, name: i32, name_size: i32, return_queue_id: i32) -> i32;
    fn proxy_enqueue_shared_queue(queue_id: i32, value: i32, value_size: i32) -> i32;
    fn proxy_dequeue_shared_queue(queue_id: i32, return_value: i32, return_value_size: i32) -> i32;
    fn proxy_define_metric(metric_type: i32, name: i32, name_size: i32, return_metric_id: i32) -> i32;
    fn proxy_record_metric(metric_id: i32, value: i64) -> i32;
    fn proxy_increment_metric(metric_id: i32, delta: i64) -> i32;
    fn proxy_get_metric(metric_id: i32, return_value: i32) -> i32;
    fn proxy_call_foreign_function(
        name: i32,
        name_size: i32,
        arguments: i32,
        arguments_size: i32,
        return_results: i32,
        return_results_size: i32,
    ) -> i32;
    fn proxy_set_effective_context(context_id: i32) -> i32;
    fn proxy_done() -> i32;
}

const SCRATCH_SIZE: usize = 4096;

#[repr(C, align(16))]
struct Scratch(UnsafeCell<[u8; SCRATCH_SIZE]>);

// SAFETY: the module is single-threaded; the buffer is only ever accessed through raw pointers.
unsafe impl Sync for Scratch {}

static SCRATCH: Scratch = Scratch(UnsafeCell::new([0; SCRATCH_SIZE]));

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
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
    1
}

/// The 4 KiB scratch buffer the fuzzer fills with arguments and data (16-aligned).
#[unsafe(no_mangle)]
pub extern "C" fn fuzz_scratch() -> *mut u8 {
    SCRATCH.0.get().cast()
}

/// Calls host function `HOSTCALLS[which mod 39]` with arguments taken from the 12 `i32`s at `args`.
///
/// # Safety
/// `args` must point to 12 readable `i32`s in guest memory (any alignment).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fuzz_call(which: i32, args: *const i32) -> i32 {
    // SAFETY: the caller guarantees 48 readable bytes at `args`.
    let a = unsafe { args.cast::<[i32; 12]>().read_unaligned() };
    // Nothing from an earlier call is still in use (see the crate docs).
    raw::bump_reset();
    let wide = (((a[2] as u32 as u64) << 32) | a[1] as u32 as u64) as i64;

    // SAFETY: the host validates every argument; invalid pointers must yield INVALID_MEMORY_ACCESS, not UB here.
    unsafe {
        match which.rem_euclid(HOSTCALLS.len() as i32) {
            0 => proxy_log(a[0], a[1], a[2]),
            1 => proxy_get_log_level(a[0]),
            2 => proxy_get_current_time_nanoseconds(a[0]),
            3 => proxy_set_tick_period_milliseconds(a[0]),
            4 => proxy_get_property(a[0], a[1], a[2], a[3]),
            5 => proxy_set_property(a[0], a[1], a[2], a[3]),
            6 => proxy_get_buffer_bytes(a[0], a[1], a[2], a[3], a[4]),
            7 => proxy_get_buffer_status(a[0], a[1], a[2]),
            8 => proxy_set_buffer_bytes(a[0], a[1], a[2], a[3], a[4]),
            9 => proxy_get_header_map_size(a[0], a[1]),
            10 => proxy_get_header_map_pairs(a[0], a[1], a[2]),
            11 => proxy_set_header_map_pairs(a[0], a[1], a[2]),
            12 => proxy_get_header_map_value(a[0], a[1], a[2], a[3], a[4]),
            13 => proxy_add_header_map_value(a[0], a[1], a[2], a[3], a[4]),
            14 => proxy_replace_header_map_value(a[0], a[1], a[2], a[3], a[4]),
            15 => proxy_remove_header_map_value(a[0], a[1], a[2]),
            16 => proxy_continue_stream(a[0]),
            17 => proxy_close_stream(a[0]),
            18 => proxy_get_status(a[0], a[1], a[2]),
            19 => proxy_send_local_response(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]),
            20 => proxy_http_call(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]),
            21 => proxy_grpc_call(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]),
            22 => proxy_grpc_stream(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]),
            23 => proxy_grpc_send(a[0], a[1], a[2], a[3]),
            24 => proxy_grpc_cancel(a[0]),
            25 => proxy_grpc_close(a[0]),
            26 => proxy_set_shared_data(a[0], a[1], a[2], a[3], a[4]),
            27 => proxy_get_shared_data(a[0], a[1], a[2], a[3], a[4]),
            28 => proxy_register_shared_queue(a[0], a[1], a[2]),
            29 => proxy_resolve_shared_queue(a[0], a[1], a[2], a[3], a[4]),
            30 => proxy_enqueue_shared_queue(a[0], a[1], a[2]),
            31 => proxy_dequeue_shared_queue(a[0], a[1], a[2]),
            32 => proxy_define_metric(a[0], a[1], a[2], a[3]),
            33 => proxy_record_metric(a[0], wide),
            34 => proxy_increment_metric(a[0], wide),
            35 => proxy_get_metric(a[0], a[1]),
            36 => proxy_call_foreign_function(a[0], a[1], a[2], a[3], a[4], a[5]),
            37 => proxy_set_effective_context(a[0]),
            38 => proxy_done(),
            // `rem_euclid` keeps the index in 0..39.
            _ => unreachable!(),
        }
    }
}
