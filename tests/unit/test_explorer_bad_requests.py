"""Every bad request a client can send to the explorer gets a 4xx JSON naming the field; paths cannot escape."""
from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import threading
import zlib

import numpy as np
import pytest

from shared.explorer import server as server_mod
from shared.explorer.server import Explorer
from shared.explorer.validate import MAX_UPLOAD_BYTES

from tests.unit.explorer_helpers import DIM, SIZE, call, image_bytes, ok_json


# --------------------------------------------------------------------------- bad requests -> 4xx JSON

def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` (a decompression bomb's signature)."""
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    chunk = len(ihdr[4:]).to_bytes(4, "big") + ihdr + zlib.crc32(ihdr).to_bytes(4, "big")
    idat = b"IDAT" + zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk + len(idat[4:]).to_bytes(4, "big") + idat + \
        zlib.crc32(idat).to_bytes(4, "big")


def _small_png(size: int) -> str:
    return "data:image/png;base64," + base64.b64encode(image_bytes(np.zeros((size, size), np.uint8), "PNG")).decode()


_Z = [0.0] * DIM
_FACE_PNG = image_bytes(np.random.default_rng(1).integers(0, 256, (60, 60), dtype=np.uint8), "PNG")
_BITS = "1" * 100 + "0" * (SIZE * SIZE - 100)

BAD = [  # (path, body: dict = JSON, bytes = raw, words the error must contain)
    ("/api/decode", b"", "empty"),
    ("/api/decode", b"not json", "JSON"),
    ("/api/decode", b"[1, 2]", "object"),
    ("/api/decode", b"\xff\xfe{}", "UTF-8"),
    ("/api/decode", b'{"z": [NaN, 0, 0, 0]}', "finite"),
    ("/api/decode", b'{"z": [Infinity, 0, 0, 0]}', "finite"),
    ("/api/decode", b'{"z": [-Infinity, 0, 0, 0]}', "finite"),
    ("/api/decode", b'{"z": [1e999, 0, 0, 0]}', "finite"),
    ("/api/decode", b'{"z": [1' + b"0" * 5000 + b', 0, 0, 0]}', "JSON"),
    ("/api/decode", b"[" * 100_000 + b"]" * 100_000, "nested"),
    ("/api/decode", b'{"z": [0, 0, 0, 0], "z": [1, 1, 1, 1]}', "twice"),
    ("/api/decode", {}, "`z`"),
    ("/api/decode", {"z": [0, 0, 0]}, "`z`"),
    ("/api/decode", {"z": [0.0] * 40_000}, "`z`"),
    ("/api/decode", {"z": "0,0,0,0"}, "`z`"),
    ("/api/decode", {"z": [True, 0, 0, 0]}, "`z[0]`"),
    ("/api/decode", {"z": [0, "1", 0, 0]}, "`z[1]`"),
    ("/api/decode", {"z": [0, 0, 10.5, 0]}, "`z[2]`"),
    ("/api/decode", {"z": [0, 0, 0, [1]]}, "`z[3]`"),
    ("/api/decode", {"z": _Z, "zz": 1}, "`zz`"),
    ("/api/decode", {"z": _Z, "labels": {"gender": 0, "ethnicity": 0, "age": 30}}, "`labels`"),
    ("/api/encode", {}, "`face`"),
    ("/api/encode", {"face": -1}, "`face`"),
    ("/api/encode", {"face": 10_000}, "`face`"),
    ("/api/encode", {"face": 1.0}, "`face`"),
    ("/api/encode", {"face": "1"}, "`face`"),
    ("/api/encode", {"face": True}, "`face`"),
    ("/api/encode", {"face": None}, "`face`"),
    ("/api/encode", {"face": 0, "image": _small_png(SIZE)}, "`face`"),
    ("/api/encode", {"face": 0, "labels": {"gender": 0, "ethnicity": 0, "age": 30}}, "labels"),
    ("/api/encode", {"image": "hello"}, "`image`"),
    ("/api/encode", {"image": "data:image/png;base64,!!!!"}, "`image`"),
    ("/api/encode", {"image": "data:image/png;base64,QUJD"}, "`image`"),
    ("/api/encode", {"image": "data:image/png;base64,QUJ"}, "`image`"),
    ("/api/encode", {"image": _small_png(SIZE + 1)}, "`image`"),
    ("/api/encode", {"image": "data:image/png;base64," + base64.b64encode(
        image_bytes(np.zeros((SIZE, SIZE), np.uint8), "JPEG")).decode()}, "`image`"),
    ("/api/matrix", {"corners": [_Z] * 4, "n": 1}, "`n`"),
    ("/api/matrix", {"corners": [_Z] * 4, "n": 13}, "`n`"),
    ("/api/matrix", {"corners": [_Z] * 4, "n": 1_000_000}, "`n`"),
    ("/api/matrix", {"corners": [_Z] * 4, "n": "3"}, "`n`"),
    ("/api/matrix", {"corners": [_Z] * 4, "n": 3.0}, "`n`"),
    ("/api/matrix", {"corners": [_Z] * 3, "n": 3}, "`corners`"),
    ("/api/matrix", {"corners": [_Z] * 4000, "n": 3}, "`corners`"),
    ("/api/matrix", {"corners": [_Z, _Z, _Z, [0, 0]], "n": 3}, "`corners[3]`"),
    ("/api/matrix", {"corners": [_Z, _Z, [0, 0, 99, 0], _Z], "n": 3}, "`corners[2][2]`"),
    ("/api/matrix", {"corners": [_Z] * 4, "n": 3, "slerp": "yes"}, "`slerp`"),
    ("/api/matrix", {"corners": [_Z] * 4, "n": 3, "slerp": 1}, "`slerp`"),
    ("/api/sample", {"seed": -1, "count": 2}, "`seed`"),
    ("/api/sample", {"seed": 2**32, "count": 2}, "`seed`"),
    ("/api/sample", {"seed": 0, "count": 0}, "`count`"),
    ("/api/sample", {"seed": 0, "count": 17}, "`count`"),
    ("/api/sample", {"seed": 0, "count": 10**12}, "`count`"),
    ("/api/sample", {"seed": 0, "count": 2.5}, "`count`"),
    ("/api/denoise", {"face": 0, "sigma": 0}, "`sigma`"),
    ("/api/denoise", {"face": 0, "sigma": -0.1}, "`sigma`"),
    ("/api/denoise", {"face": 0, "sigma": 1.01}, "`sigma`"),
    ("/api/denoise", {"face": 0, "sigma": "0.1"}, "`sigma`"),
    ("/api/denoise", {"face": 0, "sigma": False}, "`sigma`"),
    ("/api/denoise", b'{"face": 0, "sigma": NaN}', "finite"),
    ("/api/denoise", {"sigma": 0.1}, "`face`"),
    ("/api/denoise", {"face": 0, "sigma": 0.1, "seed": -5}, "`seed`"),
    ("/api/inpaint", {"face": 0, "mask": "circle", "method": "decode"}, "`mask`"),
    ("/api/inpaint", {"face": 0, "mask": "box", "method": "magic"}, "`method`"),
    ("/api/inpaint", {"face": 0, "mask": "box"}, "`method`"),
    ("/api/inpaint", {"face": 0, "mask": "drawn", "method": "decode"}, "`mask_bits`"),
    ("/api/inpaint", {"face": 0, "mask": "drawn", "method": "decode", "mask_bits": "01"}, "`mask_bits`"),
    ("/api/inpaint", {"face": 0, "mask": "drawn", "method": "decode", "mask_bits": _BITS.replace("0", "2")},
     "`mask_bits`"),
    ("/api/inpaint", {"face": 0, "mask": "drawn", "method": "decode", "mask_bits": "0" * SIZE * SIZE},
     "`mask_bits`"),
    ("/api/inpaint", {"face": 0, "mask": "drawn", "method": "decode", "mask_bits": "1" * SIZE * SIZE},
     "`mask_bits`"),
    ("/api/inpaint", {"face": 0, "mask": "drawn", "method": "decode", "mask_bits": [1] * SIZE * SIZE},
     "`mask_bits`"),
    ("/api/inpaint", {"face": 0, "mask": "box", "method": "decode", "mask_bits": _BITS}, "`mask_bits`"),
    ("/api/upload", b"", "empty"),
    ("/api/upload", b"GIF89a not really", "not an image"),
    ("/api/upload", np.random.default_rng(0).bytes(5000), "not an image"),
    ("/api/upload", _FACE_PNG[:len(_FACE_PNG) // 2], "truncated"),
    ("/api/upload", _png_header(100_000, 100_000), "pixels"),
    ("/api/upload", _png_header(8000, 8000), "pixels"),
    ("/api/upload", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),
]


@pytest.mark.parametrize("path,body,words", BAD, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(BAD)])
def test_bad_requests_get_400_naming_the_field(vae, path, body, words):
    status, headers, data = call(vae, "POST", path, body)
    assert status == 400, data[:300]
    assert headers["content-type"].startswith("application/json")
    message = json.loads(data)["error"]
    assert words in message and "Traceback" not in message and len(message) < 400


CVAE_BAD = [
    ("/api/generate", {"gender": 2, "ethnicity": 0, "age": 30}, "`gender`"),
    ("/api/generate", {"gender": "male", "ethnicity": 0, "age": 30}, "`gender`"),
    ("/api/generate", {"gender": 0, "ethnicity": 5, "age": 30}, "`ethnicity`"),
    ("/api/generate", {"gender": 0, "ethnicity": 0, "age": 117}, "`age`"),
    ("/api/generate", {"gender": 0, "ethnicity": 0, "age": -1}, "`age`"),
    ("/api/generate", {"gender": 0, "ethnicity": 0, "age": 30.5}, "`age`"),
    ("/api/generate", {"gender": 0, "ethnicity": 0}, "`age`"),
    ("/api/generate", {"gender": 0, "ethnicity": 0, "age": 30, "count": 17}, "`count`"),
    ("/api/generate", {"gender": 0, "ethnicity": 0, "age": 30, "seed": 2**40}, "`seed`"),
    ("/api/generate", {"gender": 0, "ethnicity": 0, "age": 30, "temperature": 0}, "`temperature`"),
    ("/api/generate", {"gender": 0, "ethnicity": 0, "age": 30, "temperature": 1.5}, "`temperature`"),
    ("/api/generate", {"gender": 0, "ethnicity": 0, "age": 30, "temperature": "cold"}, "`temperature`"),
    ("/api/edit", {"face": 99_999, "gender": 0, "ethnicity": 0, "age": 30}, "`face`"),
    ("/api/edit", {"face": 0, "gender": 0, "ethnicity": 0, "age": 30, "count": 2}, "`count`"),
    ("/api/decode", {"z": _Z, "labels": "male"}, "`labels`"),
    ("/api/decode", {"z": _Z, "labels": {"gender": 0, "ethnicity": 0}}, "`labels.age`"),
    ("/api/decode", {"z": _Z, "labels": {"gender": 0, "ethnicity": 0, "age": 3, "mood": 1}}, "`labels.mood`"),
    ("/api/matrix", {"corners": [_Z] * 4, "n": 2, "labels": {"gender": 0, "ethnicity": 9, "age": 3}},
     "`labels.ethnicity`"),
    ("/api/encode", {"image": _small_png(SIZE), "labels": {"gender": True, "ethnicity": 0, "age": 3}},
     "`labels.gender`"),
]


@pytest.mark.parametrize("path,body,words", CVAE_BAD, ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(CVAE_BAD)])
def test_bad_conditional_requests_get_400_naming_the_field(cvae, path, body, words):
    status, _, data = call(cvae, "POST", path, body)
    assert status == 400, data[:300]
    assert words in json.loads(data)["error"]


@pytest.mark.parametrize("query,words", [("start=-1", "start"), ("start=999999", "start"), ("count=0", "count"),
                                         ("count=65", "count"), ("count=abc", "count"), ("count=1.5", "count"),
                                         ("start=0&start=1", "start"), ("begin=0", "begin"),
                                         ("count=" + "9" * 40, "count")])
def test_bad_face_queries_get_400(vae, query, words):
    status, _, data = call(vae, "GET", "/api/faces?" + query)
    assert status == 400 and words in json.loads(data)["error"]


def test_bodies_over_the_limits_get_413_without_being_read(vae):
    status, headers, data = call(vae, "POST", "/api/upload", b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert status == 413 and "at most" in json.loads(data)["error"]
    # a JSON endpoint declares a huge body and sends none of it: refused at once from the header alone
    answer = _raw(vae, b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999999\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"Connection: close" in answer


def _raw(ex: Explorer, request: bytes, *, wait: float = 10.0) -> bytes:
    """Send ``request`` bytes as they are; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", ex.port), timeout=wait) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize("head,status", [
    (b"POST /api/decode HTTP/1.1\r\nHost: x\r\n\r\n", b"403"),                      # foreign Host
    (b"POST /api/decode HTTP/1.1\r\nHost: localhost\r\n\r\n", b"411"),              # no Content-Length
    (b"POST /api/decode HTTP/1.1\r\nContent-Length: abc\r\n\r\n", b"400"),
    (b"POST /api/decode HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
    (b"POST /api/decode HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", b"400"),
    (b"POST /api/decode HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", b"411"),
    (b"POST /api/decode HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"z\": [0, 0]}", b"408"),  # body never completes
    (b"POST /api/decode HTTP/1.1\r\nContent-Length: 5\r\n\r\n{\"z\": [0, 0, 0, 0]}", b"400"),  # cut to 5 bytes
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"BREW /api/decode HTTP/1.1\r\n\r\n", b"405"),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", b"414"),
])
def test_malformed_http_gets_a_4xx_json(vae, head, status):
    answer = _raw(vae, head)
    assert answer.startswith(b"HTTP/1.1 " + status) or answer.startswith(b"HTTP/1.0 " + status), answer[:200]
    headers, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in headers and json.loads(body.split(b"HTTP/1.1")[0])["error"]


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/nope", 404), ("GET", "/api/nope", 404), ("POST", "/api/nope", 404), ("GET", "/api/info/", 404),
    ("GET", "/index.html", 404), ("GET", "/static/", 404), ("GET", "/static/../server.py", 404),
    ("GET", "/static/%2e%2e/server.py", 404), ("GET", "/static/%2e%2e%2fserver.py", 404),
    ("GET", "/static/..%2f..%2fsetup.cfg", 404), ("GET", "/static//etc/passwd", 404),
    ("GET", "/static/%2fetc%2fpasswd", 404), ("GET", "/static/.hidden", 404), ("GET", "/static/a%00b", 404),
    ("GET", "/static/__init__.py", 404), ("GET", "/../server.py", 404),
    ("GET", "/api/decode", 405), ("PUT", "/api/decode", 405), ("DELETE", "/", 405), ("POST", "/api/info", 405),
    ("POST", "/", 405), ("HEAD", "/api/info", 405), ("OPTIONS", "/api/encode", 405), ("PATCH", "/static/x.js", 405),
])
def test_unknown_paths_404_and_wrong_methods_405(vae, method, path, status):
    got, headers, data = call(vae, method, path, b"{}" if method in ("POST", "PUT", "PATCH") else None)
    assert got == status
    if method != "HEAD":
        assert "error" in json.loads(data)
    if status == 405:
        assert headers["allow"] in ("GET", "POST")


def test_static_files_are_only_regular_files_directly_in_the_folder(vae, tmp_path, monkeypatch):
    static = tmp_path / "static"
    (static / "sub").mkdir(parents=True)
    (static / "app.js").write_text("let x = 1;")
    (static / "sub" / "inner.js").write_text("secret")
    (tmp_path / "outside.txt").write_text("secret")
    (static / "link.txt").symlink_to(tmp_path / "outside.txt")
    monkeypatch.setattr(server_mod, "STATIC", static.resolve())
    status, headers, data = call(vae, "GET", "/static/app.js")
    assert status == 200 and data == b"let x = 1;" and headers["content-type"].startswith("text/javascript")
    for path in ("/static/link.txt", "/static/sub", "/static/sub/inner.js", "/static/sub%2finner.js",
                 "/static/..%2foutside.txt", "/static/missing.js"):
        status, _, data = call(vae, "GET", path)
        assert status == 404 and b"secret" not in data, path
    assert call(vae, "GET", "/")[0] == 404  # no index.html in this folder


# --------------------------------------------------------------------------- robustness

def test_an_unexpected_exception_is_a_logged_500_without_details(vae, monkeypatch, caplog):
    def boom(body):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(vae.session, "api_sample", boom)
    with caplog.at_level(logging.ERROR, logger="shared.explorer.server"):
        status, _, data = call(vae, "POST", "/api/sample", {"seed": 0, "count": 1})
    assert status == 500 and json.loads(data) == {"error": "internal error: RuntimeError"}
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info and "/api/sample" in record.getMessage()


def test_concurrent_requests_are_serialised_and_identical(vae):
    body = {"z": [0.3, -1.0, 0.7, 2.0]}
    expected = call(vae, "POST", "/api/decode", body)[2]
    results: list[bytes] = []

    def worker():
        for _ in range(4):
            results.append(call(vae, "POST", "/api/decode", body)[2])
            results.append(json.dumps(ok_json(vae, "/api/encode", {"face": 1})).encode())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 48 and results.count(expected) == 24
    assert len(set(results)) == 2


def test_keep_alive_connection_serves_many_requests(vae):
    conn = http.client.HTTPConnection("127.0.0.1", vae.port, timeout=30)
    try:
        for k in range(5):
            conn.request("POST", "/api/decode", body=json.dumps({"z": [k / 5] * DIM}))
            resp = conn.getresponse()
            assert resp.status == 200 and len(resp.read()) > 0
        conn.request("POST", "/api/decode", body=b'{"z": 1}')  # an error keeps a fully read connection open
        resp = conn.getresponse()
        assert resp.status == 400 and resp.read()
        conn.request("GET", "/api/info")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
