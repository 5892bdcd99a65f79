// The Proxy-Wasm host from Swift, against the `testkit` plugin built from source by
// scripts/build-proxy-plugins.sh (tests/proxy-plugins/testkit: the plugin configuration picks its mode).
// scripts/test-swift.sh passes the directory holding the .wasm files in BCV_PROXY_PLUGINS; without it every
// test here fails (it never skips).
//
// Objects are created inside helper functions or `do {}` blocks where a test checks that everything was
// released (debug builds keep locals alive to the end of their scope).

import BCV
import Foundation
import XCTest

struct ProxySetupError: Error, CustomStringConvertible {
    let description: String
}

/// The bytes of test plugin `name` (`testkit`, `no_marker`, …).
func proxyPlugin(_ name: String) throws -> Data {
    guard let dir = ProcessInfo.processInfo.environment["BCV_PROXY_PLUGINS"], !dir.isEmpty else {
        throw ProxySetupError(description: "BCV_PROXY_PLUGINS is not set: run scripts/test-swift.sh, which builds "
            + "the plugins (scripts/build-proxy-plugins.sh) and passes their directory")
    }
    return try Data(contentsOf: URL(fileURLWithPath: dir).appendingPathComponent("\(name).wasm"))
}

/// Compiled modules are cached here for the whole run, so each host does not compile testkit again.
let proxyModuleCache = FileManager.default.temporaryDirectory
    .appendingPathComponent("bcv-swift-proxy-cache-\(ProcessInfo.processInfo.processIdentifier)")

func proxyHost(memoryLimit: UInt64? = nil, callbackDeadline: Duration? = nil) throws -> ProxyHost {
    try ProxyHost(memoryLimit: memoryLimit, callbackDeadline: callbackDeadline,
                  moduleCacheDirectory: proxyModuleCache.path)
}

/// Request headers of a GET of `path`, then `extra`.
func request(_ path: String, _ extra: KeyValuePairs<String, String> = [:]) -> [ProxyHeader] {
    [ProxyHeader]([":method": "GET", ":path": path, ":authority": "example.test", ":scheme": "http"])
        + [ProxyHeader](extra)
}

/// Holds a VM weakly, so that a service closure can look at its own VM without keeping it alive.
final class WeakVm: @unchecked Sendable {
    private let lock = NSLock()
    private weak var value: ProxyVm?

    var vm: ProxyVm? {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}

final class ProxyTests: XCTestCase {
    override class func tearDown() {
        try? FileManager.default.removeItem(at: proxyModuleCache)
        super.tearDown()
    }

    /// A VM with id "test" running testkit with `services`, and one plugin in `mode`.
    private func start(_ host: ProxyHost, _ mode: String, _ services: ProxyServices = ProxyServices(),
                       failOpen: Bool = false) throws -> (ProxyVm, ProxyPlugin) {
        let module = try host.loadModule(name: "testkit", wasm: proxyPlugin("testkit"))
        let vm = try host.startVm(module: module, id: "test", services: services)
        let plugin = try vm.addPlugin(name: mode, rootId: mode, configuration: mode, failOpen: failOpen)
        return (vm, plugin)
    }

    private func messages(_ vm: ProxyVm) -> [String] {
        vm.takeLogs().map(\.message)
    }

