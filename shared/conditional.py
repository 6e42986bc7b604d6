"""Conditional generation with a ``cvae`` run, backend-neutral (numpy protocol only).

* :func:`generate` — ``n`` faces for one requested gender / ethnicity / age;
* :func:`attribute_grid` — one figure per gender: rows ethnicity × columns age bands, the same
  latent draw in every cell, so only the labels change across the grid;
* :func:`edit_attributes` — real test faces encoded with their own labels and decoded with
  changed ones (gender flipped, other ages, every ethnicity).

Labels enter as :func:`shared.faces.label_vectors` does: gender 0/1, ethnicity one-hot, age / 100.
Each returns a :class:`shared.results.Result` (figure, images, table); with ``save=True`` (the
default) the figures (``fmt``: png, pdf or svg, at ``dpi``) and the ``.npy`` images behind them go
to ``RUN_DIR/generated/``; with ``save=False`` nothing is written.

Example::

    from shared.conditional import generate, attribute_grid
    res = generate("runs/cvae", gender=1, ethnicity="Asian", age=30, n=16)   # res.images: (16, H, W)
    attribute_grid("runs/cvae", save=False)
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pandas as pd

from shared.errors import ConfigError, RunError
from shared.faces import AGE_BANDS, ETHNICITY_NAMES, GENDER_NAMES, label_vectors
from shared.protocol import latent_noise
from shared.results import DEFAULT_DPI, OutputWriter, Result

__all__ = ["generate", "attribute_grid", "edit_attributes", "label_matrix", "check_temperature", "GRID_AGES",
           "OLDEST_REQUESTED_AGE", "GENERATED", "MAX_AGE"]

log = logging.getLogger(__name__)

GENERATED = "generated"
OLDEST_REQUESTED_AGE = 80  # the open last band (60+) is requested up to this age
GRID_AGES = tuple(int((lo + min(hi, OLDEST_REQUESTED_AGE)) // 2) for lo, hi in AGE_BANDS)  # 4, 14, 29, 49, 70
MAX_AGE = 120.0
_PER_ROW = 8


def _code(name: str, value: Union[int, str], names: tuple[str, ...]) -> int:
    """An integer class code from an int or a (case-insensitive) class name."""
    if isinstance(value, str):
        lowered = [n.lower() for n in names]
        if value.strip().lower() in lowered:
            return lowered.index(value.strip().lower())
        if value.strip().isdigit():
            value = int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < len(names):
        return int(value)
    raise ConfigError(f"`{name}` must be one of {list(range(len(names)))} or a name in {list(names)}. "
                      f"Received: {name}={value!r}")


def _age(value: Any) -> float:
    try:
        age = float(value)
    except (TypeError, ValueError):
        age = float("nan")
    if not (0.0 <= age <= MAX_AGE):
        raise ConfigError(f"`age` must be a number of years in [0, {MAX_AGE:g}]. Received: age={value!r}")
    return age


def check_temperature(value: Any) -> float:
    """A prior temperature: a number in (0, 1] (NaN refused).

    Raises:
        ConfigError: anything else.
    """
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if isinstance(value, bool) or not 0.0 < t <= 1.0:
        raise ConfigError(f"`temperature` must be a number in (0, 1]. Received: temperature={value!r}")
    return t


def label_matrix(gender: Any, ethnicity: Any, age: Any, n: int = 1) -> np.ndarray:
    """``(n, 7)`` label vectors for one validated gender / ethnicity / age.

    Args:
        gender: 0/1 or ``male``/``female``; ethnicity: 0-4 or a name of :data:`ETHNICITY_NAMES`;
        age: years in [0, 120]; n: rows.

    Raises:
        ConfigError: a value is out of range (the message names the field and allowed values).
    """
    g, e, a = _code("gender", gender, GENDER_NAMES), _code("ethnicity", ethnicity, ETHNICITY_NAMES), _age(age)
    return label_vectors(pd.DataFrame({"gender": [g] * n, "ethnicity": [e] * n, "age": [a] * n}))


def _open_conditional(run_dir: Union[str, os.PathLike]) -> tuple[Path, Any, Any]:
    from shared.studio import open_run

    run_dir, config, model = open_run(run_dir)
    if not getattr(model, "conditional", False):
        raise RunError(f"{run_dir}: conditional generation needs a cvae run; this run is a "
                       f"{config.model.family!r} model (train one with --model cvae --backend tf)")
    return run_dir, config, model


def _writer(run_dir: Union[str, os.PathLike], save: bool, fmt: str, dpi: int) -> OutputWriter:
    """Writes into ``RUN_DIR/generated/`` (created only when something is saved)."""
    return OutputWriter(Path(run_dir) / GENERATED, save, fmt, dpi)


def _grid_result(out: OutputWriter, stem: str, images: np.ndarray, rows: list[np.ndarray], table: Any = None,
                 info: Optional[dict] = None, **titles: Any) -> Result:
    """The figure of ``rows`` and, with saving, ``stem.npy`` (float32 images) + ``stem.<fmt>``."""
    from shared.plotting import image_grid

    images = np.asarray(images, dtype=np.float32)
    fig = image_grid(rows, **titles)
    first = len(out.paths)
    out.array(f"{stem}.npy", images)
    out.figure(fig, stem)
    return Result(stem, fig, images, table, info or {}, out.paths[first:])


def generate(run_dir: Union[str, os.PathLike], *, gender: Any, ethnicity: Any, age: Any, n: int = 16,
             seed: int = 0, temperature: float = 1.0, data: Optional[str] = None, save: bool = True,
             fmt: str = "png", dpi: int = DEFAULT_DPI) -> Result:
    """Generate ``n`` faces with the requested labels from z ~ N(0, T²·I) (seeded).

    Args:
        run_dir: a ``cvae`` run folder (a path or any ``os.PathLike``).
        gender: 0/1 or ``male``/``female``; ethnicity: 0-4 or a name; age: years in [0, 120].
        n: number of faces (1-1024); seed: seeds the latent draw.
        temperature: T in (0, 1] scales the prior draw: below 1 the faces sit nearer the labels' own
            face, so they show the requested labels more clearly and vary less (the same draw as
            T = 1, shrunk).
        data: accepted so every studio function takes it; unused (faces come from the prior).
        save: write ``generated/<labels>_seed<seed>.<fmt>`` and the images beside it as ``.npy``.
        fmt, dpi: figure format (png, pdf, svg) and resolution.

    Returns:
        A :class:`Result` with ``images`` ``(n, H, W)`` in [0, 1] and the labels in ``info``.

    Raises:
        ConfigError: invalid labels, ``n``, ``temperature``, ``fmt`` or ``dpi``; RunError: not a conditional run.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= int(n) <= 1024:
        raise ConfigError(f"`n` must be an integer in [1, 1024]. Received: n={n!r}")
    temperature = check_temperature(temperature)
    labels = label_matrix(gender, ethnicity, age, int(n))
    out = _writer(run_dir, save, fmt, dpi)
    run_dir, _, model = _open_conditional(run_dir)
    images = model.decode(np.float32(temperature) * latent_noise(int(n), model.latent_dim, int(seed)), labels)
    g, e = GENDER_NAMES[int(labels[0, 0])], ETHNICITY_NAMES[int(labels[0, 1:6].argmax())]
    a = float(labels[0, 6] * 100.0)
    hot = "" if temperature == 1.0 else f"_t{temperature:g}"  # T = 1 keeps the names files always had
    stem = f"{g}_{e}_age{a:g}_seed{seed}{hot}".lower()
    rows = [images[i:i + _PER_ROW] for i in range(0, len(images), _PER_ROW)]
    info = {"run_dir": str(run_dir), "gender": g, "ethnicity": e, "age": a, "n": int(n), "seed": int(seed),
            "temperature": temperature}
    title = f"{g}, {e}, age {a:g} (seed {seed}{'' if not hot else f', T={temperature:g}'})"
    result = _grid_result(out, stem, images, rows, info=info, title=title)
    log.info("generated %d faces%s", len(images), f": {', '.join(map(str, out.paths))}" if save else "")
    return result


