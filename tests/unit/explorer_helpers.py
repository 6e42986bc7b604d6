"""Helpers of the explorer's HTTP tests: requests over a real socket, PNG decoding, the protocol asked directly."""
from __future__ import annotations

import base64
import http.client
import io
import json

import numpy as np

from shared.explorer.server import Explorer

SIZE, DIM = 32, 4
TINY = dict(data="synthetic:240", image_size=SIZE, channels=(8, 16), hidden_dims=(32,), latent_dim=DIM, epochs=1)


def call(ex: Explorer, method: str, path: str, body=None, headers=None) -> tuple[int, dict, bytes]:
    """``(status, headers, body)``; dict/list bodies are sent as JSON, bytes as they are."""
    conn = http.client.HTTPConnection("127.0.0.1", ex.port, timeout=30)
    try:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def ok_json(ex: Explorer, path: str, body=None, method: str = "POST") -> dict:
    status, headers, data = call(ex, method, path, body)
    assert status == 200, data
    assert headers["content-type"].startswith("application/json")
    return json.loads(data)


def png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == "L"
        return np.asarray(im)


def from_url(url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return png(base64.b64decode(url[len(prefix):]))


def ok_png(ex: Explorer, path: str, body) -> np.ndarray:
    status, headers, data = call(ex, "POST", path, body)
    assert status == 200, data
    assert headers["content-type"] == "image/png"
    return png(data)


def protocol(ex: Explorer, name: str, *args):
    """Ask the served model directly (under the server's lock)."""
    with ex.session.lock:
        return getattr(ex.session.model, name)(*args)


def own_labels(ex: Explorer, index: int):
    return ex.session._own_labels(index)


def reference(ex: Explorer, n: int = 1):
    return ex.session._reference(n)


def image_bytes(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


