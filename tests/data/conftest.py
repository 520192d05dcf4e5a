"""Tiny on-disk datasets in every supported layout, written in tmp_path."""
import json
import os
import pickle
import tarfile

import numpy as np
import pytest

CLASSES = ["cat", "dog", "zebra"]  # sorted: class index = position


def write_image(path, value, size=(12, 10), fmt=None):
    """A small solid-colour image whose red channel encodes value (to recognise it after loading)."""
    from PIL import Image  # Pillow comes with torchvision, which vitfast.data needs

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, (value, 7, 200)).save(path, format=fmt)
    return path


@pytest.fixture
def folder_root(tmp_path):
    """root/train/<class>/*.jpg|png (3 per class), root/val/<class>/* (1 per class), plus a stray text file."""
    root = tmp_path / "imagenet"
    for c, name in enumerate(CLASSES):
        for i in range(3):
            ext = "jpg" if i % 2 == 0 else "png"
            write_image(str(root / "train" / name / f"{i}.{ext}"), 10 * c + i)
        write_image(str(root / "val" / name / "v.png"), 100 + c)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def paths_root(tmp_path):
    """myrtle-vision's layout: images/<class>/<file>.jpg, label_map.json, <split>_imagepaths.txt."""
    root = tmp_path / "resisc"
    label_map = {"forest": 1, "airport": 2, "beach": 0}  # ids deliberately not in name order
    lines = {"train": [], "val": [], "test": []}
    for name in label_map:
        for i, split in enumerate(["train", "train", "val", "test"]):
            rel = f"images/{name}/{name}_{i:03d}.jpg"
            write_image(str(root / rel), 40 * label_map[name] + i)
            lines[split].append(rel)
    (root / "label_map.json").write_text(json.dumps(label_map))
    for split, rels in lines.items():
        (root / f"{split}_imagepaths.txt").write_text("\n".join(rels) + "\n")
    return root


def cifar_batches(kind, n_train=6, n_test=4, seed=0):
    """{file name: pickled bytes} in the real python-version format (bytes keys, uint8 (N, 3072) data)."""
    rng = np.random.default_rng(seed)
    k = 10 if kind == "cifar10" else 100
    label_key, names_key, meta = ((b"labels", b"label_names", "batches.meta") if kind == "cifar10"
                                  else (b"fine_labels", b"fine_label_names", "meta"))
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if kind == "cifar10" else ["train"]
    files = {}
    for name, n in [(f, n_train) for f in train_files] + [("test_batch" if kind == "cifar10" else "test", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        files[name] = pickle.dumps({b"batch_label": name.encode(), label_key: rng.integers(0, k, n).tolist(),
                                    b"data": data, b"filenames": [b"x.png"] * n}, protocol=2)
    files[meta] = pickle.dumps({names_key: [f"class{i}".encode() for i in range(k)]}, protocol=2)
    return files


def write_cifar(root, kind, as_tar=False, **kw):
    folder, archive = (("cifar-10-batches-py", "cifar-10-python.tar.gz") if kind == "cifar10"
                       else ("cifar-100-python", "cifar-100-python.tar.gz"))
    files = cifar_batches(kind, **kw)
    os.makedirs(root, exist_ok=True)
    if as_tar:
        src = root / "_src"
        for name, raw in files.items():
            os.makedirs(src / folder, exist_ok=True)
            (src / folder / name).write_bytes(raw)
        with tarfile.open(root / archive, "w:gz") as tar:
            tar.add(src / folder, arcname=folder)
        for name in files:
            os.remove(src / folder / name)
    else:
        for name, raw in files.items():
            os.makedirs(root / folder, exist_ok=True)
            (root / folder / name).write_bytes(raw)
    return files
