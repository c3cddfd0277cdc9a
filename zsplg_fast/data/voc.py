"""PASCAL VOC 2012 layout (and the synthetic datasets, which are written in it).

```
ROOT/JPEGImages/<id>.jpg
ROOT/SegmentationClass/<id>.png        palette PNGs, 255 = ignore
ROOT/SegmentationClassAug/<id>.png     preferred when present (configurable with label_dir=)
ROOT/ImageSets/Segmentation/{train,val}.txt   one id per line
ROOT/classes.txt                       optional: one class name per line, index order
```
The class-name list (VOC's 21) belongs to the models layer; a source only reads ``classes.txt``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from zsplg_fast.data.folder import IMAGE_EXTENSIONS, list_images
from zsplg_fast.data.labels import non_png_label
from zsplg_fast.data.sources import DataSource, Sample, check_root
from zsplg_fast.data.splits import SplitEntry, find_split, is_file, read_split, resolve_entry
from zsplg_fast.errors import DatasetError

IMAGES_DIR = "JPEGImages"
LABEL_DIRS: tuple[str, ...] = ("SegmentationClassAug", "SegmentationClass")  # preference order
IMAGESETS_DIR = "ImageSets/Segmentation"
CLASSES_FILE = "classes.txt"

# Extensions tried, in order, for a bare id in an ImageSets file.
_ID_EXTENSIONS = (".jpg", ".jpeg", ".png", *sorted(IMAGE_EXTENSIONS - {".jpg", ".jpeg", ".png"}))


def read_class_names(root: Path) -> list[str] | None:
    """Lines of ``ROOT/classes.txt`` (stripped, blank lines skipped, kept verbatim incl. '|' synonyms)."""
    f = root / CLASSES_FILE
    if not f.is_file():
        return None
    names = [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    return names or None


def _label_dir(root: Path, label_dir: str | Path | None) -> Path | None:
    if label_dir is not None:
        d = root / label_dir
        if not d.is_dir():
            raise DatasetError(d, "label folder not found (label_dir=)")
        return d
    for name in LABEL_DIRS:
        if (root / name).is_dir():
            return root / name
    return None


def _label_file(labels: Path | None, sid: str) -> Path | None:
    """``labels/<sid>.png``, else a same-stem file in another format beside it (``<sid>.jpg``: attached so
    that reading it names it and says labels must be PNG), else None (unlabeled)."""
    if labels is None:
        return None
    png = labels / f"{sid}.png"
    return png if is_file(png) else non_png_label(png)


def _voc_id(image: Path, root: Path) -> str:
    """Path relative to JPEGImages (else ROOT), '/'-separated, no extension: ``JPEGImages/x.jpg`` → ``x``."""
    base = root / IMAGES_DIR
    try:
        rel = image.relative_to(base)
    except ValueError:
        try:
            rel = image.relative_to(root)
        except ValueError as e:
            raise DatasetError(image, f"is outside the dataset root {root}") from e
    return str(PurePosixPath(rel.as_posix()).with_suffix(""))


def _is_bare_id(e: SplitEntry) -> bool:
    return e.label is None and "/" not in e.image and not PurePosixPath(e.image).suffix


def _from_id(e: SplitEntry, root: Path, labels: Path | None, split_file: Path) -> Sample:
    for ext in _ID_EXTENSIONS:
        image = root / IMAGES_DIR / f"{e.image}{ext}"
        if is_file(image):
            break
    else:
        raise DatasetError(split_file, f"line {e.line}: no image for id '{e.image}' in {root / IMAGES_DIR}")
    return Sample(e.image, image, _label_file(labels, e.image))


def open_voc(
    arg: str,
    split: str | Path | None = None,
    *,
    label_dir: str | Path | None = None,
    name: str = "voc",
) -> DataSource:
    """``voc:DIR``.

    Args:
        arg: dataset root.
        split: None → every image in ``JPEGImages`` (sorted); otherwise a split file or name found by
            :func:`find_split` (also looked up in ``ImageSets/Segmentation``). Lines are UniMatch-style
            paths (taken literally) or bare VOC ids (image found in ``JPEGImages``, label in the label
            folder if that file exists).
        label_dir: label folder relative to DIR; default ``SegmentationClassAug`` if present, else
            ``SegmentationClass``. Pseudo-label folders work too.
        name: the source's name (``synthetic`` for the alias).

    Returns:
        Samples with ids relative to ``JPEGImages`` without extension (``2007_000032``); labels
        attached where the file exists (a ``<id>.jpg`` or other non-PNG file standing for an absent
        ``<id>.png`` is attached too, and refused when read: labels must be PNG); ``class_names`` from
        ``classes.txt`` if present.

    Raises:
        DatasetError: no ``JPEGImages`` folder, a missing file or unknown id in the split.
    """
    root = check_root(arg)
    if not (root / IMAGES_DIR).is_dir():
        raise DatasetError(root, f"not a VOC-layout dataset: {IMAGES_DIR}/ is missing")
    labels = _label_dir(root, label_dir)
    samples: list[Sample] = []
    if split is None:
        for image in list_images(root / IMAGES_DIR):
            sid = _voc_id(image, root)
            samples.append(Sample(sid, image, _label_file(labels, sid)))
    else:
        split_file = find_split(split, root, extra_dirs=(IMAGESETS_DIR,))
        for e in read_split(split_file):
            if _is_bare_id(e):
                samples.append(_from_id(e, root, labels, split_file))
            else:
                image, label = resolve_entry(e, root, split_file)
                samples.append(Sample(_voc_id(image, root), image, label))
    return DataSource(name, root, samples, read_class_names(root))


def open_synthetic(arg: str, split: str | Path | None = None, **options: Any) -> DataSource:
    """``synthetic:DIR``: a dataset from ``zsplg-fast data synth`` (VOC layout); see :func:`open_voc`."""
    options.pop("name", None)
    return open_voc(arg, split, name="synthetic", **options)
