//! The Proxy-Wasm host against plugins compiled from source with the crates.io `proxy-wasm` SDK.

#[path = "support/plugins.rs"]
mod plugins;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bcv_core::proxy::{
    AbiVersion, CalloutRejected, CalloutResponse, FailReason, FilterAction, ForeignError, GrpcResponse, HeaderMap,
    HostConfig, LogLevel, MapType, MetricType, PeerType, Plugin, PluginConfig, PluginModule, ProxyError, ProxyHost,
    RestartPolicy, Services, StreamType, Vm, VmConfig,
};

/// A host whose compiled modules are cached across the tests of this run (and tested as such).
fn host() -> ProxyHost {
    ProxyHost::new(HostConfig { module_cache_dir: Some(plugins::cache_dir()), ..Default::default() }).expect("host")
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
    // Reading in place gives what the copy gives; other map types and calls back into the VM are refused.
    assert_eq!(http.read_headers(MapType::HttpRequestHeaders, HeaderMap::clone).unwrap(), out);
    assert_eq!(http.read_headers(MapType::HttpRequestTrailers, |t| t.len()).unwrap(), 0);
    assert!(matches!(
        http.read_headers(MapType::GrpcInitialMetadata, |m| m.len()),
        Err(ProxyError::InvalidState { .. })
    ));
    let inner = http.read_headers(MapType::HttpResponseHeaders, |_| http.request_headers()).unwrap();
    assert!(matches!(inner, Err(ProxyError::Reentrant { .. })), "{inner:?}");
    assert!(http.finish().unwrap());
    let logs = logs_text(&vm);
    assert!(logs.iter().any(|l| l == "log: /items?id=7 200"), "{logs:?}");
    assert_eq!(host.metric("requests_total").unwrap().value, 1);
    assert!(matches!(http.request_headers(), Err(ProxyError::InvalidState { .. })));
    assert!(matches!(
        http.read_headers(MapType::HttpRequestHeaders, |h| h.len()),
        Err(ProxyError::InvalidState { .. })
    ));
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

#[test]
fn bodies_are_buffered_while_paused_and_rewritten_and_trailers_added() {
    let host = host();
    let (_vm, plugin) = start(&host, Services::new(), "body");
    let http = plugin.http_context().unwrap();
    assert_eq!(http.on_request_headers(request("/upload"), false).unwrap(), FilterAction::Continue);
    assert_eq!(http.on_request_body(b"hello ", false).unwrap(), FilterAction::Pause);
    assert_eq!(http.on_request_body(b"world", true).unwrap(), FilterAction::Continue);
    assert_eq!(http.take_request_body().unwrap(), b"HELLO WORLD");
    assert_eq!(
        http.on_response_headers([(":status", "200")].into_iter().collect(), false).unwrap(),
        FilterAction::Continue
    );
    assert_eq!(http.on_response_body(b"part1", false).unwrap(), FilterAction::Continue);
    assert_eq!(http.take_response_body().unwrap(), b"part1");
    assert_eq!(http.on_response_body(b"part2", true).unwrap(), FilterAction::Continue);
    assert_eq!(http.take_response_body().unwrap(), b"part2\n-- filtered");

    // With trailers: the trailers callback can add one.
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/t"), false).unwrap();
    assert_eq!(http.on_request_body(b"abc", false).unwrap(), FilterAction::Pause);
    let trailers: HeaderMap = [("x-sum", "1")].into_iter().collect();
    assert_eq!(http.on_request_trailers(trailers).unwrap(), FilterAction::Continue);
    assert_eq!(header(&http.request_trailers().unwrap(), "x-body-length").as_deref(), Some("3"));
}

#[test]
fn a_request_body_stream_is_piped_through_the_plugin() {
    let host = host();
    let (_vm, plugin) = start(&host, Services::new(), "body");
    let runtime = bcv_core::handle::Runtime::global();
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/stream"), false).unwrap();
    let (writer, reader) = runtime.pipe(16).unwrap();
    let output = http.filter_request_body(reader, Duration::from_secs(5)).unwrap();
    let producer = std::thread::spawn(move || {
        for part in ["streamed ", "body ", "data"] {
            writer.write_blocking(part.as_bytes(), None).unwrap();
        }
        writer.finish().unwrap();
    });
    assert_eq!(&output.read_to_end_blocking().unwrap()[..], b"STREAMED BODY DATA");
    producer.join().unwrap();

    // A cut-short input never looks like a clean end of the filtered body.
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/cut"), false).unwrap();
    let (writer, reader) = runtime.pipe(16).unwrap();
    let output = http.filter_request_body(reader, Duration::from_secs(5)).unwrap();
    writer.write_blocking(b"partial", None).unwrap();
    drop(writer);
    assert!(output.read_to_end_blocking().is_err());
}

#[test]
fn a_plugin_can_answer_locally_instead_of_forwarding() {
    let host = host();
    let (_vm, plugin) = start(&host, Services::new(), "deny");
    let http = plugin.http_context().unwrap();
    let mut headers = request("/secret");
    headers.add("x-deny", "1");
    match http.on_request_headers(headers, true).unwrap() {
        FilterAction::LocalResponse(response) => {
            assert_eq!(response.status, 403);
            assert_eq!(response.body, b"denied");
            assert_eq!(header(&response.headers, "x-denied-by").as_deref(), Some("bcv"));
            assert_eq!(response.grpc_status, None);
        }
        other => panic!("expected a local response, got {other:?}"),
    }
    // From now on the plugin (and `on_log`) sees the local reply as the response.
    assert_eq!(header(&http.response_headers().unwrap(), ":status").as_deref(), Some("403"));
    assert_eq!(header(&http.response_headers().unwrap(), "x-denied-by").as_deref(), Some("bcv"));
    let http = plugin.http_context().unwrap();
    assert_eq!(http.on_request_headers(request("/open"), true).unwrap(), FilterAction::Continue);
}

/// Services whose HTTP callouts are answered from another thread after a short delay.
fn auth_services(status: &'static str, seen: Arc<Mutex<Vec<String>>>) -> Services {
    Services::new().on_http_call(move |call| {
        if call.upstream != "auth" {
            return Err(CalloutRejected::UnknownUpstream);
        }
        seen.lock().unwrap().push(format!("{} {}", call.upstream, call.headers.get_str(":path").unwrap_or("")));
        assert_eq!(call.timeout, Duration::from_secs(1));
        let token = call.headers.get_str("x-token").unwrap_or("").to_string();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let headers = [(":status", status)].into_iter().collect();
            call.reply.respond(CalloutResponse {
                headers,
                body: format!("user-of-{token}").into_bytes(),
                ..Default::default()
            });
        });
        Ok(())
    })
}

