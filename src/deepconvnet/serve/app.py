"""The web app: a draw-a-digit page and a JSON API in front of a :class:`DigitClassifier`.

Routes
------
``GET /``              the drawing page (static files under ``serve/static``; no external CDN)
``GET /healthz``       ``{"status": "ok", "model": ..., ...}``
``POST /api/predict``  one digit, as either
    * an uploaded image file (``multipart/form-data``, any field name; or a raw ``image/*`` body),
      prepared exactly as ``deepconvnet predict`` prepares files (MNIST-style: inverted if dark
      on light, cropped, fitted to 20x20, centred by mass in 28x28), or
    * JSON ``{"pixels": [[...28 numbers...] x 28]}``: raw pixels in [0, 1], **white digit on black**
      (the MNIST convention), used exactly as given - no preprocessing.
  Answer: ``{"label": int, "probabilities": [10 floats], "input": 28x28 floats}`` where ``input``
  is what the network saw.

Every bad request gets a 4xx with ``{"error": "..."}``: 400 unreadable/ill-shaped/out-of-range
input, 413 a body over ``max_body_bytes`` or an image over ``max_pixels`` (decompression bombs),
415 an unsupported content type. Bodies are counted as they arrive, so a client cannot make the
server buffer more than the limit, whatever its Content-Length says; images are decoded by a pool
of ``DECODE_SLOTS`` threads, so concurrent uploads queue instead of each taking a decoded image's
memory (a few hundred MB for a 40 MP image of a few hundred KB). Small images (the page's drawing)
have a decoding thread of their own, so they never queue behind large photos. Every answer
carries SECURITY_HEADERS; HEAD is answered where GET is; at most MAX_CONNECTIONS are open at once
(uvicorn answers 503 beyond), and Ctrl-C waits SHUTDOWN_GRACE_S for open requests.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deepconvnet.errors import CheckpointError, DeepConvNetError
from deepconvnet.images import MAX_PIXELS, ImageTooLargeError, load_digit, pixels_to_digit
from deepconvnet.serve import DigitClassifier, predict_digit

if TYPE_CHECKING:
    import uvicorn

MAX_BODY_BYTES = 8 * 1024 * 1024  # a phone photo fits; anything bigger is refused unread
#: Images decoded at once. Decoding is CPU-bound, so more would not answer sooner, only hold more
#: decoded images in memory together.
DECODE_SLOTS = min(4, os.cpu_count() or 1)
#: Uploads of at most this many bytes and pixels (the page sends a 280x280 PNG of a few KB) are
#: decoded on a lane of their own, one at a time: a drawing is answered while photos queue.
SMALL_UPLOAD_BYTES = 256 * 1024
SMALL_UPLOAD_PIXELS = 1_000_000
LOOPBACK = "127.0.0.1"
#: Open connections (and requests in flight) before uvicorn answers 503: clients that send half a
#: request and stall are held open (uvicorn has no timeout for a request's headers or body), and
#: without a cap enough of them exhaust the process's file descriptors and lock everyone out.
MAX_CONNECTIONS = 64
#: Seconds Ctrl-C waits for open requests before closing them (uvicorn's default waits for ever,
#: so one stalled upload kept the server from stopping).
SHUTDOWN_GRACE_S = 3.0
#: On every answer: no content sniffing, no framing by other sites' pages.
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY")]


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(
    classifier: DigitClassifier,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_pixels: int = MAX_PIXELS,
    decode_slots: int = DECODE_SLOTS,
) -> FastAPI:
    """The FastAPI app serving ``classifier``."""
    app = FastAPI(
        title="deepconvnet",
        summary="Draw a digit; the deep ConvNet of 'Deep Learning from Scratch' reads it.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(CutShortRequests)
    app.add_middleware(AnswerHeaders)  # outermost: on every answer, the 503s above included
    _add_error_handlers(app)
    static = resources.files("deepconvnet.serve") / "static"
    app.mount("/static", WholeStaticFiles(directory=str(static)), name="static")
    # Decoding (images, and JSON pixels) runs on pools of its own: see _in_pool and _lanes.
    pool, small = decode_pool(decode_slots), decode_pool(1, "small")
    decoders = _lanes(pool, small), _json_lanes(pool, small)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    @app.api_route("/healthz", methods=["GET", "HEAD"])  # HEAD: what uptime checkers send
    def healthz() -> dict[str, Any]:
        return {"status": "ok", **classifier.describe()}

    @app.post("/api/predict")
    async def api_predict(request: Request) -> dict[str, Any]:
        digit = await _digit_from_request(request, max_pixels, *decoders)
        prediction = await run_in_threadpool(predict_digit, classifier, digit)
        return {
            "label": prediction.label,
            "probabilities": prediction.probabilities,
            "input": np.round(prediction.input.astype(np.float64), 4).tolist(),
        }

    return app


async def _digit_from_request(
    request: Request,
    max_pixels: int,
    decode: Callable[..., Awaitable[np.ndarray]],
    decode_json: Callable[[bytes], Awaitable[np.ndarray]],
) -> np.ndarray:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await decode_json(await request.body())
    if content_type == "multipart/form-data":
        data, name = await _uploaded_file(request)
    elif content_type.startswith("image/") or content_type == "application/octet-stream":
        data, name = await request.body(), "upload"
    else:
        raise RequestError(
            415,
            f"unsupported content type {content_type or '(none)'!r}: send an image as "
            'multipart/form-data or JSON {"pixels": 28x28 numbers in [0, 1]}',
        )
    return await decode(data, name=name, max_pixels=max_pixels)


@functools.cache
def decode_pool(slots: int, lane: str = "") -> ThreadPoolExecutor:
    """The process's pool of ``slots`` decoding threads for ``lane``, shared by every app made
    with that many: an app does not own threads that would outlive it (FastAPI keeps its
    endpoints)."""
    return ThreadPoolExecutor(max_workers=slots, thread_name_prefix=f"decode{lane}{slots}")


def _lanes(pool: ThreadPoolExecutor, small: ThreadPoolExecutor) -> Callable[..., Awaitable]:
    """:func:`load_digit` on the ``small`` lane for small uploads, else on ``pool``.

    Whether an image is small in pixels is known from its header, which the small lane reads
    first: an image over ``SMALL_UPLOAD_PIXELS`` is refused there before it is decoded, and
    joins the queue of ``pool`` like any other photo. So the small lane holds at most one
    image of 1 MP at a time, and the memory the pool bounds stays bounded.
    """
    decode_small, decode = _in_pool(load_digit, small), _in_pool(load_digit, pool)

    async def lanes(data: bytes, *, name: str, max_pixels: int) -> np.ndarray:
        if len(data) <= SMALL_UPLOAD_BYTES:
            try:
                return await decode_small(
                    data, name=name, max_pixels=min(max_pixels, SMALL_UPLOAD_PIXELS)
                )
            except ImageTooLargeError:
                if max_pixels <= SMALL_UPLOAD_PIXELS:
                    raise
        return await decode(data, name=name, max_pixels=max_pixels)

    return lanes


def _json_lanes(pool: ThreadPoolExecutor, small: ThreadPoolExecutor) -> Callable[..., Awaitable]:
    """JSON pixels parsed on the ``small`` lane when the body is small (28x28 numbers are a few
    KB), so they never queue behind photos; a larger body (padding, up to the body limit) on
    ``pool``."""
    parse_small, parse = _in_pool(_digit_from_json, small), _in_pool(_digit_from_json, pool)

    async def lanes(body: bytes) -> np.ndarray:
        return await (parse_small if len(body) <= SMALL_UPLOAD_BYTES else parse)(body)

    return lanes


def _in_pool(function: Callable[..., Any], pool: ThreadPoolExecutor) -> Callable[..., Awaitable]:
    """``function`` as a coroutine run by ``pool``, the app's decoding threads.

    A decode may hold a large image. Queued on the server's worker threads behind a semaphore,
    every one of those threads in turn held one and kept its malloc arena: a reviewer measured
    24 concurrent large uploads leaving 5.7 GB in use once idle. Only the pool's threads decode.
    A large JSON body is parsed there too, not on the event loop. The pool is bound to no event
    loop, so an app may be served more than once.
    """

    async def pooled(*args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, partial(function, *args, **kwargs))

    return pooled


async def _uploaded_file(request: Request) -> tuple[bytes, str]:
    async with request.form(max_files=1, max_fields=10) as form:
        uploads = [value for value in form.values() if isinstance(value, UploadFile)]
        if not uploads:
            raise RequestError(400, "multipart body holds no file: attach the image as a file")
        upload = uploads[0]
        return await upload.read(), upload.filename or "upload"


def _digit_from_json(body: bytes) -> np.ndarray:
    return pixels_to_digit(_pixels_field(body))


def _pixels_field(body: bytes) -> Any:
    """The ``pixels`` of a JSON body; any body the parser cannot take is the client's 400.

    RecursionError too: the parser recurses once per nesting level, so a body of a few thousand
    ``[`` (well under the size limit) exhausts the stack and would otherwise be a 500.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"body is not valid JSON ({exc})") from None
    except RecursionError:
        raise RequestError(
            400, "JSON body nested too deeply (28x28 pixels need two levels)"
        ) from None
    if not isinstance(payload, dict) or "pixels" not in payload:
        raise RequestError(400, 'expected a JSON object {"pixels": 28x28 numbers in [0, 1]}')
    return payload["pixels"]


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"error": ...}``; user mistakes are 4xx, never 500."""

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(DeepConvNetError)
    async def user_error(_: Request, exc: DeepConvNetError) -> JSONResponse:
        if isinstance(exc, CheckpointError):  # the served model cannot answer: not the client's
            return JSONResponse({"error": str(exc)}, status_code=500)
        status = 413 if isinstance(exc, ImageTooLargeError) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )


class BodyTooLarge(Exception):
    pass


class WholeStaticFiles(StaticFiles):
    """Static files served whole, ignoring any Range header.

    The page's files are a few KB, so ranges gain nothing; and Starlette answers a malformed Range
    itself, in plain text, where every other bad request here gets a JSON error.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(key, value) for key, value in scope["headers"] if key != b"range"]
        await super().__call__({**scope, "headers": headers}, receive, send)


