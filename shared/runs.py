"""Run folders: their fixed file names, the writer lock, metrics records and config loading.

Layout of one run: ``config.json``, ``split.json``, ``metrics.jsonl`` (one JSON object per epoch),
``checkpoints/`` (``last`` and ``best``), ``figures/*.png``, ``eval.json`` (the test split's
metrics; ``eval_<data>.json`` for evaluations on other data), ``faces.npz`` (only for a run trained
on faces held in memory) and ``.lock`` (the writer lock, see :func:`lock_run`). The atomic write
helpers live in :mod:`shared.io` and are re-exported here. :class:`Run` is a run folder as an
object (what :func:`shared.api.train` returns).
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator

from shared.config import RunConfig
from shared.errors import ConfigError, RunError
from shared.io import atomic_write_bytes, atomic_write_json, atomic_write_text, to_jsonable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not protected
    fcntl = None

__all__ = ["CONFIG", "SPLIT", "METRICS", "EVAL", "CHECKPOINTS", "FIGURES", "LOCK", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "append_metrics", "read_metrics", "truncate_metrics",
           "load_run_config", "figures_dir", "checkpoints_dir", "to_jsonable", "lock_run", "has_any_checkpoint",
           "clear_failed_run", "remove_leftovers", "FACES", "Run", "open_run"]

log = logging.getLogger(__name__)

CONFIG, SPLIT, METRICS, EVAL = "config.json", "split.json", "metrics.jsonl", "eval.json"
CHECKPOINTS, FIGURES, LOCK = "checkpoints", "figures", ".lock"
FACES = "faces.npz"  # the faces of a run trained on in-memory data (its spec is "run:faces.npz")
CHECKPOINT_NAMES = ("last", "best")

def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} on host {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"  # it holds the lock but has not written its details yet


@contextlib.contextmanager
def lock_run(run_dir: str | Path, *, clean: bool = True) -> Iterator[Path]:
    """Hold the writer lock of ``run_dir`` (created if missing) for the ``with`` block.

    The lock is an ``flock`` on ``run_dir/.lock``, so the OS releases it when the holder exits or
    is killed: a lock file left by a dead process is simply taken over. The file records the
    holder's pid, host and start time for the message a second writer gets. The lock is not
    re-entrant: a second ``lock_run`` of the same folder fails even in the same process.

    Args:
        clean: on acquiring, remove the temporary files of killed writes (:func:`remove_leftovers`).

    Raises:
        RunError: the folder is locked ("<dir> is in use by pid N on host H since T").
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise RunError(f"{run_dir} is in use by {_describe_holder(fd)}; wait for it to finish "
                               f"or choose another folder") from None
        since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode(), 0)
        if clean:
            remove_leftovers(run_dir)
        yield run_dir
    finally:
        os.close(fd)  # releases the flock; the file stays (unlinking it would let two writers lock two inodes)


def _is_complete_tf(folder: Path) -> bool:
    return (folder / "checkpoint").is_file()


