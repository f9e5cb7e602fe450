"""The web API on a real uvicorn (loopback, free port) and the predict command."""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from deepconvnet.checkpoint import save_model
from deepconvnet.cli import main
from deepconvnet.images import load_digit
from deepconvnet.models import build_model
from deepconvnet.serve import DigitClassifier
from deepconvnet.serve.app import SHUTDOWN_GRACE_S, BodySizeLimit, create_app, running_server

BODY_LIMIT = 64 * 1024  # small, so that "too large" costs nothing to send


def seven_png(size: tuple[int, int] = (200, 300), *, fmt: str = "PNG") -> bytes:
    """A '7' drawn dark on light paper, encoded as ``fmt``."""
    width, height = size
    img = Image.new("RGB", size, "white")
    side = 0.6 * min(size)
    x0, y0 = (width - 0.6 * side) / 2, (height - side) / 2
    points = [(x0, y0), (x0 + 0.6 * side, y0), (x0 + 0.2 * side, y0 + side)]
    ImageDraw.Draw(img).line(points, fill="black", width=max(1, int(0.12 * side)))
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def bomb_png() -> bytes:
    """An 8000x8000 PNG (64 Mpx) of a few KB: within the body limit, over the pixel limit."""
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    model = build_model("deepconvnet", rng=np.random.default_rng(7))
    path = tmp_path_factory.mktemp("model") / "model.npz"
    save_model(path, model)
    return path


@pytest.fixture(scope="module")
def classifier(model_path):
    return DigitClassifier.from_path(model_path)


@pytest.fixture(scope="module")
def base_url(classifier):
    app = create_app(classifier, max_body_bytes=BODY_LIMIT, max_pixels=40_000_000)
    with running_server(app) as url:
        yield url


@pytest.fixture()
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


def mnist_like_pixels() -> np.ndarray:
    digit = np.zeros((28, 28))
    digit[6:22, 12:16] = 1.0  # a '1'
    digit[6:9, 10:16] = 0.5
    return digit


# -- the API ------------------------------------------------------------------------------------
def test_healthz_and_page(client):
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["parameters"] == 123_552
    page = client.get("/")
    assert page.status_code == 200
    assert '<canvas id="pad"' in page.text and "/static/app.js" in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "/api/predict" in script.text
    assert "http://" not in page.text + script.text  # no external resources