#[test]
fn an_http_callout_pauses_the_request_until_its_response_resumes_it() {
    let host = host();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (_vm, plugin) = start(&host, auth_services("200", seen.clone()), "callout");
    let http = plugin.http_context().unwrap();
    let mut headers = request("/private");
    headers.add("authorization", "t0k3n");
    assert_eq!(http.on_request_headers(headers, true).unwrap(), FilterAction::Pause);
    assert_eq!(http.wait(StreamType::HttpRequest, Duration::from_secs(5)).unwrap(), FilterAction::Continue);
    assert_eq!(header(&http.request_headers().unwrap(), "x-auth-body").as_deref(), Some("user-of-t0k3n"));
    assert_eq!(*seen.lock().unwrap(), vec!["auth /check".to_string()]);

    // A refusal from the upstream becomes the plugin's local 403.
    let (_vm, plugin) = start(&host, auth_services("401", seen.clone()), "callout");
    let http = plugin.http_context().unwrap();
    assert_eq!(http.on_request_headers(request("/private"), true).unwrap(), FilterAction::Pause);
    match http.wait(StreamType::HttpRequest, Duration::from_secs(5)).unwrap() {
        FilterAction::LocalResponse(r) => assert_eq!((r.status, r.body.as_slice()), (403, &b"forbidden"[..])),
        other => panic!("{other:?}"),
    }

    // An unknown upstream is refused at dispatch; an unanswered call fails after its timeout.
    let (_vm, plugin) = start(&host, auth_services("200", seen.clone()), "callout upstream=nowhere");
    let http = plugin.http_context().unwrap();
    match http.on_request_headers(request("/"), true).unwrap() {
        FilterAction::LocalResponse(r) => assert_eq!((r.status, r.body.as_slice()), (500, &b"dispatch failed"[..])),
        other => panic!("{other:?}"),
    }
    let parked = Arc::new(Mutex::new(Vec::new()));
    let keep = parked.clone();
    let services = Services::new().on_http_call(move |call| {
        keep.lock().unwrap().push(call.reply);
        Ok(())
    });
    let (_vm, plugin) = start(&host, services, "callout");
    let http = plugin.http_context().unwrap();
    assert_eq!(http.on_request_headers(request("/"), true).unwrap(), FilterAction::Pause);
    let started = Instant::now();
    match http.wait(StreamType::HttpRequest, Duration::from_secs(5)).unwrap() {
        FilterAction::LocalResponse(r) => assert_eq!(r.status, 503),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(900), "the call failed before its 1 s timeout");
    // A reply after the timeout is ignored.
    parked.lock().unwrap().pop().unwrap().respond(CalloutResponse::default());
}

