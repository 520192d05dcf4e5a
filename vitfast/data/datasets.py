"""Datasets: create_dataset(spec) for the built-in generated set, CIFAR-10/100, ImageNet-style folders and
myrtle-vision's path lists. Every dataset yields (image, class index) and has .classes, .num_classes,
.targets, .skipped and .skipped_paths; .transform may be set after creation."""
import io
import json
import os
import pickle
import tarfile
import warnings

import numpy as np
import torch
from PIL import Image

from ..cli import first_line
from .arrays import ArrayDataset
from .builtin import BuiltinDataset

__all__ = ["ArrayDataset", "ImageFileDataset", "IMG_EXTENSIONS", "UnreadableImagesError", "UnreadableImageWarning",
           "create_dataset"]

class UnreadableImagesError(RuntimeError):
    """The dataset's files cannot be read: one image under strict=True, or too many in a row."""


class UnreadableImageWarning(UserWarning):
    """An image was skipped (strict=False)."""


IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
SPLITS = ("train", "val", "test")
_MAX_BAD_IN_A_ROW = 50  # fresh failures in one __getitem__ before we call the dataset broken
_MAX_WARNINGS = 20


class ImageFileDataset(torch.utils.data.Dataset):
    """Images read from files with PIL (converted to RGB) on access.

    An unreadable or corrupt image is skipped: it is recorded (.skipped, .skipped_paths, a warning) and,
    for training (fill=True), the next readable sample is returned in its place, so one bad file never
    stops a run; for evaluation (fill=False) a blank image labelled -1, which evaluation leaves out of its
    counts (a duplicate would be scored twice). The record lives in shared memory, so failures in
    DataLoader worker processes are counted too. strict=True raises instead. verify() reads every image
    once, to find the bad ones up front."""

    def __init__(self, samples, classes, transform=None, strict=False, root=None, split=None):
        self.samples = list(samples)  # [(path, class index)]
        self.targets = [label for _, label in self.samples]
        self.classes, self.num_classes = list(classes), len(classes)
        self.transform, self.strict, self.root, self.split = transform, strict, root, split
        self.fill = True
        self._bad = torch.zeros(len(self.samples), dtype=torch.uint8).share_memory_()

    @property
    def skipped(self):
        return int(self._bad.sum())

    @property
    def skipped_paths(self):
        return [self.samples[i][0] for i in self._bad.nonzero().flatten().tolist()]

    def __len__(self):
        return len(self.samples)

    def load(self, index):
        with Image.open(self.samples[index][0]) as img:
            return img.convert("RGB")  # decodes fully: a truncated file fails here, not in the transform

    def _fail(self, index, err):
        path = self.samples[index][0]
        if self.strict:
            raise UnreadableImagesError(f"unreadable image {path} ({type(err).__name__}: {first_line(err)}); strict "
                                        "mode stops at the first (without it, such images are skipped and counted)"
                                        ) from err
        self._bad[index] = 1
        count = self.skipped
        if count <= _MAX_WARNINGS:
            more = " (further ones are not reported one by one)" if count == _MAX_WARNINGS else ""
            warnings.warn(f"skipped unreadable image {path} ({type(err).__name__}: {first_line(err)}); {count} "
                          f"so far in {self.root}{more}", UnreadableImageWarning, stacklevel=3)

    def __getitem__(self, index):
        n, fresh = len(self.samples), 0
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        if not self.fill:  # evaluation: an unreadable image is left out of its counts (label -1)
            index %= n
            if not self._bad[index]:
                try:
                    img = self.load(index)
                    return (img if self.transform is None else self.transform(img)), self.targets[index]
                except Exception as err:
                    self._fail(index, err)
            return self._blank(), -1
        for step in range(n):
            i = (index + step) % n
            if self._bad[i]:
                continue
            try:
                img = self.load(i)
            except Exception as err:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
                self._fail(i, err)
                fresh += 1
                if fresh >= _MAX_BAD_IN_A_ROW:
                    break
                continue
            return (img if self.transform is None else self.transform(img)), self.targets[i]
        raise UnreadableImagesError(f"{self.skipped} of {n} images in {self.root} are unreadable, {fresh} of them in "
                                    f"a row here (e.g. {self.skipped_paths[:3]}): is this the right dataset root?")

    def _blank(self):
        img = Image.new("RGB", (32, 32))
        return img if self.transform is None else self.transform(img)

    def verify(self):
        """Read every image once (marking the bad ones as skipped); returns the number skipped."""
        for i in range(len(self.samples)):
            if not self._bad[i]:
                try:
                    self.load(i)
                except Exception as err:
                    self._fail(i, err)
        return self.skipped

    def __repr__(self):
        return (f"{type(self).__name__}(root={self.root!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes}, skipped={self.skipped})")