def attribute_grid(run_dir: Union[str, os.PathLike], *, seed: int = 0, temperature: float = 1.0,
                   data: Optional[str] = None, save: bool = True, fmt: str = "png", dpi: int = DEFAULT_DPI) -> Result:
    """Faces for every gender × ethnicity × age band from one shared latent draw (only labels change).

    With ``save``, writes ``generated/attribute_grid_<gender>.<fmt>`` and ``.npy`` for each gender
    (``_t<T>`` added to the name when ``temperature`` is not 1; ``fmt`` png, pdf or svg at ``dpi``).
    ``temperature`` in (0, 1] shrinks the draw as in :func:`generate`: the grid then shows what the
    labels alone change, with less of the draw's own face. ``data`` is accepted for a uniform
    signature and unused.

    Returns:
        A :class:`Result` whose figure shows both genders (rows gender × ethnicity, columns age bands),
        ``images`` ``(2, 5, 5, H, W)`` (gender, ethnicity, age band), ``table`` one row per cell
        (``gender``, ``ethnicity``, ``age_band``, ``age``) in ``images`` order, and
        ``extra["male"]``/``extra["female"]`` the per-gender Results (the files).

    Raises:
        ConfigError: bad ``temperature``/``fmt``/``dpi``; RunError: not a conditional run.
    """
    from shared.plotting import image_grid

    temperature = check_temperature(temperature)
    out = _writer(run_dir, save, fmt, dpi)
    run_dir, _, model = _open_conditional(run_dir)
    band_titles = [f"{lo}-{hi}" if hi < 200 else f"{lo}+" for lo, hi in AGE_BANDS]
    z = np.float32(temperature) * latent_noise(1, model.latent_dim, int(seed))
    hot, shown = ("", f"seed {seed}") if temperature == 1.0 else (f"_t{temperature:g}", f"seed {seed}, T={temperature:g}")
    cells = len(ETHNICITY_NAMES) * len(GRID_AGES)
    grids, extra = [], {}
    for g, gname in enumerate(GENDER_NAMES):
        labels = np.concatenate([label_matrix(g, e, a) for e in range(len(ETHNICITY_NAMES)) for a in GRID_AGES])
        images = np.asarray(model.decode(np.repeat(z, cells, axis=0), labels), np.float32)
        grid = images.reshape(len(ETHNICITY_NAMES), len(GRID_AGES), *images.shape[1:])
        grids.append(grid)
        extra[gname] = _grid_result(out, f"attribute_grid_{gname}{hot}", grid, list(grid),
                                    row_titles=list(ETHNICITY_NAMES), col_titles=band_titles,
                                    title=f"{gname}: ethnicity × age band ({shown})")
    images = np.stack(grids)  # (gender, ethnicity, age band, H, W)
    fig = image_grid([row for grid in grids for row in grid], col_titles=band_titles,
                     row_titles=[f"{g}, {e}" for g in GENDER_NAMES for e in ETHNICITY_NAMES],
                     title=f"gender × ethnicity (rows) × age band (columns), one latent draw ({shown})")
    table = pd.DataFrame([{"gender": g, "ethnicity": e, "age_band": b, "age": a} for g in GENDER_NAMES
                          for e in ETHNICITY_NAMES for b, a in zip(band_titles, GRID_AGES)])
    log.info("attribute grids%s", f": {', '.join(map(str, out.paths))}" if save else " (not saved)")
    return Result("attribute_grid", fig, images, table,
                  {"run_dir": str(run_dir), "seed": int(seed), "temperature": temperature}, out.paths, extra)


