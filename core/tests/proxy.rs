//! The Proxy-Wasm host against plugins compiled from source with the crates.io `proxy-wasm` SDK.

#[path = "support/plugins.rs"]
mod plugins;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bcv_core::proxy::{
    AbiVersion, CalloutRejected, CalloutResponse, FailReason, FilterAction, ForeignError, GrpcResponse, HeaderMap,
    HostConfig, LogLevel, MetricType, PeerType, Plugin, PluginConfig, PluginModule, ProxyError, ProxyHost, Services,
    StreamType, Vm, VmConfig,
};

fn host() -> ProxyHost {
    ProxyHost::new(HostConfig::default()).expect("host")
}

fn testkit(host: &ProxyHost) -> PluginModule {
    host.load_module("testkit", &plugins::plugin("testkit")).expect("testkit loads")
}

fn plugin_config(name: &str, configuration: &str) -> PluginConfig {
    PluginConfig {
        name: name.into(),
        root_id: name.into(),
        configuration: configuration.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn start(host: &ProxyHost, services: Services, mode: &str) -> (Vm, Plugin) {
    let module = testkit(host);
    let vm = Vm::start(host, &module, VmConfig { vm_id: "test".into(), services, ..Default::default() }).expect("vm");
    let plugin = vm.add_plugin(plugin_config(mode, mode)).expect("plugin");
    (vm, plugin)
}

fn request(path: &str) -> HeaderMap {
    [(":method", "GET"), (":path", path), (":authority", "example.test"), (":scheme", "http")].into_iter().collect()
}

fn logs_text(vm: &Vm) -> Vec<String> {
    vm.take_logs().into_iter().map(|r| r.message).collect()
}

fn header(map: &HeaderMap, name: &str) -> Option<String> {
    map.get_str(name).map(str::to_string)
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn header_filter_changes_request_and_response_and_logs_at_the_end() {
    let host = host();
    let (vm, plugin) = start(&host, Services::new(), "headers");
    assert_eq!(vm.module().abi(), AbiVersion::V0_2_1);
    let http = plugin.http_context().unwrap();
    let mut headers = request("/items?id=7");
    headers.add("x-replace", "old");
    headers.add("x-remove", "gone");
    assert_eq!(http.on_request_headers(headers, true).unwrap(), FilterAction::Continue);
    let out = http.request_headers().unwrap();
    assert_eq!(header(&out, "x-added").as_deref(), Some("yes"));
    assert_eq!(header(&out, "x-replace").as_deref(), Some("replaced"));
    assert_eq!(header(&out, "x-remove"), None);
    assert_eq!(header(&out, "x-count").as_deref(), Some("6"));
    assert_eq!(header(&out, "x-path").as_deref(), Some("/items?id=7"));
    let response: HeaderMap = [(":status", "200")].into_iter().collect();
    assert_eq!(http.on_response_headers(response, true).unwrap(), FilterAction::Continue);
    assert_eq!(header(&http.response_headers().unwrap(), "x-response-added").as_deref(), Some("yes"));
    assert!(http.finish().unwrap());
    let logs = logs_text(&vm);
    assert!(logs.iter().any(|l| l == "log: /items?id=7 200"), "{logs:?}");
    assert_eq!(host.metric("requests_total").unwrap().value, 1);
    assert!(matches!(http.request_headers(), Err(ProxyError::InvalidState { .. })));
}

#[test]
fn lifecycle_runs_vm_start_once_and_serves_several_plugins_in_one_vm() {
    let host = host();
    let module = testkit(&host);
    let vm = Vm::start(
        &host,
        &module,
        VmConfig { vm_id: "v".into(), configuration: b"vm-config".to_vec(), ..Default::default() },
    )
    .unwrap();
    let a = vm.add_plugin(plugin_config("a", "headers")).unwrap();
    let b = vm.add_plugin(plugin_config("b", "metrics")).unwrap();
    assert_ne!(a.root_context_id(), b.root_context_id());
    let logs = logs_text(&vm);
    assert_eq!(logs.iter().filter(|l| l.starts_with("vm_start: vm-config")).count(), 1, "{logs:?}");
    assert!(logs.contains(&"configure: headers".to_string()) && logs.contains(&"configure: metrics".to_string()));
    // Context ids are unique across the VM's plugins.
    let (ha, hb) = (a.http_context().unwrap(), b.http_context().unwrap());
    assert!(ha.id() != hb.id() && ha.id() != b.root_context_id());
    for ctx in [&ha, &hb] {
        assert_eq!(ctx.on_request_headers(request("/x"), true).unwrap(), FilterAction::Continue);
    }
    assert!(header(&ha.request_headers().unwrap(), "x-added").is_some());
    assert!(header(&hb.request_headers().unwrap(), "x-counter-value").is_some());
    drop((ha, hb));
    // A plugin whose configure fails is refused by its canary and the VM keeps working.
    let err = vm.add_plugin(plugin_config("bad", "fail-configure")).unwrap_err();
    assert!(
        matches!(&err, ProxyError::PluginRejected { plugin, reason } if plugin == "bad" && reason.contains("on_configure returned false")),
        "{err}"
    );
    assert!(vm.failure().is_none());
    let again = a.http_context().unwrap();
    assert_eq!(again.on_request_headers(request("/y"), true).unwrap(), FilterAction::Continue);
}

#[test]
fn a_vm_whose_on_vm_start_refuses_rejects_its_plugin() {
    let host = host();
    let module = testkit(&host);
    let config = VmConfig { configuration: b"fail-vm-start".to_vec(), ..Default::default() };
    let vm = Vm::start(&host, &module, config).unwrap();
    let err = vm.add_plugin(plugin_config("p", "headers")).unwrap_err();
    assert!(err.to_string().contains("on_vm_start returned false"), "{err}");
}

#[test]
fn modules_without_a_marker_or_an_allocator_are_refused_and_old_abis_work() {
    let host = host();
    let err = host.load_module("no_marker", &plugins::plugin("no_marker")).unwrap_err();
    assert!(err.to_string().contains("missing or unknown Proxy-Wasm ABI version"), "{err}");
    let err = host.load_module("no_alloc", &plugins::plugin("no_alloc")).unwrap_err();
    assert!(err.to_string().contains("missing an allocator"), "{err}");
    let err = host.load_module("garbage", b"\0asm\x01\0\0\0garbage").unwrap_err();
    assert!(matches!(err, ProxyError::Compile { .. }), "{err}");

    // 0.1.0: two-parameter headers callback, malloc, proxy_get_configuration, OK+empty for a missing key.
    let v010 = host.load_module("legacy_v010", &plugins::plugin("legacy_v010")).unwrap();
    assert_eq!(v010.abi(), AbiVersion::V0_1_0);
    let vm = Vm::start(&host, &v010, VmConfig::default()).unwrap();
    let plugin = vm.add_plugin(plugin_config("old", "old-config")).unwrap();
    let http = plugin.http_context().unwrap();
    assert_eq!(http.on_request_headers(request("/"), true).unwrap(), FilterAction::Continue);
    let out = http.request_headers().unwrap();
    assert_eq!(header(&out, "x-abi").as_deref(), Some("0.1.0"));
    assert_eq!(header(&out, "x-missing-status").as_deref(), Some("0"));
    assert!(logs_text(&vm).iter().any(|l| l.contains("old-config")));

    // 0.2.0: three parameters, NOT_FOUND for a missing key, WASI under the name wasi_unstable.
    let v020 = host.load_module("legacy_v020", &plugins::plugin("legacy_v020")).unwrap();
    assert_eq!(v020.abi(), AbiVersion::V0_2_0);
    let vm = Vm::start(&host, &v020, VmConfig::default()).unwrap();
    let plugin = vm.add_plugin(plugin_config("mid", "")).unwrap();
    let http = plugin.http_context().unwrap();
    assert_eq!(http.on_request_headers(request("/"), true).unwrap(), FilterAction::Continue);
    let out = http.request_headers().unwrap();
    assert_eq!(header(&out, "x-abi").as_deref(), Some("0.2.0"));
    assert_eq!(header(&out, "x-missing-status").as_deref(), Some("1"));
    let logs = vm.take_logs();
    assert!(logs.iter().any(|r| r.message == "hello from wasi_unstable" && r.level == LogLevel::Info), "{logs:?}");
}
