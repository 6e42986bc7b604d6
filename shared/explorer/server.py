"""The explorer's HTTP server: standard library only, one thread per connection, one model lock.

::

    from shared.explorer.server import Explorer
    ex = Explorer("runs/vae32").start()     # background thread; port 0 = an ephemeral port
    print(ex.url)                           # http://127.0.0.1:53123/
    ex.stop()

Routes (see :mod:`shared.explorer.session` for the work of each): ``GET /`` (the page),
``GET /static/<name>`` (only regular files packaged directly in ``static/``), ``GET /api/info``,
``GET /api/faces``, ``POST /api/{encode,decode,matrix,sample,denoise,inpaint,generate,edit}``
(JSON bodies ≤ 256 KiB) and ``POST /api/upload`` (raw image bytes ≤ 4 MiB). Every error is a JSON
``{"error": "..."}``: 400 for a bad field (the message names it), 403 for a foreign ``Host``
header, 404, 405, 408, 411, 413; an unexpected exception is logged with its traceback and
answered 500 ``{"error": "internal error: <type>"}`` — never a traceback to the client.

The page has no authentication: the server binds to 127.0.0.1 by default, warns when bound to
another address, and, while bound to a loopback address, answers only requests whose ``Host`` is
a loopback name (a web page that rebinds its DNS name to 127.0.0.1 cannot read the faces).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import socket
import socketserver
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from shared.errors import ConfigError, FaceVAEError, RunError
from shared.explorer.session import Session
from shared.explorer.validate import MAX_JSON_BYTES, MAX_UPLOAD_BYTES, ApiError, parse_json

__all__ = ["Explorer", "STATIC", "POST_ROUTES", "GET_ROUTES", "is_loopback"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().with_name("static")
POST_ROUTES = {"/api/encode": "api_encode", "/api/decode": "api_decode", "/api/matrix": "api_matrix",
               "/api/sample": "api_sample", "/api/denoise": "api_denoise", "/api/inpaint": "api_inpaint",
               "/api/generate": "api_generate", "/api/edit": "api_edit", "/api/upload": "api_upload"}
GET_ROUTES = ("/", "/api/info", "/api/faces", "/favicon.ico")
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                  ".json": "application/json", ".png": "image/png", ".svg": "image/svg+xml",
                  ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8", ".woff2": "font/woff2"}
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_DRAIN_BYTES = 16 * 1024 * 1024   # at most this much of a refused body is read (and dropped)...
_DRAIN_SECONDS = 2.0              # ...for at most this long
_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    """One connection: routes a request, reads a bounded body, answers JSON, PNG or a static file."""

    server: "Explorer"
    protocol_version = "HTTP/1.1"  # keep-alive: a slider drag is many small requests on one connection
    # headers and body leave in one write, without Nagle's wait: else a small response waits ~40 ms for
    # the client's delayed ACK of the headers
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server_version = "facevae-explorer"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # a client that stalls mid-request frees its thread
        super().setup()

    # -- logging: requests at DEBUG, never on stderr by default --------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    # -- responses ----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, *, headers: Optional[dict] = None,
              cache: str = "no-store", close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, **kwargs: Any) -> None:
        body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", **kwargs)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """The base class's errors (bad request line, 414, 431, unknown method) as JSON too."""
        headers = {}
        if code == HTTPStatus.NOT_IMPLEMENTED:  # an unknown method: 405, a client error, not a 5xx
            code, message, headers = 405, f"method {self.command!s:.20} is not allowed", {"Allow": "GET, POST"}
        if self.request_version == "HTTP/0.9":  # an unparsable request line: still answer with a status line
            self.request_version = "HTTP/1.0"
        self.log_error("code %d, message %s", code, message)
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._send_json(code, {"error": message or phrase}, headers=headers, close=True)

    # -- methods ------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the base class's naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_GET  # 405 in _dispatch

    def _dispatch(self) -> None:
        self._body_read = False
        started = time.perf_counter()
        try:
            self._check_host()
            self._route()
        except ApiError as exc:
            self._error(exc.status, exc.message, exc.headers)
        except FaceVAEError as exc:
            self._error(400, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left; nothing to answer
        except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into a 500 with a log
            log.error("explorer: %s %s failed", self.command, self.path[:200], exc_info=True)
            self._error(500, f"internal error: {type(exc).__name__}")
        finally:
            log.debug("%s %s took %.1f ms", self.command, self.path[:200], 1000 * (time.perf_counter() - started))

    def _error(self, status: int, message: str, headers: Optional[dict] = None) -> None:
        # a body left unread would be parsed as the next request: close the connection instead
        try:
            self._send_json(status, {"error": message}, headers=headers, close=not self._body_read)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if not self._body_read:
            self.wfile.flush()  # the answer first, then the refused body
            self._discard_body()

    def _discard_body(self) -> None:
        """Read and drop (a bounded part of) a refused body after the answer went out.

        Closing a socket with unread bytes resets the connection, and a client still sending its
        body (a browser uploading a too-large file) would then see a network error instead of our 413.
        """
        try:
            declared = int((self.headers.get_all("Content-Length") or ["0"])[0].strip())
        except ValueError:
            return
        left, deadline = min(declared, _DRAIN_BYTES), time.monotonic() + _DRAIN_SECONDS
        try:
            self.connection.settimeout(0.5)
            while left > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _check_host(self) -> None:
        if not self.server.loopback_only:
            return
        host = self.headers.get("Host")
        if host is None:
            return  # HTTP/1.0 clients send none; a browser always does
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if not is_loopback(name):
            raise ApiError(403, f"this explorer serves only http://localhost and loopback addresses. "
                                f"Received: Host={host[:80]!r}")

    def _route(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        method = self.command
        if method == "POST" and path in POST_ROUTES:
            return self._post(path)
        if method == "GET" and (path in GET_ROUTES or path.startswith("/static/")):
            return self._get(path, parse_qs(parts.query, keep_blank_values=True))
        if path in POST_ROUTES:
            raise ApiError(405, f"{path} takes POST. Received: {method}", {"Allow": "POST"})
        if path in GET_ROUTES or path.startswith("/static/"):
            raise ApiError(405, f"{path} takes GET. Received: {method}", {"Allow": "GET"})
        raise ApiError(404, f"no such page: {path[:100]!r}")

    def _get(self, path: str, query: dict[str, list[str]]) -> None:
        session = self.server.session
        if path == "/api/info":
            return self._send_json(200, session.info())
        if path == "/api/faces":
            return self._send_json(200, session.faces_page(query))
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon", cache="max-age=86400")
        name = "index.html" if path == "/" else path[len("/static/"):]
        self._static(name)

    def _static(self, name: str) -> None:
        """A regular file directly inside :data:`STATIC` (no ``..``, no folders, no links), else 404."""
        missing = ApiError(404, f"no such static file: {name[:100]!r}")
        if not _STATIC_NAME.fullmatch(name) or ".." in name:
            raise missing
        path = STATIC / name
        try:
            if path.is_symlink() or not path.is_file() or path.resolve().parent != STATIC:
                raise missing
            body = path.read_bytes()
        except OSError:
            raise missing from None
        content_type = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        self._send(200, body, content_type, cache="no-cache")

    def _read_body(self, limit: int) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "chunked request bodies are not supported: send the body with a Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise ApiError(411, "the request has no Content-Length: send a body with its length")
        if len(lengths) > 1 or not re.fullmatch(r"[0-9]{1,15}", lengths[0].strip()):
            raise ApiError(400, f"Content-Length must be one non-negative integer. Received: {lengths[:2]!r:.80}")
        n = int(lengths[0])
        if n > limit:
            raise ApiError(413, f"the request body must be at most {limit} bytes. Received: Content-Length={n}")
        try:
            body = self.rfile.read(n) if n else b""
        except (TimeoutError, socket.timeout):
            raise ApiError(408, f"the body did not arrive within {self.server.request_timeout:g} s "
                                f"(Content-Length={n} is larger than the body?)") from None
        if len(body) != n:
            raise ApiError(400, f"the body ended after {len(body)} of the {n} bytes of its Content-Length")
        self._body_read = True
        return body

    def _post(self, path: str) -> None:
        session = self.server.session
        if path == "/api/upload":
            result = session.api_upload(self._read_body(MAX_UPLOAD_BYTES))
        else:
            result = getattr(session, POST_ROUTES[path])(parse_json(self._read_body(MAX_JSON_BYTES)))
        if isinstance(result, bytes):
            return self._send(200, result, "image/png")
        self._send_json(200, result)


class Explorer(ThreadingHTTPServer):
    """The latent explorer of one run: a threaded local web server.

    Args:
        run_dir: a generative run folder (torch ``vae``; tf ``vae``, ``cvae``, ``iaf``).
        host: address to bind; anything but a loopback address logs a WARNING (no authentication).
        port: TCP port; 0 picks a free one (see :attr:`url`).
        data: where the run's faces are now, when they moved (see :func:`shared.api.run_faces`).
        request_timeout: seconds a client may stall inside one request before it is dropped.

    Raises:
        ConfigError: bad ``host``, ``port`` or ``request_timeout``.
        RunError: not a generative run, or its faces cannot be found.
        OSError: the address cannot be bound (port in use, unknown host).
    """

    daemon_threads = True       # a stuck client never blocks shutdown
    allow_reuse_address = True  # a restart right after stop() gets the same port

    def __init__(self, run_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0,
                 data: Any = None, request_timeout: float = 10.0):
        if not isinstance(host, str) or not host or len(host) > 255:
            raise ConfigError(f"`host` must be a host name or address. Received: host={host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"`port` must be an integer in [0, 65535]. Received: port={port!r}")
        if isinstance(request_timeout, bool) or not isinstance(request_timeout, (int, float)) \
                or not 0.1 <= request_timeout <= 3600:
            raise ConfigError(f"`request_timeout` must be seconds in [0.1, 3600]. "
                              f"Received: request_timeout={request_timeout!r}")
        self.session = Session(run_dir, data)  # loads and warms the model before the port opens
        self.host, self.request_timeout = host, float(request_timeout)
        self.loopback_only = is_loopback(host)
        self._state = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._serving = self._closed = False
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        # a bind failure (port in use, unknown host) stays an OSError: the CLI names --host/--port in its message
        super().__init__((host.strip("[]"), port), _Handler)
        if not self.loopback_only:
            log.warning("explorer: listening on %s, reachable from other machines; the page has no "
                        "authentication (use --host 127.0.0.1 to keep it local)", host)

    def server_bind(self) -> None:
        """Bind without :class:`http.server.HTTPServer`'s ``socket.getfqdn`` (a reverse DNS lookup that can
        stall for seconds on a machine without DNS; the name served no purpose here)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def port(self) -> int:
        """The bound TCP port (the chosen one when ``port=0``)."""
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` of the page; bound to every interface (0.0.0.0, ::), this machine's name."""
        host = self.host.strip("[]")
        if host in ("0.0.0.0", "::", ""):  # not an address a browser can open: name the machine instead
            host = socket.gethostname() or "localhost"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection-level failures (a client that vanished): DEBUG, not a traceback on stderr."""
        log.debug("explorer: connection from %s failed", client_address, exc_info=True)

    def start(self) -> "Explorer":
        """Serve in a background (daemon) thread; returns ``self``. Calling it again does nothing.

        Raises:
            RunError: the explorer was stopped, or is serving in the foreground.
        """
        with self._state:
            if self._closed:
                raise RunError("this explorer was stopped; create a new one")
            if self._serving:
                if self._thread is None:
                    raise RunError("this explorer is already serving in the foreground (serve_forever)")
                return self
            self._serving = True  # before the thread: a stop() right now still shuts the loop down
            self._thread = threading.Thread(target=super().serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"facevae-explorer-{self.port}", daemon=True)
            self._thread.start()
        log.info("explorer running at %s", self.url)
        return self

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve in this thread until :meth:`stop` (from another thread) or Ctrl-C; then close the socket.

        Raises:
            RunError: the explorer was stopped or already serves in the background.
        """
        with self._state:
            if self._closed or self._serving:
                raise RunError("this explorer was stopped or is already serving; create a new one")
            self._serving = True
        log.info("explorer running at %s", self.url)
        try:
            super().serve_forever(poll_interval)
        except KeyboardInterrupt:
            log.debug("explorer: Ctrl-C, shutting down")
        finally:
            with self._state:
                self._closed = True
                self._serving = False
            self.server_close()

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice and from any thread but a request's."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            serving, self._serving = self._serving, False
        if serving:
            self.shutdown()
        self.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        log.debug("explorer at %s stopped", self.url)

    def __enter__(self) -> "Explorer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._closed else "serving" if self._serving else "ready"
        return f"Explorer({str(self.session.run_dir)!r}, url={self.url!r}, {state})"