#[test]
fn a_grpc_callout_delivers_its_message_or_its_status() {
    let host = host();
    let services = Services::new().on_grpc_call(|call| {
        assert_eq!((call.service.as_str(), call.method.as_str()), ("svc.Echo", "Say"));
        assert_eq!(call.initial_metadata.get_str("x-md"), Some("1"));
        let status = if call.message == b"/fail" { 7 } else { 0 };
        let message = [b"echo:".as_slice(), &call.message].concat();
        call.reply.respond_grpc(GrpcResponse { status, message, ..Default::default() });
        Ok(())
    });
    let (_vm, plugin) = start(&host, services, "grpc");
    let http = plugin.http_context().unwrap();
    assert_eq!(http.on_request_headers(request("/hi"), true).unwrap(), FilterAction::Pause);
    assert_eq!(http.wait(StreamType::HttpRequest, Duration::from_secs(5)).unwrap(), FilterAction::Continue);
    assert_eq!(header(&http.request_headers().unwrap(), "x-grpc-reply").as_deref(), Some("echo:/hi"));
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/fail"), true).unwrap();
    match http.wait(StreamType::HttpRequest, Duration::from_secs(5)).unwrap() {
        FilterAction::LocalResponse(r) => assert_eq!((r.status, r.body.as_slice()), (502, &b"grpc status 7"[..])),
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_plugins_in_one_vm_share_a_queue_and_the_registrant_is_notified() {
    let host = host();
    let module = testkit(&host);
    let vm = Vm::start(&host, &module, VmConfig { vm_id: "shared-vm".into(), ..Default::default() }).unwrap();
    let consumer = vm.add_plugin(plugin_config("consumer", "queue-consumer")).unwrap();
    let producer = vm.add_plugin(plugin_config("producer", "queue-producer")).unwrap();
    for path in ["/a", "/b", "/c"] {
        let http = producer.http_context().unwrap();
        http.on_request_headers(request(path), true).unwrap();
        assert_eq!(header(&http.request_headers().unwrap(), "x-queue").as_deref(), Some("enqueued"));
    }
    // The embedder can enqueue too.
    host.enqueue("shared-vm", "events", b"/from-host").unwrap();
    wait_for("the consumer", Duration::from_secs(5), || host.metric("consumed_total").is_some_and(|m| m.value == 4));
    assert_eq!(host.shared_data("shared-vm", b"consumed").unwrap().value, b"/a;/b;/c;/from-host;");
    let logs = logs_text(&vm);
    assert!(logs.contains(&"consumed: /b".to_string()), "{logs:?}");
    assert_eq!(host.queue_len("shared-vm", "events"), Some(0));
    drop(consumer);
    // A VM with another id does not see the queue.
    let other = Vm::start(&host, &module, VmConfig { vm_id: "other".into(), ..Default::default() }).unwrap();
    let lonely = other.add_plugin(plugin_config("p", "queue-producer")).unwrap();
    let http = lonely.http_context().unwrap();
    http.on_request_headers(request("/x"), true).unwrap();
    assert_eq!(header(&http.request_headers().unwrap(), "x-queue").as_deref(), Some("missing"));
}

#[test]
fn a_cas_conflict_on_shared_data_is_reported_and_retried() {
    let host = host();
    let writer = host.clone();
    let services = Services::new().foreign_function("cas_hook", move |_args| {
        // Another writer changes the key between the plugin's read and its conditional write.
        let current = writer.shared_data("test", b"counter").map(|v| v.value).unwrap_or_default();
        let value: u64 = String::from_utf8_lossy(&current).parse().unwrap_or(0);
        writer.set_shared_data("test", b"counter", (value + 100).to_string().as_bytes(), 0).unwrap();
        Ok(Vec::new())
    });
    let (_vm, plugin) = start(&host, services, "cas");
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/1"), true).unwrap();
    let out = http.request_headers().unwrap();
    assert_eq!(header(&out, "x-cas").as_deref(), Some("ok"));
    assert_eq!(header(&out, "x-counter").as_deref(), Some("1"));
    let http = plugin.http_context().unwrap();
    let mut headers = request("/2");
    headers.add("x-hook", "1");
    http.on_request_headers(headers, true).unwrap();
    let out = http.request_headers().unwrap();
    assert_eq!(header(&out, "x-cas").as_deref(), Some("mismatch"));
    assert_eq!(header(&out, "x-cas-retry").as_deref(), Some("ok"));
    assert_eq!(header(&out, "x-counter").as_deref(), Some("102"));
    let stored = host.shared_data("test", b"counter").unwrap();
    assert_eq!(stored.value, b"102");
    assert_eq!(
        host.set_shared_data("test", b"counter", b"0", stored.cas + 1),
        Err(bcv_core::proxy::Status::CasMismatch)
    );
}

#[test]
fn a_service_plugin_ticks_and_makes_callouts_in_the_background() {
    let host = host();
    let services = Services::new().on_http_call(|call| {
        assert_eq!(call.headers.get_str(":path"), Some("/tick"));
        call.reply.respond(CalloutResponse {
            headers: [(":status", "200")].into_iter().collect(),
            body: b"from-upstream".to_vec(),
            ..Default::default()
        });
        Ok(())
    });
    let (vm, _plugin) = start(&host, services, "tick period_ms=5 stop_after=3 callout=svc");
    wait_for("three ticks", Duration::from_secs(5), || host.metric("ticks_total").is_some_and(|m| m.value == 3));
    wait_for("the tick's callout", Duration::from_secs(5), || host.shared_data("test", b"tick_callout").is_some());
    assert_eq!(host.shared_data("test", b"tick_callout").unwrap().value, b"from-upstream");
    // The timer stopped itself after three ticks.
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(host.metric("ticks_total").unwrap().value, 3);
    assert!(vm.failure().is_none());
}

#[test]
fn metrics_are_defined_recorded_and_readable() {
    let host = host();
    let (_vm, plugin) = start(&host, Services::new(), "metrics");
    for (i, path) in ["/a", "/bbbb", "/cc"].into_iter().enumerate() {
        let http = plugin.http_context().unwrap();
        http.on_request_headers(request(path), true).unwrap();
        assert_eq!(header(&http.request_headers().unwrap(), "x-counter-value"), Some((i + 1).to_string()));
    }
    let counter = host.metric("m_counter").unwrap();
    assert_eq!((counter.kind, counter.value), (MetricType::Counter, 3));
    let gauge = host.metric("m_gauge").unwrap();
    assert_eq!((gauge.kind, gauge.value), (MetricType::Gauge, 4));
    let hist = host.metric("m_hist").unwrap();
    assert_eq!((hist.kind, hist.value, hist.sum, hist.min, hist.max), (MetricType::Histogram, 3, 10, 2, 5));
}

#[test]
fn foreign_functions_and_properties_reach_the_embedder() {
    let host = host();
    let services = Services::new()
        .foreign_function("reverse", |args| Ok(args.iter().rev().copied().collect()))
        .on_property(|request| (request.path == [b"missing".as_slice()]).then(Vec::new).filter(|_| false));
    let (_vm, plugin) = start(&host, services, "foreign");
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/abc"), true).unwrap();
    assert_eq!(header(&http.request_headers().unwrap(), "x-foreign").as_deref(), Some("cba/"));
    // Not registered: NOT_FOUND reaches the plugin.
    let (_vm, plugin) = start(&host, Services::new(), "foreign");
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/abc"), true).unwrap();
    assert_eq!(header(&http.request_headers().unwrap(), "x-foreign").as_deref(), Some("not-found"));
    // A failing function is INTERNAL_FAILURE.
    let services = Services::new().foreign_function("reverse", |_| Err(ForeignError::Failed("nope".into())));
    let (_vm, plugin) = start(&host, services, "foreign");
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/abc"), true).unwrap();
    assert_eq!(header(&http.request_headers().unwrap(), "x-foreign").as_deref(), Some("error"));
    // The embedder calls into the plugin's proxy_on_foreign_function.
    let (vm, plugin) = start(&host, Services::new(), "headers");
    plugin.call_foreign_function(7, b"args!").unwrap();
    assert!(logs_text(&vm).iter().any(|l| l == "foreign_function: 7 5"));

    let services = Services::new().on_property(|request| {
        (request.path == [b"source".as_slice(), b"address".as_slice()]).then(|| b"10.0.0.1:5555".to_vec())
    });
    let (_vm, plugin) = start(&host, services, "properties");
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/p?q=1"), true).unwrap();
    let out = http.request_headers().unwrap();
    assert_eq!(header(&out, "x-prop-path").as_deref(), Some("/p?q=1"));
    assert_eq!(header(&out, "x-plugin-name").as_deref(), Some("properties"));
    assert_eq!(header(&out, "x-prop-seen").as_deref(), Some("yes"));
    assert_eq!(header(&out, "x-prop-missing").as_deref(), Some("none"));
    assert_eq!(http.property("bcv.seen").unwrap().as_deref(), Some(&b"yes"[..]));
    assert_eq!(http.property("request.url_path").unwrap().as_deref(), Some(&b"/p"[..]));
    assert_eq!(http.property("source.address").unwrap().as_deref(), Some(&b"10.0.0.1:5555"[..]));
}

#[test]
fn a_tcp_filter_rewrites_both_directions_and_can_close() {
    let host = host();
    let (vm, plugin) = start(&host, Services::new(), "tcp");
    let tcp = plugin.tcp_context().unwrap();
    assert_eq!(tcp.on_new_connection().unwrap(), FilterAction::Continue);
    assert_eq!(tcp.on_downstream_data(b"hello", false).unwrap(), FilterAction::Continue);
    assert_eq!(tcp.take_downstream_data().unwrap(), b"HELLO");
    assert_eq!(tcp.on_upstream_data(b"reply", false).unwrap(), FilterAction::Continue);
    assert_eq!(tcp.take_upstream_data().unwrap(), b"[up]reply");
    assert_eq!(host.metric("tcp_bytes").unwrap().value, 5);
    tcp.on_downstream_close(PeerType::Remote).unwrap();
    assert!(tcp.finish().unwrap());
    let logs = logs_text(&vm);
    assert!(logs.iter().any(|l| l.starts_with("downstream closed")), "{logs:?}");
    assert!(logs.contains(&"tcp log".to_string()));

    let tcp = plugin.tcp_context().unwrap();
    tcp.on_new_connection().unwrap();
    assert_eq!(tcp.on_downstream_data(b"please BLOCK me", false).unwrap(), FilterAction::Close);
}

#[test]
fn on_done_false_defers_log_and_delete_until_proxy_done() {
    let host = host();
    let (vm, plugin) = start(&host, Services::new(), "done-later");
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/later"), true).unwrap();
    assert!(!http.finish().unwrap());
    wait_for("the deferred proxy_done", Duration::from_secs(5), || {
        vm.take_logs().iter().any(|r| r.message == "log: deferred")
    });
    assert_eq!(vm.context_count().unwrap(), 1, "only the root context is left");
}

#[test]
fn the_guest_sees_its_own_environment_clock_and_stdio() {
    let host = host();
    let module = testkit(&host);
    let config = VmConfig { environment: vec![("BCV_PLUGIN_ENV".into(), "from-vm".into())], ..Default::default() };
    let vm = Vm::start(&host, &module, config).unwrap();
    let plugin = vm.add_plugin(plugin_config("env", "env")).unwrap();
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/"), true).unwrap();
    let out = http.request_headers().unwrap();
    assert_eq!(header(&out, "x-env").as_deref(), Some("from-vm"));
    assert_eq!(header(&out, "x-home").as_deref(), Some("absent"));
    assert_eq!(header(&out, "x-time-ok").as_deref(), Some("yes"));
    let logs = vm.take_logs();
    assert!(logs.iter().any(|r| r.message == "stdout from plugin" && r.level == LogLevel::Info));
    assert!(logs.iter().any(|r| r.message == "stderr from plugin" && r.level == LogLevel::Error));
}

fn strict_host() -> ProxyHost {
    let config = HostConfig {
        module_cache_dir: Some(plugins::cache_dir()),
        memory_limit: 16 << 20,
        callback_deadline: Duration::from_millis(200),
        ..Default::default()
    };
    ProxyHost::new(config).unwrap()
}

/// Runs one request of `mode` on a fresh VM; returns the action, the VM's failure and the plugin.
fn hostile(host: &ProxyHost, mode: &str, fail_open: bool) -> (FilterAction, Option<FailReason>, Vm) {
    let module = testkit(host);
    let vm = Vm::start(host, &module, VmConfig::default()).unwrap();
    let plugin = vm.add_plugin(PluginConfig { fail_open, ..plugin_config(mode, mode) }).unwrap();
    let http = plugin.http_context().unwrap();
    let action = http.on_request_headers(request("/"), true).unwrap();
    (action, vm.failure(), vm)
}

#[test]
fn an_infinite_loop_is_stopped_at_its_cpu_deadline_and_the_host_survives() {
    let host = strict_host();
    let started = Instant::now();
    let (action, failure, vm) = hostile(&host, "loop", false);
    assert_eq!(failure, Some(FailReason::CpuDeadline));
    assert!(started.elapsed() < Duration::from_secs(10));
    match action {
        FilterAction::LocalResponse(r) => {
            assert_eq!(r.status, 503);
            assert!(r.details.contains("exceeded its CPU deadline"), "{}", r.details);
        }
        other => panic!("{other:?}"),
    }
    assert!(vm.take_logs().iter().any(|r| r.level == LogLevel::Critical && r.message.contains("vm failed")));
    // Later calls on the failed VM follow the policy without running the guest.
    let plugin_err = vm.add_plugin(plugin_config("more", "headers")).unwrap_err();
    assert!(matches!(plugin_err, ProxyError::VmFailed { .. }), "{plugin_err}");
    // The host still runs other VMs.
    let (action, failure, _) = hostile(&host, "headers", false);
    assert_eq!((action, failure), (FilterAction::Continue, None));
}

#[test]
fn a_memory_bomb_hits_the_memory_cap_and_fails_only_its_vm() {
    let host = strict_host();
    let (action, failure, vm) = hostile(&host, "bomb", true);
    assert_eq!(failure, Some(FailReason::MemoryLimit { limit: 16 << 20 }));
    assert_eq!(action, FilterAction::Continue, "fail-open lets the request through");
    assert!(vm.memory_size().unwrap() <= 16 << 20);
    let (action, failure, _) = hostile(&host, "headers", false);
    assert_eq!((action, failure), (FilterAction::Continue, None));
}

#[test]
fn a_panicking_plugin_fails_open_or_closed_by_its_policy() {
    let host = host();
    let (action, failure, _) = hostile(&host, "panic", false);
    assert!(matches!(failure, Some(FailReason::Trap(ref m)) if m.contains("unreachable")), "{failure:?}");
    assert!(matches!(action, FilterAction::LocalResponse(ref r) if r.status == 503), "{action:?}");
    let (action, _, vm) = hostile(&host, "panic", true);
    assert_eq!(action, FilterAction::Continue);
    assert!(vm.take_logs().iter().any(|r| r.message.contains("testkit panic on purpose")));
}

#[test]
fn out_of_bounds_pointers_get_invalid_memory_access_not_a_crash() {
    let host = host();
    let (action, failure, vm) = hostile(&host, "oob", false);
    assert_eq!((action, failure), (FilterAction::Continue, None));
    let module = testkit(&host);
    drop(vm);
    let vm = Vm::start(&host, &module, VmConfig::default()).unwrap();
    let plugin = vm.add_plugin(plugin_config("oob", "oob")).unwrap();
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/"), true).unwrap();
    assert_eq!(header(&http.request_headers().unwrap(), "x-oob").as_deref(), Some("6,6,6"));
}

#[test]
fn the_guest_allocator_may_only_log_and_a_trap_inside_it_is_reported() {
    let host = host();
    let module = host.load_module("hostile_alloc", &plugins::plugin("hostile_alloc")).unwrap();
    // Configuration size selects the allocator's behaviour: 1 traps, 2 calls proxy_done, 3 logs.
    let vm = Vm::start(&host, &module, VmConfig::default()).unwrap();
    let err = vm.add_plugin(plugin_config("trap", "1")).unwrap_err();
    assert!(matches!(&err, ProxyError::PluginRejected { reason, .. } if reason.contains("unreachable")), "{err}");
    let err = vm.add_plugin(plugin_config("done", "22")).unwrap_err();
    assert!(err.to_string().contains("restricted_callback: proxy_done is not allowed during allocator"), "{err}");
    assert!(vm.failure().is_none(), "the canary caught both; the real VM never ran them");
    let plugin = vm.add_plugin(plugin_config("log", "333")).unwrap();
    assert!(vm.take_logs().iter().any(|r| r.message == "in allocator"));
    drop(plugin);
}

#[test]
fn compiled_modules_are_cached_and_a_damaged_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig { module_cache_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let wasm = plugins::plugin("legacy_v020");
    let host = ProxyHost::new(config.clone()).unwrap();
    assert!(!host.load_module("m", &wasm).unwrap().from_cache());
    let host = ProxyHost::new(config.clone()).unwrap();
    let cached = host.load_module("m", &wasm).unwrap();
    assert!(cached.from_cache());
    let vm = Vm::start(&host, &cached, VmConfig::default()).unwrap();
    vm.add_plugin(plugin_config("p", "")).unwrap();
    // Damage every cache file: it is detected, recompiled and rewritten.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    assert!(!host.load_module("m", &wasm).unwrap().from_cache());
    assert!(host.load_module("m", &wasm).unwrap().from_cache());

    // Hosts of one process compiling the same new module at once each write the cache entry whole.
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig { module_cache_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let loaders: Vec<_> = (0..8)
        .map(|_| {
            let (config, wasm) = (config.clone(), wasm.clone());
            std::thread::spawn(move || ProxyHost::new(config).unwrap().load_module("m", &wasm).map(|_| ()))
        })
        .collect();
    for loader in loaders {
        loader.join().unwrap().expect("a concurrent load succeeds");
    }
    assert!(ProxyHost::new(config).unwrap().load_module("m", &wasm).unwrap().from_cache());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "one cache file, no temporary ones: {leftovers:?}");
}

#[test]
fn dropping_or_closing_handles_in_any_order_finishes_contexts() {
    let host = host();
    let (vm, plugin) = start(&host, Services::new(), "headers");
    let http = plugin.http_context().unwrap();
    http.on_request_headers(request("/dropped"), true).unwrap();
    // Releasing the context finishes it on the reaper: on_done, on_log, on_delete.
    drop(http);
    wait_for("on_log of a dropped context", Duration::from_secs(5), || {
        vm.take_logs().iter().any(|r| r.message.starts_with("log: /dropped"))
    });
    // Closing the VM closes its plugins and contexts; later calls are refused.
    let http = plugin.http_context().unwrap();
    vm.node().close();
    assert!(matches!(http.on_request_headers(request("/"), true), Err(ProxyError::Closed(_))));
    // Releasing the VM before its plugin and context is fine.
    let (vm, plugin) = start(&host, Services::new(), "headers");
    let http = plugin.http_context().unwrap();
    drop(vm);
    drop(plugin);
    assert_eq!(http.on_request_headers(request("/late"), true).unwrap(), FilterAction::Continue);
}

#[test]
fn a_callback_that_calls_back_into_its_own_vm_is_refused_not_deadlocked() {
    let host = host();
    let slot: Arc<Mutex<Option<bcv_core::proxy::HttpContext>>> = Arc::new(Mutex::new(None));
    let inner = slot.clone();
    let services = Services::new().foreign_function("reverse", move |_| {
        let ctx = inner.lock().unwrap().clone().expect("context");
        match ctx.request_headers() {
            Err(ProxyError::Reentrant { .. }) => Ok(b"refused".to_vec()),
            other => Err(ForeignError::Failed(format!("{other:?}"))),
        }
    });
    let (_vm, plugin) = start(&host, services, "foreign");
    let http = plugin.http_context().unwrap();
    *slot.lock().unwrap() = Some(http.clone());
    http.on_request_headers(request("/"), true).unwrap();
    assert_eq!(header(&http.request_headers().unwrap(), "x-foreign").as_deref(), Some("refused"));
    slot.lock().unwrap().take();
}

#[test]
fn many_vms_run_on_threads_and_share_data_by_vm_id() {
    let host = host();
    let module = testkit(&host);
    // Seeded, so every write is a CAS: the ABI treats the write of a missing key (CAS 0) as unconditional.
    host.set_shared_data("pool", b"counter", b"0", 0).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (host, module) = (host.clone(), module.clone());
            std::thread::spawn(move || {
                let vm = Vm::start(&host, &module, VmConfig { vm_id: "pool".into(), ..Default::default() }).unwrap();
                let plugin = vm.add_plugin(plugin_config("cas", "cas")).unwrap();
                let mut given_up = 0;
                for i in 0..25 {
                    let http = plugin.http_context().unwrap();
                    http.on_request_headers(request(&format!("/{i}")), true).unwrap();
                    let headers = http.request_headers().unwrap();
                    if header(&headers, "x-cas-retry").as_deref() == Some("mismatch") {
                        given_up += 1;
                    }
                }
                given_up
            })
        })
        .collect();
    let given_up: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // Every increment went through a CAS (retried once on conflict): each one either landed or the plugin
    // saw both tries conflict and said so; no write was lost or doubled.
    let value: u64 = String::from_utf8(host.shared_data("pool", b"counter").unwrap().value).unwrap().parse().unwrap();
    assert_eq!(value + given_up, 100, "counter {value}, {given_up} increments given up");
}

