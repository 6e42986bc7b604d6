"""The explorer without a trained model: request validation (:mod:`shared.explorer.validate`) and the
server's lifecycle (start, stop, Ctrl-C, host warnings) around a stand-in session.

The endpoints on real runs are in test_explorer_http.py.
"""
from __future__ import annotations

import http.client
import io
import json
import logging
import signal
import socket
import threading
import time

import numpy as np
import pytest

from shared.errors import ConfigError
from shared.explorer import server as server_mod
from shared.explorer import validate as v
from shared.explorer.server import Explorer, is_loopback


# --------------------------------------------------------------------------- validation

class TestJson:
    def test_objects_with_finite_numbers_parse(self):
        assert v.parse_json(b'{"z": [0, 1.5, -2e3], "s": "x"}') == {"z": [0, 1.5, -2000.0], "s": "x"}

    @pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e400}',
                                     b'{"a": -1e400}'])
    def test_non_finite_numbers_are_refused(self, raw):
        with pytest.raises(ConfigError, match="finite"):
            v.parse_json(raw)

    @pytest.mark.parametrize("raw,words", [(b"", "empty"), (b"{", "JSON"), (b"null", "object"), (b"\xc3", "UTF-8"),
                                           (b'{"a": 1, "a": 2}', "twice"), (b"[" * 50_000, "nested")])
    def test_malformed_bodies_are_refused(self, raw, words):
        with pytest.raises(ConfigError, match=words):
            v.parse_json(raw)


class TestFields:
    def test_integers_refuse_bools_floats_strings_and_out_of_range(self):
        assert v.get_int({"n": 3}, "n", 2, 12) == 3
        for bad in (True, 3.0, "3", None, 1, 13, [3]):
            with pytest.raises(ConfigError, match=r"`n` must be an integer in \[2, 12\]"):
                v.get_int({"n": bad}, "n", 2, 12)
        assert v.get_int({}, "seed", 0, 9, 0) == 0
        with pytest.raises(ConfigError, match="`seed` is missing"):
            v.get_int({}, "seed", 0, 9)

    def test_floats_respect_an_open_lower_bound(self):
        assert v.get_float({"s": 1}, "s", 0.0, 1.0, open_low=True) == 1.0
        for bad in (0, 0.0, 1.0001, float("nan"), float("inf"), True, "0.5"):
            with pytest.raises(ConfigError, match=r"\(0, 1\]"):
                v.get_float({"s": bad}, "s", 0.0, 1.0, open_low=True)

    def test_latents_have_the_right_length_and_bounded_finite_values(self):
        np.testing.assert_array_equal(v.get_latent({"z": [1, -2.5]}, "z", 2), np.float32([1, -2.5]))
        for bad, words in (([1], "list of 2"), ([1, 11], r"`z\[1\]`"), ([1, float("nan")], r"`z\[1\]`"),
                           ([False, 0], r"`z\[0\]`"), ("1,2", "list of 2")):
            with pytest.raises(ConfigError, match=words):
                v.get_latent({"z": bad}, "z", 2)

    def test_labels_need_all_three_fields_in_range(self):
        assert v.get_labels({"gender": 1, "ethnicity": 4, "age": 116}) == {"gender": 1, "ethnicity": 4, "age": 116}
        for bad, words in (({"gender": 1, "ethnicity": 4}, "labels.age"), ({"gender": 2, "ethnicity": 0, "age": 1},
                           "labels.gender"), ({"gender": 0, "ethnicity": 0, "age": 1, "x": 0}, "labels.x"),
                           ([0, 0, 1], "`labels`")):
            with pytest.raises(ConfigError, match=words):
                v.get_labels(bad)

    def test_unknown_fields_are_named(self):
        with pytest.raises(ConfigError, match="unknown field `sedd`"):
            v.check_fields({"seed": 1, "sedd": 2}, ("seed", "count"))

    def test_query_integers(self):
        assert v.parse_query_int({"start": ["7"]}, "start", 0, 9, 0) == 7
        assert v.parse_query_int({}, "start", 0, 9, 3) == 3
        for bad in (["-1"], ["10"], ["1", "2"], ["x"], ["１"]):
            with pytest.raises(ConfigError, match="`start`"):
                v.parse_query_int({"start": bad}, "start", 0, 9, 0)