def test_predict_uploaded_image_matches_the_cli_preprocessing(client, classifier):
    png = seven_png()
    response = client.post("/api/predict", files={"file": ("seven.png", png, "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    digit = load_digit(png)
    expected = classifier.probabilities(digit[None])[0]
    assert answer["label"] == int(expected.argmax())
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.array(answer["input"]), digit, atol=5e-5)
    assert sum(answer["probabilities"]) == pytest.approx(1.0)


def test_a_model_whose_outputs_overflow_answers_500_naming_the_model(tmp_path):
    """Finite weights whose products overflow float32: the server's fault, not the client's
    (a 500 with the model named, never NaN probabilities in a 200)."""
    model = build_model("deepconvnet", rng=np.random.default_rng(7))
    last = [p for name, p in model.params().items() if name.endswith("W")][-1]
    last[...] = 3e38
    path = tmp_path / "overflowing.npz"
    save_model(path, model)
    app = create_app(DigitClassifier.from_path(path), max_body_bytes=BODY_LIMIT)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        response = client.post("/api/predict", json={"pixels": mnist_like_pixels().tolist()})
    assert response.status_code == 500
    assert response.json() == {"error": f"{path}: the model's outputs are not finite numbers"}


def test_predict_raw_pixels_are_used_as_given(client, classifier):
    pixels = mnist_like_pixels()
    response = client.post("/api/predict", json={"pixels": pixels.tolist()})
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = classifier.probabilities(pixels[None].astype(np.float32))[0]
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-9, atol=1e-12)
    assert answer["label"] == int(expected.argmax())
    np.testing.assert_array_equal(np.array(answer["input"]), pixels)


def test_predict_raw_image_body(client, classifier):
    png = seven_png((64, 64))
    response = client.post("/api/predict", content=png, headers={"content-type": "image/png"})
    assert response.status_code == 200
    expected = classifier.probabilities(load_digit(png)[None])[0]
    np.testing.assert_allclose(response.json()["probabilities"], expected, rtol=1e-9)


def _post(client, kind):
    if kind == "not-an-image":
        return client.post("/api/predict", files={"file": ("x.png", b"hello, world", "image/png")})
    if kind == "truncated-image":
        return client.post("/api/predict", files={"file": ("x.png", seven_png()[:300])})
    if kind == "blank-image":
        white = io.BytesIO()
        Image.new("L", (50, 50), 255).save(white, format="PNG")
        return client.post("/api/predict", files={"file": ("x.png", white.getvalue())})
    if kind == "no-file":
        return client.post("/api/predict", files={"note": (None, "hello")})
    if kind == "wrong-shape":
        return client.post("/api/predict", json={"pixels": np.zeros((28, 27)).tolist()})
    if kind == "ragged":
        return client.post("/api/predict", json={"pixels": [[0.0] * 28] * 27 + [[0.0]]})
    if kind == "out-of-range":
        pixels = mnist_like_pixels() * 255
        return client.post("/api/predict", json={"pixels": pixels.tolist()})
    if kind == "nan":
        body = json.dumps({"pixels": [[0.0] * 28] * 27 + [[float("nan")] * 28]})
        assert "NaN" in body
        return client.post(
            "/api/predict", content=body, headers={"content-type": "application/json"}
        )
    if kind == "not-json":
        return client.post(
            "/api/predict", content=b"{pixels", headers={"content-type": "application/json"}
        )
    if kind == "no-pixels":
        return client.post("/api/predict", json={"image": []})
    if kind == "null-pixels":
        return client.post("/api/predict", json={"pixels": None})
    if kind == "deeply-nested":  # the JSON parser recurses per level: RecursionError, not 500
        body = b'{"pixels":' + b"[" * 2000 + b"]" * 2000 + b"}"
        return client.post(
            "/api/predict", content=body, headers={"content-type": "application/json"}
        )
    if kind == "unsupported-type":
        return client.post("/api/predict", content=b"7", headers={"content-type": "text/plain"})
    if kind == "too-large":
        return client.post("/api/predict", files={"file": ("big.png", b"\0" * (BODY_LIMIT + 1))})
    if kind == "too-large-streamed":  # no Content-Length: counted as it arrives
        chunks = (b"\0" * 16384 for _ in range(BODY_LIMIT // 16384 + 2))
        return client.post("/api/predict", content=chunks, headers={"content-type": "image/png"})
    if kind == "decompression-bomb":
        return client.post("/api/predict", files={"file": ("bomb.png", bomb_png(), "image/png")})
    if kind == "unknown-route":
        return client.get("/nope")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "status", "words"),
    [
        ("not-an-image", 400, "not an image"),
        ("truncated-image", 400, "truncated or corrupt"),
        ("blank-image", 400, "no digit found"),
        ("no-file", 400, "no file"),
        ("wrong-shape", 400, "expected shape 28x28, got 28x27"),
        ("ragged", 400, "expected"),
        ("out-of-range", 400, "must be in [0, 1]"),
        ("nan", 400, "finite"),
        ("not-json", 400, "not valid JSON"),
        ("no-pixels", 400, '{"pixels"'),
        ("null-pixels", 400, "expected shape 28x28, got null"),
        ("deeply-nested", 400, "nested too deeply"),
        ("unsupported-type", 415, "unsupported content type"),
        ("too-large", 413, "body too large"),
        ("too-large-streamed", 413, "body too large"),
        ("decompression-bomb", 413, "image too large (8000x8000"),
        ("unknown-route", 404, "Not Found"),
    ],
)
def test_bad_requests_get_a_json_4xx(client, kind, status, words):
    response = _post(client, kind)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert words in error
    assert "\n" not in error


def test_server_still_answers_after_bad_requests(client):
    """Refusing a body early must not wedge the server (the next request is served)."""
    assert _post(client, "too-large").status_code == 413
    assert client.get("/healthz").status_code == 200


def _asgi_status(app, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict]:
    """Call an ASGI app with one POST; returns its status and JSON body."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/predict", "headers": headers}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


@pytest.mark.parametrize(
    ("value", "status", "words"),
    [
        ("²".encode(), 400, "invalid Content-Length"),  # a Unicode digit, not a number
        (b"12a", 400, "invalid Content-Length"),
        (b"99999", 413, "body too large"),
    ],
)
def test_content_length_must_be_ascii_digits(value, status, words):
    async def never_called(scope, receive, send):
        raise AssertionError("a refused request reached the app")

    limited = BodySizeLimit(never_called, max_bytes=1000)
    code, body = _asgi_status(limited, [(b"content-length", value)])
    assert code == status and words in body["error"]


def test_a_range_header_on_static_files_is_ignored(client):
    """A malformed Range used to get Starlette's plain-text 400; the files are served whole."""
    whole = client.get("/static/app.js")
    for value in ("bytes=10-5", "bytes=abc", "items=0-5", "bytes=0-9"):
        response = client.get("/static/app.js", headers={"Range": value})
        assert response.status_code == 200, (value, response.text)
        assert response.content == whole.content


def test_uploads_are_decoded_at_most_decode_slots_at_a_time(classifier, monkeypatch):
    """Each decode may hold a large decoded image; concurrent uploads queue for a slot."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import deepconvnet.serve.app as app_module

    lock, running, most, threads = threading.Lock(), [0], [0], set()

    def slow_load_digit(*args, **kwargs):
        with lock:
            threads.add(threading.current_thread().name)
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return load_digit(*args, **kwargs)

    monkeypatch.setattr(app_module, "load_digit", slow_load_digit)
    monkeypatch.setattr(app_module, "SMALL_UPLOAD_BYTES", -1)  # every upload a photo
    app = create_app(classifier, max_body_bytes=BODY_LIMIT, decode_slots=2)
    for _ in range(2):  # served twice: the limit is bound to no one event loop
        with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:

            def upload(_):
                files = {"file": ("7.png", seven_png())}
                return http.post("/api/predict", files=files).status_code

            with ThreadPoolExecutor(6) as pool:
                statuses = list(pool.map(upload, range(6)))
        assert statuses == [200] * 6
    assert most[0] == 2
    # Only the app's two decoding threads ever decode: each keeps its memory (malloc arena).
    assert len(threads) == 2 and all(name.startswith("decode") for name in threads)


def test_a_drawing_is_answered_while_photos_queue_for_the_decoders(classifier, monkeypatch):
    """Uploads were decoded in the order they came: the page's drawing (or JSON pixels) waited
    for every large photo before it. Small images have a lane of their own; a photo whose file
    is small but whose header says more than 1 MP is refused there and joins the photos' queue."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import deepconvnet.serve.app as app_module

    photo_started, release, lanes = threading.Event(), threading.Event(), {}
    digit_from_json = app_module._digit_from_json

    def recorded_digit_from_json(body):
        lanes["json"] = threading.current_thread().name
        return digit_from_json(body)

    def gated_load_digit(data, *, name, max_pixels):
        if max_pixels > app_module.SMALL_UPLOAD_PIXELS:  # the photos' pool
            photo_started.set()
            assert release.wait(30)
        digit = load_digit(data, name=name, max_pixels=max_pixels)
        lanes[name] = threading.current_thread().name
        return digit

    monkeypatch.setattr(app_module, "load_digit", gated_load_digit)
    monkeypatch.setattr(app_module, "_digit_from_json", recorded_digit_from_json)
    big = Image.new("L", (1200, 1000), 255)  # 1.2 MP, a file of a few KB
    big.paste(Image.open(io.BytesIO(seven_png())).resize((400, 400)), (400, 300))
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    app = create_app(classifier, max_body_bytes=BODY_LIMIT, decode_slots=1)
    with (
        running_server(app) as url,
        httpx.Client(base_url=url, timeout=60) as http,
        ThreadPoolExecutor(3) as pool,
    ):
        photos = [
            pool.submit(http.post, "/api/predict", files={"file": (f"p{i}.png", buffer.getvalue())})
            for i in range(3)
        ]
        assert photo_started.wait(30)  # one photo holds the photos' only decoder
        try:  # queued behind that photo, the drawing would wait out the 10 s: ReadTimeout
            drawing = http.post("/api/predict", files={"file": ("7.png", seven_png())}, timeout=10)
            pixels = {"pixels": mnist_like_pixels().tolist()}
            drawn = http.post("/api/predict", json=pixels, timeout=10)  # it queued there too
        finally:
            release.set()
        assert (drawing.status_code, drawn.status_code) == (200, 200)
        assert [photo.result().status_code for photo in photos] == [200] * 3
    assert lanes["7.png"].startswith("decodesmall") and lanes["json"].startswith("decodesmall")
    assert all(lanes[f"p{i}.png"].startswith("decode1") for i in range(3))


def test_every_answer_carries_the_security_headers_and_only_static_files_are_cacheable(client):
    answers = {
        "/": client.get("/"),
        "/healthz": client.get("/healthz"),
        "/api/predict": client.post("/api/predict", json={"pixels": "no"}),
        "/nope": client.get("/nope"),
        "/static/app.js": client.get("/static/app.js"),
    }
    assert [a.status_code for a in answers.values()] == [200, 200, 400, 404, 200]
    for path, answer in answers.items():
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["x-frame-options"] == "DENY", path
        assert answer.headers.get("cache-control") == (None if "static" in path else "no-store")


def test_head_is_answered_where_get_is(client):
    """HEAD / and HEAD /healthz were 405: uptime checkers that send HEAD saw the server down."""
    for path in ("/", "/healthz", "/static/app.js"):
        head, get = client.head(path), client.get(path)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == get.headers["content-type"]


def _stalled_request(url: str) -> socket.socket:
    """A connection that sends half a request's headers and then nothing."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stalled = socket.create_connection((host, int(port)))
    stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    return stalled


def test_connections_over_the_cap_are_answered_503_not_left_to_hang(classifier):
    """Stalled half-requests are held open; past the cap the server says 503 at once, where
    before enough of them used up its file descriptors and no one got an answer."""
    app = create_app(classifier)
    with running_server(app, limit_concurrency=3) as url, httpx.Client(base_url=url) as http:
        stalled = [_stalled_request(url)]
        assert http.get("/healthz").status_code == 200  # 2 connections of 3
        stalled += [_stalled_request(url) for _ in range(2)]
        # The server takes the connections in, and later sees them closed, in its own time.
        assert _status_becomes(http, 503)
        for connection in stalled:
            connection.close()
        assert _status_becomes(http, 200)


def _status_becomes(http: httpx.Client, status: int, within_s: float = 10.0) -> bool:
    """Whether GET /healthz answers ``status`` within ``within_s`` seconds (polled)."""
    deadline = time.monotonic() + within_s
    while http.get("/healthz").status_code != status:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _serve_with_sigint(model_path, disposition: str) -> subprocess.Popen:
    """``deepconvnet serve`` started with SIGINT's disposition set (``SIG_DFL`` or ``SIG_IGN``,
    which a script's background job inherits) whatever this process's own, through ``exec``."""
    launcher = (
        f"import os, signal, sys; signal.signal(signal.SIGINT, signal.{disposition}); "
        "os.execv(sys.executable, [sys.executable, '-m', 'deepconvnet', *sys.argv[1:]])"
    )
    return subprocess.Popen(
        [sys.executable, "-c", launcher, "serve", str(model_path), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("disposition", ["SIG_DFL", "SIG_IGN"])
def test_ctrl_c_stops_the_server_though_an_upload_is_half_sent(model_path, disposition):
    """Ctrl-C waited for ever on an open request (a second one dumped tracebacks); a client
    gone mid-upload was logged as an application error with its traceback. Started with SIGINT
    ignored, the server still stopped on it (uvicorn's doing) but exited 0, not 130."""
    server = _serve_with_sigint(model_path, disposition)
    try:
        announced = server.stderr.readline()
        assert announced.startswith("serving "), announced
        url = announced.split(" at ")[1].strip().rstrip("/")
        with httpx.Client(base_url=url, timeout=5) as http:
            assert http.get("/healthz").status_code == 200
        host, port = url.removeprefix("http://").rsplit(":", 1)
        gone, upload = (socket.create_connection((host, int(port))) for _ in range(2))
        for client in (gone, upload):
            client.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
            client.sendall(b"Content-Type: application/json\r\n\r\n{")
        time.sleep(0.3)
        gone.close()
        time.sleep(1.0)  # for the server to see the disconnect (nothing outside can tell when)
        stopped = time.monotonic()
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 130
        assert time.monotonic() - stopped < SHUTDOWN_GRACE_S + 5
        # No uvicorn lifecycle lines and no traceback. On a loaded machine the gone client's
        # task may still be open at the signal, and is cancelled with the upload's: 2 tasks.
        assert re.fullmatch(
            r"ERROR:    Cancel [12] running task\(s\), timeout graceful shutdown exceeded\n"
            r"deepconvnet: interrupted\n",
            server.stderr.read(),
        )
        upload.settimeout(5)
        assert upload.recv(4096).startswith(b"HTTP/1.1 503 ")  # the upload is told, not dropped
        upload.close()
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize(
    ("given", "bound"), [("[127.0.0.1]", "127.0.0.1"), (" 127.0.0.1 ", "127.0.0.1")]
)
def test_serve_host_may_be_bracketed_as_in_urls(model_path, capsys, given, bound):
    """``--host '[::1]'`` (as URLs write it) said 'cannot listen on [[::1]]:8000'."""
    with socket.socket() as taken:
        taken.bind((bound, 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(model_path), "--host", given, "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        f"deepconvnet: error: cannot listen on {bound}:{port}: address already in use\n"
    )


def test_serve_host_must_not_be_empty(model_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", str(model_path), "--host", ""])
    assert exited.value.code == 2
    assert "--host: expected an address or a host name, got nothing" in capsys.readouterr().err


# -- the serve command --------------------------------------------------------------------------
def test_serve_on_a_port_in_use_is_one_line_exit_2(model_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(model_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == f"deepconvnet: error: cannot listen on 127.0.0.1:{port}: address already in use\n"


def test_serve_on_an_address_not_of_this_machine_is_one_line_exit_2(model_path, capsys):
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never a local address, and no name lookup
    assert main(["serve", str(model_path), "--host", "192.0.2.1", "--port", "8000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepconvnet: error: cannot listen on 192.0.2.1:8000: ")
    assert err.count("\n") == 1 and "serving" not in err


# -- the predict command ------------------------------------------------------------------------
@pytest.fixture()
def images(tmp_path):
    paths = []
    for name, size, fmt in [("a.png", (200, 300), "PNG"), ("b.jpg", (90, 60), "JPEG")]:
        path = tmp_path / name
        path.write_bytes(seven_png(size, fmt=fmt))
        paths.append(path)
    return paths


def test_predict_json(model_path, classifier, images, capsys):
    assert main(["predict", str(model_path), *map(str, images), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["file"] for row in out] == [str(p) for p in images]
    batch = classifier.probabilities(np.stack([load_digit(p) for p in images]))
    for row, expected in zip(out, batch, strict=True):
        assert set(row) == {"file", "label", "probabilities"}
        np.testing.assert_allclose(row["probabilities"], expected, rtol=1e-12)
        assert row["label"] == int(expected.argmax())


def test_predict_top_k_and_saved_inputs(model_path, classifier, images, tmp_path, capsys):
    saved = tmp_path / "seen"
    args = ["predict", str(model_path), *map(str, images), "--top", "4"]
    assert main([*args, "--save-preprocessed", str(saved)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    batch = classifier.probabilities(np.stack([load_digit(p) for p in images]))
    for line, path, proba in zip(lines, images, batch, strict=True):
        ranked = np.argsort(proba, kind="stable")[::-1][:4]
        expected = "  ".join(f"{k} ({proba[k]:.3f})" for k in ranked)
        assert line.split(maxsplit=1) == [str(path), expected]
    written = sorted(p.name for p in saved.iterdir())
    assert written == ["000-a.png", "001-b.png"]
    seen = np.asarray(Image.open(saved / "000-a.png"))
    np.testing.assert_array_equal(seen, np.rint(load_digit(images[0]) * 255).astype(np.uint8))


def test_predict_saves_no_input_when_one_cannot_be_saved(model_path, images, tmp_path, capsys):
    saved = tmp_path / "seen"
    (saved / "001-b.png").mkdir(parents=True)  # the second input's place is taken
    argv = ["predict", str(model_path), *map(str, images), "--save-preprocessed", str(saved)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"deepconvnet: error: cannot write {saved / '001-b.png'}: Is a directory\n"
    assert sorted(p.name for p in saved.rglob("*")) == ["001-b.png"]  # no 000-a.png, no .tmp


@pytest.mark.parametrize(
    ("target", "words"),
    [("missing-model", "no such checkpoint"), ("non-image", "not an image")],
)
def test_predict_errors_are_one_line_exit_2(model_path, tmp_path, capsys, target, words):
    text = tmp_path / "notes.txt"
    text.write_text("not a digit\n")
    model = str(tmp_path / "nope.npz") if target == "missing-model" else str(model_path)
    assert main(["predict", model, str(text)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deepconvnet: error:")
    assert words in err


def test_predict_with_a_model_of_another_input_shape(tmp_path, images, capsys):
    path = save_model(tmp_path / "colour.npz", build_model("deepconvnet", input_shape=(3, 28, 28)))
    assert main(["predict", str(path), str(images[0])]) == 2
    assert capsys.readouterr().err == (
        f"deepconvnet: error: {path}: the model expects input of shape (3, 28, 28) (C, H, W), "
        "but prepared digits are (1, 28, 28)\n"
    )
