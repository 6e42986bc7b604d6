"""Embedded synthetic faces: a deterministic generator of labelled grayscale faces at any size >= 32.

The labels (``age``, ``gender``, ``ethnicity``) use the schema of the real UTKFace data so that every
model and command runs on them unchanged. They are stand-ins for that schema, **not depictions of
people**: each label only switches drawing parameters of a cartoon face so that a classifier has
something to learn and a conditional VAE has something to condition on.

Visible factors driven by the labels:

* ``gender`` -> hair length (1: long hair framing the face down to the neck in ~90 % of faces,
  0: short hair in ~90 %), jaw width (0: wider, squarer jaw; 1: narrower chin), brow thickness
  (0: thicker) and, for gender 0 aged 16+, a darker beard/stubble region in ~35 % of faces;
  lip thickness (1: thicker).
* ``ethnicity`` -> skin tone (mean gray level per class, 0: 0.80, 1: 0.36, 2: 0.70, 3: 0.52, 4: 0.62,
  each +-0.06), face width/aspect ratio, hair base colour range.
* ``age`` -> face proportions (under ~16: rounder, smaller face, larger and lower eyes), graying hair
  (from ~30 years, full gray by ~80), wrinkles (forehead lines, nasolabial folds and under-eye lines
  from ~35 years), narrower eyes and, for gender 0, a receding hairline with age.

Nuisance factors independent of the labels: position and scale jitter, background level, clothing,
eye gaze, smile curvature, directional lighting and pixel noise.

Label marginals are rough UTKFace-like figures: gender 1 with probability 0.48; ethnicity
(0.42, 0.19, 0.145, 0.17, 0.075); age from a piecewise-uniform histogram with many young children,
a peak at 20-35 and a long tail to 116.

Determinism: face ``i`` is drawn from its own generator seeded by ``(seed, i)``, so it is identical for
any ``n > i`` and the output is byte-identical for the same ``(n, image_size, seed)``. Rendering is
vectorised over chunks of faces with coordinate-grid masks (no per-pixel Python loops).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from shared.errors import ConfigError
from shared.faces import LABEL_COLUMNS, Faces

__all__ = ["generate_faces", "MAX_FACES", "MAX_BYTES", "ETHNICITY_PROBS", "GENDER1_PROB", "AGE_BINS", "AGE_PROBS",
           "SKIN_TONES"]

GENDER1_PROB = 0.48
ETHNICITY_PROBS = (0.42, 0.19, 0.145, 0.17, 0.075)
AGE_BINS = (0, 4, 10, 16, 20, 26, 36, 46, 56, 66, 80, 117)  # edges; ages are drawn uniformly within a bin
AGE_PROBS = (0.10, 0.06, 0.05, 0.06, 0.20, 0.20, 0.10, 0.09, 0.07, 0.05, 0.02)
SKIN_TONES = (0.80, 0.36, 0.70, 0.52, 0.62)
_FACE_WIDTH = (1.00, 1.03, 1.06, 0.98, 1.00)  # multiplier of the face half-width per ethnicity
_N_PARAMS = 40  # uniforms drawn per face (fixed, so adding a parameter later is explicit)
_CHUNK = 256  # faces rendered together: keeps the working arrays cache-sized
MAX_FACES = 200_000  # a typo such as synthetic:10000000 must fail at once, not allocate until killed
MAX_BYTES = 2 << 30  # and n * image_size**2 (the uint8 images) stays within 2 GiB


def _labels(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gender, ethnicity, age) int arrays from the first three uniforms of each face."""
    gender = (u[:, 0] < GENDER1_PROB).astype(np.int64)
    ethnicity = np.searchsorted(np.cumsum(ETHNICITY_PROBS)[:-1], u[:, 1], side="right").astype(np.int64)
    cdf = np.concatenate([[0.0], np.cumsum(AGE_PROBS)])
    cdf /= cdf[-1]
    k = np.clip(np.searchsorted(cdf, u[:, 2], side="right") - 1, 0, len(AGE_PROBS) - 1)
    frac = (u[:, 2] - cdf[k]) / (cdf[k + 1] - cdf[k])
    lo, hi = np.asarray(AGE_BINS[:-1])[k], np.asarray(AGE_BINS[1:])[k]
    age = np.minimum(lo + np.floor(frac * (hi - lo)), hi - 1).astype(np.int64)
    return gender, ethnicity, np.clip(age, 0, 116)


