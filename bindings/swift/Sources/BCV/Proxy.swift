// The Proxy-Wasm host from Swift: load a proxy-wasm plugin module, start VMs, add plugins, and filter HTTP
// requests and TCP connections through them. The host itself is the Rust core (`bcv_core::proxy`, on
// wasmtime); this file adds Swift conveniences over the generated types:
//
// * headers as ordered `(name, value)` pairs, written as dictionary literals (`[":path": "/", "a": "1"]`,
//   order and duplicates kept) and read back as `[ProxyHeader]` with `headers["name"]` lookups;
// * `ProxyServices`, a struct of closures (HTTP and gRPC callouts, properties, foreign functions, logs);
// * `Duration` timeouts, a cancellable `async` wait for a paused stream, `String`/`Data` overloads.
//
// Threading: every call that feeds a context runs the plugin synchronously on the calling thread (bounded
// by the host's callback deadline). Service closures run on that same thread while the VM is busy: they
// must not call into the same VM (that throws `BcvError.Reentrant` instead of deadlocking) and should
// return quickly; a callout's `ProxyCalloutReply` may be answered then or later from any thread or Task.
//
// Ownership: the host, VMs, plugins and contexts are bcv handles (`BcvHandle`): releasing them in any order
// is safe, `close()` ends them and everything under them. A VM keeps its services until it is gone, so a
// service closure must not capture its own VM (or anything holding it) strongly: capture it weakly.

import BcvUniffi
import Foundation

extension ProxyHost: BcvHandle {}
extension ProxyVm: BcvHandle {}
extension ProxyPlugin: BcvHandle {}
extension ProxyHttpContext: BcvHandle {}
extension ProxyTcpContext: BcvHandle {}

// MARK: - Headers

/// ASCII case-insensitive equality, as HTTP matches header names.
func asciiCaseInsensitiveEqual(_ a: String, _ b: String) -> Bool {
    let (x, y) = (a.utf8, b.utf8)
    guard x.count == y.count else { return false }
    return zip(x, y).allSatisfy { p, q in
        let lower = { (c: UInt8) -> UInt8 in (c >= 65 && c <= 90) ? c + 32 : c }
        return lower(p) == lower(q)
    }
}

extension ProxyHeader {
    /// A header `name: value`.
    public init(_ name: String, _ value: String) {
        self.init(name: name, value: value)
    }
}

extension Array where Element == ProxyHeader {
    /// Headers from `(name, value)` pairs, in order, duplicates kept: `[ProxyHeader]([":path": "/"])`.
    public init(_ pairs: KeyValuePairs<String, String>) {
        self = pairs.map { ProxyHeader(name: $0.key, value: $0.value) }
    }

    /// The first value of header `name` (ASCII case-insensitive), or `nil`.
    public subscript(name: String) -> String? {
        first { asciiCaseInsensitiveEqual($0.name, name) }?.value
    }

    /// Every value of header `name` (ASCII case-insensitive), in order.
    public func values(named name: String) -> [String] {
        filter { asciiCaseInsensitiveEqual($0.name, name) }.map(\.value)
    }

    /// The headers as `(name, value)` tuples, in order.
    public var pairs: [(name: String, value: String)] {
        map { ($0.name, $0.value) }
    }
}

// MARK: - Plain data

extension ProxyAction {
    /// The local response of `.localResponse`, else `nil`.
    public var response: ProxyLocalResponse? {
        if case let .localResponse(response) = self { return response }
        return nil
    }
}

extension ProxyLocalResponse {
    /// The body as UTF-8 text (invalid bytes replaced).
    public var bodyText: String {
        String(decoding: body, as: UTF8.self)
    }
}

extension ProxyLogLevel: Comparable {
    private var rank: Int {
        switch self {
        case .trace: 0
        case .debug: 1
        case .info: 2
        case .warn: 3
        case .error: 4
        case .critical: 5
        }
    }

    /// Levels order from the most verbose (`.trace`) to the most severe (`.critical`).
    public static func < (lhs: ProxyLogLevel, rhs: ProxyLogLevel) -> Bool {
        lhs.rank < rhs.rank
    }
}

extension ProxyFailure: CustomStringConvertible {
    /// The whole reason, e.g. "trap: … unreachable …".
    public var description: String { message }
}

extension ProxyPropertyRequest {
    /// The path with its segments joined by dots (`"source.address"`).
    public var dottedPath: String { path.joined(separator: ".") }
}

extension ProxySharedValue {
    /// The value as UTF-8 text (invalid bytes replaced).
    public var text: String { String(decoding: value, as: UTF8.self) }
}

