"""From command-line choices to datasets: the default data root, class ranges and the cache switch."""

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

REPO = Path(__file__).resolve().parents[1]
CUB_DEFAULT = REPO / "data" / "CUB_200_2011"
GENERATED_DEFAULT = REPO / ".cache" / "generated"


class SizedDataset(Protocol):
    """What the loaders need of a dataset: a length and (image, label) items."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...


def parse_classes(text: str | None) -> list[int] | None:
    """'1-20' or '1,5,9-12' -> class ids; None or '' -> all classes."""
    if not text:
        return None
    ids: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"--classes: cannot read {part!r} (use e.g. 1-20 or 1,5,9-12)")
        start, end = int(match[1]), int(match[2] or match[1])
        if end < start:
            raise ValueError(f"--classes: empty range {part!r}")
        ids.extend(range(start, end + 1))
    return ids


# The built-in set: 20 classes x 100 images at 128 px, 70 train / 30 test per class (1,400 / 600): enough
# training images for a from-scratch MobileNet to learn the attributes rather than the backgrounds.
BUILTIN_SET: dict[str, Any] = dict(num_classes=20, images_per_class=100, image_size=128, seed=0, train_fraction=0.7)


def builtin_root() -> Path:
    """The built-in generated bird set's CUB root under `.cache/generated`, (re)generated when missing or stale."""
    from data.synthetic import GENERATOR_VERSION, generate

    root = GENERATED_DEFAULT / "CUB_200_2011"
    recipe_file = root / "generator.json"
    wanted = dict(version=GENERATOR_VERSION, **BUILTIN_SET)
    if (
        not (root / "images.txt").is_file()
        or not recipe_file.is_file()
        or json.loads(recipe_file.read_text()) != wanted
    ):
        if root.exists():
            shutil.rmtree(root)
        generate(GENERATED_DEFAULT, **BUILTIN_SET)
    return root


def default_data_root(log: Callable[[str], None] = print) -> Path:
    """`data/CUB_200_2011` when it is there, else the generated set (made on first use), with a notice."""
    if (CUB_DEFAULT / "images.txt").is_file():
        return CUB_DEFAULT
    root = builtin_root()
    log(
        f"notice: no CUB-200-2011 at {CUB_DEFAULT}; using the built-in generated bird set at {root} "
        "(get CUB with `python -m data.download`)"
    )
    return root


def find_data_root(given: str | None, log: Callable[[str], None] = print) -> tuple[Path, bool]:
    """`(root, is the built-in set)` for `--data-root` (None: the default root). ValueError naming the flag."""
    if given is None:
        root = default_data_root(log)
        return root, root != CUB_DEFAULT
    root = Path(given)
    if not (root / "images.txt").is_file():
        raise ValueError(f"--data-root {given}: no images.txt there (the folder holding CUB's files)")
    return root, root.resolve() == (GENERATED_DEFAULT / "CUB_200_2011").resolve()


class SeededSampler(torch.utils.data.Sampler):
    """Yields (index, seed) pairs: each sample's augmentation is seeded by (seed, epoch, index).

    So the random crops and flips of an epoch are the same whatever the number of worker processes and
    whether they persist across epochs, and a resumed run replays exactly the epochs it missed. Shuffles
    with `base` (a DistributedSampler) or, when None, with its own generator seeded by (seed, epoch).
    """

    def __init__(
        self, length: int, seed: int, base: torch.utils.data.DistributedSampler | None = None, shuffle: bool = True
    ) -> None:
        self.length, self.seed, self.base, self.shuffle = length, seed, base, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if isinstance(self.base, torch.utils.data.DistributedSampler):
            self.base.set_epoch(epoch)

    def _indices(self) -> list[int]:
        if self.base is not None:
            return list(self.base)
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.length, generator=generator).tolist()

    def __iter__(self):
        for index in self._indices():
            yield index, (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index

    def __len__(self) -> int:
        return len(self.base) if self.base is not None else self.length


class SeededDataset(torch.utils.data.Dataset):
    """Reads `dataset[index]` with torch's generator seeded as the SeededSampler says."""

    def __init__(self, dataset: SizedDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        # A forked stream: read in the main process (no workers), the sample's seed must not become the seed of
        # the training step's own randomness (dropout, mixup), or --workers would change the weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % 2**63)
            return self.dataset[index]
