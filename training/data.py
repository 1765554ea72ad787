"""A run's data loaders: seeded per-sample augmentation for training, sharded evaluation, optional cache."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from data.cub import CUB200
from data.loaders import SeededDataset, SeededSampler
from data.prepare import DEFAULT_CACHE_DIR, PackedDataset, packed_dataset
from data.transforms import train_transform
from mobilenet.card import ModelCard
from mobilenet.preprocess import CENTRE_CROP_FRACTION
from training.config import RunConfig
from training.device_pipeline import DeviceBatches


class ShardSampler(torch.utils.data.Sampler):
    """Every world-th index from rank: the shards cover the set exactly once (no padding), for evaluation."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class Loaders:
    train: torch.utils.data.DataLoader | DeviceBatches
    val: torch.utils.data.DataLoader | None  # None with --val-fraction 0
    test: torch.utils.data.DataLoader
    train_plain: torch.utils.data.DataLoader | None  # the training images under the test view (--probe-head)
    train_set: CUB200 | PackedDataset
    train_sampler: SeededSampler


def make_loaders(
    config: RunConfig,
    card: ModelCard,
    rank: int,
    world: int,
    log: Callable[[str], None] = print,
    *,
    device: torch.device | None = None,
    train_resolution: int | None = None,
) -> Loaders:
    """The training loader (this rank's shuffled shard, augmented, at `train_resolution`: default the run's,
    larger for a teacher), and the validation and test loaders (this rank's shard, the card's test view)."""
    train_resolution = train_resolution or config.resolution
    test_resolution = card.inference.resolution
    train_tf = train_transform(
        train_resolution,
        mean=card.mean,
        std=card.std,
        scale=(config.scale_min, config.scale_max),
        hflip=config.hflip,
        color_jitter=config.color_jitter,
    )
    test_tf = card.transform()

    def split(name: str, transform: Callable, resolution: int) -> CUB200 | PackedDataset:
        """The run's split `name`; with --cache, its packed copy at the size the centre view of `resolution` reads."""
        if not config.cache:
            return config.dataset(name, transform)
        size = round(resolution / CENTRE_CROP_FRACTION)
        folder = config.cache_dir or DEFAULT_CACHE_DIR
        return packed_dataset(
            config.dataset(name, None), transform, size=size, cache_dir=folder, workers=config.workers, log=log
        )

    train_set, test_set = split("train", train_tf, train_resolution), split("test", test_tf, test_resolution)
    distributed: torch.utils.data.DistributedSampler | None = (
        torch.utils.data.DistributedSampler(train_set, world, rank, shuffle=True, seed=config.seed)
        if world > 1
        else None
    )
    train_sampler = SeededSampler(len(train_set), config.seed, distributed)
    drop_last = len(train_set) // world >= 2 * config.batch_size
    if config.device_pipeline:  # batches made on the device from the packed photos (training/device_pipeline.py)
        assert isinstance(train_set, PackedDataset)  # config.check: --device-pipeline needs --cache
        batches = DeviceBatches(
            train_set,
            train_tf,
            train_sampler,
            batch_size=config.batch_size,
            drop_last=drop_last,
            device=device or torch.device("cpu"),
        )
    # Persistent workers: forking a process with a large heap and then writing to it costs a copy of every
    # touched page, so workers are forked once, not every epoch.
    train = (
        batches
        if config.device_pipeline
        else torch.utils.data.DataLoader(
            SeededDataset(train_set),
            batch_size=config.batch_size,
            sampler=train_sampler,
            num_workers=config.workers,
            drop_last=drop_last,
            persistent_workers=config.workers > 0,
            # Its own generator: each iterator draws a base seed, every epoch without workers but once with
            # persistent ones; from the global stream that would make --workers change the training step's draws.
            generator=torch.Generator().manual_seed(config.seed),
        )
    )

    def evaluation(dataset: CUB200 | PackedDataset) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=max(config.batch_size, 64),
            sampler=ShardSampler(len(dataset), rank, world),
            num_workers=config.workers,
            persistent_workers=config.workers > 0,
        )

    val = evaluation(split("val", test_tf, test_resolution)) if config.val_fraction > 0 else None
    plain = None  # every rank reads all of it, so that every rank fits the same probe
    if config.probe_head:
        plain = torch.utils.data.DataLoader(
            split("train", test_tf, test_resolution), batch_size=max(config.batch_size, 64), num_workers=config.workers
        )
    return Loaders(
        train=train,
        val=val,
        test=evaluation(test_set),
        train_plain=plain,
        train_set=train_set,
        train_sampler=train_sampler,
    )
