"""Where this process stands in a multi-process training run (``torchrun``), without a framework.

``torchrun --nproc_per_node=N -m facevae train ...`` starts N processes that train ONE run. Each
learns its place from the environment torchrun sets: ``RANK`` (0..WORLD_SIZE-1, over every node),
``WORLD_SIZE``, ``LOCAL_RANK`` (its device on this node); ``MASTER_ADDR``/``MASTER_PORT`` are read by
the framework when it joins the others. Without these variables the process is a world of one.

The roles, decided here and asked for everywhere else:

* rank 0 is the *writer*: it alone locks the run folder and writes ``config.json``, ``split.json``,
  checkpoints, ``metrics.jsonl``, figures and TensorBoard events, and prints epoch lines and the
  progress bar, so the folder looks exactly like a single-process run's;
* every rank takes its :func:`shard` of each global batch that :mod:`shared.training` plans (the
  backend's engine reduces gradients and logged terms back to global batch means).

Collectives (broadcast, barrier, all-reduce) belong to the backend (``facevae.distributed``, offered
as ``broadcast_object``/``barrier`` by ``facevae.backend``; :class:`Ranks` calls them): this module
only reads the environment, so :mod:`shared` stays free of torch.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from shared.errors import ConfigError, FaceVAEError, RunError

__all__ = ["rank", "world_size", "local_rank", "is_distributed", "is_writer", "shard", "timeout_s", "describe",
           "Ranks", "TIMEOUT_ENV", "DEFAULT_TIMEOUT_S"]

log = logging.getLogger(__name__)

TIMEOUT_ENV = "FACEVAE_DIST_TIMEOUT"
# long enough for rank 0 to read and cache a large data set while the others wait at the first collective,
# short enough that a rank left waiting on a dead peer gives up in minutes, not torch's default half hour
DEFAULT_TIMEOUT_S = 900.0


def _env_number(name: str, default: Any, parse: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Any:
    """``parse`` of the variable ``name`` (``default`` when unset or blank), refused unless ``ok``.

    Raises:
        ConfigError: the value does not parse, or is not ``ok`` ("must be {what}").
    """
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise ConfigError(f"the environment variable {name} must be {what}. Received: {name}={raw!r}")
    return value


def _env_int(name: str, default: int, low: int) -> int:
    return _env_number(name, default, int, lambda v: v >= low, f"an integer >= {low}")


def world_size() -> int:
    """Processes training the run together (``WORLD_SIZE``; 1 without torchrun).

    Raises:
        ConfigError: ``WORLD_SIZE`` is not a positive integer.
    """
    return _env_int("WORLD_SIZE", 1, 1)


def rank() -> int:
    """This process's place among them, 0-based over every node (``RANK``; 0 without torchrun).

    Raises:
        ConfigError: ``RANK`` is not an integer in [0, WORLD_SIZE).
    """
    value, world = _env_int("RANK", 0, 0), world_size()
    if value >= world:
        raise ConfigError(f"the environment variable RANK must be an integer in [0, {world - 1}] "
                          f"(WORLD_SIZE={world}). Received: RANK={value}")
    return value


def local_rank() -> int:
    """This process's device on its node (``LOCAL_RANK``; 0 without torchrun)."""
    return _env_int("LOCAL_RANK", 0, 0)


def is_distributed() -> bool:
    """True when several processes train one run (``WORLD_SIZE`` > 1)."""
    return world_size() > 1


def is_writer() -> bool:
    """True for the process that writes the run folder and prints: rank 0, or any single process.

    ``RANK`` is read only when ``WORLD_SIZE`` > 1, so a stray ``RANK`` in a shell changes nothing.
    """
    return not is_distributed() or rank() == 0


def shard(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """The rows of ``idx`` that ``rank`` of ``world`` processes: ``idx[rank::world]``.

    Strided rather than contiguous so the shards of every batch differ in size by at most one row.

    Args:
        idx: the global batch (any 1-D array; its order is kept).
        rank: in [0, world).
        world: the number of processes, >= 1.

    Returns:
        The shard (a view of ``idx``); empty when ``rank >= len(idx)``.

    Raises:
        ConfigError: ``world`` < 1 or ``rank`` outside [0, world).
    """
    if isinstance(world, bool) or not isinstance(world, (int, np.integer)) or world < 1:
        raise ConfigError(f"`world` must be an integer >= 1. Received: world={world!r}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world:
        raise ConfigError(f"`rank` must be an integer in [0, {world - 1}]. Received: rank={rank!r}")
    return np.asarray(idx)[rank::world]


def timeout_s() -> float:
    """Seconds a rank waits for the others at any collective before it gives up (``FACEVAE_DIST_TIMEOUT``).

    Raises:
        ConfigError: the variable is not a number in [10, 86400].
    """
    return _env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, float, lambda v: 10 <= v <= 86400,
                       "a number of seconds in [10, 86400]")


def describe() -> str:
    """``rank R of W`` (for messages)."""
    return f"rank {rank()} of {world_size()}"


class Ranks:
    """Rank 0 and the others of one ``torchrun`` run, through the backend's ``broadcast_object``/``barrier``.

    Rank 0 prepares the run folder, then calls :meth:`ready` (or :meth:`fail`); the others
    :meth:`wait` for that; everyone meets at :meth:`barrier` once rank 0 has finished the folder.

    Args:
        backend_name: the run's backend; it must offer ``broadcast_object`` and ``barrier``.

    Raises:
        ConfigError: the backend trains in one process only (tf).
    """

    def __init__(self, backend_name: str) -> None:
        from shared.registry import get_backend

        backend = get_backend(backend_name)
        if not (hasattr(backend, "broadcast_object") and hasattr(backend, "barrier")):
            raise ConfigError(f"torchrun started {world_size()} processes, but `backend` {backend_name!r} trains in "
                              f"one process (the tf backend spreads each batch over `devices` instead); launch it "
                              f"without torchrun. Received: backend={backend_name!r}, WORLD_SIZE={world_size()}")
        self._backend: Any = backend
        self.announced = False

    def ready(self) -> None:
        """Rank 0: the folder holds ``config.json`` and ``split.json``; the others may read them."""
        self.announced = True
        self._backend.broadcast_object(None)

    def fail(self, exc: BaseException) -> None:
        """Rank 0: preparing the folder failed with ``exc`` (no-op once announced); the others raise it too."""
        if self.announced:
            return
        self.announced = True
        try:
            self._backend.broadcast_object(f"{type(exc).__name__}: {str(exc).strip() or 'interrupted'}")
        except FaceVAEError as lost:  # the others are gone already: rank 0's own error is the one to show
            log.debug("could not pass the error on to the other ranks: %s", lost)

    def wait(self, out: Path, *needed: str) -> None:
        """The others: wait for rank 0 to prepare ``out``; raise its error if it could not.

        Raises:
            RunError: rank 0 failed, or the files ``needed`` are not visible in ``out`` from here.
        """
        error = self._backend.broadcast_object(None)
        if error is not None:
            raise RunError(f"{out}: rank 0 could not start the run ({error})")
        missing = [name for name in needed if not (Path(out) / name).is_file()]
        if missing:
            raise RunError(f"{out}: {describe()} does not see {', '.join(missing)}, which rank 0 has written there; "
                           f"on several machines the run folder must be on a filesystem every machine sees")

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        self._backend.barrier()
