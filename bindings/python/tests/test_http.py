"""HTTP/1.1 over 127.0.0.1: LIFETIMES.md T01-T04, the motivating case on the server side (take the body of a
request, release the request, keep reading), a client-server round trip through gzip, and errors."""

from __future__ import annotations

import asyncio
import gzip
import queue
import socket
import threading
import time
from typing import List, Tuple

import pytest

import bcv
from conftest import live_nodes, payload

COMPLETED, ABANDONED = "completed", "abandoned"


def raw_server(chunks: int, chunk_len: int, pause: float) -> Tuple[str, "queue.Queue[str]"]:
    """A hand-written HTTP/1.1 server on one connection: a chunked response of `chunks` chunks of
    `chunk_len` bytes (`a`, `b`, ...; `pause` seconds apart) and an `x-checksum` trailer.

    Returns the URL and a queue that receives COMPLETED once every chunk and the trailer were written, or
    ABANDONED when the client closed the connection before the end of the body (it was not reused)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    saw: "queue.Queue[str]" = queue.Queue()

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
        with conn, conn.makefile("rb") as head_in:
            while head_in.readline() not in (b"", b"\r\n"):
                pass
            try:
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nx-test: yes\r\n"
                    b"transfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
                )
                for i in range(chunks):
                    conn.sendall(b"%x\r\n%s\r\n" % (chunk_len, bytes([ord("a") + i % 26]) * chunk_len))
                    time.sleep(pause)
                conn.sendall(b"0\r\nx-checksum: abc123\r\n\r\n")
            except OSError:  # BrokenPipeError / ConnectionResetError: the client went away
                saw.put(ABANDONED)
                return
            saw.put(COMPLETED)

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{port}/data", saw


def test_t01_response_released_before_body_reads_to_clean_eof():
    url, saw = raw_server(20, 10_000, 0.002)
    response = bcv.http_request("GET", url, timeout=5)
    assert response.status == 200 and response.method is None and response.target is None
    body, trailers = response.take_body()
    # R released before B. Its body is still arriving, so, as for every resource collected while active
    # (P5), a ResourceWarning says so; the body keeps working (option 2).
    with pytest.warns(ResourceWarning, match="unclosed bcv.IncomingMessage"):
        del response
    data = body.read(timeout=10)
    assert len(data) == 200_000
    assert data[:10_000] == b"a" * 10_000 and data[-10_000:] == b"t" * 10_000
    assert body.read(timeout=1) == b"", "a clean end of stream"
    assert trailers.wait(timeout=5) == [("x-checksum", "abc123")]
    assert saw.get(timeout=5) == COMPLETED
    del trailers
    assert live_nodes() > 0, "B still holds its node"
    del body
    assert bcv.wait_idle(5) == 0, "live_nodes reaches 0 once B is released"


def test_t02_body_released_first_abandons_the_connection():
    url, saw = raw_server(1000, 10_000, 0.005)
    with bcv.http_request("GET", url, timeout=5) as response:
        body, trailers = response.take_body()
        assert body.read_chunk(1000, timeout=5)
        del body  # B released first
        assert saw.get(timeout=5) == ABANDONED, "the server sees the connection dropped mid-body"
        # R's methods still work.
        assert response.header("x-test") == "yes"
        assert response.status == 200
        assert ("content-type", "application/octet-stream") in response.headers
        with pytest.raises(bcv.ClosedError) as info:
            trailers.wait(timeout=5)
        assert info.value.reason == "ABANDONED"


def test_t03_close_response_with_buffered_body():
    url, saw = raw_server(1000, 16_384, 0.001)
    response = bcv.http_request("GET", url, timeout=5)
    snapshot = response.head()
    body, trailers = response.take_body()
    deadline = time.monotonic() + 5
    while body.buffered < 64 * 1024 and time.monotonic() < deadline:
        time.sleep(0.002)
    assert body.buffered >= 64 * 1024, f"buffered {body.buffered}"
    response.close()
    with pytest.raises(bcv.ClosedError) as info:
        body.read(16, timeout=1)  # no EOF, and the buffered bytes are thrown away
    assert info.value.reason == "PARENT"
    with pytest.raises(bcv.ClosedError) as info:
        trailers.wait(timeout=1)
    assert info.value.reason == "PARENT"
    for method in (lambda: response.status, lambda: response.header("x-test"), response.head, response.take_body):
        with pytest.raises(bcv.ClosedError) as info:
            method()
        assert info.value.reason == "SELF"
    assert snapshot.header("X-Test") == "yes" and snapshot.status == 200
    assert "IncomingMessage" in repr(response) and "SELF" in repr(response)
    assert "200" in repr(snapshot)
    assert saw.get(timeout=5) == ABANDONED


def test_t04_close_body_abandons_trailers_at_once():
    url, saw = raw_server(1000, 10_000, 0.005)
    with bcv.http_request("GET", url, timeout=5) as response:
        body, trailers = response.take_body()
        assert body.read_chunk(1000, timeout=5)
        start = time.perf_counter()
        body.close()
        # The body's producer (the pump) sees PEER_DROPPED and reacts by failing the trailers.
        with pytest.raises(bcv.ClosedError) as info:
            trailers.wait(timeout=5)
        elapsed = time.perf_counter() - start
        assert info.value.reason == "ABANDONED"
        assert elapsed < 0.010, f"the producer reacted after {elapsed * 1000:.1f} ms"
        assert response.status == 200 and response.header("x-test") == "yes", "R still works"
        assert response.state == "OPEN"
        assert saw.get(timeout=5) == ABANDONED


def test_server_take_body_release_request_keep_reading():
    with bcv.http_serve("127.0.0.1", 0) as server:
        rest = threading.Event()
        reply_text: List[bytes] = []

        def client() -> None:
            with socket.create_connection(("127.0.0.1", server.local_port), timeout=10) as s:
                s.sendall(b"POST /upload?x=1 HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n")
                for i in range(10):
                    if i == 5:
                        rest.wait(10)  # the second half arrives after the request was released
                    s.sendall(b"%x\r\n%s\r\n" % (5000, bytes([ord("0") + i]) * 5000))
                s.sendall(b"0\r\nx-sum: 50000\r\n\r\n")
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    reply_text.append(chunk)

        t = threading.Thread(target=client)
        t.start()
        request = server.next_request(timeout=5)
        assert (request.method, request.target, request.status) == ("POST", "/upload?x=1", None)
        assert request.header("Transfer-Encoding") == "chunked"
        reply = request.respond(200, {"connection": "close"})
        body, trailers = request.take_body()
        with pytest.raises(bcv.AlreadyTakenError):
            request.take_body()
        with pytest.raises(bcv.AlreadyTakenError):
            request.respond(200)
        with pytest.warns(ResourceWarning, match="unclosed bcv.IncomingMessage"):
            del request  # the motivating case: the request goes, its body and response keep working
        rest.set()
        data = body.read(timeout=10)
        assert data == b"".join(bytes([ord("0") + i]) * 5000 for i in range(10))
        assert trailers.wait(timeout=5) == [("x-sum", "50000")]
        reply.write(b"got %d bytes" % len(data))
        reply.finish()
        t.join(10)
        assert not t.is_alive()
        text = b"".join(reply_text)
        assert text.startswith(b"HTTP/1.1 200"), text
        assert text.endswith(b"\r\n\r\nF\r\ngot 50000 bytes\r\n0\r\n\r\n"), text  # one chunk, then a clean end


def test_client_server_round_trip_through_gzip():
    data = payload(300_000)
    kept: list = []
    seen: dict = {}
    with bcv.http_serve("127.0.0.1", 0) as server:

        def handle() -> None:
            request = server.next_request(timeout=10)
            seen["head"] = request.head()
            body, trailers = request.take_body()
            reply = request.respond(200, [("content-encoding", "gzip")])
            gz, packed = bcv.gzip_compress(body, level=1)  # request body -> gzip -> response body
            bcv.spawn_pipe(packed, reply)
            kept.extend([request, gz, trailers])

        handler = threading.Thread(target=handle)
        handler.start()
        w, r = bcv.pipe(64 * 1024)
        writer = threading.Thread(target=lambda: (w.write(data), w.finish()))
        writer.start()
        url = f"http://127.0.0.1:{server.local_port}/echo"
        with bcv.http_request("PUT", url, headers={"x-a": "1"}, body=r, timeout=10) as response:
            assert r.state == "CLOSED", "the request body stream was consumed"
            assert response.status == 200 and response.header("content-encoding") == "gzip"
            body, trailers = response.take_body()
            dec, plain = bcv.gzip_decompress(body)
            with dec:
                assert plain.read(timeout=20) == data
            assert trailers.wait(timeout=5) is None, "no trailers"
        writer.join(10)
        handler.join(10)
        head = seen["head"]
        assert (head.method, head.target, head.header("x-a")) == ("PUT", "/echo", "1")
        for handle_ in kept:
            handle_.close()


def test_bytes_body_and_respond_with():
    with bcv.http_serve("127.0.0.1", 0) as server:
        out: dict = {}

        def handle() -> None:
            out["request"] = request = server.next_request(timeout=10)
            body, _ = request.take_body()
            out["body"] = body.read(timeout=5)
            request.respond_with(201, [("x-reply", "ok")], gzip.compress(b"compressed " * 100))

        t = threading.Thread(target=handle)
        t.start()
        url = f"http://localhost:{server.local_port}/b"
        with bcv.http_request("POST", url, [("content-length", "5")], b"hello", timeout=10) as response:
            assert response.status == 201 and response.header("X-Reply") == "ok"
            with pytest.raises(bcv.AlreadyTakenError):
                response.respond(200)  # a response cannot be answered
            body, trailers = response.take_body()
            assert gzip.decompress(body.read(timeout=5)) == b"compressed " * 100
            assert trailers.wait(timeout=5) is None
        t.join(10)
        assert out["body"] == b"hello"
        out["request"].close()


def test_server_basics_timeout_close_and_repr():
    server = bcv.http_serve("127.0.0.1", 0)
    port = server.local_port
    assert port > 0 and server.local_address == ("127.0.0.1", port)
    assert "HttpServer" in repr(server) and "OPEN" in repr(server)
    with pytest.raises(bcv.TimeoutError):
        server.next_request(timeout=0.05)
    with pytest.raises(OSError) as info:
        bcv.http_serve("127.0.0.1", port)
    assert str(port) in str(info.value)
    outcome = {}

    def pending() -> None:
        try:
            server.next_request()
        except bcv.ClosedError as e:
            outcome["reason"] = e.reason

    t = threading.Thread(target=pending)
    t.start()
    time.sleep(0.05)
    server.close_and_wait(5)
    t.join(5)
    assert outcome.get("reason") == "SELF"
    assert server.state == "CLOSED" and server.local_port == port
    with pytest.raises(bcv.ClosedError):
        server.next_request(timeout=1)
    again = bcv.http_serve("127.0.0.1", port)  # the port is free after close_and_wait
    again.close()


def test_async_request_server_and_trailers():
    async def main() -> None:
        async with bcv.http_serve("127.0.0.1", 0) as server:
            url = f"http://127.0.0.1:{server.local_port}/a"
            pending = asyncio.ensure_future(server.anext_request())
            await asyncio.sleep(0.01)
            assert not pending.done()
            answer = asyncio.ensure_future(bcv.ahttp_request("GET", url, {"x-q": "?"}))
            request = await asyncio.wait_for(pending, 5)
            async with request:
                body, trailers = request.take_body()
                assert await body.aread() == b""
                assert await trailers is None
                reply = request.respond(200)
                await reply.awrite(b"async " + request.header("x-q").encode())
                reply.finish()
                async with await asyncio.wait_for(answer, 5) as response:
                    rbody, rtrailers = response.take_body()
                    assert await rbody.aread() == b"async ?"
                    assert await rtrailers.wait_async() is None

    asyncio.run(main())


def test_refused_connection_names_the_url_and_bad_urls_are_rejected():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there any more
    url = f"http://127.0.0.1:{port}/x"
    with pytest.raises(ConnectionRefusedError) as info:
        bcv.http_request("GET", url, timeout=5)
    assert url in str(info.value)
    with pytest.raises(bcv.InvalidArgumentError) as bad:
        bcv.http_request("GET", "ftp://example/")
    assert "ftp://example/" in str(bad.value)
    with pytest.raises(bcv.InvalidArgumentError):
        bcv.http_request("GET", url, headers=[("bad header", "x")])
    with pytest.raises(TypeError):
        bcv.http_request("GET", url, headers=["not a pair"])
