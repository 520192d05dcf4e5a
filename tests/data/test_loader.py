"""Samplers and create_loader: per-rank indices, repeated augmentation, seeded epochs, workers."""
import pytest
import torch

pytest.importorskip("torchvision")
from torchvision.transforms import v2  # noqa: E402

from vitfast.data import (ArrayDataset, RepeatAugSampler, ShardSampler, ShuffleSampler,  # noqa: E402
                          create_loader)


def dataset(n=10, transform=None):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return ArrayDataset(images, list(range(n)), [f"c{i}" for i in range(n)], transform)


def ranks(cls, n, world, **kw):
    """What each of world ranks draws from a sampler over n items."""
    return [list(cls(dataset(n), num_replicas=world, rank=r, **kw)) for r in range(world)]


@pytest.mark.parametrize("n,world", [(10, 3), (12, 4), (7, 1), (5, 8)])
def test_shuffle_sampler_splits_one_permutation(n, world):
    parts = ranks(ShuffleSampler, n, world, seed=4)
    per = -(-n // world)
    assert all(len(p) == per for p in parts)
    dealt = [parts[i % world][i // world] for i in range(per * world)]  # undo the round-robin
    assert sorted(dealt[:n]) == list(range(n))  # the first n are one permutation; the rest pad from its start
    assert dealt[n:] == (dealt[:n] * world)[: per * world - n]


def test_shuffle_sampler_seed_and_epoch():
    s = ShuffleSampler(dataset(50), seed=1)
    first = list(s)
    assert list(s) == first  # same epoch: same order
    s.set_epoch(1)
    second = list(s)
    assert second != first and sorted(second) == list(range(50))
    s.set_epoch(0)
    assert list(s) == first  # an epoch's order depends only on (seed, epoch): resumable
    assert list(ShuffleSampler(dataset(50), seed=2)) != first


@pytest.mark.parametrize("world,repeats", [(3, 3), (2, 3), (4, 2), (1, 3)])
def test_repeat_aug_sampler_gives_each_rank_the_right_indices(world, repeats):
    n = 10
    g = ShuffleSampler(dataset(n), seed=5)._order()  # the shuffle every rank shares
    expected = [i for i in g for _ in range(repeats)]
    total = -(-n * repeats // world) * world
    expected += expected[: total - len(expected)]
    parts = ranks(RepeatAugSampler, n, world, seed=5, num_repeats=repeats)
    per = -(-n // world)
    for r, p in enumerate(parts):
        assert p == expected[r:total:world][:per]  # DeiT's RASampler: round-robin, then an ordinary epoch's length
    if world == repeats:  # the copies of an image land on different ranks, at the same step
        assert all(p == parts[0] for p in parts)
    if world == 1:
        assert parts[0][:3] == [g[0]] * 3 and parts[0][3:6] == [g[1]] * 3


def test_repeat_aug_sampler_epochs():
    s = RepeatAugSampler(dataset(30), num_replicas=2, rank=1, seed=0, num_repeats=3)
    a = list(s)
    s.set_epoch(1)
    assert list(s) != a and len(list(s)) == len(s) == 15


def test_shard_sampler_for_evaluation():
    parts = ranks(ShardSampler, 10, 3)
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]  # no padding: exact metrics when summed


def test_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        ShuffleSampler(dataset(), num_replicas=2, rank=2)


def test_create_loader_train_and_eval():
    ds = dataset(10)
    train = create_loader(ds, 4, train=True, seed=0)
    assert isinstance(train.sampler, ShuffleSampler) and train.drop_last and len(train) == 2
    train.set_epoch(0)
    b0 = [y.tolist() for _, y in train]
    train.set_epoch(1)
    b1 = [y.tolist() for _, y in train]
    assert b0 != b1 and len(b0) == 2
    train.set_epoch(0)
    assert [y.tolist() for _, y in train] == b0
    x, y = next(iter(create_loader(ds, 4, train=False)))
    assert y.tolist() == [0, 1, 2, 3] and x.shape == (4, 3, 4, 4) and x.dtype == torch.uint8
    assert len(create_loader(ds, 4, train=False)) == 3  # keeps the last partial batch
    assert isinstance(create_loader(ds, 4, train=True, repeated_aug=3).sampler, RepeatAugSampler)


def test_create_loader_distributed_needs_a_world():
    with pytest.raises(ValueError, match="torch.distributed"):
        create_loader(dataset(), 2, train=True, distributed=True)
    loader = create_loader(dataset(10), 2, train=False, distributed=True, num_replicas=3, rank=1)
    assert [y.tolist() for _, y in loader] == [[1, 4], [7]]
    loader = create_loader(dataset(12), 2, train=True, distributed=True, num_replicas=2, rank=0, repeated_aug=2)
    assert isinstance(loader.sampler, RepeatAugSampler) and len(loader.sampler) == 6


def test_create_loader_errors():
    with pytest.raises(ValueError, match="fewer than one batch"):
        create_loader(dataset(3), 4, train=True)
    with pytest.raises(ValueError, match="batch_size"):
        create_loader(dataset(3), 0, train=False)


def test_workers_are_seeded_from_seed_and_epoch():
    # random per-sample transforms in 2 workers: same (seed, epoch) -> same batches; new epoch -> new ones
    ds = dataset(16, transform=v2.Compose([v2.ToDtype(torch.float32), v2.Lambda(lambda x: x + torch.rand(()))]))

    def run(seed, epoch):
        loader = create_loader(ds, 4, train=True, num_workers=2, seed=seed, persistent_workers=False)
        loader.set_epoch(epoch)
        return torch.cat([x[:, 0, 0, 0] for x, _ in loader])

    a = run(0, 0)
    assert torch.equal(a, run(0, 0))
    assert not torch.equal(a, run(0, 1)) and not torch.equal(a, run(1, 0))


def test_create_loader_reads_world_from_torch_distributed(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader = create_loader(dataset(10), 5, train=True, distributed=True, repeated_aug=3)
        assert (loader.num_replicas, loader.rank) == (1, 0) and isinstance(loader.sampler, RepeatAugSampler)
        assert len(loader) == 2
    finally:
        dist.destroy_process_group()
