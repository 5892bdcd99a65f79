"""The Proxy-Wasm host from Python, against the `testkit` plugin built from source with the proxy-wasm SDK.

scripts/test-python.sh builds it (scripts/build-proxy-plugins.sh) and passes its path in
``BCV_TEST_PROXY_PLUGIN``; the plugin's behaviour is chosen by its plugin configuration.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Dict, List, Optional, Tuple

import pytest

import bcv


@pytest.fixture(scope="module")
def wasm() -> bytes:
    path = os.environ.get("BCV_TEST_PROXY_PLUGIN")
    if not path:
        pytest.fail("BCV_TEST_PROXY_PLUGIN is not set: run scripts/test-python.sh (it builds the test plugin)")
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def host(tmp_path):
    with bcv.ProxyHost(module_cache_dir=tmp_path / "module-cache") as host:
        yield host


def request(path: str, **extra: str) -> List[Tuple[str, str]]:
    headers = [(":method", "GET"), (":path", path), (":authority", "example.test"), (":scheme", "http")]
    return headers + [(k.replace("_", "-"), v) for k, v in extra.items()]


def header(pairs: List[Tuple[str, str]], name: str) -> Optional[str]:
    return next((v for n, v in pairs if n == name), None)


def start(host: bcv.ProxyHost, wasm: bytes, mode: str, **services):
    module = host.load_module("testkit", wasm)
    vm = host.start_vm(module, vm_id="test", **services)
    plugin = vm.add_plugin(mode, configuration=mode)
    return vm, plugin


def test_header_filter_changes_headers_and_logs_at_the_end(host, wasm):
    seen: List[bcv.LogRecord] = []
    vm, plugin = start(host, wasm, "headers", log=seen.append)
    assert host.load_module("again", wasm).abi == "0.2.1"
    with plugin.http_context() as http:
        action = http.on_request_headers(
            {":method": "GET", ":path": "/items?id=7", ":authority": "a", "x-replace": "old", "x-remove": "gone"},
            end_of_stream=True,
        )
        assert action == "continue" and action.kind == "continue" and action.response is None
        out = http.request_headers()
        assert header(out, "x-added") == "yes"
        assert header(out, "x-replace") == "replaced"
        assert header(out, "x-remove") is None
        assert header(out, "x-path") == "/items?id=7"
        assert http.on_response_headers([(":status", "200")], end_of_stream=True) == "continue"
        assert header(http.response_headers(), "x-response-added") == "yes"
        assert http.finish() is True
        with pytest.raises(bcv.ContextFinishedError):
            http.request_headers()
    messages = [r.message for r in vm.take_logs()]
    assert "log: /items?id=7 200" in messages
    # The log callback saw the same records as they were written, with their plugin and level.
    assert any(r.message == "log: /items?id=7 200" and r.plugin == "headers" for r in seen)
    assert {r.level for r in seen} <= {"trace", "debug", "info", "warn", "error", "critical"}
    assert host.metric("requests_total")["value"] == 1
    assert vm.failure is None and vm.context_count == 1


def test_bodies_are_rewritten_and_piped_as_streams(host, wasm):
    _vm, plugin = start(host, wasm, "body")
    http = plugin.http_context()
    assert http.on_request_headers(request("/upload"), end_of_stream=False) == "continue"
    assert http.on_request_body(b"hello ", end_of_stream=False) == "pause"
    assert http.on_request_body(b"world", end_of_stream=True) == "continue"
    assert http.take_request_body() == b"HELLO WORLD"
    assert http.on_response_headers([(":status", "200")]) == "continue"
    assert http.on_response_body(b"part1") == "continue"
    assert http.take_response_body() == b"part1"
    assert http.on_response_body(b"part2", end_of_stream=True) == "continue"
    assert http.take_response_body() == b"part2\n-- filtered"

    # A request body stream through the plugin.
    http = plugin.http_context()
    http.on_request_headers(request("/stream"))
    writer, reader = bcv.pipe(16)
    output = http.filter_request_body(reader, pause_timeout=5.0)

    def produce() -> None:
        for part in (b"streamed ", b"body ", b"data"):
            writer.write(part)
        writer.finish()

    producer = threading.Thread(target=produce)
    producer.start()
    assert output.read() == b"STREAMED BODY DATA"
    producer.join()


def test_a_plugin_can_answer_locally(host, wasm):
    _vm, plugin = start(host, wasm, "deny")
    action = plugin.http_context().on_request_headers(request("/secret", x_deny="1"), end_of_stream=True)
    assert action == "local_response"
    response = action.response
    assert (response.status, response.body) == (403, b"denied")
    assert header(response.headers, "x-denied-by") == "bcv"


def test_an_http_callout_pauses_until_python_answers_it_later(host, wasm):
    calls: List[bcv.Callout] = []

    def callout(call: bcv.Callout):
        if call.upstream != "auth":
            return False
        calls.append(call)
        token = header(call.headers, "x-token") or ""
        # Answered later, from another thread.
        threading.Timer(0.02, lambda: call.respond([(":status", "200")], body=f"user-of-{token}")).start()
        return None

    _vm, plugin = start(host, wasm, "callout", http_callout=callout)
    http = plugin.http_context()
    assert http.on_request_headers(request("/private", authorization="t0k3n"), end_of_stream=True) == "pause"
    assert http.wait("request", timeout=5.0) == "continue"
    assert header(http.request_headers(), "x-auth-body") == "user-of-t0k3n"
    assert [(c.kind, c.upstream, header(c.headers, ":path"), c.timeout) for c in calls] == [
        ("http", "auth", "/check", 1.0)
    ]
    assert calls[0].answered
    with pytest.raises(bcv.AlreadyTakenError):
        calls[0].fail()

    # A failed call: the plugin answers 503 itself.
    _vm, plugin = start(host, wasm, "callout", http_callout=lambda call: call.fail())
    http = plugin.http_context()
    assert http.on_request_headers(request("/private"), end_of_stream=True) == "pause"
    action = http.wait("request", timeout=5.0)
    assert action == "local_response" and action.response.status == 503

    # An unknown upstream (the callback returned False) is refused at dispatch.
    _vm, plugin = start(host, wasm, "callout upstream=nowhere", http_callout=callout)
    action = plugin.http_context().on_request_headers(request("/"), end_of_stream=True)
    assert action == "local_response"
    assert (action.response.status, action.response.body) == (500, b"dispatch failed")


def test_a_grpc_callout_delivers_its_message(host, wasm):
    def grpc(call: bcv.Callout) -> None:
        assert (call.kind, call.service, call.method) == ("grpc", "svc.Echo", "Say")
        call.respond_grpc(0, message=b"echo:" + call.body)

    _vm, plugin = start(host, wasm, "grpc", grpc_callout=grpc)
    http = plugin.http_context()
    assert http.on_request_headers(request("/hi"), end_of_stream=True) == "pause"
    assert http.wait("request", timeout=5.0) == "continue"
    assert header(http.request_headers(), "x-grpc-reply") == "echo:/hi"


def test_foreign_functions_both_ways_and_properties(host, wasm):
    _vm, plugin = start(host, wasm, "foreign", foreign_functions={"reverse": lambda args: args[::-1]})
    http = plugin.http_context()
    http.on_request_headers(request("/abc"), end_of_stream=True)
    assert header(http.request_headers(), "x-foreign") == "cba/"

    def broken(args: bytes) -> bytes:
        raise RuntimeError("nope")

    _vm, plugin = start(host, wasm, "foreign", foreign_functions={"reverse": broken})
    http = plugin.http_context()
    http.on_request_headers(request("/abc"), end_of_stream=True)
    assert header(http.request_headers(), "x-foreign") == "error"

    vm, plugin = start(host, wasm, "headers")
    plugin.call_foreign_function(7, b"args!")
    assert "foreign_function: 7 5" in [r.message for r in vm.take_logs()]

    asked: List[Tuple[Tuple[str, ...], str]] = []

    def prop(path: Tuple[str, ...], plugin_name: str) -> Optional[str]:
        asked.append((path, plugin_name))
        return "10.0.0.1:5555" if path == ("source", "address") else None

    _vm, plugin = start(host, wasm, "properties", property=prop)
    http = plugin.http_context()
    http.on_request_headers(request("/p?q=1"), end_of_stream=True)
    out = http.request_headers()
    assert header(out, "x-prop-path") == "/p?q=1"
    assert header(out, "x-plugin-name") == "properties"
    assert header(out, "x-prop-missing") == "none"
    assert http.property("bcv.seen") == b"yes"
    assert http.property("request.url_path") == b"/p"
    assert http.property("source.address") == b"10.0.0.1:5555"
    assert (("source", "address"), "properties") in asked


def test_metrics_and_shared_data_are_readable(host, wasm):
    _vm, plugin = start(host, wasm, "metrics")
    for i in range(3):
        plugin.http_context().on_request_headers(request(f"/{i}"), end_of_stream=True)
    by_name: Dict[str, dict] = {m["name"]: m for m in host.metrics()}
    assert (by_name["m_counter"]["kind"], by_name["m_counter"]["value"]) == ("counter", 3)
    assert (by_name["m_gauge"]["kind"], by_name["m_gauge"]["value"]) == ("gauge", 4)
    hist = host.metric("m_hist")
    assert (hist["kind"], hist["value"], hist["sum"], hist["min"], hist["max"]) == ("histogram", 3, 6, 2, 2)
    assert host.metric("no_such_metric") is None
    assert host.shared_data("test", "absent") is None
    cas = host.set_shared_data("test", "k", "v1")
    assert host.shared_data("test", b"k") == (b"v1", cas)
    with pytest.raises(bcv.CasMismatchError):
        host.set_shared_data("test", "k", "v2", cas=cas + 1000)
    assert host.set_shared_data("test", "k", "v2", cas=cas) != cas


def test_a_tcp_filter_rewrites_both_directions_and_can_close(host, wasm):
    _vm, plugin = start(host, wasm, "tcp")
    with plugin.tcp_context() as tcp:
        assert tcp.on_new_connection() == "continue"
        assert tcp.on_downstream_data(b"hello") == "continue"
        assert tcp.take_downstream_data() == b"HELLO"
        assert tcp.on_upstream_data(b"reply") == "continue"
        assert tcp.take_upstream_data() == b"[up]reply"
        tcp.on_downstream_close("remote")
        assert tcp.finish()
    assert host.metric("tcp_bytes")["value"] == 5
    tcp = plugin.tcp_context()
    tcp.on_new_connection()
    assert tcp.on_downstream_data(b"please BLOCK me") == "close"


def test_a_panicking_plugin_fails_closed_and_the_host_keeps_working(host, wasm):
    module = host.load_module("testkit", wasm)
    vm = host.start_vm(module, vm_id="hostile")
    plugin = vm.add_plugin("panic", configuration="panic")
    action = plugin.http_context().on_request_headers(request("/boom"), end_of_stream=True)
    assert action == "local_response" and action.response.status == 503
    assert vm.failure_kind == "trap" and "unreachable" in vm.failure
    # The failed VM refuses new plugins; a fail-open plugin would have let the request through.
    with pytest.raises(bcv.VmFailedError) as failed:
        vm.add_plugin("more", configuration="headers")
    assert failed.value.kind == "trap"
    open_vm = host.start_vm(module, vm_id="hostile-open")
    lenient = open_vm.add_plugin("panic", configuration="panic", fail_open=True)
    assert lenient.http_context().on_request_headers(request("/boom"), end_of_stream=True) == "continue"
    # Another VM of the same host still works.
    _vm, plugin = start(host, wasm, "headers")
    assert plugin.http_context().on_request_headers(request("/ok"), end_of_stream=True) == "continue"


def test_a_failed_vm_comes_back_on_next_use_within_its_restart_limit(host, wasm):
    module = host.load_module("testkit", wasm)
    vm = host.start_vm(module, vm_id="restarting", max_restarts=1, restart_backoff=0)
    good = vm.add_plugin("headers", configuration="headers")
    bad = vm.add_plugin("panic", configuration="panic")
    assert bad.http_context().on_request_headers(request("/boom"), end_of_stream=True) == "local_response"
    assert vm.failure_kind == "trap" and vm.restarts == 0
    # The next use re-creates the VM with both plugins configured again.
    ctx = good.http_context()
    assert vm.restarts == 1 and vm.failure is None
    assert ctx.on_request_headers(request("/fine"), end_of_stream=True) == "continue"
    assert header(ctx.request_headers(), "x-added") == "yes"
    assert any(r.message.startswith("vm restarted (restart 1) after: trap") for r in vm.take_logs())
    # Past the limit it stays failed.
    assert bad.http_context().on_request_headers(request("/boom"), end_of_stream=True) == "local_response"
    blocked = good.http_context().on_request_headers(request("/blocked"), end_of_stream=True)
    assert blocked == "local_response" and blocked.response.status == 503
    assert vm.restarts == 1 and vm.failure_kind == "trap"
    with pytest.raises(bcv.InvalidArgumentError):
        host.start_vm(module, max_restarts=1, restart_window=-1)


def test_an_infinite_loop_meets_its_cpu_deadline(tmp_path, wasm):
    with bcv.ProxyHost(callback_deadline=0.2, module_cache_dir=tmp_path / "cache") as host:
        vm, plugin = start(host, wasm, "loop")
        started = time.monotonic()
        action = plugin.http_context().on_request_headers(request("/spin"), end_of_stream=True)
        assert action == "local_response"
        assert vm.failure_kind == "cpu_deadline"
        assert time.monotonic() - started < 30


def test_bad_modules_and_bad_plugins_are_refused_with_a_reason(host, wasm):
    with pytest.raises(bcv.InvalidModuleError, match="junk"):
        host.load_module("junk", b"\0asm-not-really")
    module = host.load_module("testkit", wasm)
    vm = host.start_vm(module, vm_id="rejects")
    with pytest.raises(bcv.PluginRejectedError, match="fail-configure"):
        vm.add_plugin("fail-configure", configuration="fail-configure")
    # The VM keeps serving its other plugins.
    plugin = vm.add_plugin("headers", configuration="headers")
    assert plugin.http_context().on_request_headers(request("/"), end_of_stream=True) == "continue"


def test_closing_the_host_closes_everything_under_it(wasm):
    host = bcv.ProxyHost()
    vm, plugin = start(host, wasm, "headers")
    http = plugin.http_context()
    host.close()
    assert not host.is_open
    with pytest.raises(bcv.ClosedError):
        http.on_request_headers(request("/"), end_of_stream=True)
    with pytest.raises(bcv.ClosedError):
        host.load_module("x", wasm)
    assert not vm.is_open and not plugin.is_open


def test_a_callback_may_inspect_its_vm_but_not_reenter_it(host, wasm):
    holder: Dict[str, bcv.ProxyVm] = {}
    seen: List[Tuple[Optional[str], str]] = []

    def log(record: bcv.LogRecord) -> None:
        vm = holder.get("vm")
        if vm is None:
            return
        try:
            vm.context_count
            outcome = "entered"
        except bcv.WouldDeadlockError:
            outcome = "refused"
        seen.append((vm.failure, outcome))

    vm, plugin = start(host, wasm, "headers", log=log)
    holder["vm"] = vm
    http = plugin.http_context()
    http.on_request_headers(request("/"), end_of_stream=True)
    http.on_response_headers([(":status", "200")], end_of_stream=True)
    http.finish()
    holder.clear()
    assert seen and all(entry == (None, "refused") for entry in seen)
