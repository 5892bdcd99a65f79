"""asyncio: awaitables never block the loop; cancellation does not close; async with/for; T28/T32 async."""

from __future__ import annotations

import asyncio

import pytest

import bcv
from conftest import payload


def run(coro):
    return asyncio.run(coro)


def test_aread_awrite_and_async_for():
    async def main():
        w, r = bcv.pipe(4096)
        data = payload(200_000)

        async def produce():
            for i in range(0, len(data), 10_000):
                assert await w.awrite(data[i : i + 10_000]) == 10_000
            w.finish()

        task = asyncio.ensure_future(produce())
        got = bytearray()
        async for chunk in r:
            got += chunk
        await task
        assert bytes(got) == data
        assert await r.aread() == b""
        assert await r.aread_chunk() is None

    run(main())


def test_event_loop_keeps_running_while_a_read_is_pending():
    async def main():
        w, r = bcv.pipe()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.ensure_future(ticker())
        pending = asyncio.ensure_future(r.aread(10))
        await asyncio.sleep(0.2)
        assert not pending.done() and ticks > 20
        w.write(b"data")
        assert await pending == b"data"
        t.cancel()
        w.finish()

    run(main())


def test_cancelling_a_read_does_not_close_the_stream():
    async def main():
        w, r = bcv.pipe()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.aread(10), 0.05)
        assert r.state == "OPEN"
        w.write(b"after")
        assert await r.aread(10) == b"after", "no BusyError from the cancelled read"
        w.finish()

    run(main())


def test_t32_two_concurrent_async_reads_one_gets_busy():
    async def main():
        w, r = bcv.pipe()
        first = asyncio.ensure_future(r.aread(10))
        await asyncio.sleep(0.05)
        with pytest.raises(bcv.BusyError):
            await r.aread(10)
        w.write(b"one")
        assert await first == b"one"
        w.finish()

    run(main())


def test_aclose_and_async_with():
    async def main():
        w, r = bcv.pipe()
        pending = asyncio.ensure_future(r.aread())
        await asyncio.sleep(0.02)
        async with w:
            pass
        assert w.state == "CLOSED"
        with pytest.raises(bcv.ClosedError) as info:
            await pending
        assert info.value.reason == "PEER_DROPPED"
        await r.aclose(timeout=5)
        assert r.state == "CLOSED"

    run(main())


def test_futures_await_and_t28_async():
    async def main():
        fw, fr = bcv.future()
        asyncio.get_running_loop().call_later(0.02, fw.write, "value")
        assert await fr == "value"
        fw, fr = bcv.future()
        del fw
        with pytest.raises(bcv.ClosedError) as info:
            await fr
        assert info.value.reason == "PEER_DROPPED"

    run(main())


def test_async_tcp_echo_and_file_sink(tmp_path):
    async def main():
        async with bcv.tcp_listen("127.0.0.1", 0) as listener:
            accepting = asyncio.ensure_future(listener.aaccept())
            client = await bcv.atcp_connect("127.0.0.1", listener.port)
            server = await accepting
            async with client, server:
                send = client.take_send()
                await send.awrite(b"hello over tcp")
                send.finish()
                assert await server.take_receive().aread() == b"hello over tcp"
        async with bcv.write_file(tmp_path / "a.bin") as sink:
            await sink.writer.awrite(b"x" * 1000)
            sink.writer.finish()
            assert await sink.wait_async() == 1000

    run(main())