def remove_leftovers(run_dir: str | Path) -> list[Path]:
    """Delete what killed writes left in ``run_dir`` and ``run_dir/checkpoints``; returns what was removed.

    Hidden ``.NAME.*.tmp`` files and ``.NAME.tmp-*`` folders are unfinished writes. A TF
    ``.NAME.old-*`` folder is the previous checkpoint kept during a swap: it is moved back into
    place when ``NAME`` is missing or incomplete, and deleted only once ``NAME`` is complete.
    Call it only while holding :func:`lock_run` (a live writer's temporary files must not go).
    """
    run_dir, removed = Path(run_dir), []
    for folder in (run_dir, run_dir / CHECKPOINTS):
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") and ".tmp" in entry.name:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry)
    ck = run_dir / CHECKPOINTS
    for which in CHECKPOINT_NAMES:
        olds = sorted((p for p in ck.glob(f".{which}.old-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        if not olds:
            continue
        final = ck / which
        if not _is_complete_tf(final):
            usable = [p for p in olds if _is_complete_tf(p)]
            if not usable:
                continue  # nothing restorable: keep them, they may still help a person
            if final.exists():
                shutil.rmtree(final)
                removed.append(final)
            usable[-1].rename(final)
            log.warning("%s: restored the '%s' checkpoint from an interrupted swap", run_dir, which)
            olds.remove(usable[-1])
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    if removed:
        log.info("%s: removed %d leftover(s) of interrupted writes", run_dir, len(removed))
    return removed


def has_any_checkpoint(run_dir: str | Path, names: tuple[str, ...] = CHECKPOINT_NAMES) -> bool:
    """True when ``checkpoints/`` holds a complete ``last`` or ``best`` (or one of ``names``) of either backend.

    Torch: the files ``last.pt`` / ``best.pt``; TF: the folders ``last/`` / ``best/`` with their
    ``checkpoint`` marker (or an interrupted swap's ``.NAME.old-*`` copy, which is restorable).
    """
    ck = Path(run_dir) / CHECKPOINTS
    for which in names:
        if (ck / f"{which}.pt").is_file() or _is_complete_tf(ck / which):
            return True
        if any(_is_complete_tf(p) for p in ck.glob(f".{which}.old-*")):
            return True
    return False


def clear_failed_run(run_dir: str | Path) -> None:
    """Delete what a run that stopped before its first checkpoint wrote, so a new start does not mix with it.

    ``config.json`` stays (the new start writes it again); ``metrics.jsonl``, ``eval.json``,
    ``split.json``, ``faces.npz`` and ``checkpoints/`` go. Call it only while holding :func:`lock_run`.
    """
    run_dir = Path(run_dir)
    log.info("%s: the previous attempt stopped before its first checkpoint; starting the run again", run_dir)
    for name in (METRICS, EVAL, SPLIT, FACES):
        (run_dir / name).unlink(missing_ok=True)
    if (run_dir / CHECKPOINTS).is_dir():
        shutil.rmtree(run_dir / CHECKPOINTS)


def _drop_torn_tail(fh, path: Path) -> None:
    """Repair a file opened ``a+b`` whose last line a crash cut short, so the next append starts a line."""
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        return
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return
    fh.seek(0)
    data = fh.read()
    start = data.rfind(b"\n") + 1
    try:
        if isinstance(json.loads(data[start:].decode("utf-8")), dict):
            fh.write(b"\n")  # a whole record that only lacks its newline
            return
    except ValueError:
        pass
    log.warning("%s: dropped an incomplete last line (a crash while it was written)", path)
    fh.truncate(start)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record to ``metrics.jsonl`` (one line, fsynced).

    A torn last line left by a crash is dropped first, so it never glues onto the new record.
    """
    path = Path(run_dir) / METRICS
    line = (json.dumps(to_jsonable(record), sort_keys=True) + "\n").encode("utf-8")
    with open(path, "a+b") as fh:
        _drop_torn_tail(fh, path)
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All records of ``metrics.jsonl`` (empty list when absent).

    A damaged *last* line is what a crash during an append leaves: it is ignored with a warning.

    Raises:
        RunError: a line before the last is not a JSON object (names the file and line number).
    """
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    filled = [i for i, raw in enumerate(lines) if raw.strip()]
    records = []
    for i in filled:
        try:
            record = json.loads(lines[i].decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as exc:
            if i == filled[-1]:
                log.warning("%s: line %d is incomplete (a crash while it was written?); ignored", path, i + 1)
                continue
            raise RunError(f"{path}: line {i + 1} is not a metrics record ({exc}); "
                           f"repair or delete that line") from None
        records.append(record)
    return records


def truncate_metrics(run_dir: Path, keep_epochs: int) -> None:
    """Keep only records with ``epoch < keep_epochs`` (used on resume), rewritten atomically; drops a torn line."""
    records = [r for r in read_metrics(run_dir) if r.get("epoch", 0) < keep_epochs]
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The ``RunConfig`` of a run folder.

    Raises:
        RunError: the folder is not a run, or its ``config.json`` is not a facevae config (names the file).
        ConfigError: the config is ours but a value is invalid (names the file).
    """
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run folder (no {CONFIG})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: not a readable facevae run config ({exc})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: not a facevae run config (holds a JSON {type(data).__name__}, "
                       f"expected an object with 'backend', 'model', 'train', 'data')")
    model = data.get("model")
    if isinstance(model, dict) and "label_loss" not in model:
        # saved before label consistency existed: the run was trained without it (not the preset's value now)
        data = {**data, "model": {**model, "label_loss": 0.0}}
    try:
        return RunConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RunError(f"{path}: not a facevae run config ({type(exc).__name__}: {exc})") from None


def figures_dir(run_dir: Path) -> Path:
    path = Path(run_dir) / FIGURES
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoints_dir(run_dir: Path) -> Path:
    path = Path(run_dir) / CHECKPOINTS
    path.mkdir(parents=True, exist_ok=True)
    return path


class Run(os.PathLike):
    """A run folder as an object: its path, config, metrics, training curves and evaluation.

    A ``Run`` is path-like, so every function that takes a run folder takes a ``Run``;
    ``str(run)`` and ``os.fspath(run)`` give the folder, ``run / "figures"`` a path inside it, and
    the other attributes of :class:`~pathlib.Path` (``name``, ``exists()``, ...) are its path's.
    Attributes are read from the folder on each access, so they follow a resumed run. In a
    notebook a ``Run`` shows its training curves.

    Example::

        run = facevae.train("runs/vae16", latent_dim=16, epochs=5)
        run.metrics[["epoch", "val_loss"]]
        run.figure.savefig("curves.png")
    """

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, other: str | os.PathLike) -> Path:
        return self.path / other

    def __getattr__(self, name: str) -> Any:
        # everything else a Path offers (name, parent, exists(), rglob(), ...), so code written for the
        # Path that train() used to return keeps working
        if name == "path":  # not set yet (copy/pickle): never recurse
            raise AttributeError(name)
        return getattr(self.path, name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (str, os.PathLike)):
            return self.path == Path(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def config(self) -> RunConfig:
        """The run's :class:`~shared.config.RunConfig` (``config.json``)."""
        return load_run_config(self.path)

    @property
    def metrics(self):
        """``metrics.jsonl`` as a pandas DataFrame, one row per epoch (empty before the first epoch)."""
        import pandas as pd
        return pd.DataFrame(read_metrics(self.path))

    @property
    def figure(self):
        """The training curves (a matplotlib Figure), drawn from ``metrics.jsonl`` on each access.

        Raises:
            RunError: the run has no finished epoch yet.
        """
        from shared.plotting import run_curves

        records = read_metrics(self.path)
        if not records:
            raise RunError(f"{self.path}: no finished epoch yet ({METRICS} is empty); nothing to plot")
        return run_curves(records, title=f"{self.path.name} ({self.config.model.family}, {self.config.backend})")

    @property
    def eval(self) -> dict[str, Any] | None:
        """The test-split metrics of ``eval.json`` (``None`` until :func:`shared.api.evaluate` ran)."""
        path = self.path / EVAL
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"{path}: not readable JSON ({exc}); evaluate the run again") from None

    def _repr_png_(self) -> bytes | None:
        if not read_metrics(self.path):
            return None
        from shared.results import figure_bytes
        return figure_bytes(self.figure)

    def __repr__(self) -> str:
        try:
            cfg = self.config
            done = len(read_metrics(self.path))
            what = f"{cfg.backend}/{cfg.model.family}, {done}/{cfg.train.epochs} epochs"
        except Exception as exc:  # a repr must never raise; say what is wrong instead
            what = f"unreadable: {exc}"
        return f"Run({str(self.path)!r}, {what})"


def open_run(path: str | os.PathLike) -> Run:
    """The run folder ``path`` as a :class:`Run`.

    Raises:
        RunError, ConfigError: ``path`` is not a run folder or its config is invalid.
    """
    load_run_config(path)
    return Run(path)