class TrackedSend:
    """An ASGI ``send`` that remembers whether the answer has begun: after that, no error
    answer can replace it."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)


class CutShortRequests:
    """ASGI middleware for requests cut short, which uvicorn would log as application errors,
    traceback and all: a client gone mid-upload (nobody to answer, nothing wrong here) ends
    quietly, and a request still open SHUTDOWN_GRACE_S after Ctrl-C (uvicorn then cancels it) is
    answered 503 rather than 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            return
        except asyncio.CancelledError:
            if scope["type"] != "http" or tracked.started:
                raise
            await _reply(scope, send, 503, "the server is shutting down")


class AnswerHeaders:
    """ASGI middleware: SECURITY_HEADERS on every answer, and ``Cache-Control: no-store`` on all
    but the static files (a prediction or a health check is never to be answered from a cache)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = list(SECURITY_HEADERS)
        if not scope["path"].startswith("/static/"):
            extra.append((b"cache-control", b"no-store"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            # Not "too large" but malformed. isascii(): a str's isdigit() passes '²', which int()
            # rejects (ASGI headers are bytes, whose isdigit() is ASCII-only, but say so here).
            await _reply(scope, send, 400, "invalid Content-Length header (not a decimal number)")
            return
        if declared is not None and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        tracked = TrackedSend(send)
        try:
            await self.app(scope, counting_receive, tracked)
        except BodyTooLarge:
            if not tracked.started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        limit = f"request body too large (the limit is {self.max_bytes:,} bytes)"
        await _reply(scope, send, 413, limit)


async def _reply(scope: Scope, send: Send, status: int, error: str) -> None:
    """Answer ``{"error": ...}`` without reading the body, and close the connection (the unread
    body must not be taken for the next request)."""
    response = JSONResponse({"error": error}, status_code=status, headers={"connection": "close"})
    await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def listen_socket(host: str = LOOPBACK, port: int = 0) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening (port 0: the OS picks a free one).

    Binding here, before anything is announced or uvicorn starts, turns a port in use or an
    address that is not this machine's into one DeepConvNetError line instead of uvicorn's log
    and ``SystemExit``; the socket is then handed to uvicorn, so there is no race for the port.
    """
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
        sock.listen()
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise DeepConvNetError(
            f"cannot listen on {_authority(host, port)}: {_reason(exc)}"
        ) from exc
    return sock