// MARK: - Services

/// What a VM needs from the application, as closures; every one is optional. Without `httpCall` /
/// `grpcCall` callouts are refused, without `property` unknown properties are absent, and a foreign function
/// the plugin calls that is not in `foreignFunctions` is NOT_FOUND.
///
/// Each closure runs synchronously on the thread running the plugin, while the VM is busy (see the top of
/// this file): do not call into the same VM from it, and capture the VM weakly if at all.
public struct ProxyServices: Sendable {
    /// Handles an HTTP callout: keep `reply` and answer it now or later, from any thread
    /// (`reply.respond(status:headers:body:trailers:)` or `reply.fail()`); releasing it unanswered fails the
    /// call. Throw `ProxyServiceError.UnknownUpstream` (the plugin sees BAD_ARGUMENT) or any other error
    /// (INTERNAL_FAILURE) to refuse the call.
    public var httpCall: (@Sendable (ProxyHttpCallout, ProxyCalloutReply) throws -> Void)?
    /// Handles a gRPC unary callout, as `httpCall`; answer with `reply.respondGrpc(status:message:…)`.
    public var grpcCall: (@Sendable (ProxyGrpcCallout, ProxyCalloutReply) throws -> Void)?
    /// Answers a property the VM cannot answer itself; `nil` is "absent". Also asked by a context's
    /// `property(_:)` on the calling thread; a call into the same VM from here throws `BcvError.Reentrant`.
    public var property: (@Sendable (ProxyPropertyRequest) -> Data?)?
    /// Functions the plugin calls by name (`proxy_call_foreign_function`): arguments in, result out. Throw
    /// `ProxyServiceError.NotFound` for NOT_FOUND; any other error is INTERNAL_FAILURE (its text is logged).
    public var foreignFunctions: [String: @Sendable (Data) throws -> Data]
    /// Receives every log record as it is written (the VM also keeps them for `takeLogs()`).
    public var log: (@Sendable (ProxyLogRecord) -> Void)?

    /// Services made of the given closures.
    public init(httpCall: (@Sendable (ProxyHttpCallout, ProxyCalloutReply) throws -> Void)? = nil,
                grpcCall: (@Sendable (ProxyGrpcCallout, ProxyCalloutReply) throws -> Void)? = nil,
                property: (@Sendable (ProxyPropertyRequest) -> Data?)? = nil,
                foreignFunctions: [String: @Sendable (Data) throws -> Data] = [:],
                log: (@Sendable (ProxyLogRecord) -> Void)? = nil) {
        self.httpCall = httpCall
        self.grpcCall = grpcCall
        self.property = property
        self.foreignFunctions = foreignFunctions
        self.log = log
    }

    /// True when no service is given.
    var isEmpty: Bool {
        httpCall == nil && grpcCall == nil && property == nil && foreignFunctions.isEmpty && log == nil
    }
}

extension ProxyServiceError {
    /// `error` as the service error Rust receives: a `ProxyServiceError` as is, anything else as `.Failed`
    /// with its description.
    init(thrownBy error: any Error) {
        if let serviceError = error as? ProxyServiceError {
            self = serviceError
        } else {
            self = .Failed(message: "\(type(of: error)): \(error)")
        }
    }
}

/// Adapts `ProxyServices` to the generated `ProxyServicesCallback`, converting every error thrown.
final class ProxyServicesAdapter: ProxyServicesCallback {
    private let services: ProxyServices

    init(_ services: ProxyServices) {
        self.services = services
    }

    func httpCall(callout: ProxyHttpCallout, reply: ProxyCalloutReply) throws {
        guard let handler = services.httpCall else { throw ProxyServiceError.UnknownUpstream }
        do {
            try handler(callout, reply)
        } catch {
            throw ProxyServiceError(thrownBy: error)
        }
    }

    func grpcCall(callout: ProxyGrpcCallout, reply: ProxyCalloutReply) throws {
        guard let handler = services.grpcCall else { throw ProxyServiceError.UnknownUpstream }
        do {
            try handler(callout, reply)
        } catch {
            throw ProxyServiceError(thrownBy: error)
        }
    }

    func property(request: ProxyPropertyRequest) -> Data? {
        services.property?(request)
    }

    func foreignFunction(name: String, arguments: Data) throws -> Data {
        guard let function = services.foreignFunctions[name] else { throw ProxyServiceError.NotFound }
        do {
            return try function(arguments)
        } catch {
            throw ProxyServiceError(thrownBy: error)
        }
    }

    func log(record: ProxyLogRecord) {
        services.log?(record)
    }
}

