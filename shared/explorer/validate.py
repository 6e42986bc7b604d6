"""Parsing and validation of the explorer's requests, and the PNG codec of its images.

Everything a client sends passes through here before it reaches the model: JSON bodies (finite
numbers only, no duplicate or unknown fields, bounded nesting), integers that are not booleans,
latent vectors, labels, data URLs, drawn masks and uploaded image bytes (size checked before
decoding, so a decompression bomb is refused without allocating it). A bad value raises
:class:`shared.errors.ConfigError` whose message names the field, what is allowed and what was
received; the server answers it with a 400. :class:`ApiError` carries the other 4xx statuses.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from shared.errors import ConfigError

__all__ = ["ApiError", "MAX_JSON_BYTES", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "MAX_SEED", "MAX_LATENT",
           "parse_json", "check_fields", "get_int", "get_float", "get_bool", "get_choice", "get_latent",
           "get_latents", "get_labels", "LABEL_FIELDS", "parse_query_int", "decode_image_bytes", "decode_data_url",
           "mask_from_bits", "to_uint8", "png_bytes", "data_url"]

MAX_JSON_BYTES = 256 * 1024          # every JSON body
MAX_UPLOAD_BYTES = 4 * 1024 * 1024   # raw image bytes of /api/upload
MAX_UPLOAD_PIXELS = 40_000_000       # a 40-megapixel photo decodes to ~120 MB of RGB: bigger ones are refused
MAX_SEED = 2**32 - 1                 # numpy's generators refuse negative seeds
MAX_LATENT = 10.0                    # |z_d|: far beyond the prior's mass, small enough to keep decodes sane
_MAX_SHOWN = 60                      # characters of a received value echoed in a message
# Pillow formats an upload may be: every raster format Pillow opens except EPS (it runs Ghostscript)
_REFUSED_FORMATS = {"EPS"}


class ApiError(Exception):
    """A client error answered with ``status`` (404, 405, 411, 413, ...) and ``message``."""

    def __init__(self, status: int, message: str, headers: Optional[Mapping[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.headers = int(status), message, dict(headers or {})


def _shown(value: Any) -> str:
    """``repr(value)`` cut to a readable length (a client may send megabytes)."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN - 3] + "..."


def _refuse_constant(name: str) -> float:
    raise ConfigError(f"the JSON body must hold finite numbers only. Received: {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf
        raise ConfigError(f"the JSON body must hold finite numbers only. Received: {_shown(text)}")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"the JSON body has the field `{_shown(key)[1:-1]}` twice")
        out[key] = value
    return out


def parse_json(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body.

    Raises:
        ConfigError: empty body, not UTF-8, not JSON, not an object, NaN/Infinity, duplicate keys,
            nesting too deep or a number too long to convert.
    """
    if not body:
        raise ConfigError("the request body is empty: send a JSON object")
    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                           object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise ConfigError("the request body must be UTF-8 JSON") from None
    except RecursionError:
        raise ConfigError("the JSON body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int() of a number with too many digits
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"the request body is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"the JSON body must be an object {{...}}. Received: a {type(value).__name__}")
    return value


def check_fields(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse a field the endpoint does not take (a misspelt one would otherwise be silently ignored)."""
    allowed = tuple(allowed)
    unknown = [k for k in body if k not in allowed]
    if unknown:
        raise ConfigError(f"unknown field `{_shown(unknown[0])[1:-1]}`; this endpoint takes "
                          f"{', '.join(allowed) if allowed else 'no fields'}")


_MISSING = object()


def _get(body: Mapping[str, Any], name: str, default: Any) -> Any:
    value = body.get(name, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise ConfigError(f"the field `{name}` is missing")
        return default
    return value


def get_int(body: Mapping[str, Any], name: str, lo: int, hi: int, default: Any = _MISSING) -> int:
    """``body[name]`` as an int in ``[lo, hi]``; JSON integers only (not bools, floats or strings)."""
    value = _get(body, name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"`{name}` must be an integer in [{lo}, {hi}]. Received: {name}={_shown(value)}")
    return int(value)


def get_float(body: Mapping[str, Any], name: str, lo: float, hi: float, *, open_low: bool = False,
              default: Any = _MISSING) -> float:
    """``body[name]`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``open_low``)."""
    value = _get(body, name, default)
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = (lo < value if open_low else lo <= value) and value <= hi
    if not ok:
        interval = f"{'(' if open_low else '['}{lo:g}, {hi:g}]"
        raise ConfigError(f"`{name}` must be a number in {interval}. Received: {name}={_shown(value)}")
    return float(value)


def get_bool(body: Mapping[str, Any], name: str, default: Any = _MISSING) -> bool:
    value = _get(body, name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"`{name}` must be true or false. Received: {name}={_shown(value)}")
    return value


def get_choice(body: Mapping[str, Any], name: str, choices: Iterable[str], default: Any = _MISSING) -> str:
    choices = tuple(choices)
    value = _get(body, name, default)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"`{name}` must be one of {list(choices)}. Received: {name}={_shown(value)}")
    return value


def _latent(value: Any, name: str, dim: int) -> np.ndarray:
    if not isinstance(value, list) or len(value) != dim:
        got = f"a list of {len(value)}" if isinstance(value, list) else _shown(value)
        raise ConfigError(f"`{name}` must be a list of {dim} numbers (latent_dim). Received: {got}")
    for k, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) <= MAX_LATENT:
            raise ConfigError(f"`{name}[{k}]` must be a finite number in [-{MAX_LATENT:g}, {MAX_LATENT:g}]. "
                              f"Received: {_shown(v)}")
    return np.asarray(value, dtype=np.float32)


