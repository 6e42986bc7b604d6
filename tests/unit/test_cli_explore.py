"""``facevae explore`` and ``facevae.explore``: the explorer starts, prints its URL, stops cleanly on Ctrl-C
(exit 0), warns about a non-loopback host, and turns every user error into one line and exit code 2."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from shared import cli_studio
from shared.cli import main
from tests.conftest import REPO

TINY = ["--data", "synthetic:240", "--image-size", "32", "--channels", "8,16", "--hidden-dims", "32",
        "--latent-dim", "4", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny torch vae run and a tiny cnn run (the explorer refuses the classifier)."""
    pytest.importorskip("torch")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("explore")
    try:
        assert main(["train", "--backend", "torch", *TINY, "--out", str(root / "vae")]) == 0
        assert main(["train", "--backend", "torch", "--model", "cnn", "--task", "gender", *TINY,
                     "--out", str(root / "cnn")]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


# --------------------------------------------------------------------------- the command's wiring (a stand-in server)


class _FakeExplorer:
    """Records what the CLI asked for; ``fail`` makes ``start`` raise it (as a real bind would)."""

    made: list["_FakeExplorer"] = []
    fail: BaseException | None = None

    def __init__(self, run_dir, *, host="127.0.0.1", port=0, data=None):
        self.args = dict(run_dir=str(run_dir), host=host, port=port, data=data)
        self.url = f"http://{host}:{port or 54321}/"
        self.started = self.stopped = False
        _FakeExplorer.made.append(self)

    def start(self):
        if _FakeExplorer.fail is not None:
            raise _FakeExplorer.fail
        self.started = True
        return self

    def stop(self):
        self.stopped = True


@pytest.fixture
def fake(monkeypatch):
    from shared.explorer import server

    monkeypatch.setattr(server, "Explorer", _FakeExplorer)
    _FakeExplorer.made, _FakeExplorer.fail = [], None

    def ctrl_c():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_studio, "_block", ctrl_c)  # the explore command lives in shared.cli_studio
    return _FakeExplorer


def test_help_shows_defaults_and_examples(capsys):
    assert main(["explore", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out and "facevae explore runs/vae" in out
    assert "(default: 0)" in out and "(default: 127.0.0.1)" in out and "authentication" in out


def test_prints_the_url_and_ctrl_c_stops_it_with_exit_0(fake, capsys):
    assert main(["explore", "runs/x", "--port", "8123", "--data", "synthetic:240"]) == 0
    (explorer,) = fake.made
    assert explorer.args == dict(run_dir="runs/x", host="127.0.0.1", port=8123, data="synthetic:240")
    assert explorer.started and explorer.stopped
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["explorer running at http://127.0.0.1:8123/  (Ctrl-C stops)",
                                         "explorer stopped"]
    assert captured.err == ""  # loopback: no warning


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_a_host_other_than_loopback_prints_one_warning_line(host, fake, capsys):
    assert main(["explore", "runs/x", "--host", host]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "no authentication" in err[0] and host in err[0]


@pytest.mark.parametrize("host", ["localhost", "::1", "127.0.0.2"])
def test_loopback_names_print_no_warning(host, fake, capsys):
    assert main(["explore", "runs/x", "--host", host]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("error,words", [(OSError(98, "Address already in use"), "Address already in use"),
                                         (socket.gaierror(-2, "Name or service not known"), "Name or service")])
def test_a_socket_error_is_one_line_naming_host_and_port(error, words, fake, capsys):
    fake.fail = error
    assert main(["explore", "runs/x", "--port", "8123"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "--port 8123" in err[0] and "--host 127.0.0.1" in err[0]


@pytest.mark.parametrize("argv,words", [(["--port", "70000"], "--port"), (["--port", "-1"], "--port"),
                                        (["--port", "http"], "--port")])
def test_bad_port_is_refused_by_the_parser(argv, words, fake, capsys):
    assert main(["explore", "runs/x", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert fake.made == []


# --------------------------------------------------------------------------- the real server


def test_not_a_run_or_a_cnn_run_is_one_line_and_exit_2(runs, tmp_path, capsys):
    for folder in (tmp_path, tmp_path / "missing", runs / "cnn"):
        assert main(["explore", str(folder)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("facevae: error:"), err
    assert "cnn" in err[0] or "generative" in err[0]


def test_port_in_use_and_bad_host_are_one_line_and_exit_2(runs, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["explore", str(runs / "vae"), "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--port {port}" in err[0], err
    for host in ("192.0.2.1", "no-such-host.invalid"):  # no interface has it (TEST-NET-1); no such name
        assert main(["explore", str(runs / "vae"), "--host", host]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2 and "no authentication" in err[0], err  # the warning, then the error
        assert err[1].startswith("facevae: error: cannot listen on --host " + host), err


def test_the_command_serves_the_page_and_ctrl_c_exits_0(runs, tmp_path):
    env = {**os.environ, "FACEVAE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    # a suite started as a background job (`make test &`, nohup) runs with SIGINT ignored, and a child
    # inherits that: Python then installs no Ctrl-C handler and the SIGINT below would do nothing
    proc = subprocess.Popen([sys.executable, "-m", "facevae", "explore", str(runs / "vae")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()  # blocks until the server listens (or the command ends)
        assert line.startswith("explorer running at http://127.0.0.1:") and "(Ctrl-C stops)" in line, \
            line + proc.stderr.read()
        url = line.split()[3].rstrip("/") + "/"
        info = _get_json(url + "api/info")
        assert info["run"] == "vae" and info["backend"] == "torch" and info["latent_dim"] == 4
        with urllib.request.urlopen(url, timeout=30) as page:
            assert b"<html" in page.read().lower()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "explorer stopped"
    assert "Traceback" not in err and "interrupted" not in err, err
    with pytest.raises(OSError):  # nothing listens any more
        urllib.request.urlopen(url + "api/info", timeout=5)


def test_python_explore_returns_a_started_explorer_that_stops(runs):
    import facevae
    import facevae_tf

    explorer = facevae.explore(runs / "vae")
    try:
        assert explorer.url.startswith("http://127.0.0.1:")
        assert _get_json(explorer.url.rstrip("/") + "/api/info")["run"] == "vae"
    finally:
        explorer.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(explorer.url.rstrip("/") + "/api/info", timeout=5)
    assert "port" in str(facevae_tf.explore.__signature__)  # the same function on the tf package


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]"])
def test_the_url_of_every_interface_names_this_machine(host):
    import socket
    from types import SimpleNamespace

    from shared.explorer.server import Explorer

    url = Explorer.url.fget(SimpleNamespace(host=host, port=8123))
    assert url == f"http://{socket.gethostname()}:8123/"  # a browser cannot open 0.0.0.0 on another machine
    assert Explorer.url.fget(SimpleNamespace(host="::1", port=8123)) == "http://[::1]:8123/"
