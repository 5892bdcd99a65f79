// The Proxy-Wasm host from Swift: an authorization filter written as a proxy-wasm plugin checks each request
// with an HTTP callout, which the application answers later from a Task (as a real HTTP client would); a
// second plugin in the same VM rewrites headers and counts requests in a metric.
//
// The plugin is `testkit` from tests/proxy-plugins (its configuration picks the behaviour: "callout",
// "headers"). Pass the directory holding testkit.wasm as the first argument or in BCV_PROXY_PLUGINS.

import BCV
import Foundation

/// Stops the example with a message when something is not as expected.
func expect(_ condition: Bool, _ what: String) {
    if !condition {
        FileHandle.standardError.write(Data("unexpected: \(what)\n".utf8))
        exit(1)
    }
}

func run(pluginDirectory: String) async throws {
    let host = try ProxyHost(memoryLimit: 32 << 20, callbackDeadline: .milliseconds(500))
    defer { host.close() }
    let module = try host.loadModule(
        name: "testkit", contentsOf: URL(fileURLWithPath: pluginDirectory).appendingPathComponent("testkit.wasm"))
    print("loaded \(module.name()) (Proxy-Wasm ABI \(module.abiVersion()))")

    // What the application offers the plugins: an "auth" upstream, and a log sink.
    let users = ["t0k3n": "alice"]
    let services = ProxyServices(
        httpCall: { callout, reply in
            guard callout.upstream == "auth" else { throw ProxyServiceError.UnknownUpstream }
            let token = callout.headers["x-token"] ?? ""
            Task {
                try await Task.sleep(for: .milliseconds(10))  // the round trip to the auth service
                if let user = users[token] {
                    try reply.respond(status: 200, body: user)
                } else {
                    try reply.respond(status: 401)
                }
            }
        },
        log: { record in
            if record.level >= .info { print("  plugin \(record.plugin): \(record.message)") }
        })
    let vm = try host.startVm(module: module, id: "gateway", services: services)
    let auth = try vm.addPlugin(name: "auth", configuration: "callout")
    let rewrite = try vm.addPlugin(name: "rewrite", configuration: "headers")

    for token in ["t0k3n", "wrong"] {
        let http = try auth.httpContext()
        var action = try http.onRequestHeaders(
            [":method": "GET", ":path": "/private", ":authority": "example.test", "authorization": token],
            endOfStream: true)
        if action == .pause {
            // The plugin waits for its callout: so does this request (without blocking a thread).
            action = try await http.wait(.httpRequest, timeout: .seconds(5))
        }
        switch action {
        case .continue:
            let user = try http.requestHeaders()["x-auth-body"] ?? "?"
            print("token \(token): forwarded upstream for user \(user)")
            expect(user == "alice", "user \(user)")
        case let .localResponse(response):
            print("token \(token): answered locally with \(response.status) \(response.bodyText)")
            expect(response.status == 403, "status \(response.status)")
        case .pause, .close:
            expect(false, "action \(action) for token \(token)")
        }
        _ = try http.finish()
    }

    // The second plugin edits headers on the way up and down.
    let http = try rewrite.httpContext()
    _ = try http.onRequestHeaders(
        [":method": "GET", ":path": "/items", ":authority": "example.test", "x-remove": "secret"], endOfStream: true)
    let sent = try http.requestHeaders()
    print("upstream gets: \(sent.pairs.map { "\($0.name): \($0.value)" }.joined(separator: ", "))")
    expect(sent["x-remove"] == nil && sent["x-added"] == "yes", "rewritten headers \(sent)")
    _ = try http.onResponseHeaders([":status": "200"], endOfStream: true)
    _ = try http.finish()

    for metric in host.metrics() {
        print("metric \(metric.name) (\(metric.kind)) = \(metric.value)")
    }
    expect(host.metric(name: "requests_total")?.value == 1, "requests_total")
    expect(vm.failure == nil, "the VM failed: \(String(describing: vm.failure))")
}

guard let directory = CommandLine.arguments.dropFirst().first ?? ProcessInfo.processInfo.environment["BCV_PROXY_PLUGINS"]
else {
    FileHandle.standardError.write(Data("usage: proxy <directory holding testkit.wasm>\n".utf8))
    exit(2)
}
do {
    try await run(pluginDirectory: directory)
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(1)
}