def get_latent(body: Mapping[str, Any], name: str, dim: int) -> np.ndarray:
    """``body[name]``: a list of ``dim`` finite numbers with ``|v| <= MAX_LATENT`` -> ``(dim,)`` float32."""
    return _latent(_get(body, name, _MISSING), name, dim)


def get_latents(body: Mapping[str, Any], name: str, count: int, dim: int) -> np.ndarray:
    """``body[name]``: a list of ``count`` latent vectors -> ``(count, dim)`` float32."""
    value = _get(body, name, _MISSING)
    if not isinstance(value, list) or len(value) != count:
        got = f"a list of {len(value)}" if isinstance(value, list) else _shown(value)
        raise ConfigError(f"`{name}` must be a list of {count} latent vectors. Received: {got}")
    return np.stack([_latent(v, f"{name}[{i}]", dim) for i, v in enumerate(value)])


LABEL_FIELDS = (("gender", 1), ("ethnicity", 4), ("age", 116))  # field, largest value (0 is the smallest)


def get_labels(value: Any, name: str = "labels") -> dict[str, int]:
    """``{"gender": 0|1, "ethnicity": 0..4, "age": 0..116}``: the object ``value``, all three required.

    ``name=""`` reads the three fields from the top level of a body (``/api/generate``, ``/api/edit``).
    """
    if not isinstance(value, dict):
        raise ConfigError(f"`{name}` must be an object {{\"gender\": 0|1, \"ethnicity\": 0-4, \"age\": 0-116}}. "
                          f"Received: {name}={_shown(value)}")
    if not name:
        return {field: get_int(value, field, 0, hi) for field, hi in LABEL_FIELDS}
    prefixed = {f"{name}.{k}": v for k, v in value.items()}
    check_fields(prefixed, [f"{name}.{field}" for field, _ in LABEL_FIELDS])
    return {field: get_int(prefixed, f"{name}.{field}", 0, hi) for field, hi in LABEL_FIELDS}


def parse_query_int(query: Mapping[str, list[str]], name: str, lo: int, hi: int, default: int) -> int:
    """A decimal integer query parameter in ``[lo, hi]`` (given at most once)."""
    values = query.get(name)
    if not values:
        return default
    if len(values) != 1 or not re.fullmatch(r"[0-9]{1,10}", values[0]) or not lo <= int(values[0]) <= hi:
        raise ConfigError(f"`{name}` must be an integer in [{lo}, {hi}]. Received: {name}={_shown(values)}")
    return int(values[0])


# --------------------------------------------------------------------------- images

