"""DataLoader construction: seeded, epoch-aware samplers (plain, distributed, DeiT's repeated augmentation)."""
import math

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

__all__ = ["Loader", "RepeatAugSampler", "ShardSampler", "ShuffleSampler", "create_loader"]


def _mix_seed(*values):
    """A 63-bit seed from integers (seed, rank, epoch): different inputs give unrelated streams."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint32).astype(np.uint64)
               @ np.array([1 << 32, 1], np.uint64)) & ((1 << 63) - 1)


class ShuffleSampler(Sampler):
    """Each rank's share of a permutation drawn from (seed, epoch): the same on every rank, so the ranks
    split one shuffle of the dataset. Pads by repeating the first indices so every rank gets
    ceil(len / num_replicas) samples (torch's DistributedSampler, drop_last=False). num_replicas=1 is a
    plain seeded shuffle."""

    def __init__(self, dataset, num_replicas=1, rank=0, seed=0):
        _check_rank(num_replicas, rank)
        self.n, self.num_replicas, self.rank, self.seed, self.epoch = len(dataset), num_replicas, rank, seed, 0
        self.num_samples = math.ceil(self.n / num_replicas)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def _order(self):
        g = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        order = self._order()
        total = self.num_samples * self.num_replicas
        order += (order * math.ceil(total / max(len(order), 1)))[: total - len(order)]
        return iter(order[self.rank:total:self.num_replicas])

    def __len__(self):
        return self.num_samples


class RepeatAugSampler(ShuffleSampler):
    """DeiT's RASampler: each index of one shuffle is repeated num_repeats times in a row and the result is
    dealt round-robin to the ranks, so the copies of an image go to different ranks (and get different
    random augmentations). Every rank then keeps ceil(len / num_replicas) samples, so an epoch has the
    length of a plain one (DeiT rounds that down to a multiple of 256 first; we don't, so small datasets
    work). Single process (num_replicas=1): each image appears num_repeats times in a row."""

    def __init__(self, dataset, num_replicas=1, rank=0, seed=0, num_repeats=3):
        super().__init__(dataset, num_replicas, rank, seed)
        if num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
        self.num_repeats = int(num_repeats)

    def __iter__(self):
        order = [i for i in self._order() for _ in range(self.num_repeats)]
        per_rank = math.ceil(len(order) / self.num_replicas)
        total = per_rank * self.num_replicas
        order += (order * math.ceil(total / len(order)))[: total - len(order)]
        return iter(order[self.rank:total:self.num_replicas][: self.num_samples])


class ShardSampler(Sampler):
    """Evaluation: indices rank, rank + num_replicas, ... in order, without padding, so summing correct
    counts and sample counts over ranks gives the exact metric (ranks may differ by one sample)."""

    def __init__(self, dataset, num_replicas=1, rank=0):
        _check_rank(num_replicas, rank)
        self.indices = range(rank, len(dataset), num_replicas)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def _check_rank(num_replicas, rank):
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas} and {rank}")


class Loader(DataLoader):
    """A DataLoader with set_epoch(epoch): reseeds the sampler's shuffle and the workers' base seed from
    (seed, rank, epoch), so an epoch's order and (with non-persistent workers, or num_workers=0 and a
    seeded main process) its augmentations are the same in a resumed run."""

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if self.generator is not None:
            self.generator.manual_seed(_mix_seed(self.seed, self.rank, epoch, 1))


def _seed_worker(worker_id):
    # torch seeds each worker (base seed + id) and Python's random; numpy's global state too
    np.random.seed(torch.initial_seed() % 2**32)


def create_loader(dataset, batch_size, train, num_workers=0, distributed=False, repeated_aug=0, seed=0, drop_last=None,
                  pin_memory=False, persistent_workers=None, collate_fn=None, num_replicas=None, rank=None,
                  prefetch_factor=None):
    """A Loader (DataLoader + set_epoch) over dataset.

    train: a seeded shuffle (ShuffleSampler) or, with repeated_aug=K > 0, DeiT's RepeatAugSampler with K
    copies; drop_last defaults to True. eval: in order, no padding (ShardSampler); drop_last False.
    distributed: each rank reads its share; num_replicas / rank default to torch.distributed's world
    size / rank (which must then be initialised), and both samplers also work with one process.
    persistent_workers defaults to num_workers > 0 (then set_epoch cannot reseed the workers: the
    augmentation stream runs on from epoch to epoch instead of restarting from (seed, epoch))."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if distributed:
        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError("create_loader(distributed=True) needs torch.distributed initialised, or "
                                 "num_replicas= and rank= given")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
    else:
        num_replicas, rank = 1, 0
    if len(dataset) == 0:
        raise ValueError("create_loader: the dataset is empty")
    if train and repeated_aug:
        sampler = RepeatAugSampler(dataset, num_replicas, rank, seed, num_repeats=repeated_aug)
    elif train:
        sampler = ShuffleSampler(dataset, num_replicas, rank, seed)
    else:
        sampler = ShardSampler(dataset, num_replicas, rank)
    drop_last = train if drop_last is None else drop_last
    if train and drop_last and len(sampler) < batch_size:
        raise ValueError(f"create_loader: {len(sampler)} samples per rank is fewer than one batch of {batch_size} "
                         "with drop_last=True: lower the batch size or pass drop_last=False")
    persistent_workers = num_workers > 0 if persistent_workers is None else persistent_workers and num_workers > 0
    extra = {} if num_workers == 0 or prefetch_factor is None else {"prefetch_factor": prefetch_factor}
    generator = torch.Generator().manual_seed(_mix_seed(seed, rank, 0, 1))
    loader = Loader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate_fn,
                    pin_memory=pin_memory, drop_last=drop_last, persistent_workers=persistent_workers,
                    worker_init_fn=_seed_worker if num_workers > 0 else None, generator=generator, **extra)
    loader.seed, loader.rank, loader.num_replicas, loader.epoch = seed, rank, num_replicas, 0
    return loader
