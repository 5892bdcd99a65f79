"""Real TCP on 127.0.0.1 and real files: echo, T36 (auto-close on quiescence), T39 (port freed)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import bcv
from conftest import open_fds, payload


def test_tcp_echo_through_spawn_pipe():
    data = payload(1_000_000)
    with bcv.tcp_listen("127.0.0.1", 0) as listener:
        with bcv.tcp_connect("127.0.0.1", listener.port, timeout=5) as client, listener.accept(timeout=5) as server:
            bcv.spawn_pipe(server.take_receive(), server.take_send())
            send, recv = client.take_send(), client.take_receive()
            with pytest.raises(bcv.AlreadyTakenError):
                client.take_send()
            writer = threading.Thread(target=lambda: (send.write(data), send.finish()))
            writer.start()
            assert recv.read(timeout=10) == data
            writer.join(5)
            assert client.peer_addr == ("127.0.0.1", listener.port)
            assert server.local_addr[1] == listener.port


def test_connect_refused_and_bad_bind_are_os_errors():
    with bcv.tcp_listen("127.0.0.1", 0) as listener:
        port = listener.port
        with pytest.raises(OSError) as info:
            bcv.tcp_listen("127.0.0.1", port)
        assert "127.0.0.1" in str(info.value)
    listener.close_and_wait(5)
    with pytest.raises(OSError):
        bcv.tcp_connect("127.0.0.1", port, timeout=5)


def test_unfinished_send_stream_resets_the_connection():
    with bcv.tcp_listen("127.0.0.1", 0) as listener:
        peer = socket.create_connection(("127.0.0.1", listener.port))
        with listener.accept(timeout=5) as sock:
            send = sock.take_send()
            send.write(b"partial")
            del send  # released without finish(): the peer must not see a clean end
            peer.settimeout(5)
            with pytest.raises(ConnectionResetError):
                while peer.recv(65536):
                    pass
        peer.close()


def test_t36_auto_close_on_quiescence():
    listener = bcv.tcp_listen("127.0.0.1", 0)
    port = listener.port
    peer = socket.create_connection(("127.0.0.1", port))
    sock = listener.accept(timeout=5)
    fds_with_socket = open_fds()
    recv, send = sock.take_receive(), sock.take_send()
    peer.sendall(b"ping")
    peer.shutdown(socket.SHUT_WR)
    assert recv.read(timeout=5) == b"ping"
    send.write(b"pong")
    send.finish()
    del recv
    peer.settimeout(5)
    reply = b""
    while True:
        chunk = peer.recv(100)
        if not chunk:
            break
        reply += chunk
    assert reply == b"pong", "FIN after finish()"
    released = time.monotonic()
    while open_fds() >= fds_with_socket and time.monotonic() - released < 0.1:
        time.sleep(0.002)
    assert open_fds() < fds_with_socket, "the fd is closed within 100 ms while the socket handle is alive"
    assert sock.state == "OPEN"
    peer.close()
    listener.close_and_wait(5)
    again = bcv.tcp_listen("127.0.0.1", port)  # the port can be reused
    again.close()
    sock.close()


def test_t39_close_and_wait_frees_the_port():
    listener = bcv.tcp_listen("127.0.0.1", 0)
    port = listener.port
    client = bcv.tcp_connect("127.0.0.1", port, timeout=5)
    server = listener.accept(timeout=5)
    recv = server.take_receive()
    outcome = {}

    def pending_read():
        try:
            recv.read()
        except bcv.ClosedError as e:
            outcome["reason"] = e.reason

    t = threading.Thread(target=pending_read)
    t.start()
    time.sleep(0.02)
    server.close_and_wait(5)
    listener.close_and_wait(5)
    assert server.state == "CLOSED" and listener.state == "CLOSED"
    t.join(5)
    assert outcome["reason"] == "PARENT"
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", port))  # right after close_and_wait, no sleeping
    probe.listen()
    probe.close()
    client.close()


def test_files_stream_in_and_out(tmp_path):
    data = payload(333_333)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    file, stream = bcv.read_file(src)
    with bcv.write_file(tmp_path / "out.bin") as sink, file:
        bcv.spawn_pipe(stream, sink.writer)
        assert sink.wait(timeout=10) == len(data)
    assert (tmp_path / "out.bin").read_bytes() == data


def test_file_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        bcv.read_file(tmp_path / "missing")
    assert "missing" in str(info.value)
    with pytest.raises(OSError):
        bcv.write_file(tmp_path / "no-such-dir" / "x")


def test_file_sink_left_partial_when_writer_ends_without_finish(tmp_path):
    with bcv.write_file(tmp_path / "partial") as sink:
        sink.writer.write(b"some")
        sink.writer.close()  # ended without finish(): the file must not be reported complete
        with pytest.raises(OSError) as info:
            sink.wait(timeout=5)
        assert "partial" in str(info.value)


def test_closing_file_resource_ends_its_stream_with_parent(tmp_path):
    (tmp_path / "big").write_bytes(b"\0" * 1_000_000)
    file, stream = bcv.read_file(tmp_path / "big")
    assert stream.read_chunk(timeout=5)
    file.close()
    with pytest.raises(bcv.ClosedError) as info:
        stream.read()
    assert info.value.reason == "PARENT"