def _alternate_genders(gender: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` test-face indexes taking the genders in turn (split order within each), so an edit
    figure shows both directions of "gender flipped" instead of whichever gender the split lists first."""
    groups = [list(np.flatnonzero(gender == g)) for g in (0, 1)]
    order: list[int] = []
    while len(order) < n and any(groups):
        for group in groups:
            if group and len(order) < n:
                order.append(int(group.pop(0)))
    return np.asarray(order, dtype=np.int64)


def edit_attributes(run_dir: Union[str, os.PathLike], *, n: int = 4, seed: int = 0, data: Optional[str] = None,
                    save: bool = True, fmt: str = "png", dpi: int = DEFAULT_DPI) -> Result:
    """Encode ``n`` real test faces with their labels and decode their posterior means with changed labels.

    Columns: original, reconstruction, gender flipped, ages of :data:`GRID_AGES`, every ethnicity.

    Args:
        run_dir: a ``cvae`` run folder (its saved test split is used).
        n: faces to edit (the first ``n`` of the test split); seed: kept for a stable signature
            (the edit is deterministic: posterior means).
        data: where the run's faces are now, when they moved (see :func:`shared.api.run_faces`).
        save: write ``generated/attribute_edits.<fmt>`` and the images beside it as ``.npy``.
        fmt, dpi: figure format (png, pdf, svg) and resolution.

    Returns:
        A :class:`Result` with ``images`` ``(n, 13, H, W)`` (the columns above), ``table`` the faces'
        labels (one row per face) and ``info["columns"]`` the column names.

    Raises:
        RunError: not a conditional run, or an empty test split; ConfigError: ``n`` not an integer in
            [1, :data:`shared.studio.MAX_FACES`], bad ``fmt``/``dpi``.
    """
    from shared.studio import MAX_FACES, check_int, held_out_faces

    n = check_int("n", n, 1, MAX_FACES)
    out = _writer(run_dir, save, fmt, dpi)
    run_dir, config, model = _open_conditional(run_dir)
    pool = held_out_faces(run_dir, config, None, data=data)
    faces = pool.subset(_alternate_genders(pool.labels["gender"].to_numpy(), n))
    own = label_vectors(faces.labels)
    mean, _ = model.encode(faces.images, own)
    edits: list[tuple[str, np.ndarray]] = [("reconstruction", own)]
    flipped = own.copy()
    flipped[:, 0] = 1.0 - flipped[:, 0]
    edits.append(("gender flipped", flipped))
    for a in GRID_AGES:
        lab = own.copy()
        lab[:, 6] = a / 100.0
        edits.append((f"age {a}", lab))
    for e, ename in enumerate(ETHNICITY_NAMES):
        lab = own.copy()
        lab[:, 1:6] = 0.0
        lab[:, 1 + e] = 1.0
        edits.append((ename, lab))
    columns = [faces.floats()] + [model.decode(mean, lab) for _, lab in edits]
    grid = np.stack(columns, axis=1)  # (n, columns, H, W)
    names = ["original"] + [name for name, _ in edits]
    table = faces.labels.reset_index(drop=True).copy()
    row_titles = [f"{GENDER_NAMES[g]}, {ETHNICITY_NAMES[e]}, {a}"
                  for g, e, a in zip(table["gender"], table["ethnicity"], table["age"])]
    # 13 columns: a wider tile keeps "reconstruction" and "gender flipped" apart
    result = _grid_result(out, "attribute_edits", grid, list(grid), table=table,
                          info={"run_dir": str(run_dir), "n": n, "columns": names}, row_titles=row_titles,
                          col_titles=names, title="attribute editing (cvae): each face re-decoded with changed labels",
                          tile=1.0)
    log.info("attribute edits of %d faces%s", len(grid), f": {', '.join(map(str, out.paths))}" if save else "")
    return result