class TestImages:
    def test_mask_bits_row_major_with_bounded_missing_share(self):
        bits = "0" * 10 + "1" * 30 + "0" * 60
        mask = v.mask_from_bits(bits, 10)
        assert mask.shape == (10, 10) and mask[1].all() and mask[3, 9] and not mask[4].any()
        assert v.mask_from_bits("1" + "0" * 99, 10).sum() == 1        # 1 % is the least
        assert v.mask_from_bits("1" * 90 + "0" * 10, 10).sum() == 90  # 90 % the most
        for bad in ("0" * 100, "1" * 91 + "0" * 9, "1" * 99, "x" * 100):
            with pytest.raises(ConfigError, match="`mask_bits`"):
                v.mask_from_bits(bad, 10)

    def test_png_and_data_url_round_trip_exactly(self):
        image = np.random.default_rng(0).random((12, 12)).astype(np.float32)
        assert v.decode_data_url(v.data_url(image), "image", 12).tolist() == v.to_uint8(image).tolist()
        assert v.to_uint8(np.float32([[0.0, 0.5, 1.0, 1.7, -3]])).tolist() == [[0, 128, 255, 255, 0]]

    def test_images_over_the_pixel_limit_are_refused_before_decoding(self, monkeypatch):
        from PIL import Image

        buf = io.BytesIO()
        Image.new("L", (300, 200)).save(buf, format="PNG")
        monkeypatch.setattr(v, "MAX_UPLOAD_PIXELS", 300 * 200 - 1)
        with pytest.raises(ConfigError, match="at most 59999 pixels. Received: a 300x200 PNG"):
            v.decode_image_bytes(buf.getvalue())


def test_header_metrics_are_the_finite_scalars_of_eval_json(tmp_path):
    from shared.explorer.session import _read_metrics

    assert _read_metrics(tmp_path) == {}  # not evaluated yet
    (tmp_path / "eval.json").write_text('{"psnr": 21.5, "ssim": 0.7, "rate": NaN, "neg_elbo": "x", '
                                        '"neg_iwae": true, "n_faces": 40}')
    assert _read_metrics(tmp_path) == {"psnr": 21.5, "ssim": 0.7}
    (tmp_path / "eval.json").write_text("{broken")
    assert _read_metrics(tmp_path) == {}


# --------------------------------------------------------------------------- lifecycle (stand-in session)

def call(ex: Explorer, method: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", ex.port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class _StubSession:
    """Stands in for a loaded run in the lifecycle tests (no model to load)."""

    run_dir = None

    def info(self):
        return {"run": "stub"}


@pytest.fixture
def stub(monkeypatch, tmp_path):
    monkeypatch.setattr(server_mod, "Session", lambda run_dir, data: _StubSession())
    return tmp_path


def test_start_stop_closes_the_port_and_is_idempotent(stub):
    ex = Explorer(stub)
    assert ex.url == f"http://127.0.0.1:{ex.port}/" and ex.port > 0
    with ex:
        assert ex.start() is ex
        status, body = call(ex, "GET", "/api/info")
        assert status == 200 and json.loads(body) == {"run": "stub"}
    ex.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ex.port), timeout=2).close()
    with pytest.raises(Exception, match="stopped"):
        ex.start()


def test_serve_forever_stops_on_ctrl_c_and_on_stop(stub, caplog):
    import _thread

    ex = Explorer(stub)

    def interrupt():
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if call(ex, "GET", "/api/info")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        _thread.interrupt_main()

    timer = threading.Thread(target=interrupt)
    # a shell starts background jobs with SIGINT ignored, and then interrupt_main() does nothing and
    # serve_forever never returns: give the test Python's own Ctrl-C handler while it runs
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        timer.start()
        with caplog.at_level(logging.INFO, logger="shared.explorer.server"):
            ex.serve_forever(poll_interval=0.05)  # returns on Ctrl-C instead of raising it
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert any("running at" in r.getMessage() for r in caplog.records)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ex.port), timeout=2).close()

    other = Explorer(stub)
    thread = threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    time.sleep(0.2)
    other.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_binding_beyond_loopback_warns_and_a_taken_port_is_an_oserror(stub, caplog):
    with caplog.at_level(logging.WARNING, logger="shared.explorer.server"):
        ex = Explorer(stub, host="0.0.0.0")
    try:
        assert any("authentication" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        with pytest.raises(OSError):
            Explorer(stub, host="0.0.0.0", port=ex.port)
    finally:
        ex.stop()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shared.explorer.server"):
        Explorer(stub, host="localhost").stop()
    assert not caplog.records
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("evil.example")


@pytest.mark.parametrize("kwargs,words", [({"port": -1}, "port"), ({"port": 70000}, "port"), ({"port": "80"}, "port"),
                                          ({"host": ""}, "host"), ({"request_timeout": 0}, "request_timeout")])
def test_bad_constructor_arguments_are_config_errors(stub, kwargs, words):
    with pytest.raises(ConfigError, match=words):
        Explorer(stub, **kwargs)
