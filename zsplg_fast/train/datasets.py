"""Training datasets (labeled, unlabeled with zero-shot labels, val) and a resumable epoch sampler.

Follows UniMatch ``dataset/semi.py``: labeled samples get the weak pipeline with 255 padding and the
labeled ids are repeated to the unlabeled count; unlabeled samples get the weak pipeline with 254
padding (→ ignore map), one weak and two strong views and two CutMix boxes. Here the unlabeled
"mask" is the zero-shot label, so it follows the same geometric augmentation.

Every item is addressed by ``(index, seed)``: :class:`EpochSampler` derives the seed from
(run seed, stream, epoch, rank, position), so augmentations do not depend on worker count or global
RNG state and a resumed run sees exactly the batches a straight run would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from zsplg_fast.config.train import UNIMATCH_SCALE
from zsplg_fast.data.images import load_image
from zsplg_fast.data.labels import check_pair, check_values, read_label
from zsplg_fast.data.sources import Sample
from zsplg_fast.errors import LabelFormatError, SampleError
from zsplg_fast.train import transforms as T

IGNORE = 255
Key = tuple[int, int]


def label_file(folder: str | Path, sample_id: str) -> Path:
    """The label of ``sample_id`` in a labels folder: ``folder/<id>.png``, the layout the label job writes
    (``labeling.outputs.output_paths``) and enhance mirrors."""
    return Path(folder) / f"{sample_id}.png"


def labels_dir(folder: str | Path) -> Path:
    """Accept a label output folder or its ``labels/`` subfolder."""
    p = Path(folder)
    return p / "labels" if (p / "labels").is_dir() else p


def with_labels(samples: Sequence[Sample], folder: str | Path) -> list[Sample]:
    """Copies of ``samples`` whose label is ``folder/<id>.png`` (enhanced or zero-shot labels)."""
    d = labels_dir(folder)
    return [replace(s, label_path=label_file(d, s.id), label_loader=None) for s in samples]


PREFLIGHT_HINT = "run `zsplg-fast data check` to list every bad file (train.data.preflight checks them all)"


def checked_label(
    label: np.ndarray | None, path: str | Path, image: Path, size: tuple[int, int], num_classes: int | None
) -> np.ndarray | None:
    """``label`` (H, W) uint8 after checking it against the image (``size`` = PIL (W, H)) and the classes.

    Raises:
        SampleError: values outside {0..C-1, 255} or a size unlike the image's, naming the label file.
    """
    if label is None:
        return None
    try:
        check_pair(image, (size[1], size[0]), path, label.shape)
        if num_classes is not None:
            check_values(label, num_classes, path)
    except LabelFormatError as e:
        raise SampleError(e.path, f"{str(e)[len(e.path) + 2 :]}; {PREFLIGHT_HINT}") from e
    return label


class _Base(Dataset):
    def __init__(
        self, samples: Sequence[Sample], max_long_side: int = 16384, num_classes: int | None = None
    ) -> None:
        self.samples = list(samples)
        self.max_long_side = max_long_side
        self.num_classes = num_classes

    def _label(self, s: Sample, size: tuple[int, int]) -> np.ndarray | None:
        """The sample's label, checked (values, size) even when preflight is off."""
        where = s.label_path or f"{s.image_path} (generated label)"
        return checked_label(s.load_label(), where, s.image_path, size, self.num_classes)

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, s: Sample) -> Image.Image:
        return Image.fromarray(load_image(s.image_path, max_long_side=self.max_long_side))