def _soft(d: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a signed distance ``d`` (negative inside), one pixel of blur. Reuses ``d``."""
    np.multiply(d, -1.0 / px, out=d)  # callers pass a fresh temporary
    d += 0.5
    return np.clip(d, 0.0, 1.0, out=d)


def _ellipse(x: np.ndarray, y: np.ndarray, cx, cy, rx, ry, px) -> np.ndarray:
    """Soft mask of an axis-aligned ellipse with ``x`` (B, 1, W) and ``y`` (B, H, 1) in face units.

    Uses ``(r**2 - 1) / 2`` as the signed distance in radius units (exact at the edge, no sqrt), so the
    two separable halves are combined with a single full-size subtraction.
    """
    k = np.minimum(rx, ry) / (2.0 * px)
    across = ((x - cx) / rx) ** 2 * k  # (B, 1, W)
    down = (0.5 + k) - ((y - cy) / ry) ** 2 * k  # (B, H, 1)
    cov = down - across
    return np.clip(cov, 0.0, 1.0, out=cov)


def _wrinkles(x: np.ndarray, y: np.ndarray, px: np.ndarray) -> np.ndarray:
    """Mask (B, H, W) of forehead lines, nasolabial folds and under-eye lines, in face units."""
    forehead = sum(_soft(np.abs(y - yk) - 0.4 * px, px) for yk in (-0.34, -0.27, -0.20)) * _soft(np.abs(x) - 0.24, px)
    folds = _soft(np.abs(np.abs(x) - (0.10 + 0.45 * (y - 0.10))) - 0.4 * px, px) * _soft(np.abs(y - 0.22) - 0.12, px)
    bags = (_soft(np.abs(y - 0.03 - 0.8 * (np.abs(x) - 0.17) ** 2) - 0.4 * px, px)
            * _soft(np.abs(np.abs(x) - 0.17) - 0.06, px))
    return np.minimum(forehead + folds + bags, 1.0)


def _paint(img: np.ndarray, mask: np.ndarray, value) -> None:
    """In place: ``img = img + mask * (value - img)`` (alpha compositing)."""
    img += mask * (value - img)


def _render(u: np.ndarray, gender: np.ndarray, eth: np.ndarray, age: np.ndarray, noise: np.ndarray,
            size: int) -> np.ndarray:
    """Draw one chunk of faces. ``u`` (B, _N_PARAMS) uniforms, ``noise`` (B, H, W) N(0, 1). Returns float32 [0, 1]."""
    f32 = np.float32
    b = u.shape[0]

    def p(k: int, lo: float, hi: float) -> np.ndarray:  # parameter k mapped to [lo, hi), shape (B, 1, 1)
        return (lo + (hi - lo) * u[:, k]).astype(f32).reshape(b, 1, 1)

    g = gender.astype(f32).reshape(b, 1, 1)
    a_ = age.astype(f32).reshape(b, 1, 1)
    child = np.clip((16.0 - a_) / 16.0, 0.0, 1.0)
    old = np.clip((a_ - 35.0) / 45.0, 0.0, 1.0)
    gray = np.clip((a_ - 30.0) / 50.0, 0.0, 1.0) * p(3, 0.5, 1.0)

    coords = ((np.arange(size, dtype=f32) + 0.5) / size * 2.0 - 1.0)
    scale = p(4, 0.95, 1.10) * (1.0 - 0.1 * child)
    cx, cy = p(5, -0.08, 0.08), p(6, 0.0, 0.14)
    x = (coords.reshape(1, 1, size) - cx) / scale  # (B, 1, W) face units
    y = (coords.reshape(1, size, 1) - cy) / scale  # (B, H, 1)
    px = (2.0 / size) / scale  # one pixel in face units, (B, 1, 1)

    skin = (np.asarray(SKIN_TONES, dtype=f32)[eth].reshape(b, 1, 1) + p(7, -0.06, 0.06))
    hair_base = p(8, 0.04, 0.30) + (eth == 0).reshape(b, 1, 1) * p(9, 0.0, 0.25)
    hair = hair_base + (0.82 - hair_base) * gray
    fa = 0.46 * np.asarray(_FACE_WIDTH, dtype=f32)[eth].reshape(b, 1, 1) * p(10, 0.94, 1.06) * (1 + 0.06 * child)
    fb = 0.60 * p(11, 0.95, 1.05) * (1 - 0.08 * child)
    long_hair = np.where(u[:, 12] < 0.9, g[:, 0, 0], 1 - g[:, 0, 0]).reshape(b, 1, 1)
    hair_len = np.where(long_hair > 0.5, p(13, 0.45, 1.0), p(13, -0.42, -0.15))

    def band(lo: float, hi: float) -> slice:  # pixel rows holding face-unit rows [lo, hi] of every face
        top = np.floor(((cy + scale * lo).min() + 1.0) / 2.0 * size) - 2
        bottom = np.ceil(((cy + scale * hi).max() + 1.0) / 2.0 * size) + 2
        return slice(int(max(top, 0)), int(min(max(bottom, 0), size)))

    img = np.empty((b, size, size), dtype=f32)
    img[:] = p(14, 0.12, 0.92)  # background
    # Long hair behind the head and shoulders, then the neck and clothes.
    back = _ellipse(x, y, 0.0, -0.04, fa * 1.25, fb * 1.15, px) * _soft(y - hair_len * fb, px)
    _paint(img, back, hair)
    neck = _soft(np.abs(x) - fa * 0.5, px) * _soft(0.3 - y, px)
    _paint(img, neck, skin * 0.85)
    _paint(img, _ellipse(x, y, 0.0, 1.32, 1.0, 0.55, px), p(15, 0.1, 0.9))
    # Face: ellipse whose half-width tapers towards the chin; gender 1 narrower (taper larger).
    taper = np.where(g > 0.5, p(16, 0.26, 0.38), p(16, 0.08, 0.20)) * (1 - child) + 0.22 * child
    a_eff = fa * (1.0 - taper * np.clip(y / fb, 0.0, 1.0) ** 2)
    r2 = (x / a_eff) ** 2 + (y / fb) ** 2
    face = _soft((r2 - 1.0) * (0.5 * fa), px)
    shade = skin * (1.0 - 0.18 * r2)  # rounded shading of the face
    _paint(img, face, shade)
    # Age: wrinkles darken the skin inside the face (only faces over 35 pay for them).
    aged = old[:, 0, 0] > 0
    if aged.any():
        img[aged] *= 1.0 - (0.30 * old[aged]) * _wrinkles(x[aged], y[aged], px[aged]) * face[aged]
    # Beard/stubble: gender 0, 16+, ~35 %.
    bearded = (g[:, 0, 0] < 0.5) & (age >= 16) & (u[:, 17] < 0.35)
    if bearded.any():
        beard = face[bearded] * _soft((0.24 - y[bearded]) / 3.0, px[bearded]) * p(18, 0.3, 0.65)[bearded]
        sub = img[bearded]
        _paint(sub, beard, hair_base[bearded] + 0.1)
        img[bearded] = sub
    # Eyes: whites, then iris; children larger and lower, older narrower.
    ex, ey = p(19, 0.155, 0.19), p(20, -0.08, -0.03) + 0.10 * child
    erx = p(21, 0.065, 0.08) * (1 + 0.25 * child)
    ery = p(22, 0.030, 0.040) * (1 + 0.35 * child) * (1 - 0.25 * old)
    gaze = p(23, -0.02, 0.02)
    white = np.minimum(skin + 0.22, 0.97)
    iris = p(24, 0.05, 0.30)
    bry = np.where(g > 0.5, 0.012, 0.021) * p(25, 0.85, 1.2)  # brows: thicker for gender 0
    brow_y, brow_tone = ey - ery - p(26, 0.045, 0.07), hair_base + (0.82 - hair_base) * gray * 0.5
    rows = band(-0.27, 0.12)  # small features are drawn on a band of rows only (views: painted in place)
    im, yb = img[:, rows], y[:, rows]
    for side in (-1.0, 1.0):
        _paint(im, _ellipse(x, yb, side * ex, ey, erx, ery, px), white)
        _paint(im, _ellipse(x, yb, side * ex + gaze, ey, erx * 0.48, np.minimum(ery, erx * 0.48) * 1.05, px), iris)
        _paint(im, _ellipse(x, yb, side * ex, brow_y, erx * 1.1, bry, px), brow_tone)
    # Nose: a shadow along one side and the nostrils.
    nose_side = np.where(u[:, 27] < 0.5, -1.0, 1.0).astype(f32).reshape(b, 1, 1)
    rows = band(-0.02, 0.42)
    im, yb, fb_ = img[:, rows], y[:, rows], face[:, rows]
    ridge = _soft(np.abs(x - 0.035 * nose_side) - 0.5 * px, px) * _soft(np.abs(yb - 0.09) - 0.09, px)
    nostrils = _ellipse(x, yb, 0.0, 0.19, 0.065, 0.025, px)
    im *= 1.0 - fb_ * (0.15 * ridge + 0.28 * nostrils)
    # Mouth: a parabolic band; curvature is the smile; gender 1 thicker lips.
    my = p(28, 0.31, 0.35) - 0.04 * child
    mw, curv = p(29, 0.10, 0.14), p(30, -0.8, 2.2)
    thick = np.where(g > 0.5, 0.026, 0.016) * p(31, 0.85, 1.2)
    mouth = _soft(np.abs(yb - my + curv * x * x) - thick, px) * _soft(np.abs(x) - mw, px)
    _paint(im, mouth * fb_, skin * p(32, 0.45, 0.65))
    # Hair on top (hairline recedes with age for gender 0; fringe sometimes) and long hair at the sides.
    recede = (1 - g) * old * p(33, 0.0, 0.35)
    hairline = p(34, -0.40, -0.26) - recede + 0.45 * x * x
    rows = band(-0.07 - 1.06 * 0.6 * 1.05, 0.0)
    top = _ellipse(x, y[:, rows], 0.0, -0.07, fa * 1.1, fb * 1.06, px) * _soft(y[:, rows] - hairline, px)
    _paint(img[:, rows], top, hair)
    framed = long_hair[:, 0, 0] > 0.5
    if framed.any():
        sides = back[framed] * _soft(fa[framed] * 0.80 - np.abs(x[framed]), px[framed]) * _soft(y[framed] + 0.25,
                                                                                              px[framed])
        sub = img[framed]
        _paint(sub, sides, hair[framed])
        img[framed] = sub
    # Directional lighting, then pixel noise.
    theta, k = p(35, 0.0, 2 * np.pi), p(36, 0.0, 0.25)
    img *= 1.0 + k * (np.cos(theta) * coords.reshape(1, 1, size) + np.sin(theta) * coords.reshape(1, size, 1))
    img += p(37, 0.01, 0.035) * noise
    return np.clip(img, 0.0, 1.0)


def generate_faces(n: int, image_size: int = 48, seed: int = 0) -> Faces:
    """Generate ``n`` labelled synthetic grayscale faces (see the module docstring for what labels drive).

    Args:
        n: number of faces (0 to :data:`MAX_FACES`, and ``n * image_size**2`` ≤ :data:`MAX_BYTES`).
        image_size: side of the square images (>= 32).
        seed: base seed (>= 0); face ``i`` depends only on ``(seed, i, image_size)``.

    Returns:
        :class:`~shared.faces.Faces` with images ``(n, image_size, image_size)`` uint8 and labels with
        columns ``age``, ``ethnicity``, ``gender`` (int64) and ``img_name`` (``synthetic_000123.png``).

    Raises:
        ConfigError: ``n``, ``image_size`` or ``seed`` of the wrong type or out of range.
    """
    for name, value, lo in (("n", n, 0), ("image_size", image_size, 32), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ConfigError(f"`{name}` must be an integer >= {lo}. Received: {name}={value!r}")
    n, size = int(n), int(image_size)
    if n > MAX_FACES or n * size * size > MAX_BYTES:
        raise ConfigError(f"`n` must be at most {MAX_FACES} and n*image_size**2 at most {MAX_BYTES} bytes "
                          f"(2 GiB). Received: n={n}, image_size={size}")
    u = np.empty((n, _N_PARAMS), dtype=np.float64)
    noise = np.empty((min(n, _CHUNK), size, size), dtype=np.float32)  # one chunk at a time: memory stays flat
    images = np.empty((n, size, size), dtype=np.uint8)
    for s in range(0, n, _CHUNK):
        sl = slice(s, min(s + _CHUNK, n))
        for i in range(sl.start, sl.stop):
            rng = np.random.default_rng([int(seed), i])
            u[i] = rng.random(_N_PARAMS)
            noise[i - s] = rng.standard_normal((size, size), dtype=np.float32)
        gender, eth, age = _labels(u[sl])
        imgs = _render(u[sl], gender, eth, age, noise[:sl.stop - s], size)
        images[sl] = np.rint(imgs * 255.0).astype(np.uint8)
    gender, eth, age = _labels(u)
    labels = pd.DataFrame({
        "age": age, "ethnicity": eth, "gender": gender,
        "img_name": pd.array([f"synthetic_{i:06d}.png" for i in range(n)], dtype="str"),
    }, columns=list(LABEL_COLUMNS))
    return Faces(images, labels)
