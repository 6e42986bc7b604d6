"""What a training run reports besides its checkpoints: console lines, progress bar, curves, TensorBoard.

:func:`shared.training.fit` decides; this module only shows and records, the same way on both
backends:

- :func:`console` sets, for the code inside it, whether ``fit`` prints: one line per epoch (via
  ``tqdm.write`` on stderr, so it never breaks a bar) and a per-epoch progress bar from
  ``tqdm.auto`` (a widget in Jupyter, text in a terminal and in a plain script or pipe). The setting
  lives in a :mod:`contextvars` variable, so threads and notebook cells do not leak it into each
  other. Library logging is left alone: the epoch line also goes to this module's logger at DEBUG.
- :func:`write_training_curves` draws ``figures/training_curves.png`` from ``metrics.jsonl``.
- :class:`EventFileWriter` writes TensorBoard event files without TensorFlow or the ``tensorboard``
  package (``shared`` stays framework-free): TFRecord framing around hand-encoded ``Event`` protos.

Epochs are shown 1-based everywhere a person reads them (console, TensorBoard step, the figure's
x axis); ``metrics.jsonl`` keeps its 0-based ``epoch`` field, so TensorBoard step = ``epoch + 1``.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import socket
import struct
import sys
import time
from itertools import count
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from tqdm.auto import tqdm

from shared.errors import ConfigError

__all__ = ["console", "is_verbose", "progress_bar", "epoch_line", "report_epoch", "write_training_curves",
           "scalar_tags", "EventFileWriter", "crc32c", "masked_crc32c", "TENSORBOARD_DIR"]

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
_NON_TTY_REFRESH_S = 2.0   # bar refresh period when stderr is a file or pipe: a few updates per epoch, not hundreds
_VERBOSE: contextvars.ContextVar[bool] = contextvars.ContextVar("facevae_verbose", default=True)
_NOT_A_TERM = {"epoch", "seconds", "images_per_s", "step", "lr"}


# --------------------------------------------------------------------------------------------- console
@contextlib.contextmanager
def console(verbose: Optional[bool] = None) -> Iterator[bool]:
    """Within the block, :func:`shared.training.fit` prints epoch lines and a progress bar, or nothing.

    Args:
        verbose: True: a line per epoch and a per-epoch bar on stderr; False: nothing printed;
            None (the default): True.

    Yields:
        The effective setting.

    Raises:
        ConfigError: ``verbose`` is not True, False or None.
    """
    if verbose is not None and not isinstance(verbose, bool):
        raise ConfigError(f"`verbose` must be True, False or None. Received: verbose={verbose!r}")
    value = True if verbose is None else verbose
    token = _VERBOSE.set(value)
    try:
        yield value
    finally:
        _VERBOSE.reset(token)


def is_verbose() -> bool:
    """The setting of the innermost :func:`console` block (True outside any)."""
    return _VERBOSE.get()


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(total: int, desc: str) -> tqdm:
    """A per-epoch bar on stderr: shown in a terminal, a notebook and a pipe alike, hidden when not verbose."""
    stream = sys.stderr  # looked up now: pytest and notebooks replace sys.stderr
    tty = _is_tty(stream)
    # tqdm's own default (disable=None) hides the bar outside a terminal, i.e. in every script run
    # under nohup/CI/a log file; show it there too, but refresh rarely so the log stays readable
    return tqdm(total=total, desc=desc, leave=False, file=stream, disable=not is_verbose(),
                dynamic_ncols=tty, mininterval=0.1 if tty else _NON_TTY_REFRESH_S)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _terms(record: Mapping[str, Any], prefix: str) -> list[str]:
    """The record's terms under ``prefix`` other than ``loss`` and ``beta`` (shown apart) and copies of the loss."""
    names = [k[len(prefix):] for k in record if k.startswith(prefix) and isinstance(record[k], (int, float))]
    loss = record.get(f"{prefix}loss")
    # a term that *is* the loss (the ELBO at beta = 1, a classifier's one task loss) only lengthens the line
    return [n for n in names if n not in ("loss", "beta")
            and not (loss is not None and math.isclose(record[f"{prefix}{n}"], loss, rel_tol=1e-9))]


def _side(record: Mapping[str, Any], prefix: str, label: str) -> str:
    loss, terms = record.get(f"{prefix}loss"), _terms(record, prefix)
    inner = ", ".join(f"{n} {_fmt(float(record[prefix + n]))}" for n in terms)
    head = f"{label} {_fmt(float(loss))}" if loss is not None else label
    return f"{head} ({inner})" if inner else head