def decode_image_bytes(raw: bytes, what: str = "upload"):
    """An opened, fully loaded Pillow image of ``raw``; the pixel count is checked before decoding.

    Raises:
        ConfigError: empty, not an image Pillow reads, truncated, corrupt, or over
            :data:`MAX_UPLOAD_PIXELS` pixels.
    """
    from PIL import Image

    if not raw:
        raise ConfigError(f"`{what}` is empty: send the bytes of an image file")
    Image.init()
    formats = sorted(set(Image.OPEN) - _REFUSED_FORMATS)
    try:
        image = Image.open(io.BytesIO(raw), formats=formats)
    except Image.DecompressionBombError:  # Pillow's own check, from the header, before any decoding
        raise ConfigError(f"`{what}` must have at most {MAX_UPLOAD_PIXELS} pixels. Received: a larger image "
                          f"(a decompression bomb?)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types on hostile bytes
        raise ConfigError(f"`{what}` is not an image file Pillow can read ({type(exc).__name__})") from None
    w, h = image.size
    if w < 1 or h < 1 or w * h > MAX_UPLOAD_PIXELS:
        raise ConfigError(f"`{what}` must have at most {MAX_UPLOAD_PIXELS} pixels. "
                          f"Received: a {w}x{h} {image.format} image")
    try:
        image.load()  # decodes now, inside the try: truncated or corrupt data fails here
    except Exception as exc:  # noqa: BLE001 - as above
        raise ConfigError(f"`{what}` could not be decoded: a truncated or corrupt {image.format} file "
                          f"({type(exc).__name__})") from None
    return image


_DATA_URL = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=\s]*)")


def decode_data_url(value: Any, name: str, size: int) -> np.ndarray:
    """A ``data:image/png;base64,...`` URL of a ``size``×``size`` face -> ``(size, size)`` uint8.

    Raises:
        ConfigError: not such a string, bad base64, not a PNG or not ``size``×``size``.
    """
    from shared.data.image_folder import to_gray8

    m = _DATA_URL.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ConfigError(f"`{name}` must be a data URL 'data:image/png;base64,...' (from /api/upload). "
                          f"Received: {_shown(value)}")
    try:
        raw = base64.b64decode(re.sub(r"\s", "", m.group(1)), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"`{name}` holds invalid base64") from None
    image = decode_image_bytes(raw, name)
    if image.format != "PNG" or image.size != (size, size):
        raise ConfigError(f"`{name}` must be a {size}x{size} PNG (a face converted by /api/upload). "
                          f"Received: a {image.size[0]}x{image.size[1]} {image.format} image")
    return np.asarray(to_gray8(image), dtype=np.uint8)


def mask_from_bits(value: Any, size: int, name: str = "mask_bits") -> np.ndarray:
    """``size``² characters ``'0'``/``'1'`` (row-major, ``'1'`` = missing) -> ``(size, size)`` bool.

    Raises:
        ConfigError: wrong type, length or characters, or fewer than 1 % / more than 90 % missing.
    """
    n = size * size
    if not isinstance(value, str) or len(value) != n or value.strip("01"):
        got = f"a string of {len(value)} characters" if isinstance(value, str) else _shown(value)
        raise ConfigError(f"`{name}` must be a string of {n} characters '0'/'1' ({size}x{size}, row-major, "
                          f"'1' = missing). Received: {got}")
    mask = np.frombuffer(value.encode("ascii"), dtype=np.uint8).reshape(size, size) == ord("1")
    lo, hi = math.ceil(0.01 * n), math.floor(0.90 * n)
    missing = int(mask.sum())
    if not lo <= missing <= hi:
        raise ConfigError(f"`{name}` must mark 1 % to 90 % of the pixels missing ({lo} to {hi} of {n}). "
                          f"Received: {missing} missing")
    return mask


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] (or uint8) -> uint8, rounded to the nearest level."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """A grayscale ``(H, W)`` image (floats in [0, 1] or uint8) as PNG bytes (mode ``L``)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(to_uint8(image))).save(buf, format="PNG")
    return buf.getvalue()


def data_url(image: np.ndarray) -> str:
    """``data:image/png;base64,...`` of a grayscale image (see :func:`png_bytes`)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
