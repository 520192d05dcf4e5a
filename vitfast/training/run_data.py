"""A training run's data: the datasets its config names, their transforms, this rank's samplers and
loaders, seeded so that augmentation does not depend on the worker count and a resumed run sees exactly
the images the uninterrupted one did."""
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import progress
from ..cli import UsageError, blame, one_line
from ..data import RepeatAugSampler, ShardSampler, ShuffleSampler, UnreadableImagesError, create_dataset, \
    create_transform
from ..data.device import DeviceImages, decode_transform
from ..data.device_multicrop import DeviceMultiCrop
from ..data.device_randaug import DeviceRandAugment
from ..data.multicrop import MultiCrop
from ..data.holdout import hold_out
from ..models import get_model_config
from .interrupt import ignore_stop_signals

__all__ = ["SeededSamples", "EpochSampler", "make_sampler", "loader_for", "build_data"]

BANK_CACHE_BYTES = 1 << 30  # k-NN's memory bank kept in host memory up to this size (as transformed)


class _Kept:
    """Iterates a loader once, appending its batches to `kept`: a later call reads the list instead."""

    def __init__(self, loader, kept):
        self.loader, self.kept = loader, kept

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        batches = []
        for batch in self.loader:
            batches.append(batch)
            yield batch
        self.kept[:] = batches  # only a pass that ran to its end


class SeededSamples(Dataset):
    """Seeds the random transforms per (seed, epoch, index): augmentation is then the same whatever the
    worker count, and a resumed run sees exactly the images the uninterrupted one did."""

    def __init__(self, dataset, seed):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        # The CPU generator alone, which fork_rng(devices=[]) restores: torch.manual_seed would also seed
        # every GPU's (left changed) or, before CUDA starts, queue that call with its stack (~5 ms a sample).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
            return self.dataset[i]


class EpochSampler(Sampler):
    """This rank's indices for one epoch (shuffled from seed and epoch), after skipping `skip` of them."""

    def __init__(self, base, skip=0):
        self.base, self.skip = base, skip

    def __iter__(self):
        return iter(list(self.base)[self.skip:])

    def __len__(self):
        return max(0, len(self.base) - self.skip)


def _sample_bytes(dataset):
    """Bytes of one transformed image of dataset (its first: the evaluation transform's size and dtype
    are the same for all), as the bank keeps it."""
    return dataset[0][0].nbytes if len(dataset) else 0


def make_sampler(dataset, cfg, dist, train):
    """This rank's share: one seeded shuffle per epoch split over ranks (with DeiT's repeated
    augmentation when asked) for training; every sample exactly once, unpadded, for evaluation."""
    if not train:
        return ShardSampler(dataset, dist.world_size, dist.rank)
    if cfg["repeated_aug"] > 1:
        return RepeatAugSampler(dataset, dist.world_size, dist.rank, cfg["seed"], num_repeats=cfg["repeated_aug"])
    return ShuffleSampler(dataset, dist.world_size, dist.rank, cfg["seed"])


def loader_for(dataset, sampler, batch_size, cfg, epoch, train):
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=cfg["workers"], drop_last=train,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False,
                      worker_init_fn=ignore_stop_signals if cfg["workers"] else None,  # a stop is the main process's
                      # its own generator: creating the iterator must not draw from the global RNG
                      generator=torch.Generator().manual_seed(cfg["seed"] * 1000 + epoch))


def refuse_one_class(train_set, cfg, where):
    """A training split of one class teaches nothing that can be measured: a classifier, or the k-NN that
    scores a self-supervised run, is right on every image (100%) whatever it learnt."""
    if train_set.num_classes >= 2:
        return
    found = f"one class ({train_set.classes[0]})" if train_set.classes else "no class"
    scored = ("the k-NN that scores a self-supervised run needs labelled images of two or more classes, as "
              "folders" if cfg["ssl"] else "a classifier needs two or more classes")
    raise UsageError(f"{where('data')} {cfg['data']}: its training split has {found}, and every prediction would be "
                     f"right: {scored}")