# ---------------------------------------------------------------------------------------------- folder
def _folder_layout(root):
    return (f"expected the ImageNet folder layout: {root}/train/<class>/<image> and {root}/val/<class>/<image> "
            f"(images {'/'.join(e[1:] for e in IMG_EXTENSIONS)}; class index = rank of the class folder name in "
            "sorted order)")


def _class_dirs(path):
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _images_under(path):
    out = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames)
                if f.lower().endswith(IMG_EXTENSIONS) and not f.startswith(".")]
    return out


def _split_dir(root, split):
    names = {"train": ["train"], "val": ["val", "validation"], "test": ["test"]}[split]
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    found = sorted(e.name for e in os.scandir(root) if e.is_dir())
    raise FileNotFoundError(f"folder dataset {root}: no {split} split ({' or '.join(f'{root}/{n}' for n in names)} "
                            f"is missing; found folders: {found or 'none'}); {_folder_layout(root)}")


def folder_dataset(root, split="train", transform=None, strict=False):
    """ImageNet layout root/<split>/<class>/<image>; val also found as 'validation'. Classes come from
    root/train when it exists (so val and train agree on indices), else from the split folder itself."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"folder dataset: {root} is not a directory; {_folder_layout(root)}")
    split_dir = _split_dir(root, split)
    train_dir = os.path.join(root, "train")
    classes = _class_dirs(train_dir if os.path.isdir(train_dir) else split_dir)
    if not classes:
        raise ValueError(f"folder dataset {root}: {train_dir if os.path.isdir(train_dir) else split_dir} has no class "
                         f"folders; {_folder_layout(root)}")
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in _class_dirs(split_dir) if c not in index]
    if unknown:
        raise ValueError(f"folder dataset {root}: {split_dir} has class folders that {train_dir} lacks: {unknown[:5]}; "
                         "the splits must use the same class names")
    samples = [(p, index[c]) for c in _class_dirs(split_dir) for p in _images_under(os.path.join(split_dir, c))]
    if not samples:
        raise ValueError(f"folder dataset {root}: no images in {split_dir}/<class>/; {_folder_layout(root)}")
    return ImageFileDataset(samples, classes, transform, strict, root, split)


# ----------------------------------------------------------------------------------------------- paths
def _paths_layout(root):
    return (f"expected myrtle-vision's layout: {root}/label_map.json ({{\"<class>\": id}} with ids 0..K-1) and "
            f"{root}/<split>_imagepaths.txt (split train, val or test; one image path per line relative to {root}, "
            "e.g. images/<class>/<file>.jpg; label = label_map[<class>], the image's folder name)")


def paths_dataset(root, split="train", transform=None, strict=False):
    """myrtle-vision's Resisc45 layout (its prepare script writes the lists without .txt: both are read)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"paths dataset: {root} is not a directory; {_paths_layout(root)}")
    map_path = os.path.join(root, "label_map.json")
    try:
        with open(map_path, encoding="utf-8") as f:
            label_map = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"paths dataset: {map_path} is missing; {_paths_layout(root)}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"paths dataset: {map_path} is not valid JSON ({e}); {_paths_layout(root)}") from None
    ids = sorted(label_map.values()) if isinstance(label_map, dict) else None
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids) or ids != list(range(len(ids))):
        raise ValueError(f"paths dataset: {map_path} must map class names to the ids 0..K-1 once each; "
                         f"{_paths_layout(root)}")
    classes = sorted(label_map, key=label_map.get)
    list_path = os.path.join(root, f"{split}_imagepaths.txt")
    if not os.path.isfile(list_path) and os.path.isfile(list_path[:-4]):
        list_path = list_path[:-4]
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"paths dataset: {list_path} is missing (no {split} split); {_paths_layout(root)}")
    samples = []
    with open(list_path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            rel = line.strip()
            if not rel:
                continue
            name = os.path.basename(os.path.dirname(rel))
            if name not in label_map:
                raise ValueError(f"paths dataset: {list_path} line {number}: {rel!r} is in folder {name!r}, which "
                                 f"{map_path} does not name; {_paths_layout(root)}")
            samples.append((os.path.join(root, rel), label_map[name]))
    if not samples:
        raise ValueError(f"paths dataset: {list_path} lists no images; {_paths_layout(root)}")
    if not any(os.path.isfile(p) for p, _ in samples[:8]):  # a wrong root, caught before the first batch
        raise FileNotFoundError(f"paths dataset: none of the first images listed in {list_path} exists (e.g. "
                                f"{samples[0][0]}); {_paths_layout(root)}")
    return ImageFileDataset(samples, classes, transform, strict, root, split)


# ----------------------------------------------------------------------------------------------- CIFAR
_CIFAR = {  # folder, archive, {split: batch files}, meta file, label key, class-names key
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", {"train": ["train"], "test": ["test"]},
                 "meta", "fine_labels", "fine_label_names"),
}