#[test]
fn a_vm_can_be_inspected_from_its_own_callbacks_without_deadlock() {
    let host = host();
    let slot: Arc<std::sync::OnceLock<Vm>> = Arc::new(std::sync::OnceLock::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (slot_in, seen_in) = (slot.clone(), seen.clone());
    let services = Services::new().on_log(move |record| {
        if let Some(vm) = slot_in.get() {
            // The failure, the logs and the plugin's state are readable; the VM itself is busy.
            let failure = vm.failure();
            let logs = vm.take_logs().len();
            let busy = matches!(vm.context_count(), Err(ProxyError::Reentrant { .. }));
            seen_in.lock().unwrap().push((record.message.clone(), failure.is_none(), logs, busy));
        }
    });
    let (vm, plugin) = start(&host, services, "headers");
    let _ = slot.set(vm.clone());
    let http = plugin.http_context().unwrap();
    assert_eq!(http.on_request_headers(request("/reentrant"), true).unwrap(), FilterAction::Continue);
    assert_eq!(
        http.on_response_headers([(":status", "200")].into_iter().collect(), true).unwrap(),
        FilterAction::Continue
    );
    assert!(http.finish().unwrap());
    let seen = seen.lock().unwrap();
    assert!(seen.iter().any(|(message, ..)| message == "log: /reentrant 200"), "{seen:?}");
    assert!(seen.iter().all(|&(_, healthy, _, busy)| healthy && busy), "{seen:?}");
    assert_eq!(vm.context_count().unwrap(), 1, "the finished context is gone, the root is left");
}

#[test]
fn a_context_created_on_a_closed_plugin_is_refused_and_leaves_nothing_behind() {
    let host = host();
    let (vm, plugin) = start(&host, Services::new(), "headers");
    let before = vm.context_count().unwrap();
    assert_eq!(before, 1, "the plugin's root context");
    plugin.node().close_and_wait_blocking(Duration::from_secs(10)).expect("the plugin closes");
    assert!(matches!(plugin.http_context(), Err(ProxyError::Closed(_))));
    assert!(matches!(plugin.tcp_context(), Err(ProxyError::Closed(_))));
    assert!(matches!(plugin.call_foreign_function(1, b"x"), Err(ProxyError::Closed(_))));
    assert_eq!(vm.context_count().unwrap(), 0, "the root is gone and no stream context stayed behind");
    // The guest never heard of a context under its deleted root: the VM still works.
    assert_eq!(vm.failure(), None);
    let other = vm.add_plugin(plugin_config("headers", "headers")).unwrap();
    assert_eq!(other.http_context().unwrap().on_request_headers(request("/"), true).unwrap(), FilterAction::Continue);
}

#[test]
fn a_property_handler_reached_from_the_embedder_cannot_deadlock_its_vm() {
    let host = host();
    let slot: Arc<std::sync::OnceLock<Vm>> = Arc::new(std::sync::OnceLock::new());
    let inner = slot.clone();
    let services = Services::new().on_property(move |_| {
        let vm = inner.get()?;
        // Re-entering the VM that is answering is refused instead of hanging.
        Some(match vm.context_count() {
            Err(ProxyError::Reentrant { .. }) => b"refused".to_vec(),
            other => format!("{other:?}").into_bytes(),
        })
    });
    let (vm, plugin) = start(&host, services, "headers");
    let _ = slot.set(vm.clone());
    let http = plugin.http_context().unwrap();
    assert_eq!(http.property("embedder.value").unwrap().as_deref(), Some(&b"refused"[..]));
}

#[test]
fn a_failed_vm_is_restarted_on_next_use_within_its_crash_loop_limit() {
    let host = host();
    let module = testkit(&host);
    let policy = RestartPolicy { max_restarts: 2, window: Duration::from_secs(60), backoff: Duration::ZERO };
    let config = VmConfig { vm_id: "restart".into(), restart: Some(policy), ..Default::default() };
    let vm = Vm::start(&host, &module, config).unwrap();
    let good = vm.add_plugin(plugin_config("headers", "headers")).unwrap();
    let bad = vm.add_plugin(plugin_config("panic", "panic")).unwrap();
    let open = good.http_context().unwrap();
    assert_eq!(open.on_request_headers(request("/open"), false).unwrap(), FilterAction::Continue);
    let crash = || {
        let ctx = bad.http_context().unwrap();
        let action = ctx.on_request_headers(request("/boom"), true).unwrap();
        assert!(matches!(action, FilterAction::LocalResponse(ref r) if r.status == 503), "{action:?}");
    };

    crash();
    assert!(matches!(vm.failure(), Some(FailReason::Trap(_))));
    assert_eq!(vm.restarts(), 0);
    // The next use re-creates the VM: the good plugin filters again, on a fresh instance.
    let fresh = good.http_context().unwrap();
    assert_eq!(vm.restarts(), 1);
    assert_eq!(vm.failure(), None);
    assert_eq!(fresh.on_request_headers(request("/fresh"), true).unwrap(), FilterAction::Continue);
    assert_eq!(header(&fresh.request_headers().unwrap(), "x-added").as_deref(), Some("yes"));
    assert!(fresh.finish().unwrap());
    let logs = logs_text(&vm);
    assert!(logs.iter().any(|l| l.starts_with("vm restarted (restart 1) after: trap")), "{logs:?}");
    assert!(logs.iter().any(|l| l == "log: /fresh -"), "{logs:?}");
    // A context open at the failure stays failed (fail closed) but keeps its data; no guest code runs for it.
    let response: HeaderMap = [(":status", "200")].into_iter().collect();
    assert!(matches!(open.on_response_headers(response, true).unwrap(), FilterAction::LocalResponse(_)));
    assert_eq!(header(&open.request_headers().unwrap(), "x-added").as_deref(), Some("yes"));
    assert!(open.finish().unwrap());
    assert!(!logs_text(&vm).iter().any(|l| l.starts_with("log: /open")));

    // Second failure, second restart (made when the next context is created), third failure.
    crash();
    crash();
    assert_eq!(vm.restarts(), 2);
    // The limit is reached: the VM stays failed and the good plugin fails closed too.
    let blocked = good.http_context().unwrap();
    assert_eq!(vm.restarts(), 2);
    assert!(vm.failure().is_some());
    let action = blocked.on_request_headers(request("/blocked"), true).unwrap();
    assert!(matches!(action, FilterAction::LocalResponse(ref r) if r.status == 503), "{action:?}");
    let logs = logs_text(&vm);
    assert!(logs.iter().any(|l| l.starts_with("vm restarted (restart 2) after: trap")), "{logs:?}");
    assert!(!logs.iter().any(|l| l.contains("restart 3")), "{logs:?}");
}

#[test]
fn a_restart_waits_for_its_backoff() {
    let host = host();
    let module = testkit(&host);
    let backoff = Duration::from_millis(300);
    let policy = RestartPolicy { max_restarts: 5, window: Duration::from_secs(60), backoff };
    let config = VmConfig { vm_id: "backoff".into(), restart: Some(policy), ..Default::default() };
    let vm = Vm::start(&host, &module, config).unwrap();
    let bad = vm.add_plugin(plugin_config("panic", "panic")).unwrap();
    let failed_at = Instant::now();
    let _ = bad.http_context().unwrap().on_request_headers(request("/boom"), true).unwrap();
    assert!(vm.failure().is_some());
    let early = bad.http_context().unwrap();
    if failed_at.elapsed() < backoff {
        assert_eq!(vm.restarts(), 0, "restarted before the backoff");
        assert!(matches!(early.on_request_headers(request("/x"), true).unwrap(), FilterAction::LocalResponse(_)));
    }
    std::thread::sleep(backoff);
    let _later = bad.http_context().unwrap();
    assert_eq!(vm.restarts(), 1);
    assert_eq!(vm.failure(), None);
    // Without a policy a failed VM never comes back.
    let config = VmConfig { vm_id: "no-restart".into(), ..Default::default() };
    let vm = Vm::start(&host, &module, config).unwrap();
    let bad = vm.add_plugin(plugin_config("panic", "panic")).unwrap();
    let _ = bad.http_context().unwrap().on_request_headers(request("/boom"), true).unwrap();
    let _ = bad.http_context().unwrap();
    assert_eq!(vm.restarts(), 0);
    assert!(vm.failure().is_some());
}

#[test]
fn a_restart_that_cannot_configure_a_plugin_leaves_the_vm_failed_and_counts_as_an_attempt() {
    let host = host();
    let module = testkit(&host);
    let policy = RestartPolicy { max_restarts: 2, window: Duration::from_secs(60), backoff: Duration::ZERO };
    let config = VmConfig { vm_id: "restart-refused".into(), restart: Some(policy), ..Default::default() };
    let vm = Vm::start(&host, &module, config).unwrap();
    let once = vm.add_plugin(plugin_config("configure-twice", "configure-twice")).unwrap();
    let bad = vm.add_plugin(plugin_config("panic", "panic")).unwrap();
    let ctx = once.http_context().unwrap();
    assert_eq!(ctx.on_request_headers(request("/before"), true).unwrap(), FilterAction::Continue);
    let _ = bad.http_context().unwrap().on_request_headers(request("/boom"), true).unwrap();
    // Both allowed attempts fail on the plugin's configure; the VM stays failed and its plugins fail closed.
    for _ in 0..3 {
        let action = once.http_context().unwrap().on_request_headers(request("/after"), true).unwrap();
        assert!(matches!(action, FilterAction::LocalResponse(ref r) if r.status == 503), "{action:?}");
    }
    assert_eq!(vm.restarts(), 0);
    assert!(matches!(vm.failure(), Some(FailReason::Trap(_))));
    let logs = logs_text(&vm);
    let failed: Vec<_> = logs.iter().filter(|l| l.starts_with("vm restart failed: plugin configure-twice")).collect();
    assert_eq!(failed.len(), 2, "{logs:?}");
}