extension ProxyCalloutReply {
    /// Answers an HTTP callout with `status` (sent as `:status`), headers, body and trailers. Any thread.
    /// - Throws: `BcvError.AlreadyTaken` when the callout was already answered or refused.
    public func respond(status: Int, headers: KeyValuePairs<String, String> = [:], body: Data = Data(),
                        trailers: KeyValuePairs<String, String> = [:]) throws {
        try respond(status: UInt32(clamping: status), headers: [ProxyHeader](headers), body: body,
                    trailers: [ProxyHeader](trailers))
    }

    /// Answers an HTTP callout with a text body.
    /// - Throws: `BcvError.AlreadyTaken` when the callout was already answered or refused.
    public func respond(status: Int, headers: KeyValuePairs<String, String> = [:], body: String,
                        trailers: KeyValuePairs<String, String> = [:]) throws {
        try respond(status: status, headers: headers, body: Data(body.utf8), trailers: trailers)
    }
}

// MARK: - Host

/// How a failed VM comes back: on its next use (a new context or plugin, a foreign function call, a timer)
/// once `backoff` has passed since the failure, at most `maxRestarts` times within any `window`. It is a
/// fresh instance with `on_vm_start` and every open plugin configured again; contexts open at the failure
/// stay failed. Past the limit the VM stays failed, so a plugin that fails every request cannot crash-loop.
public struct ProxyRestartPolicy: Sendable, Equatable {
    public var maxRestarts: UInt32
    public var window: Duration
    public var backoff: Duration

    public init(maxRestarts: UInt32, window: Duration = .seconds(60), backoff: Duration = .seconds(1)) {
        self.maxRestarts = maxRestarts
        self.window = window
        self.backoff = backoff
    }
}

extension ProxyHost {
    /// A Proxy-Wasm host. `nil` settings take the defaults: `memoryLimit` 64 MiB per VM,
    /// `callbackDeadline` 1 s per callback, `pooling` true with `maxInstances` 128 VMs alive at once, no
    /// module cache (`moduleCacheDirectory` keeps compiled modules across hosts and runs).
    /// - Throws: `BcvError.InvalidArgument` for settings wasmtime refuses.
    public convenience init(memoryLimit: UInt64? = nil, callbackDeadline: Duration? = nil, pooling: Bool? = nil,
                            maxInstances: UInt32? = nil, moduleCacheDirectory: String? = nil) throws {
        try self.init(config: ProxyHostConfig(
            memoryLimit: memoryLimit, callbackDeadlineMs: callbackDeadline?.bcvMilliseconds, pooling: pooling,
            maxInstances: maxInstances, moduleCacheDir: moduleCacheDirectory))
    }

    /// Compiles and checks the plugin module in the file at `url`.
    /// - Throws: `BcvError.InvalidModule`; the file's read error.
    public func loadModule(name: String, contentsOf url: URL) throws -> ProxyModule {
        try loadModule(name: name, wasm: Data(contentsOf: url))
    }

    /// Starts a VM of `module`. VMs with the same `id` share shared data and queues; `configuration` is
    /// what `on_vm_start` reads; `environment` is all the guest sees of environment variables; `restart`
    /// brings a failed VM back on its next use, within its limits (default: a failed VM stays failed).
    /// - Throws: `BcvError.VmFailed` when the module cannot be instantiated or its start code fails.
    public func startVm(module: ProxyModule, id: String = "", configuration: Data = Data(),
                        environment: [String: String] = [:], services: ProxyServices = ProxyServices(),
                        restart: ProxyRestartPolicy? = nil) throws -> ProxyVm {
        let config = ProxyVmConfig(
            vmId: id, configuration: configuration, environment: environment,
            httpCalls: services.httpCall != nil, grpcCalls: services.grpcCall != nil,
            properties: services.property != nil, logs: services.log != nil,
            foreignFunctions: services.foreignFunctions.keys.sorted(),
            maxRestarts: restart?.maxRestarts ?? 0,
            restartWindowMs: restart?.window.bcvMilliseconds ?? 60_000,
            restartBackoffMs: restart?.backoff.bcvMilliseconds ?? 1_000)
        return try startVm(module: module, config: config,
                           services: services.isEmpty ? nil : ProxyServicesAdapter(services))
    }

    /// Starts a VM with a text VM configuration.
    public func startVm(module: ProxyModule, id: String = "", configuration: String,
                        environment: [String: String] = [:], services: ProxyServices = ProxyServices(),
                        restart: ProxyRestartPolicy? = nil) throws -> ProxyVm {
        try startVm(module: module, id: id, configuration: Data(configuration.utf8), environment: environment,
                    services: services, restart: restart)
    }