    /// The error `body` throws, or a failure when it throws none.
    private func thrownError<T>(_ body: () throws -> T, file: StaticString = #filePath, line: UInt = #line)
        -> (any Error)? {
        do {
            let value = try body()
            XCTFail("expected an error, got \(value)", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    // MARK: Filters

    func testHeaderFilterAddsReplacesAndRemovesHeadersAndLogsAtFinish() throws {
        let host = try proxyHost()
        let (vm, plugin) = try start(host, "headers")
        XCTAssertEqual(try host.loadModule(name: "testkit", wasm: proxyPlugin("testkit")).abiVersion(), "0.2.1")
        let http = try plugin.httpContext()
        let action = try http.onRequestHeaders(
            request("/items?id=7", ["x-replace": "old", "x-remove": "gone"]), endOfStream: true)
        XCTAssertEqual(action, .continue)
        let out = try http.requestHeaders()
        XCTAssertEqual(out["x-added"], "yes")
        XCTAssertEqual(out["X-Replace"], "replaced", "names match without regard to case")
        XCTAssertNil(out["x-remove"])
        XCTAssertEqual(out["x-count"], "6", "the plugin saw all six headers")
        XCTAssertEqual(out["x-path"], "/items?id=7")
        XCTAssertEqual(out.values(named: "x-replace"), ["replaced"])
        XCTAssertEqual(out.pairs.prefix(2).map { $0.name }, [":method", ":path"], "order is kept")

        XCTAssertEqual(try http.onResponseHeaders([":status": "200"], endOfStream: true), .continue)
        XCTAssertEqual(try http.responseHeaders()["x-response-added"], "yes")
        XCTAssertTrue(try http.finish())
        XCTAssertTrue(messages(vm).contains("log: /items?id=7 200"))
        XCTAssertEqual(host.metric(name: "requests_total")?.value, 1)

        // A finished context takes no more calls.
        let error = thrownError { try http.requestHeaders() }
        guard case let BcvError.ContextFinished(message)? = error else {
            return XCTFail("expected ContextFinished, got \(String(describing: error))")
        }
        XCTAssertTrue(message.contains("has finished"), message)
    }

    func testBodyFilterBuffersRewritesAndAddsTrailers() async throws {
        let host = try proxyHost()
        let (_, plugin) = try start(host, "body")
        let http = try plugin.httpContext()
        XCTAssertEqual(try http.onRequestHeaders(request("/upload"), endOfStream: false), .continue)
        XCTAssertEqual(try http.onRequestBody(Data("hello ".utf8), endOfStream: false), .pause)
        XCTAssertEqual(try http.onRequestBody(Data("world".utf8), endOfStream: true), .continue)
        XCTAssertEqual(try http.takeRequestBody(), Data("HELLO WORLD".utf8))
        XCTAssertEqual(try http.onResponseHeaders([":status": "200"], endOfStream: false), .continue)
        XCTAssertEqual(try http.onResponseBody(Data("part1".utf8), endOfStream: false), .continue)
        XCTAssertEqual(try http.takeResponseBody(), Data("part1".utf8))
        XCTAssertEqual(try http.onResponseBody(Data("part2".utf8), endOfStream: true), .continue)
        XCTAssertEqual(String(decoding: try http.takeResponseBody(), as: UTF8.self), "part2\n-- filtered")

        // Trailers: the plugin adds one.
        let withTrailers = try plugin.httpContext()
        _ = try withTrailers.onRequestHeaders(request("/t"), endOfStream: false)
        XCTAssertEqual(try withTrailers.onRequestBody(Data("abc".utf8), endOfStream: false), .pause)
        XCTAssertEqual(try withTrailers.onRequestTrailers(["x-sum": "1"]), .continue)
        let trailers = try withTrailers.requestTrailers()
        XCTAssertEqual(trailers["x-body-length"], "3")
        XCTAssertEqual(trailers["x-sum"], "1")

        // A body stream piped through the plugin.
        let streamed = try plugin.httpContext()
        _ = try streamed.onRequestHeaders(request("/stream"), endOfStream: false)
        let ends = try pipe(capacity: 16)
        let output = try streamed.filterRequestBody(ends.reader, pauseTimeout: .seconds(5))
        for part in ["streamed ", "body ", "data"] {
            try await ends.writer.write(data: Data(part.utf8))
        }
        try ends.writer.finish()
        let filtered = try await output.readAll()
        XCTAssertEqual(String(decoding: filtered, as: UTF8.self), "STREAMED BODY DATA")
    }

    func testTcpFilterRewritesBothDirectionsAndCloses() throws {
        let host = try proxyHost()
        let (vm, plugin) = try start(host, "tcp")
        let tcp = try plugin.tcpContext()
        XCTAssertEqual(try tcp.onNewConnection(), .continue)
        XCTAssertEqual(try tcp.onDownstreamData(Data("hello".utf8)), .continue)
        XCTAssertEqual(try tcp.takeDownstreamData(), Data("HELLO".utf8))
        XCTAssertEqual(try tcp.onUpstreamData(Data("reply".utf8)), .continue)
        XCTAssertEqual(try tcp.takeUpstreamData(), Data("[up]reply".utf8))
        XCTAssertEqual(host.metric(name: "tcp_bytes")?.value, 5)
        try tcp.onDownstreamClose(.remote)
        XCTAssertTrue(try tcp.finish())
        let logs = messages(vm)
        XCTAssertTrue(logs.contains("downstream closed 2"), "\(logs)")
        XCTAssertTrue(logs.contains("tcp log"), "\(logs)")

        let blocked = try plugin.tcpContext()
        XCTAssertEqual(try blocked.onNewConnection(), .continue)
        XCTAssertEqual(try blocked.onDownstreamData(Data("please BLOCK me".utf8)), .close)
    }

    // MARK: Callouts

    func testHttpCalloutAnsweredLaterResumesThePausedRequest() async throws {
        let host = try proxyHost()
        let seen = Locked<[ProxyHttpCallout]>([])
        let services = ProxyServices(httpCall: { callout, reply in
            guard callout.upstream == "auth" else { throw ProxyServiceError.UnknownUpstream }
            seen.withValue { $0.append(callout) }
            let token = callout.headers["x-token"] ?? ""
            // Answered later, from a Task, after the request has paused.
            Task {
                try await Task.sleep(for: .milliseconds(50))
                try reply.respond(status: 200, headers: ["x-upstream": "1"], body: "user-of-\(token)")
            }
        })
        let (_, plugin) = try start(host, "callout", services)
        let http = try plugin.httpContext()
        XCTAssertEqual(try http.onRequestHeaders(request("/private", ["authorization": "t0k3n"]), endOfStream: true),
                       .pause)
        let action = try await http.wait(.httpRequest, timeout: .seconds(5))
        XCTAssertEqual(action, .continue)
        XCTAssertEqual(try http.requestHeaders()["x-auth-body"], "user-of-t0k3n")
        let callout = try XCTUnwrap(seen.current.first)
        XCTAssertEqual(callout.headers[":path"], "/check")
        XCTAssertEqual(callout.headers[":authority"], "auth.local")
        XCTAssertEqual(callout.timeoutMs, 1000)
        XCTAssertEqual(callout.plugin, "callout")

        // Answered at once, from inside the callback itself: no deadlock, the request resumes.
        let inline = ProxyServices(httpCall: { _, reply in
            try reply.respond(status: 200, body: "inline")
        })
        let (_, plugin2) = try start(host, "callout", inline)
        let http2 = try plugin2.httpContext()
        XCTAssertEqual(try http2.onRequestHeaders(request("/x"), endOfStream: true), .pause)
        XCTAssertEqual(try http2.waitBlocking(.httpRequest, timeout: .seconds(5)), .continue)
        XCTAssertEqual(try http2.requestHeaders()["x-auth-body"], "inline")

        // A refusal from the upstream becomes the plugin's local 403.
        let refusing = ProxyServices(httpCall: { _, reply in
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(20)) {
                try? reply.respond(status: 401)
            }
        })
        let (_, plugin3) = try start(host, "callout", refusing)
        let http3 = try plugin3.httpContext()
        XCTAssertEqual(try http3.onRequestHeaders(request("/x"), endOfStream: true), .pause)
        let refused = try await http3.wait(timeout: .seconds(5))
        XCTAssertEqual(refused.response?.status, 403)
        XCTAssertEqual(refused.response?.bodyText, "forbidden")
        XCTAssertEqual(try http3.localResponse()?.status, 403)
    }

    func testFailedCalloutsReachThePlugin() async throws {
        let host = try proxyHost()
        // Failed explicitly, later: the plugin answers 503 "callout failed".
        let failing = ProxyServices(httpCall: { _, reply in
            Task { try reply.fail() }
        })
        let (_, plugin) = try start(host, "callout", failing)
        let http = try plugin.httpContext()
        XCTAssertEqual(try http.onRequestHeaders(request("/"), endOfStream: true), .pause)
        let failed = try await http.wait(timeout: .seconds(5))
        XCTAssertEqual(failed.response?.status, 503)
        XCTAssertEqual(failed.response?.bodyText, "callout failed")

        // Released unanswered: the same.
        let dropping = ProxyServices(httpCall: { _, _ in })
        let (_, plugin2) = try start(host, "callout", dropping)
        let http2 = try plugin2.httpContext()
        XCTAssertEqual(try http2.onRequestHeaders(request("/"), endOfStream: true), .pause)
        let dropped = try await http2.wait(timeout: .seconds(5))
        XCTAssertEqual(dropped.response?.bodyText, "callout failed")

        // Refused at dispatch (unknown upstream, or no HTTP service at all): the plugin replies 500 at once.
        let unknown = ProxyServices(httpCall: { _, _ in throw ProxyServiceError.UnknownUpstream })
        for services in [unknown, ProxyServices()] {
            let (_, plugin3) = try start(host, "callout", services)
            let action = try plugin3.httpContext().onRequestHeaders(request("/"), endOfStream: true)
            XCTAssertEqual(action.response?.status, 500)
            XCTAssertEqual(action.response?.bodyText, "dispatch failed")
        }

        // A reply answers once; a second answer is refused.
        let replies = Locked<[ProxyCalloutReply]>([])
        let parking = ProxyServices(httpCall: { _, reply in replies.withValue { $0.append(reply) } })
        let (_, plugin4) = try start(host, "callout", parking)
        let http4 = try plugin4.httpContext()
        XCTAssertEqual(try http4.onRequestHeaders(request("/"), endOfStream: true), .pause)
        // Still paused: the wait times out (nothing is lost) or is cancelled.
        let timeoutError = thrownError { try http4.waitBlocking(timeout: .milliseconds(100)) }
        guard case BcvError.Timeout? = timeoutError else {
            return XCTFail("expected Timeout, got \(String(describing: timeoutError))")
        }
        let waiting = Task { try await http4.wait(timeout: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        do {
            let action = try await waiting.value
            XCTFail("expected CancellationError, got \(action)")
        } catch is CancellationError {}
        let reply = try XCTUnwrap(replies.current.first)
        XCTAssertTrue(reply.isPending())
        XCTAssertFalse(reply.isGrpc())
        try reply.respond(status: 200, body: "late but in time")
        XCTAssertFalse(reply.isPending())
        let again = thrownError { try reply.respond(status: 200) }
        guard case BcvError.AlreadyTaken? = again else {
            return XCTFail("expected AlreadyTaken, got \(String(describing: again))")
        }
        let resumed = try await http4.wait(timeout: .seconds(5))
        XCTAssertEqual(resumed, .continue)
        XCTAssertEqual(try http4.requestHeaders()["x-auth-body"], "late but in time")
    }

    func testGrpcCalloutDeliversItsMessageOrItsStatus() async throws {
        let host = try proxyHost()
        let services = ProxyServices(grpcCall: { call, reply in
            guard call.service == "svc.Echo", call.method == "Say", call.initialMetadata["x-md"] == "1" else {
                throw ProxyServiceError.Failed(message: "unexpected call \(call)")
            }
            let status: UInt32 = call.message == Data("/fail".utf8) ? 7 : 0
            try reply.respondGrpc(status: status, message: Data("echo:".utf8) + call.message)
        })
        let (_, plugin) = try start(host, "grpc", services)
        let http = try plugin.httpContext()
        XCTAssertEqual(try http.onRequestHeaders(request("/hi"), endOfStream: true), .pause)
        let ok = try await http.wait(timeout: .seconds(5))
        XCTAssertEqual(ok, .continue)
        XCTAssertEqual(try http.requestHeaders()["x-grpc-reply"], "echo:/hi")
        let failing = try plugin.httpContext()
        XCTAssertEqual(try failing.onRequestHeaders(request("/fail"), endOfStream: true), .pause)
        let failed = try await failing.wait(timeout: .seconds(5))
        XCTAssertEqual(failed.response?.status, 502)
        XCTAssertEqual(failed.response?.bodyText, "grpc status 7")
    }

    // MARK: Properties, foreign functions, metrics

    func testPropertiesComeFromTheVmTheContextAndTheCallback() throws {
        let host = try proxyHost()
        let asked = Locked<[ProxyPropertyRequest]>([])
        let services = ProxyServices(property: { request in
            asked.withValue { $0.append(request) }
            return request.dottedPath == "source.address" ? Data("10.0.0.1:5555".utf8) : nil
        })
        let (_, plugin) = try start(host, "properties", services)
        let http = try plugin.httpContext()
        XCTAssertEqual(try http.onRequestHeaders(request("/p?q=1"), endOfStream: true), .continue)
        let out = try http.requestHeaders()
        XCTAssertEqual(out["x-prop-path"], "/p?q=1")
        XCTAssertEqual(out["x-plugin-name"], "properties")
        XCTAssertEqual(out["x-prop-seen"], "yes")
        XCTAssertEqual(out["x-prop-missing"], "none")
        XCTAssertTrue(asked.current.contains { $0.path == ["missing"] && $0.plugin == "properties" },
                      "the callback was asked for what the VM does not know: \(asked.current)")
        XCTAssertEqual(try http.property("bcv.seen"), Data("yes".utf8))
        XCTAssertEqual(try http.property("request.url_path"), Data("/p".utf8))
        XCTAssertEqual(try http.property("source.address"), Data("10.0.0.1:5555".utf8))
        XCTAssertNil(try http.property("nothing.here"))
        try http.setProperty("bcv.embedder", Data("set".utf8))
        XCTAssertEqual(try http.property("bcv.embedder"), Data("set".utf8))
    }

    func testForeignFunctionsBothWays() throws {
        let host = try proxyHost()
        let reverse = ProxyServices(foreignFunctions: ["reverse": { Data($0.reversed()) }])
        let (_, plugin) = try start(host, "foreign", reverse)
        let http = try plugin.httpContext()
        _ = try http.onRequestHeaders(request("/abc"), endOfStream: true)
        XCTAssertEqual(try http.requestHeaders()["x-foreign"], "cba/")

        // Not registered: NOT_FOUND; a throwing function: INTERNAL_FAILURE, logged by the VM.
        struct Nope: Error {}
        let cases: [(ProxyServices, String)] = [
            (ProxyServices(), "not-found"),
            (ProxyServices(foreignFunctions: ["reverse": { _ in throw ProxyServiceError.NotFound }]), "not-found"),
            (ProxyServices(foreignFunctions: ["reverse": { _ in throw Nope() }]), "error"),
        ]
        for (services, expected) in cases {
            let (vm2, plugin2) = try start(host, "foreign", services)
            let http2 = try plugin2.httpContext()
            _ = try http2.onRequestHeaders(request("/abc"), endOfStream: true)
            XCTAssertEqual(try http2.requestHeaders()["x-foreign"], expected)
            if expected == "error" {
                let logs = messages(vm2)
                XCTAssertTrue(logs.contains { $0.contains("foreign function reverse failed") && $0.contains("Nope") },
                              "\(logs)")
            }
        }

        // The application calls into the plugin's proxy_on_foreign_function.
        let (vm3, plugin3) = try start(host, "headers")
        try plugin3.callForeignFunction(7, arguments: Data("args!".utf8))
        XCTAssertTrue(messages(vm3).contains("foreign_function: 7 5"))
    }

    func testMetricsAndSharedData() throws {
        let host = try proxyHost()
        let (_, plugin) = try start(host, "metrics")
        for (i, path) in ["/a", "/bbbb", "/cc"].enumerated() {
            let http = try plugin.httpContext()
            _ = try http.onRequestHeaders(request(path), endOfStream: true)
            XCTAssertEqual(try http.requestHeaders()["x-counter-value"], "\(i + 1)")
        }
        let counter = try XCTUnwrap(host.metric(name: "m_counter"))
        XCTAssertEqual(counter.kind, .counter)
        XCTAssertEqual(counter.value, 3)
        let gauge = try XCTUnwrap(host.metric(name: "m_gauge"))
        XCTAssertEqual(gauge.kind, .gauge)
        XCTAssertEqual(gauge.value, 4)
        let histogram = try XCTUnwrap(host.metric(name: "m_hist"))
        XCTAssertEqual(histogram.kind, .histogram)
        XCTAssertEqual([histogram.value, histogram.sum, histogram.min, histogram.max], [3, 10, 2, 5])
        XCTAssertEqual(host.metrics().map(\.name), ["m_counter", "m_gauge", "m_hist"])
        XCTAssertNil(host.metric(name: "absent"))

        // Shared data, as the plugin (mode cas) and the application see it.
        let (_, cas) = try start(host, "cas")
        let http = try cas.httpContext()
        _ = try http.onRequestHeaders(request("/1"), endOfStream: true)
        XCTAssertEqual(try http.requestHeaders()["x-counter"], "1")
        let stored = try XCTUnwrap(host.sharedData(vmId: "test", key: "counter"))
        XCTAssertEqual(stored.text, "1")
        let token = try host.setSharedData(vmId: "test", key: "counter", value: Data("41".utf8), cas: stored.cas)
        let stale = thrownError { try host.setSharedData(vmId: "test", key: "counter", value: Data("0".utf8),
                                                         cas: stored.cas) }
        guard case BcvError.Conflict? = stale else {
            return XCTFail("expected Conflict, got \(String(describing: stale))")
        }
        XCTAssertEqual(host.sharedData(vmId: "test", key: "counter")?.cas, token)
        let next = try cas.httpContext()
        _ = try next.onRequestHeaders(request("/2"), endOfStream: true)
        XCTAssertEqual(try next.requestHeaders()["x-counter"], "42")
        XCTAssertEqual(host.sharedDataKeys(vmId: "test"), [Data("counter".utf8)])
        XCTAssertTrue(host.removeSharedData(vmId: "test", key: Data("counter".utf8)))
        XCTAssertNil(host.sharedData(vmId: "test", key: "counter"))
    }

    // MARK: Failures and errors

    func testPanickingPluginFailsClosedAndTheHostKeepsWorking() throws {
        let host = try proxyHost()
        let (vm, plugin) = try start(host, "panic")
        let http = try plugin.httpContext()
        let action = try http.onRequestHeaders(request("/"), endOfStream: true)
        let response = try XCTUnwrap(action.response, "fail-closed answers locally, got \(action)")
        XCTAssertEqual(response.status, 503)
        XCTAssertTrue(response.details.contains("plugin panic failed"), response.details)
        let failure = try XCTUnwrap(vm.failure)
        XCTAssertEqual(failure.kind, .trap)
        XCTAssertTrue(failure.message.contains("unreachable"), failure.message)
        XCTAssertEqual(plugin.failure, failure)
        let logs = vm.takeLogs()
        XCTAssertTrue(logs.contains { $0.message.contains("testkit panic on purpose") }, "\(logs)")
        XCTAssertTrue(logs.contains { $0.level == .critical && $0.message.contains("vm failed") }, "\(logs)")

        // The failed VM runs no more guest code: new requests get the 503, new plugins are refused.
        let later = try plugin.httpContext()
        XCTAssertEqual(try later.onRequestHeaders(request("/later"), endOfStream: true).response?.status, 503)
        let refused = thrownError { try vm.addPlugin(name: "more", configuration: "headers") }
        guard case let BcvError.VmFailed(message)? = refused else {
            return XCTFail("expected VmFailed, got \(String(describing: refused))")
        }
        XCTAssertTrue(message.contains("unreachable"), message)

        // Other VMs of the host are unaffected; a fail-open plugin lets the request through.
        let (healthyVm, healthy) = try start(host, "headers")
        XCTAssertEqual(try healthy.httpContext().onRequestHeaders(request("/"), endOfStream: true), .continue)
        XCTAssertNil(healthyVm.failure)
        let (openVm, open) = try start(host, "panic", failOpen: true)
        XCTAssertEqual(try open.httpContext().onRequestHeaders(request("/"), endOfStream: true), .continue)
        XCTAssertEqual(openVm.failure?.kind, .trap)
    }

    func testFailedVmComesBackOnNextUseWithinItsRestartLimit() throws {
        let host = try proxyHost()
        let module = try host.loadModule(name: "testkit", wasm: proxyPlugin("testkit"))
        let vm = try host.startVm(module: module, id: "restarting",
                                  restart: ProxyRestartPolicy(maxRestarts: 1, backoff: .zero))
        let good = try vm.addPlugin(name: "headers", rootId: "headers", configuration: "headers")
        let bad = try vm.addPlugin(name: "panic", rootId: "panic", configuration: "panic")
        XCTAssertEqual(try bad.httpContext().onRequestHeaders(request("/boom"), endOfStream: true).response?.status, 503)
        XCTAssertEqual(vm.failure?.kind, .trap)
        XCTAssertEqual(vm.restarts(), 0)
        // The next use re-creates the VM with both plugins configured again.
        let fresh = try good.httpContext()
        XCTAssertEqual(vm.restarts(), 1)
        XCTAssertNil(vm.failure)
        XCTAssertEqual(try fresh.onRequestHeaders(request("/fine"), endOfStream: true), .continue)
        XCTAssertEqual(try fresh.requestHeaders()["x-added"], "yes")
        XCTAssertTrue(vm.takeLogs().contains { $0.message.hasPrefix("vm restarted (restart 1) after: trap") })
        // Past the limit the VM stays failed: every plugin follows its policy.
        _ = try bad.httpContext().onRequestHeaders(request("/boom"), endOfStream: true)
        XCTAssertEqual(try good.httpContext().onRequestHeaders(request("/blocked"), endOfStream: true).response?.status, 503)
        XCTAssertEqual(vm.restarts(), 1)
        XCTAssertEqual(vm.failure?.kind, .trap)
    }

    func testCpuDeadlineStopsAnEndlessLoop() throws {
        let host = try proxyHost(memoryLimit: 16 << 20, callbackDeadline: .milliseconds(200))
        let (vm, plugin) = try start(host, "loop")
        let started = ContinuousClock.now
        let action = try plugin.httpContext().onRequestHeaders(request("/"), endOfStream: true)
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(10))
        XCTAssertEqual(action.response?.status, 503)
        XCTAssertEqual(vm.failure?.kind, .cpuDeadline)
        XCTAssertEqual(vm.failure?.description, "a callback exceeded its CPU deadline")
    }

    func testInvalidModulesAndRejectedPluginsAreRefused() throws {
        let host = try proxyHost()
        let cases: [(String, Data, String)] = [
            ("garbage", Data("\0asm\u{1}\0\0\0garbage".utf8), "compilation failed"),
            ("no_marker", try proxyPlugin("no_marker"), "missing or unknown Proxy-Wasm ABI version"),
            ("no_alloc", try proxyPlugin("no_alloc"), "missing an allocator"),
        ]
        for (name, wasm, expected) in cases {
            let error = thrownError { try host.loadModule(name: name, wasm: wasm) }
            guard case let BcvError.InvalidModule(message)? = error else {
                XCTFail("\(name): expected InvalidModule, got \(String(describing: error))")
                continue
            }
            XCTAssertTrue(message.contains(name) && message.contains(expected), message)
        }

        // A plugin whose configure fails is refused by its canary; the VM keeps working.
        let module = try host.loadModule(name: "testkit", wasm: proxyPlugin("testkit"))
        let vm = try host.startVm(module: module)
        let rejected = thrownError { try vm.addPlugin(name: "bad", configuration: "fail-configure") }
        guard case let BcvError.PluginRejected(plugin, message)? = rejected else {
            return XCTFail("expected PluginRejected, got \(String(describing: rejected))")
        }
        XCTAssertEqual(plugin, "bad")
        XCTAssertTrue(message.contains("on_configure returned false"), message)
        XCTAssertNil(vm.failure)
        let good = try vm.addPlugin(name: "good", configuration: "headers")
        XCTAssertEqual(try good.httpContext().onRequestHeaders(request("/"), endOfStream: true), .continue)

        // A VM whose on_vm_start refuses rejects its plugin.
        let refusing = try host.startVm(module: module, configuration: "fail-vm-start")
        let refused = thrownError { try refusing.addPlugin(name: "p", configuration: "headers") }
        guard case let BcvError.PluginRejected(_, refusal)? = refused else {
            return XCTFail("expected PluginRejected, got \(String(describing: refused))")
        }
        XCTAssertTrue(refusal.contains("on_vm_start returned false"), refusal)
    }

    func testServicesMayInspectTheirVmButNotReenterIt() throws {
        try {
            let host = try proxyHost()
            let slot = Locked<ProxyHttpContext?>(nil)
            let weakVm = WeakVm()
            let inspected = Locked<[String]>([])
            let services = ProxyServices(
                foreignFunctions: ["reverse": { _ in
                    // Calling into the VM that is running this callback is refused, not deadlocked.
                    guard let http = slot.current else { return Data("no context".utf8) }
                    do {
                        _ = try http.requestHeaders()
                        return Data("allowed?!".utf8)
                    } catch BcvError.Reentrant {
                        return Data("refused".utf8)
                    }
                }],
                log: { record in
                    // The failure and the kept logs are readable from a callback; the VM itself is busy.
                    guard let vm = weakVm.vm else { return }
                    let busy: Bool
                    do {
                        _ = try vm.contextCount()
                        busy = false
                    } catch BcvError.Reentrant {
                        busy = true
                    } catch {
                        busy = false
                    }
                    let failed = vm.failure != nil
                    _ = vm.takeLogs()
                    inspected.withValue { $0.append("\(record.message)|busy=\(busy)|failed=\(failed)") }
                })
            let (vm, plugin) = try start(host, "foreign", services)
            weakVm.vm = vm
            let http = try plugin.httpContext()
            slot.withValue { $0 = http }
            _ = try http.onRequestHeaders(request("/"), endOfStream: true)
            XCTAssertEqual(try http.requestHeaders()["x-foreign"], "refused")
            slot.withValue { $0 = nil }
            XCTAssertTrue(try http.finish())

            // A second plugin of the same VM logs while it is configured and when its request ends.
            let headers = try vm.addPlugin(name: "headers", configuration: "headers")
            let logged = try headers.httpContext()
            _ = try logged.onRequestHeaders(request("/logged"), endOfStream: true)
            XCTAssertTrue(try logged.finish())
            let seen = inspected.current
            XCTAssertTrue(seen.contains("configure: headers|busy=true|failed=false"), "\(seen)")
            XCTAssertTrue(seen.contains("log: /logged -|busy=true|failed=false"), "\(seen)")
            XCTAssertTrue(seen.allSatisfy { $0.hasSuffix("|busy=true|failed=false") }, "\(seen)")
            XCTAssertEqual(try vm.contextCount(), 2, "only the two root contexts are left")
        }()
        // The services held their VM only weakly: everything is released.
        XCTAssertEqual(waitIdle(timeoutMs: 10_000), 0, "live nodes left: \(diagnostics())")
    }

    func testClosingTheHostClosesVmsPluginsAndContexts() throws {
        try {
            let host = try proxyHost()
            let (vm, plugin) = try start(host, "headers")
            let http = try plugin.httpContext()
            XCTAssertEqual(try http.onRequestHeaders(request("/"), endOfStream: false), .continue)
            host.close()
            try vm.closeAndWaitBlocking(timeoutMs: 10_000)
            for handle in [host, vm, plugin, http] as [any BcvHandle] {
                XCTAssertTrue(handle.isClosed, "\(handle) is still open")
            }
            let error = thrownError { try http.onResponseHeaders([":status": "200"], endOfStream: true) }
            XCTAssertNotNil((error as? BcvError)?.closedReason, "expected Closed, got \(String(describing: error))")
            XCTAssertNotNil((thrownError { try plugin.httpContext() } as? BcvError)?.closedReason)
        }()
        XCTAssertEqual(waitIdle(timeoutMs: 10_000), 0, "live nodes left: \(diagnostics())")
    }
}