def epoch_line(record: Mapping[str, Any], *, epochs: int, beta: Optional[float] = None, improved: bool = False,
               stopped_after: int = 0) -> str:
    """One epoch in one line: ``epoch 2/20  train 655.1 (distortion 650.2, rate 4.9)  val ...  lr ...``.

    Args:
        record: the epoch's ``metrics.jsonl`` record (0-based ``epoch``).
        epochs: the number of epochs the run asks for.
        beta: the KL weight of the epoch, shown when the model uses one.
        improved: the epoch has the best validation loss so far (marked ``best``).
        stopped_after: early stopping ended the run after this many epochs without improvement (0: it did not).
    """
    parts = [f"epoch {int(record['epoch']) + 1}/{epochs}", _side(record, "train_", "train"),
             _side(record, "val_", "val"), f"lr {record['lr']:.3g}"]
    if beta is not None:
        parts.append(f"beta {beta:.3g}")
    parts.append(f"{record.get('seconds', math.nan):.1f}s")
    if improved:
        parts.append("best")
    if stopped_after:
        parts.append(f"early stop: no better val loss in {stopped_after} epochs")
    return "  ".join(parts)


def report_epoch(line: str) -> None:
    """Print ``line`` on stderr when verbose (through tqdm, so a live bar is redrawn below it); log it at DEBUG."""
    log.debug("%s", line)
    if is_verbose():
        tqdm.write(line, file=sys.stderr)


# ---------------------------------------------------------------------------------------------- figure
def write_training_curves(records: Sequence[Mapping[str, Any]], path: Path, *, title: Optional[str] = None
                          ) -> Optional[Path]:
    """Draw the training curves of ``records`` into ``path`` (a .png); a failure is logged, never raised.

    A figure must never cost a trained run, so any exception from plotting becomes a WARNING.

    Returns:
        ``path`` when the figure was written, else None.
    """
    if not records:
        return None
    try:
        from shared import plotting
        path.parent.mkdir(parents=True, exist_ok=True)
        plotting.run_curves(records, path, title=title)
    except Exception as exc:  # noqa: BLE001 - the trained run matters more than its figure
        log.warning("%s: the training-curve figure could not be drawn (%s: %s); the run itself is fine",
                    path, type(exc).__name__, exc)
        return None
    return path


# --------------------------------------------------------------------------------------------- TensorBoard
def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli polynomial, reflected
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord framing uses it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC TFRecord stores (a CRC of data holding CRCs is otherwise weak)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 is encoded as its two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: Optional[str] = None,
           scalars: Optional[Mapping[str, float]] = None) -> bytes:
    """``tensorflow.Event``: wall_time=1 (double), step=2 (int64), file_version=3, summary=5."""
    msg = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version is not None:
        msg += _field(3, file_version.encode())
    if scalars:
        # Summary { repeated Value value = 1 }, Value { string tag = 1; float simple_value = 2 }
        values = b"".join(_field(1, _field(1, tag.encode()) + b"\x15" + struct.pack("<f", v))
                          for tag, v in scalars.items())
        msg += _field(5, values)
    return msg


def scalar_tags(record: Mapping[str, Any], beta: Optional[float] = None) -> dict[str, float]:
    """TensorBoard scalars of one epoch record: ``train/<term>``, ``val/<term>``, ``lr`` and ``beta``.

    ``beta`` is written once (the epoch's KL weight) when the model reports one, instead of as a
    per-split term; bookkeeping fields (epoch, seconds, step, throughput) are left out.
    """
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in _NOT_A_TERM or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        side, _, term = key.partition("_")
        if side in ("train", "val") and term and term != "beta":
            out[f"{side}/{term}"] = float(value)
    out["lr"] = float(record["lr"])
    if beta is not None and "train_beta" in record:
        out["beta"] = float(beta)
    return out


_FILE_IDS = count()


class EventFileWriter:
    """Appends scalar summaries to a new ``events.out.tfevents.*`` file in ``logdir``.

    Each writer opens its own file (a resumed run adds one; TensorBoard merges the files of a folder).

    Args:
        logdir: the folder, created if missing.
    """

    def __init__(self, logdir: Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        # time first: TensorBoard reads a folder's files in name order
        name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.{next(_FILE_IDS)}"
        self.path = self.logdir / name
        self._fh = open(self.path, "ab")
        self._write(_event(now, 0, file_version="brain.Event:2"))

    def _write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._fh.write(header + struct.pack("<I", masked_crc32c(header)) + data
                       + struct.pack("<I", masked_crc32c(data)))
        self._fh.flush()  # TensorBoard may be watching while the run trains

    def add_scalars(self, step: int, scalars: Mapping[str, float], wall_time: Optional[float] = None) -> None:
        """One event holding every scalar of ``step``."""
        if scalars:
            self._write(_event(time.time() if wall_time is None else wall_time, int(step), scalars=scalars))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "EventFileWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
