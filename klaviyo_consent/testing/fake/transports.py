"""Ways in: a ``requests`` adapter (in-process) and a WSGI app / threaded HTTP server."""

from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer
from wsgiref.util import request_uri

import requests
import requests.adapters
from requests.structures import CaseInsensitiveDict

from klaviyo_consent.testing.fake.core import FakeKlaviyo, get_default_fake
from klaviyo_consent.testing.fake.errors import _phrase


class FakeKlaviyoAdapter(requests.adapters.BaseAdapter):
    """A ``requests`` transport answering from a FakeKlaviyo instead of the network.

    Mount it on the session the real client uses (``session.mount(DEFAULT_BASE_URL, adapter)``)
    so every header, body and status goes through the same code as in production. Lost
    answers surface as the exceptions ``requests`` itself raises.
    """

    def __init__(self, fake: FakeKlaviyo | None = None) -> None:
        super().__init__()
        self._fake = fake

    @property
    def fake(self) -> FakeKlaviyo:
        """The wrapped fake, or the process-wide default one when none was given."""
        return self._fake if self._fake is not None else get_default_fake()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        """Answer ``request`` from the fake, or raise as a dropped connection / timeout would."""
        body = request.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif body is not None and not isinstance(body, bytes):
            body = body.read() if hasattr(body, "read") else b"".join(body)
        answer = self.fake.handle(
            request.method or "GET", request.url or "/", request.headers, body
        )
        if answer.fault == "connection":
            raise requests.ConnectionError(
                "FakeKlaviyo dropped the connection (injected fault)", request=request
            )
        if answer.fault == "timeout":
            raise requests.ReadTimeout(
                "FakeKlaviyo did not answer in time (injected fault)", request=request
            )
        response = requests.Response()
        response.status_code = answer.status
        response.headers = CaseInsensitiveDict(answer.headers)
        response._content = answer.body
        response._content_consumed = True
        response.raw = io.BytesIO(answer.body)
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        response.reason = _phrase(answer.status)
        response.connection = self
        return response

    def close(self) -> None:
        """Nothing to release: there is no socket."""


class _DroppedConnection(Exception):
    """Raised inside the WSGI app so the server closes the socket without answering."""


def make_wsgi_app(
    fake: FakeKlaviyo | None = None, *, timeout_delay: float = 5.0
) -> Callable[..., Iterable[bytes]]:
    """A WSGI app serving ``fake`` (default: the process-wide one) over real HTTP.

    An injected "timeout" holds the request for ``timeout_delay`` seconds and then drops
    it, so a client with a shorter timeout sees a read timeout. Under :func:`serve` a
    dropped request gets no answer at all; other WSGI servers turn it into a 500.
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = fake if fake is not None else get_default_fake()
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else None
        answer = target.handle(
            environ["REQUEST_METHOD"], request_uri(environ, include_query=True), headers, body
        )
        if answer.fault is not None:
            if answer.fault == "timeout":
                time.sleep(timeout_delay)
            raise _DroppedConnection(answer.fault)
        response_headers = list(answer.headers.items()) + [
            ("Content-Length", str(len(answer.body)))
        ]
        start_response(f"{answer.status} {_phrase(answer.status)}", response_headers)
        return [answer.body]

    return app


class _ServerHandler(ServerHandler):
    def handle_error(self) -> None:
        if isinstance(sys.exc_info()[1], _DroppedConnection):
            self.request_handler.close_connection = True
            return
        super().handle_error()


class _RequestHandler(WSGIRequestHandler):
    """wsgiref's handler, but able to drop a request unanswered and quiet unless asked."""

    verbose = False

    def handle(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = _ServerHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True
        )
        handler.request_handler = self
        handler.run(self.server.get_app())

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose:
            super().log_message(format, *args)


class FakeKlaviyoServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request, so a held "timeout" blocks no one else."""

    daemon_threads = True
    allow_reuse_address = True

    @property
    def url(self) -> str:
        """Base URL to give the client instead of https://a.klaviyo.com."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(
    fake: FakeKlaviyo | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    verbose: bool = False,
    timeout_delay: float = 5.0,
) -> FakeKlaviyoServer:
    """A threaded HTTP server for ``fake``, bound, not yet serving (``port=0``: any free port)."""
    handler = type("RequestHandler", (_RequestHandler,), {"verbose": verbose})
    server = FakeKlaviyoServer((host, port), handler)
    server.set_app(make_wsgi_app(fake, timeout_delay=timeout_delay))
    return server


def serve(
    fake: FakeKlaviyo | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    background: bool = False,
    verbose: bool = True,
    timeout_delay: float = 5.0,
) -> FakeKlaviyoServer:
    """Serve ``fake`` over HTTP: forever (until Ctrl-C), or from a thread with ``background``.

    With ``background`` the running server is returned; stop it with ``server.shutdown()``.
    """
    server = make_server(fake, host, port, verbose=verbose, timeout_delay=timeout_delay)
    if background:
        threading.Thread(
            target=server.serve_forever, args=(0.1,), name="fake-klaviyo", daemon=True
        ).start()
        return server
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return server
