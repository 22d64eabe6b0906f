"""A TCP proxy that delays every byte by a fixed time in each direction: a WAN link between datacenters.

    python bench/latency_proxy.py --delay-ms 25 LISTEN_PORT=HOST:PORT [LISTEN_PORT=HOST:PORT ...]

Each direction of each connection is a delay line: what is read at time t is written at t + delay, in
order, with no limit on the bytes in flight but ``MAX_BUFFERED`` (then reading pauses, as a full link's
window would). Bandwidth is not limited: a round trip costs twice the delay, whatever the request. The
bench (bench/wan.py) starts it in front of the source sandbox, whose broker advertises the proxy's port on
a listener of its own, so every connection a client makes to the source (bootstrap, metadata, fetches)
crosses it. Linux ``netem`` would do the same in the kernel; this machine's kernel has no ``sch_netem``.

It prints ``ready`` on stdout once every port listens, and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
import time

CHUNK = 256 * 1024
MAX_BUFFERED = 64 * 1024 * 1024  # bytes held per direction before reading pauses


async def _delay_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    buffered = 0
    arrived = asyncio.Event()
    room = asyncio.Event()
    room.set()
    closed = False

    async def read() -> None:
        nonlocal buffered, closed
        try:
            while True:
                await room.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                queue.append((time.monotonic() + delay, data))
                buffered += len(data)
                if buffered >= MAX_BUFFERED:
                    room.clear()
                arrived.set()
        except (ConnectionError, OSError):
            pass
        finally:
            closed = True
            arrived.set()

    async def write() -> None:
        nonlocal buffered
        try:
            while True:
                while not queue:
                    if closed:
                        return
                    arrived.clear()
                    await arrived.wait()
                due, data = queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
                buffered -= len(data)
                if buffered < MAX_BUFFERED:
                    room.set()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    await asyncio.gather(read(), write())


async def _serve(listen: int, host: str, port: int, delay: float) -> asyncio.base_events.Server:
    async def connected(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_delay_line(client_reader, server_writer, delay),
                             _delay_line(server_reader, client_writer, delay))

    return await asyncio.start_server(connected, "127.0.0.1", listen, reuse_address=True)


async def _main(routes: list[tuple[int, str, int]], delay: float) -> None:
    servers = [await _serve(listen, host, port, delay) for listen, host, port in routes]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def _route(text: str) -> tuple[int, str, int]:
    listen, _, target = text.partition("=")
    host, _, port = target.rpartition(":")
    if not listen.isdigit() or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected LISTEN_PORT=HOST:PORT, not {text!r}")
    return int(listen), host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay, milliseconds")
    parser.add_argument("routes", nargs="+", type=_route, metavar="LISTEN_PORT=HOST:PORT")
    args = parser.parse_args(argv)
    asyncio.run(_main(args.routes, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
