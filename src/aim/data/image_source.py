"""Images of the image benchmarks, as their releases store them, decoded with PIL into one frame.

The Hugging Face releases that lmms-eval reads keep each image inside the question file: a parquet column
of Hugging Face's `Image` type, a struct {bytes, path}. Reading a whole file would hold every image in
memory (VQA-v2's validation split is 34 GB), so the question columns are read up front
(`question_rows`) and each sample keeps a reference to its image (`ParquetImage`: file, row, column),
read when the sample is loaded, one parquet row group at a time. Loose image files are `FileImage`s.

An `ImageSample` loads as a one-frame video: uint8 RGB [1, H, W, 3] (PIL's convert("RGB"), as lmms-eval's
doc_to_visual), so every adapter and merger takes it unchanged. An image that is missing or cannot be
decoded raises `ImageDecodeError`, a `VideoDecodeError`: the evaluation loop records the sample as skipped
and goes on. Its `modality` is "image", which the loop passes to the adapter.
"""
from __future__ import annotations

import bisect
import functools
import io
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aim.data import Sample, VideoDecodeError


class ImageDecodeError(VideoDecodeError):
    """An image that is missing or cannot be decoded: its sample is skipped and counted."""


def decode_image(source: bytes | Path, name: str) -> np.ndarray:
    """Encoded image bytes (or a file) -> uint8 RGB [1, H, W, 3]; `name` says which image in errors."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(f"cannot decode image {name}: not an image file PIL can read") from None
    except Exception as exc:  # noqa: BLE001  (PIL raises OSError, ValueError, DecompressionBombError, ...)
        raise ImageDecodeError(f"cannot decode image {name}: {type(exc).__name__}: {exc}") from None
    if rgb.ndim != 3 or min(rgb.shape[:2]) == 0:
        raise ImageDecodeError(f"cannot decode image {name}: empty image")
    return rgb[None]


@dataclass(frozen=True)
class FileImage:
    path: Path

    def read(self) -> np.ndarray:
        if not self.path.is_file():
            raise ImageDecodeError(f"missing image {self.path}")
        return decode_image(self.path, str(self.path))


@dataclass(frozen=True)
class MissingImage:
    """A question whose image is not in the release (e.g. a GQA imageId with no row in the image files)."""

    what: str

    def read(self) -> np.ndarray:
        raise ImageDecodeError(f"missing image {self.what}")


@functools.lru_cache(maxsize=256)
def _row_group_starts(path: str) -> tuple[int, ...]:
    """The first row of each row group of a parquet file, and its row count last."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return tuple(itertools.accumulate((meta.row_group(g).num_rows for g in range(meta.num_row_groups)), initial=0))


class _RowGroups:
    """The last few row groups read, so samples in file order decode each row group once."""

    def __init__(self, size: int = 2):
        self.size = size
        self._cache: OrderedDict[tuple, list] = OrderedDict()

    def value(self, path: Path, row: int, column: str):
        import pyarrow.parquet as pq

        starts = _row_group_starts(str(path))
        group = bisect.bisect_right(starts, row) - 1
        if row < 0 or group >= len(starts) - 1:
            raise IndexError(f"row {row} is outside {path} ({starts[-1]} rows)")
        start = starts[group]
        key = (str(path), group, column)
        if key not in self._cache:
            self._cache[key] = pq.ParquetFile(path).read_row_group(group, columns=[column]).column(0).to_pylist()
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key][row - start]


_ROW_GROUPS = _RowGroups()


@dataclass(frozen=True)
class ParquetImage:
    """Row `row` of `column` in a parquet file: Hugging Face's Image struct {bytes, path} (a `path` without
    bytes is a file relative to the parquet file's folder), or plain bytes."""

    path: Path
    row: int
    column: str = "image"

    def read(self) -> np.ndarray:
        name = f"{self.path.name}[{self.row}].{self.column}"
        try:
            value = _ROW_GROUPS.value(self.path, self.row, self.column)
        except (OSError, IndexError, KeyError) as exc:
            raise ImageDecodeError(f"cannot read image {name}: {exc}") from None
        if isinstance(value, dict):
            data, where = value.get("bytes"), value.get("path")
            if data:
                return decode_image(data, name)
            if where:
                return FileImage(self.path.parent / where).read()
            value = None
        if isinstance(value, (bytes, bytearray)) and value:
            return decode_image(value, name)
        raise ImageDecodeError(f"missing image {name}: the release has no image for this question")


ImageRef = FileImage | ParquetImage | MissingImage


@dataclass
class ImageSample(Sample):
    """A question about one image; `video` names the file that holds the image (for messages) and
    `num_frames` is 1."""

    image: ImageRef | None = None
    modality: str = "image"

    def load(self) -> tuple[np.ndarray, str]:
        """The image as one frame, uint8 RGB [1, H, W, 3], and the question; raises ImageDecodeError."""
        if self.image is None:
            raise ImageDecodeError(f"sample {self.id} has no image")
        return self.image.read(), self.question


def _is_image_column(field) -> bool:
    import pyarrow as pa

    t = field.type
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or (
        pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields)))


def question_rows(root: Path, pattern: str, limit: int | None = None) -> list[dict]:
    """The rows of the parquet files matching `pattern` under root (sorted by name), without their image
    columns, as plain Python values; each row gets `_file` (its parquet file) and `_row` (its index there).
    With `limit`, reading stops once that many rows are in."""
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for path in sorted(root.glob(pattern)):
        if limit is not None and len(rows) >= limit:
            break
        f = pq.ParquetFile(path)
        columns = [field.name for field in f.schema_arrow if not _is_image_column(field)]
        rows += [{**r, "_file": path, "_row": i} for i, r in enumerate(f.read(columns=columns).to_pylist())]
    return rows if limit is None else rows[:limit]


def image_index(root: Path, pattern: str, key: str = "id", column: str = "image") -> dict[str, ParquetImage]:
    """Images kept apart from their questions (GQA's *_images files: {id, image}): id -> ParquetImage."""
    import pyarrow.parquet as pq

    index: dict[str, ParquetImage] = {}
    for path in sorted(root.glob(pattern)):
        for i, value in enumerate(pq.read_table(path, columns=[key]).column(0).to_pylist()):
            index.setdefault(str(value), ParquetImage(path, i, column))
    return index