class _CifarUnpickler(pickle.Unpickler):
    """The batches are pickles: allow only what a dict of numpy arrays and lists needs, never code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")
        return super().find_class(module, name)


def _cifar_layout(kind, root):
    folder, archive, files, meta = _CIFAR[kind][:4]
    names = ", ".join(files["train"] + files["test"] + [meta])
    return (f"expected {root}/{folder}/ with the python-version batches ({names}), or {root}/{archive}, or {root} "
            f"itself holding the batches; download=True (--download on the command line) fetches {archive} into {root}")


def _read_cifar_batch(kind, root, raw, where):
    try:
        obj = _CifarUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:
        raise ValueError(f"{kind} dataset: {where} is not a CIFAR python batch ({type(e).__name__}: {e}); "
                         f"{_cifar_layout(kind, root)}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{kind} dataset: {where} is not a CIFAR python batch (a pickled dict); "
                         f"{_cifar_layout(kind, root)}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_files(kind, root, names):
    """{name: bytes} from the batch folder or the .tar.gz under root; None when neither is there."""
    folder, archive = _CIFAR[kind][:2]
    for d in (os.path.join(root, folder), root):
        if os.path.isfile(os.path.join(d, _CIFAR[kind][3])):
            out = {}
            for name in names:
                path = os.path.join(d, name)
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"{kind} dataset: {path} is missing; {_cifar_layout(kind, root)}")
                with open(path, "rb") as f:
                    out[path] = f.read()
            return out
    tar_path = root if os.path.isfile(root) and root.endswith((".tar.gz", ".tgz")) else os.path.join(root, archive)
    if not os.path.isfile(tar_path):
        return None
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}
            out = {}
            for name in names:
                member = members.get(f"{folder}/{name}")
                if member is None:
                    raise FileNotFoundError(f"{kind} dataset: {tar_path} has no {folder}/{name}; "
                                            f"{_cifar_layout(kind, root)}")
                out[f"{tar_path}:{member.name}"] = tar.extractfile(member).read()
            return out
    except (tarfile.TarError, OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{kind} dataset: {tar_path} is not a readable .tar.gz ({e}); "
                         f"{_cifar_layout(kind, root)}") from None


def cifar_dataset(kind, root, split="train", transform=None, download=False):
    folder, archive, files, meta, label_key, names_key = _CIFAR[kind]
    names = files["train" if split == "train" else "test"] + [meta]  # val and test: the test batch
    found = _cifar_files(kind, root, names) if os.path.exists(root) else None
    if found is None and download:
        import torchvision

        made = not os.path.exists(root)
        os.makedirs(root, exist_ok=True)
        try:
            (torchvision.datasets.CIFAR10 if kind == "cifar10" else torchvision.datasets.CIFAR100)(root, download=True)
        except (OSError, RuntimeError) as e:  # urllib's URLError is an OSError; a bad checksum a RuntimeError
            if made and not os.listdir(root):
                os.rmdir(root)
            raise OSError(f"{kind} dataset: downloading {archive} into {root} failed "
                          f"({type(e).__name__}: {str(e).strip() or 'no reason given'}); copy the archive there "
                          "yourself") from e
        found = _cifar_files(kind, root, names)
    if found is None:
        raise FileNotFoundError(f"{kind} dataset: nothing at {root}; {_cifar_layout(kind, root)} "
                                "(vitfast downloads nothing unless asked)")
    *batch_items, (meta_where, meta_raw) = found.items()
    meta_dict = _read_cifar_batch(kind, root, meta_raw, meta_where)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta_dict.get(names_key, [])]
    if not classes:
        raise ValueError(f"{kind} dataset: {meta_where} has no {names_key!r}; {_cifar_layout(kind, root)}")
    images, targets = [], []
    for where, raw in batch_items:
        batch = _read_cifar_batch(kind, root, raw, where)
        data, labels = batch.get("data"), batch.get(label_key)
        data = np.asarray(data) if data is not None else None
        if (data is None or labels is None or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072
                or len(labels) != len(data) or not all(0 <= int(v) < len(classes) for v in labels)):
            raise ValueError(f"{kind} dataset: {where} is malformed: expected 'data' uint8 (N, 3072) and {label_key!r} "
                             f"N ints in [0, {len(classes)}); {_cifar_layout(kind, root)}")
        images.append(data.reshape(-1, 3, 32, 32))
        targets += [int(v) for v in labels]
    images = torch.from_numpy(np.concatenate(images))
    return ArrayDataset(images, targets, classes, transform, root, split)


# --------------------------------------------------------------------------------------------- factory
_SPECS = ("builtin", "cifar10:DIR", "cifar100:DIR", "folder:DIR (ImageNet layout DIR/train/<class>/*, DIR/val/...)",
          "paths:DIR (myrtle-vision: DIR/label_map.json, DIR/<split>_imagepaths.txt)")


def create_dataset(spec, split="train", transform=None, download=False, strict=False, root_for_builtin=None,
                   evaluation=False):
    """A dataset from a spec string: "builtin" | "cifar10:DIR" | "cifar100:DIR" | "folder:DIR" | "paths:DIR".

    split: "train", "val" or "test" (CIFAR: val and test are both the test batch; builtin: test = val).
    A missing or malformed dataset raises FileNotFoundError / ValueError at once, naming the path and the
    expected layout. download=True lets torchvision fetch CIFAR into DIR when it is absent (nothing else is
    ever downloaded). strict=True raises on the first unreadable image instead of skipping it.
    root_for_builtin: a folder where the generated builtin arrays are cached as .npz (default: builtin/ in
    the user's vitfast cache, vitfast.files.cache_dir).
    evaluation: images read for scoring, where an unreadable one is left out rather than replaced
    (ImageFileDataset.fill = False)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"dataset spec must be one of: {'; '.join(_SPECS)}; got {spec!r}")
    kind, sep, root = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "builtin":
        if root:
            raise ValueError(f"dataset spec 'builtin' takes no path, got {spec!r}")
        return BuiltinDataset(split, transform, cache_dir=root_for_builtin)
    if kind not in ("cifar10", "cifar100", "folder", "paths") or not sep or not root:
        known = kind in ("cifar10", "cifar100", "folder", "paths")
        hint = f" ('{kind}' needs a directory: '{kind}:DIR')" if known else ""
        raise ValueError(f"dataset spec must be one of: {'; '.join(_SPECS)}; got {spec!r}{hint}")
    root = os.path.expanduser(root)
    if kind in _CIFAR:
        return cifar_dataset(kind, root, split, transform, download)
    dataset = (folder_dataset if kind == "folder" else paths_dataset)(root, split, transform, strict)
    dataset.fill = not evaluation
    return dataset
