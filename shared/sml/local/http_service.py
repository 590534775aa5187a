"""One HTTP server on a daemon thread, the shape both local HTTP endpoints share (the Function URL
server and the Lambda Extensions API)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class BackgroundHttpServer:
    """A :class:`ThreadingHTTPServer` bound at construction and served on a daemon thread.

    :param address: ``(host, port)``; port 0 picks a free one.
    :param handler: the request handler class.
    :param name: the serving thread's name (shows in thread dumps).
    """

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, name: str) -> None:
        self._httpd = ThreadingHTTPServer(address, handler)
        self._httpd.daemon_threads = True
        self._name = name
        self._thread: threading.Thread | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Serve on a daemon thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
