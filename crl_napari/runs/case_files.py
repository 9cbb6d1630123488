"""Reading one case's files for RunFolder: an original image or mask from the data root (never a file outside
it), the run's display copies at training size (image, given mask) and the scoring's maps (corrected mask,
probability, uncertainty). Kept apart so that RunFolder stays one screenful per concern; the file names still
come from names.py only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import IMAGE_EXTENSIONS
from ..ids import check_id
from ..native import decode_prob
from .errors import RunError
from .names import CONFIG, CORRECTED, GIVEN, IMAGES, NETS16, PROB16


class CaseFiles:
    """The read side of a run's per-case files. Its host (RunFolder) gives ``path``, ``config``, ``data_root``
    and ``moved_root``."""

    path: Path
    config: dict

    def original(self, raw: str, kind: str, data_root: Path | str | None = None) -> tuple[Path | None, str]:
        """An original image or mask named in cases.csv, only from the data root (``data_root``, or the one in
        config.json): (path, "") or (None, why). A path recorded outside that root, a link leading out of
        it, or a file that is not an image type is refused, so a tampered cases.csv cannot point at any file.
        Without ``data_root``, the folder remembered by :meth:`remember_data_root` is tried first (a bad
        setting file is passed over here; :attr:`moved_root` reports it)."""
        if data_root is None:
            try:
                moved = self.moved_root
            except RunError:
                moved = None
            if moved is not None:
                found = self._find(raw, kind, moved)
                if found[0] is not None:
                    return found
        return self._find(raw, kind, data_root)

    def _find(self, raw: str, kind: str, data_root: Path | str | None) -> tuple[Path | None, str]:
        root = Path(data_root) if data_root is not None else self.data_root
        if root is None:
            return None, f"{self.path / CONFIG}: no data folder recorded; pass the data folder"
        name = raw.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        candidates = [root / kind / name] if data_root is not None else [Path(raw), root / kind / name]
        real_root = root.resolve()
        refused = ""
        for p in candidates:
            if not p.is_file():
                continue
            if real_root not in p.resolve().parents:
                refused = f"{raw}: outside the data folder {root}; refused"
            elif p.suffix.lower() not in IMAGE_EXTENSIONS:
                refused = f"{raw}: not an image file ({', '.join(IMAGE_EXTENSIONS)}); refused"
            else:
                return p, ""
        return None, refused or f"{raw}: not found"

    def _png(self, sub: str, name: str) -> np.ndarray:
        import imageio.v3 as iio

        from ..data import check_pixel_budget

        path = self.path / sub / name
        try:
            check_pixel_budget(path, self.config["data"]["size"] ** 2 * 4)
            return np.asarray(iio.imread(path))
        except FileNotFoundError:
            raise RunError(f"{path}: missing") from None
        except Exception as exc:
            raise RunError(f"{path}: unreadable image ({exc})") from exc

    def _id(self, id_: str) -> str:
        return check_id(id_, self.path)

    def image(self, id_: str) -> np.ndarray:
        """The display image (uint8, training size)."""
        return self._png(IMAGES, f"{self._id(id_)}.png")

    def given(self, id_: str) -> np.ndarray:
        """The mask training saw (bool)."""
        return self._png(GIVEN, f"{self._id(id_)}.png") > 127

    def corrected(self, id_: str) -> np.ndarray:
        return self._png(CORRECTED, f"{self._id(id_)}.png") > 127

    def corrected_path(self, id_: str) -> Path:
        return self.path / CORRECTED / f"{self._id(id_)}.png"

    def prob(self, id_: str) -> np.ndarray:
        """Sharpened foreground probability in [0, 1] at training size: from the 16-bit map, or the 8-bit one of
        runs scored before it existed."""
        if (self.path / CORRECTED / f"{self._id(id_)}{PROB16}").is_file():
            code = self._png(CORRECTED, f"{id_}{PROB16}")
            try:
                return decode_prob(code)
            except ValueError as exc:
                raise RunError(f"{self.path / CORRECTED / (id_ + PROB16)}: {exc}") from None
        return self._png(CORRECTED, f"{self._id(id_)}_prob.png").astype(np.float32) / 255

    def has_nets_prob(self, id_: str) -> bool:
        """Whether the run kept the nets' own map of ``id_`` (:meth:`nets_prob`)."""
        return (self.path / CORRECTED / f"{self._id(id_)}{NETS16}").is_file()

    def nets_prob(self, id_: str) -> np.ndarray | None:
        """The nets' own sharpened probability at training size, which the border fit moved the given border with
        (scoring.ImageScores.nets_prob); None where the run has none (scored without the fit, or before it was
        kept)."""
        name = f"{self._id(id_)}{NETS16}"
        if not self.has_nets_prob(id_):
            return None
        try:
            return decode_prob(self._png(CORRECTED, name))
        except ValueError as exc:
            raise RunError(f"{self.path / CORRECTED / name}: {exc}") from None

    def uncertainty(self, id_: str) -> np.ndarray:
        return self._png(CORRECTED, f"{self._id(id_)}_unc.png").astype(np.float32) / 255