def build_data(cfg, dist, where, train_transform=None):
    """The run's data as a namespace: img_size, norm (mean, std), train_set, val_set, num_classes, micro
    (images per rank and forward), train_sampler, steps_per_epoch, val_loader, device_images (the
    --data-on-device batches, or None) and epoch_batches(epoch, done_in_epoch), the training batches of
    an epoch from a position in it, and bank_loader(), the training split under the evaluation transform
    (k-NN's memory bank). where(key): the flag or file a key came from, for messages. train_transform(img_size,
    norm): a method's training transform, None for the supervised one."""
    model_defaults = get_model_config(cfg["model"])
    img_size = cfg["img_size"] or cfg["model_kwargs"].get("img_size") or model_defaults["input_size"][-1]
    norm = dict(mean=cfg["mean"] or model_defaults["mean"], std=cfg["std"] or model_defaults["std"])
    crop_pct = cfg["crop_pct"] or (1.0 if img_size < 64 else model_defaults["crop_pct"])
    train_tf = train_transform and train_transform(img_size, norm)
    train_tf = train_tf or create_transform(img_size, train=True, crop_pct=crop_pct, hflip=cfg["hflip"],
                                            auto_augment=cfg["aa"], color_jitter=cfg["color_jitter"],
                                            re_prob=cfg["reprob"], scale=tuple(cfg["scale"]), **norm)
    eval_tf = create_transform(img_size, train=False, crop_pct=crop_pct, **norm)
    with blame(where("data")):
        # on the device, the images are decoded once at img_size and augmented there
        train_set = create_dataset(cfg["data"], "train", download=cfg["download"], strict=cfg["strict_data"],
                                   transform=decode_transform(img_size) if cfg["data_on_device"] else train_tf)
        try:
            val_set = create_dataset(cfg["data"], "train" if cfg["holdout"] else "val", transform=eval_tf,
                                     download=cfg["download"], strict=cfg["strict_data"], evaluation=True)
        except FileNotFoundError as e:  # training images only (the CIFAR-10 JPEG folder, most in-house data)
            if "no val split" not in str(e):
                raise
            raise UsageError(f"{where('data')} {cfg['data']} has training images but no val/ folder: validate on "
                             "the last N of them with --holdout N (or add val/<class>/<image>)") from e
    if cfg["strict_data"]:  # at once, not when the loader reaches the bad file hours later
        for dataset in (train_set, val_set) if not cfg["holdout"] else (train_set,):
            progress.start_line(f"--strict-data: reading every image of {dataset.root} ({dataset.split})")
            try:
                dataset.verify()
            except UnreadableImagesError as e:
                raise UsageError(f"--data {cfg['data']}: {one_line(e)}") from e
    if cfg["holdout"]:
        with blame(where("holdout")):
            train_set, val_set = hold_out(train_set, val_set, cfg["holdout"])
    refuse_one_class(train_set, cfg, where)
    seeded = SeededSamples(train_set, cfg["seed"])
    accum = cfg["grad_accum_steps"]
    micro = cfg["batch_size"] // (dist.world_size * accum)
    if micro < 1 or micro * dist.world_size * accum != cfg["batch_size"]:
        raise UsageError(f"--batch-size {cfg['batch_size']} must split evenly over {dist.world_size} "
                         f"rank(s) x {accum} accumulation step(s)")
    train_sampler = make_sampler(train_set, cfg, dist, train=True)
    device_images = None
    if cfg["data_on_device"]:
        with blame(where("data_on_device")):
            if isinstance(train_tf, MultiCrop):  # a self-supervised method's crops, drawn for whole batches
                device_images = DeviceMultiCrop(train_set, dist.device, norm["mean"], norm["std"], train_tf,
                                                workers=cfg["workers"])
            else:
                randaug = DeviceRandAugment.from_spec(cfg["aa"]) if cfg["aa"] else None
                device_images = DeviceImages(train_set, dist.device, norm["mean"], norm["std"], tuple(cfg["scale"]),
                                             hflip=cfg["hflip"], re_prob=cfg["reprob"], randaug=randaug,
                                             workers=cfg["workers"])
    steps_per_epoch = len(train_sampler) // (micro * accum)
    if steps_per_epoch < 1:
        raise UsageError(f"--batch-size {cfg['batch_size']}: the training split of {cfg['data']} holds only "
                         f"{len(train_set)} images, fewer than one global batch")
    val_loader = loader_for(val_set, make_sampler(val_set, cfg, dist, train=False),
                            cfg["eval_batch_size"] or micro, cfg, 0, train=False)

    def epoch_batches(epoch, done_in_epoch):
        """The training micro-batches of `epoch` after the first `done_in_epoch` of them."""
        seeded.epoch = epoch
        train_sampler.set_epoch(epoch)
        if device_images is not None:
            return device_images.batches(train_sampler, micro, cfg["seed"], epoch, skip=done_in_epoch)
        return loader_for(seeded, EpochSampler(train_sampler, skip=done_in_epoch * micro), micro, cfg, epoch, True)

    banked = []  # the memory bank's batches, kept after the first validation when they are small

    def bank_loader():
        """The training images (this rank's share) under the evaluation transform: k-NN's memory bank. Up to
        BANK_CACHE_BYTES of them are transformed once and kept: every validation reads the same tensors."""
        if banked:
            return banked
        bank = create_dataset(cfg["data"], "train", transform=eval_tf, download=cfg["download"], evaluation=True)
        if cfg["holdout"]:
            bank = hold_out(bank, bank, cfg["holdout"])[0]
        loader = loader_for(bank, make_sampler(bank, cfg, dist, train=False), cfg["eval_batch_size"] or micro, cfg,
                            0, train=False)
        if len(bank) * _sample_bytes(bank) > BANK_CACHE_BYTES:
            return loader
        return _Kept(loader, banked)

    return SimpleNamespace(img_size=img_size, norm=norm, train_set=train_set, val_set=val_set,
                           num_classes=train_set.num_classes, micro=micro, train_sampler=train_sampler,
                           steps_per_epoch=steps_per_epoch, val_loader=val_loader, device_images=device_images,
                           epoch_batches=epoch_batches, bank_loader=bank_loader)
