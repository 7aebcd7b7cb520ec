"""Data order and augmentation, reproducible by construction.

Everything random in a run is a function of (seed, epoch, sample index) or (seed, step): the data order
(`ShardSampler`), each sample's augmentation (`EpochSeeded`), Mixup/CutMix and dropout (the training loop seeds
them with `mix_seeds`). A resumed run therefore repeats exactly what the interrupted run would have done, and
needs no RNG state from it.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["mix_seeds", "EpochSeeded", "ShardSampler"]


def mix_seeds(*xs: int) -> int:
    """A deterministic 63-bit seed from integers."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (int(x) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class EpochSeeded(Dataset):
    """Each sample's random augmentation is seeded by (seed, epoch, index)."""

    def __init__(self, ds: Dataset, seed: int):
        self.ds, self.seed, self.epoch = ds, seed, 0

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if hasattr(self.ds, "epoch"):  # datasets that seed their own augmentation (event streams)
            self.ds.epoch = self.epoch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seeds(self.seed, self.epoch, i))
            return self.ds[i]


class ShardSampler(Sampler):
    """Per-process slice of a seeded permutation of the data, resumable mid-epoch.

    Rank r takes items r, r+W, r+2W, ... so the global batch of step k is the same set of images
    whatever the number of processes. `repeats` > 1 is DeiT's repeated augmentation: every image
    appears `repeats` times (on different processes) and the epoch keeps its original length.
    """

    def __init__(self, n: int, world: int, rank: int, seed: int, shuffle: bool, batch: int, repeats: int = 1,
                 drop_last: bool = True):
        self.n, self.world, self.rank, self.seed = n, world, rank, seed
        self.shuffle, self.batch, self.repeats, self.drop_last = shuffle, batch, repeats, drop_last
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0):
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seeds(self.seed, self.epoch))
            idx = torch.randperm(self.n, generator=g)
        else:
            idx = torch.arange(self.n)
        if self.repeats > 1:
            idx = idx.repeat_interleave(self.repeats)[: self.n]
        if self.drop_last:
            usable = (len(idx) // (self.world * self.batch)) * self.world * self.batch
            idx = idx[:usable]
        mine = idx[self.rank :: self.world].tolist()
        return mine[self.start_batch * self.batch :]

    def __iter__(self):
        return iter(self._indices())

    def __len__(self):
        return len(self._indices())

    def batches_per_epoch(self) -> int:
        n = self.n if not self.drop_last else (self.n // (self.world * self.batch)) * self.world * self.batch
        return n // self.world // self.batch