    /// Shared data `key` of VM id `vmId`, with its CAS token; `nil` when absent.
    public func sharedData(vmId: String, key: String) -> ProxySharedValue? {
        sharedData(vmId: vmId, key: Data(key.utf8))
    }

    /// Sets shared data as a plugin would (`cas` 0: unconditional); returns the new CAS token.
    /// - Throws: `BcvError.Conflict` when `cas` is stale.
    @discardableResult
    public func setSharedData(vmId: String, key: String, value: Data, cas: UInt32 = 0) throws -> UInt32 {
        try setSharedData(vmId: vmId, key: Data(key.utf8), value: value, cas: cas)
    }
}

// MARK: - VM and plugin

extension ProxyVm {
    /// Why the VM failed (a trap, its CPU deadline, its memory cap…), or `nil`. Never blocks on the VM.
    public var failure: ProxyFailure? { getFailure() }

    /// Adds a plugin (a root context) named `name` with its configuration (what `on_configure` reads).
    /// When the VM later fails, a `failOpen` plugin lets traffic through; otherwise HTTP gets a local 503
    /// and TCP is closed. `properties` (`"a.b"` → value) are readable by the plugin.
    /// - Throws: `BcvError.PluginRejected` when its canary or its configure fails or refuses;
    ///   `BcvError.VmFailed` when the VM has failed; `BcvError.Reentrant` from a service of this VM.
    public func addPlugin(name: String, rootId: String = "", configuration: Data = Data(), failOpen: Bool = false,
                          properties: [String: Data] = [:]) throws -> ProxyPlugin {
        try addPlugin(config: ProxyPluginConfig(name: name, rootId: rootId, configuration: configuration,
                                                failOpen: failOpen, properties: properties))
    }

    /// Adds a plugin with a text configuration.
    public func addPlugin(name: String, rootId: String = "", configuration: String, failOpen: Bool = false,
                          properties: [String: Data] = [:]) throws -> ProxyPlugin {
        try addPlugin(name: name, rootId: rootId, configuration: Data(configuration.utf8), failOpen: failOpen,
                      properties: properties)
    }

    /// Blocks until no tick, queue notification or callout response is being delivered or queued, at most
    /// `timeout`; false on timeout.
    @discardableResult
    public func waitIdle(timeout: Duration) -> Bool {
        waitIdle(timeoutMs: timeout.bcvMilliseconds)
    }
}

extension ProxyPlugin {
    /// The VM's failure, or `nil`. Never blocks on the VM.
    public var failure: ProxyFailure? { getFailure() }

    /// Calls the plugin's `proxy_on_foreign_function` with `functionId`; it reads `arguments`.
    /// - Throws: `BcvError.VmFailed` when the VM has failed or the callback trapped.
    public func callForeignFunction(_ functionId: UInt32, arguments: Data = Data()) throws {
        try callForeignFunction(functionId: functionId, arguments: arguments)
    }
}

// MARK: - Contexts

extension ProxyHttpContext {
    /// Feeds the request headers (with `:method`, `:path`, `:authority`); `endOfStream` when there is no
    /// body. Order and duplicates are kept: `try http.onRequestHeaders([":path": "/", "a": "1"], …)`.
    public func onRequestHeaders(_ headers: KeyValuePairs<String, String>, endOfStream: Bool) throws
        -> ProxyAction {
        try onRequestHeaders(headers: [ProxyHeader](headers), endOfStream: endOfStream)
    }

    /// Feeds the request headers.
    public func onRequestHeaders(_ headers: [ProxyHeader], endOfStream: Bool) throws -> ProxyAction {
        try onRequestHeaders(headers: headers, endOfStream: endOfStream)
    }

    /// Feeds a request body chunk; on `.continue` forward `takeRequestBody()`.
    public func onRequestBody(_ chunk: Data, endOfStream: Bool) throws -> ProxyAction {
        try onRequestBody(chunk: chunk, endOfStream: endOfStream)
    }

    /// Feeds the request trailers.
    public func onRequestTrailers(_ trailers: KeyValuePairs<String, String>) throws -> ProxyAction {
        try onRequestTrailers(trailers: [ProxyHeader](trailers))
    }

    /// Feeds the response headers (with `:status`).
    public func onResponseHeaders(_ headers: KeyValuePairs<String, String>, endOfStream: Bool) throws
        -> ProxyAction {
        try onResponseHeaders(headers: [ProxyHeader](headers), endOfStream: endOfStream)
    }