def _reason(exc: OSError) -> str:
    """``address already in use`` rather than ``[Errno 98] Address already in use``."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def socket_url(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a listening socket (the real port when 0 was asked for)."""
    return f"http://{_authority(*sock.getsockname()[:2])}"


def _authority(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 address in brackets as URLs write it (``[::1]:8000``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def serve(classifier: DigitClassifier, sock: socket.socket, *, log_level: str = "info") -> None:
    """Run the app with uvicorn on ``sock`` (from :func:`listen_socket`) until interrupted."""
    import uvicorn

    server = uvicorn.Server(server_config(create_app(classifier), log_level=log_level))
    # uvicorn's lifecycle lines (started, waiting for startup, shutting down, ...) say nothing
    # the "serving ..." line and Ctrl-C's "interrupted" do not; warnings and errors still show.
    lifecycle = logging.getLogger("uvicorn.error")  # set to log_level by the Config
    lifecycle.setLevel(max(lifecycle.level, logging.WARNING))
    try:
        with _sigint_interrupts():
            server.run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def _sigint_interrupts() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt while the block runs, even where it was inherited ignored.

    uvicorn stops on SIGINT whatever its disposition, then raises the signal again for the
    caller; an inherited ``SIG_IGN`` (a script's background job has it) swallowed that, so a
    server stopped by SIGINT exited 0 instead of 130 with "interrupted", as ``train`` does.
    """
    ignored = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    )
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def server_config(app: ASGIApp, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration of every server here: capped connections, a bounded shutdown."""
    import uvicorn

    options = {
        "limit_concurrency": MAX_CONNECTIONS,
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_S,
        **options,
    }
    return uvicorn.Config(app, **options)


@contextmanager
def running_server(
    app: ASGIApp, *, host: str = LOOPBACK, timeout: float = 10.0, **options: Any
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread on a free port; yields the base URL.

    The socket is bound before the thread starts (port 0: the OS picks a free port), so there is
    no race for the port; the server is stopped and joined on exit. For tests and notebooks.
    ``options`` override :func:`server_config`'s.
    """
    import uvicorn

    sock = listen_socket(host, 0)
    quiet = {"log_level": "warning", "lifespan": "off"}
    server = uvicorn.Server(server_config(app, **{**quiet, **options}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield socket_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