class LabeledSet(_Base):
    """Items: ``(img (3, S, S) float32 normalised, mask (S, S) int64 {0..C-1, 255}, index int)``.

    ``nsample``: repeat the samples (whole copies, then cut) to this length, as upstream does to match
    the unlabeled set.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        crop: int,
        nsample: int | None = None,
        max_long_side: int = 16384,
        scale: tuple[float, float] = UNIMATCH_SCALE,
        num_classes: int | None = None,
    ) -> None:
        items = list(samples)
        if nsample is not None and items:
            items = (items * math.ceil(nsample / len(items)))[:nsample]
        super().__init__(items, max_long_side, num_classes)
        self.crop = crop
        self.scale = scale

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, seed = key
        s = self.samples[index]
        rng = np.random.default_rng(seed)
        image = self._image(s)
        label = self._label(s, image.size)
        mask = Image.fromarray(label if label is not None else np.full((1, 1), IGNORE, np.uint8))
        img, mask = T.weak(image, mask, self.crop, rng, T.PAD_LABELED, self.scale)
        return T.normalize(img), T.to_mask(mask), index


class UnlabeledSet(_Base):
    """Items: ``(img_w, img_s1, img_s2, ignore, box1, box2, zero_shot, index)``.

    img_*: (3, S, S) float32 normalised; ignore: (S, S) int64, 255 on padding else 0; box1/2: (S, S)
    float32 {0, 1}; zero_shot: (S, S) int64 zero-shot label after the same geometric augmentation,
    255 where there is none (no folder, missing file, ignore pixels, padding).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        crop: int,
        zero_shot: str | Path | None = None,
        max_long_side: int = 16384,
        scale: tuple[float, float] = UNIMATCH_SCALE,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(samples, max_long_side, num_classes)
        self.crop = crop
        self.scale = scale
        self.zero_shot = labels_dir(zero_shot) if zero_shot is not None else None

    def _zero_shot(self, s: Sample, size: tuple[int, int]) -> np.ndarray:
        if self.zero_shot is not None:
            p = label_file(self.zero_shot, s.id)
            if p.is_file():
                return checked_label(read_label(p), p, s.image_path, size, self.num_classes)  # type: ignore[return-value]
        return np.full((size[1], size[0]), IGNORE, np.uint8)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, ...]:
        index, seed = key
        s = self.samples[index]
        rng = np.random.default_rng(seed)
        img = self._image(s)
        zs = Image.fromarray(self._zero_shot(s, img.size))
        img, zs = T.weak(img, zs, self.crop, rng, T.PAD_UNLABELED, self.scale)
        s1 = T.strong(img, rng)
        box1 = T.cutmix_box(self.crop, rng)
        s2 = T.strong(img, rng)
        box2 = T.cutmix_box(self.crop, rng)
        zs_t = T.to_mask(zs)
        ignore = torch.where(zs_t == T.PAD_UNLABELED, IGNORE, 0)
        zs_t = torch.where(zs_t == T.PAD_UNLABELED, IGNORE, zs_t)
        return T.normalize(img), T.normalize(s1), T.normalize(s2), ignore, box1, box2, zs_t, index


class ValSet(_Base):
    """Items: ``(img (3, H, W) float32 normalised, mask (H, W) int64, index)`` at full resolution."""

    def __getitem__(self, key: int | Key) -> tuple[torch.Tensor, torch.Tensor, int]:
        index = key[0] if isinstance(key, tuple) else key
        s = self.samples[index]
        img = self._image(s)
        label = self._label(s, img.size)
        mask = label if label is not None else np.full((img.size[1], img.size[0]), IGNORE, np.uint8)
        return T.normalize(img), T.to_mask(mask), index


def item_seed(*parts: int) -> int:
    """A 63-bit seed from non-negative integers (numpy SeedSequence hashing)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


class EpochSampler(Sampler[Key]):
    """One rank's share of one epoch, like DistributedSampler(shuffle, drop_last batches), resumable.

    The order is ``randperm(n)`` from a generator seeded by (seed, order_stream, epoch), padded to a
    multiple of ``world`` and strided by rank; only whole batches are kept, and the first
    ``skip_batches`` are dropped (resume). Each index comes with its augmentation seed.
    """

    def __init__(
        self,
        n: int,
        batch: int,
        seed: int,
        epoch: int,
        stream: int,
        order_stream: int | None = None,
        world: int = 1,
        rank: int = 0,
        skip_batches: int = 0,
    ) -> None:
        self.n, self.batch, self.seed, self.epoch = n, batch, seed, epoch
        self.stream = stream
        self.order_stream = stream if order_stream is None else order_stream
        self.world, self.rank, self.skip = world, rank, skip_batches

    @staticmethod
    def batches_per_epoch(n: int, batch: int, world: int) -> int:
        """Whole batches each rank gets per epoch."""
        return math.ceil(n / world) // batch if n else 0

    def _indices(self) -> list[int]:
        g = torch.Generator().manual_seed(item_seed(self.seed, self.order_stream, self.epoch))
        perm = torch.randperm(self.n, generator=g).tolist()
        total = math.ceil(self.n / self.world) * self.world
        perm += perm[: total - len(perm)]
        return perm[self.rank :: self.world]

    def __iter__(self) -> Iterator[Key]:
        mine = self._indices()
        nb = self.batches_per_epoch(self.n, self.batch, self.world)
        for j in range(self.skip * self.batch, nb * self.batch):
            yield mine[j], item_seed(self.seed, self.stream, self.epoch, self.rank, j)

    def __len__(self) -> int:
        return max(self.batches_per_epoch(self.n, self.batch, self.world) - self.skip, 0) * self.batch


def make_loader(dataset: Dataset, sampler: EpochSampler, workers: int, pin: bool) -> DataLoader:
    """A DataLoader over ``sampler`` (whole batches); its own generator keeps the global RNG untouched."""
    return DataLoader(
        dataset,
        batch_size=sampler.batch,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(0),
    )
