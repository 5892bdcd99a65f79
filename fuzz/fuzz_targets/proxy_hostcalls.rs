//! Fuzzes the Proxy-Wasm host functions with arbitrary arguments, through the `fuzz_guest` test module
//! (tests/proxy-plugins/fuzz_guest; its path comes from `BCV_FUZZ_GUEST`, set by scripts/fuzz.sh).
//!
//! Input: byte 0 picks the host function (index into fuzz_guest's `HOSTCALLS`), bytes 1–2 (little endian)
//! say which of the 12 arguments are offsets into the data (so pointers often land in guest memory), bytes
//! 3..51 are the 12 arguments (little-endian i32), the rest is data copied into the guest's scratch buffer.
//!
//! Checked for every input: the host never panics; a host function returns a Proxy-Wasm status (0–13) or
//! fails only its VM, for a reason that is not a host bug (`FailReason::Internal`); after a failure a new VM
//! of the same module works; the calling context stays usable while its VM works.

#![no_main]

use std::sync::{Mutex, OnceLock};

use bcv_core::proxy::{
    FailReason, HeaderMap, HostConfig, HttpContext, Plugin, PluginConfig, PluginModule, ProxyError, ProxyHost, Vm,
    VmConfig,
};
use libfuzzer_sys::fuzz_target;

/// A VM of fuzz_guest with one plugin and one HTTP context that has seen request headers.
struct Target {
    vm: Vm,
    _plugin: Plugin,
    http: HttpContext,
}

fn host() -> &'static (ProxyHost, PluginModule) {
    static HOST: OnceLock<(ProxyHost, PluginModule)> = OnceLock::new();
    HOST.get_or_init(|| {
        let path = std::env::var("BCV_FUZZ_GUEST").expect("BCV_FUZZ_GUEST names fuzz_guest.wasm");
        let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let config = HostConfig { callback_deadline: std::time::Duration::from_millis(500), ..Default::default() };
        let host = ProxyHost::new(config).expect("host");
        let module = host.load_module("fuzz_guest", &wasm).expect("fuzz_guest loads");
        (host, module)
    })
}

fn fresh_target() -> Target {
    let (host, module) = host();
    let vm = Vm::start(host, module, VmConfig { vm_id: "fuzz".into(), ..Default::default() }).expect("vm starts");
    let plugin = vm.add_plugin(PluginConfig { name: "fuzz".into(), ..Default::default() }).expect("plugin");
    let http = plugin.http_context().expect("http context");
    let headers: HeaderMap = [(":method", "GET"), (":path", "/fuzz"), ("x-a", "1")].into_iter().collect();
    http.on_request_headers(headers, false).expect("request headers");
    Target { vm, _plugin: plugin, http }
}

static TARGET: Mutex<Option<Target>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    if data.len() < 51 {
        return;
    }
    let which = i32::from(data[0]);
    let relative = u16::from_le_bytes([data[1], data[2]]);
    let mut args = [0i32; 12];
    for (i, arg) in args.iter_mut().enumerate() {
        let at = 3 + i * 4;
        *arg = i32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    }
    let payload = &data[51..data.len().min(51 + 4000)];

    let mut slot = TARGET.lock().unwrap_or_else(|p| p.into_inner());
    let target = slot.get_or_insert_with(fresh_target);
    match target.vm.fuzz_call(target.http.id(), which, args, relative, payload) {
        Ok(status) => {
            assert!((0..=13).contains(&status), "host function {which} returned status {status}");
            // The context is still usable (unless the guest just ended it with proxy_done).
            if let Err(e) = target.http.request_headers() {
                assert!(matches!(e, ProxyError::InvalidState { .. }), "context after call {which}: {e}");
                *slot = None;
            }
        }
        Err(ProxyError::VmFailed { reason, .. }) => {
            assert!(!matches!(reason, FailReason::Internal(_)), "host function {which}: host failure {reason}");
            *slot = Some(fresh_target());
        }
        Err(e) => panic!("host function {which}: unexpected error {e}"),
    }
});