    /// Feeds the response headers.
    public func onResponseHeaders(_ headers: [ProxyHeader], endOfStream: Bool) throws -> ProxyAction {
        try onResponseHeaders(headers: headers, endOfStream: endOfStream)
    }

    /// Feeds a response body chunk; on `.continue` forward `takeResponseBody()`.
    public func onResponseBody(_ chunk: Data, endOfStream: Bool) throws -> ProxyAction {
        try onResponseBody(chunk: chunk, endOfStream: endOfStream)
    }

    /// Feeds the response trailers.
    public func onResponseTrailers(_ trailers: KeyValuePairs<String, String>) throws -> ProxyAction {
        try onResponseTrailers(trailers: [ProxyHeader](trailers))
    }

    /// Waits until the paused `stream` (`.httpRequest` or `.httpResponse`) continues, gets a local
    /// response or is closed, and returns that action; at once when it is not paused. Never blocks the
    /// calling thread. Cancelling the task throws `CancellationError` (the stream stays paused).
    /// - Throws: `BcvError.Timeout` after `timeout` (nothing is lost; wait again).
    public func wait(_ stream: ProxyStream = .httpRequest, timeout: Duration) async throws -> ProxyAction {
        let ms = timeout.bcvMilliseconds
        return try await withCancelToken { token in
            try await self.wait(stream: stream, timeoutMs: ms, cancel: token)
        }
    }

    /// Blocking form of `wait(_:timeout:)`, for threads outside Swift concurrency.
    /// - Throws: `BcvError.Timeout`; `BcvError.Reentrant` from a service of this VM.
    public func waitBlocking(_ stream: ProxyStream = .httpRequest, timeout: Duration) throws -> ProxyAction {
        try waitBlocking(stream: stream, timeoutMs: timeout.bcvMilliseconds)
    }

    /// A property as the plugin would read it (`"request.path"`, or one the plugin set); `nil` if absent.
    public func property(_ path: String) throws -> Data? {
        try property(path: path)
    }

    /// Sets a property of this context (`"source.address"`), visible to the plugin.
    public func setProperty(_ path: String, _ value: Data) throws {
        try setProperty(path: path, value: value)
    }

    /// Pipes a request body through the plugin: consumes `input`; the returned stream carries what the
    /// plugin lets through and ends cleanly only after the plugin continued the final chunk (a local
    /// response, a close, a fail-closed VM failure or a pause longer than `pauseTimeout` ends it with
    /// `BcvError.Closed`).
    public func filterRequestBody(_ input: ReadStream, pauseTimeout: Duration = .seconds(30)) throws -> ReadStream {
        try filterRequestBody(input: input, pauseTimeoutMs: pauseTimeout.bcvMilliseconds)
    }

    /// Pipes a response body through the plugin, as `filterRequestBody(_:pauseTimeout:)`.
    public func filterResponseBody(_ input: ReadStream, pauseTimeout: Duration = .seconds(30)) throws -> ReadStream {
        try filterResponseBody(input: input, pauseTimeoutMs: pauseTimeout.bcvMilliseconds)
    }
}

extension ProxyTcpContext {
    /// Data from the client; on `.continue` forward `takeDownstreamData()`.
    public func onDownstreamData(_ data: Data, endOfStream: Bool = false) throws -> ProxyAction {
        try onDownstreamData(data: data, endOfStream: endOfStream)
    }

    /// Data from the server; on `.continue` forward `takeUpstreamData()`.
    public func onUpstreamData(_ data: Data, endOfStream: Bool = false) throws -> ProxyAction {
        try onUpstreamData(data: data, endOfStream: endOfStream)
    }

    /// The client side closed.
    public func onDownstreamClose(_ peer: ProxyPeer = .remote) throws {
        try onDownstreamClose(peer: peer)
    }

    /// The server side closed.
    public func onUpstreamClose(_ peer: ProxyPeer = .remote) throws {
        try onUpstreamClose(peer: peer)
    }

    /// Waits for a paused direction (`.downstream` or `.upstream`), as `ProxyHttpContext.wait(_:timeout:)`.
    public func wait(_ stream: ProxyStream = .downstream, timeout: Duration) async throws -> ProxyAction {
        let ms = timeout.bcvMilliseconds
        return try await withCancelToken { token in
            try await self.wait(stream: stream, timeoutMs: ms, cancel: token)
        }
    }

    /// A property as the plugin would read it; `nil` if absent.
    public func property(_ path: String) throws -> Data? {
        try property(path: path)
    }

    /// Sets a property of this context, visible to the plugin.
    public func setProperty(_ path: String, _ value: Data) throws {
        try setProperty(path: path, value: value)
    }
}
