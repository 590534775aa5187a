"""A TCP proxy on 127.0.0.1 that adds latency in front of a server (the database, for the benchmarks).

Every chunk the client sends reaches the server ``delay_s`` after it arrived, in order; the
server's answers pass straight through. A request/response protocol such as MySQL's therefore
pays ``delay_s`` per round trip, as it would with a database that far away.

Example::

    with DelayProxy(("127.0.0.1", 3306), delay_s=0.05) as proxy:
        pymysql.connect(host="127.0.0.1", port=proxy.port, user="root")
"""

from __future__ import annotations

import asyncio
import threading
from typing import Self

_END = b""


class DelayProxy:
    """Listens on a free port of 127.0.0.1 and forwards to ``upstream`` with ``delay_s`` added client to server.

    :param upstream: (host, port) of the real server.
    :param delay_s: seconds added to every client→server chunk.
    """

    def __init__(self, upstream: tuple[str, int], *, delay_s: float) -> None:
        self.upstream = upstream
        self.delay_s = delay_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result()
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        # Connections the client closed finish once their last delayed chunk is through.
        if self._connections:
            await asyncio.wait(self._connections, timeout=1.0 + 2 * self.delay_s)
        for connection in self._connections:
            connection.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        connection = asyncio.current_task()
        assert connection is not None
        self._connections.add(connection)
        server_writer = None
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
            await asyncio.gather(self._delayed_pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        except asyncio.CancelledError:
            pass  # the proxy is shutting down; asyncio's stream callback would report a cancelled task as an error
        finally:
            client_writer.close()
            if server_writer is not None:
                server_writer.close()
            self._connections.discard(connection)

    async def _delayed_pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A reader task stamps each chunk on arrival and a writer task releases it delay_s later,
        # so chunks sent close together are delayed once each, not once per chunk queued before.
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def release() -> None:
            while True:
                arrived, chunk = await chunks.get()
                await asyncio.sleep(max(0.0, arrived + self.delay_s - loop.time()))
                try:
                    if chunk == _END:
                        _half_close(writer)
                        return
                    writer.write(chunk)
                    await writer.drain()
                except ConnectionError:
                    return

        releaser = asyncio.create_task(release())
        try:
            while chunk := await reader.read(65536):
                chunks.put_nowait((loop.time(), chunk))
            chunks.put_nowait((loop.time(), _END))
            await releaser
        except ConnectionError:
            pass
        finally:
            releaser.cancel()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
            _half_close(writer)
        except ConnectionError:
            pass


def _half_close(writer: asyncio.StreamWriter) -> None:
    # Pass the end of one direction on and keep the other open: the peer may still be answering.
    if writer.can_write_eof():
        writer.write_eof()
