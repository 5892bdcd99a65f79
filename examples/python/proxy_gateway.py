"""A small HTTP gateway that runs a Proxy-Wasm filter in front of an upstream, all on 127.0.0.1.

    python examples/python/proxy_gateway.py [path/to/edge_filter.wasm]

The filter is examples/proxy-plugin (built from source with the proxy-wasm SDK by
scripts/build-proxy-plugins.sh; its path defaults to ``$BCV_PROXY_EXAMPLE_PLUGIN``). The gateway feeds every
request's headers and body through the filter, answers locally when the filter says so, forwards the rest to
the upstream with the headers the filter left, and feeds the response back through it. A few requests are
then sent through the gateway, and the results, the filter's metric and its access log are printed.
Exits non-zero if the gateway did not behave as the filter says it should.
"""

from __future__ import annotations

import http.client
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Tuple

import bcv

# Hop-by-hop headers are the gateway's business, not the filter's or the upstream's.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


class Upstream(BaseHTTPRequestHandler):
    """The service behind the gateway: echoes what reached it."""

    def do_GET(self) -> None:
        seen = "".join(f"{name.lower()}: {value}\n" for name, value in self.headers.items())
        body = f"upstream saw {self.command} {self.path}\n{seen}".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def make_gateway(plugin: bcv.ProxyPlugin, upstream: Tuple[str, int]) -> type:
    class Gateway(BaseHTTPRequestHandler):
        """Runs each request through the filter, then forwards it or answers for it."""

        def do_GET(self) -> None:
            with plugin.http_context() as exchange:
                headers = [(":method", self.command), (":path", self.path), (":scheme", "http")]
                headers += [(":authority", self.headers.get("host", ""))]
                headers += [(n.lower(), v) for n, v in self.headers.items() if n.lower() not in HOP_BY_HOP]
                action = exchange.on_request_headers(headers, end_of_stream=True)
                if action == "local_response":
                    reply = action.response
                    # Finish first, so the access log and the metric are written once the client has its answer.
                    exchange.finish()
                    self.answer(reply.status, reply.headers, reply.body)
                    return
                if action != "continue":
                    self.answer(502, [], b"the filter stopped the request\n")
                    return
                forwarded = exchange.request_headers()
                pseudo = dict(p for p in forwarded if p[0].startswith(":"))
                conn = http.client.HTTPConnection(*upstream, timeout=10)
                try:
                    conn.putrequest(pseudo[":method"], pseudo[":path"], skip_host=True, skip_accept_encoding=True)
                    conn.putheader("host", pseudo.get(":authority", ""))
                    for name, value in forwarded:
                        if not name.startswith(":") and name != "host":
                            conn.putheader(name, value)
                    conn.endheaders()
                    response = conn.getresponse()
                    body = response.read()
                    response_headers = [(":status", str(response.status))]
                    response_headers += [(n.lower(), v) for n, v in response.getheaders() if n.lower() not in HOP_BY_HOP]
                finally:
                    conn.close()
                exchange.on_response_headers(response_headers, end_of_stream=False)
                exchange.on_response_body(body, end_of_stream=True)
                out = exchange.response_headers()
                status = int(dict(out).get(":status", "502"))
                body = exchange.take_response_body()
                exchange.finish()
                self.answer(status, [p for p in out if not p[0].startswith(":")], body)

        def answer(self, status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Gateway


def serve(handler: type) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def get(address: Tuple[str, int], path: str, headers: Dict[str, str]) -> Tuple[int, Dict[str, str], str]:
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, {n.lower(): v for n, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BCV_PROXY_EXAMPLE_PLUGIN", "")
    if not path:
        print("usage: proxy_gateway.py edge_filter.wasm (build it with scripts/build-proxy-plugins.sh)")
        return 2
    with open(path, "rb") as f:
        wasm = f.read()

    with bcv.ProxyHost() as host:
        module = host.load_module("edge_filter", wasm)
        vm = host.start_vm(module, vm_id="edge")
        plugin = vm.add_plugin("edge", configuration="deny_prefix=/admin\nserved_by=bcv-gateway\n")
        upstream = serve(Upstream)
        gateway = serve(make_gateway(plugin, upstream.server_address[:2]))
        address = gateway.server_address[:2]
        print(f"upstream on {upstream.server_address[:2]}, gateway on {address}, filter ABI {module.abi}")
        try:
            ok = True
            status, headers, body = get(address, "/hello", {"x-internal-token": "secret", "user-agent": "demo"})
            print(f"GET /hello -> {status}, x-served-by: {headers.get('x-served-by')}")
            print("  " + body.replace("\n", "\n  ").rstrip())
            ok &= status == 200 and headers.get("x-served-by") == "bcv-gateway"
            ok &= "x-edge-request: 1" in body and "x-internal-token" not in body and "user-agent: demo" in body

            status, headers, body = get(address, "/admin/users", {})
            print(f"GET /admin/users -> {status}: {body.strip()}")
            ok &= status == 403 and body == "forbidden by the edge filter\n"

            status, _, body = get(address, "/again", {})
            ok &= status == 200 and "x-edge-request: 2" in body

            metric = host.metric("edge_requests_total")
            print(f"metric edge_requests_total = {metric['value']}")
            ok &= metric["value"] == 2
            access = [r.message for r in vm.take_logs() if r.message.startswith("access:")]
            print("access log:", *access, sep="\n  ")
            ok &= access == ["access: GET /hello 200", "access: GET /admin/users 403", "access: GET /again 200"]
        finally:
            gateway.shutdown()
            upstream.shutdown()
            gateway.server_close()
            upstream.server_close()
    print("ok" if ok else "UNEXPECTED RESULT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
