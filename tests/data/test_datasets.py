"""create_dataset: every layout, class indexing, splits, error messages, unreadable images."""
import json
import os
import re
import tarfile

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")
from vitfast.data import BUILTIN_CLASSES, create_dataset, create_transform, generate_builtin  # noqa: E402

from .conftest import CLASSES, cifar_batches, write_cifar, write_image  # noqa: E402


def red(img):
    """The red value of a loaded PIL image (conftest encodes each image's identity there)."""
    return img.getpixel((0, 0))[0]


# ---------------------------------------------------------------------------------------------- folder
def test_folder_train_and_val(folder_root):
    train = create_dataset(f"folder:{folder_root}", "train")
    assert train.classes == CLASSES and train.num_classes == 3 and len(train) == 9  # notes.txt ignored
    for img, label in (train[i] for i in range(len(train))):
        assert img.mode == "RGB" and round(red(img) / 10) == label  # value 10*c + i (JPEG: +-3)
    assert train.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    val = create_dataset(f"folder:{folder_root}", "val", transform=create_transform(8, False))
    x, y = val[2]
    assert len(val) == 3 and val.classes == CLASSES and y == 2 and x.shape == (3, 8, 8) and x.dtype == torch.float32


def test_folder_val_uses_train_class_indices(folder_root):
    # val lacks 'dog': 'zebra' must keep index 2 (from train), not become 1
    for f in os.listdir(folder_root / "val" / "dog"):
        os.remove(folder_root / "val" / "dog" / f)
    os.rmdir(folder_root / "val" / "dog")
    val = create_dataset(f"folder:{folder_root}", "val")
    assert val.classes == CLASSES and val.targets == [0, 2] and red(val[1][0]) == 102


def test_folder_without_val_is_fine_for_train_only(folder_root, tmp_path):
    import shutil

    shutil.rmtree(folder_root / "val")
    assert len(create_dataset(f"folder:{folder_root}", "train")) == 9
    with pytest.raises(FileNotFoundError, match=re.escape(f"{folder_root}/val") + ".*ImageNet folder layout"):
        create_dataset(f"folder:{folder_root}", "val")
    (folder_root / "validation").mkdir()
    write_image(str(folder_root / "validation" / "dog" / "a.jpg"), 1)
    assert create_dataset(f"folder:{folder_root}", "val").targets == [1]  # 'validation' accepted


@pytest.mark.parametrize("case", ["missing", "file", "no_classes", "no_images", "unknown_val_class"])
def test_folder_errors_name_path_and_layout(tmp_path, folder_root, case):
    root, split, err = tmp_path / "nowhere", "train", FileNotFoundError
    if case == "file":
        root = tmp_path / "a_file"
        root.write_text("x")
    elif case == "no_classes":
        root, err = tmp_path / "flat", ValueError
        write_image(str(root / "train" / "img.jpg"), 1)  # images directly in train/, no class folders
    elif case == "no_images":
        root, err = tmp_path / "empty", ValueError
        (root / "train" / "cat").mkdir(parents=True)
        (root / "train" / "cat" / "readme.txt").write_text("x")
    elif case == "unknown_val_class":
        root, split, err = folder_root, "val", ValueError
        write_image(str(root / "val" / "unicorn" / "u.jpg"), 1)
    with pytest.raises(err, match=re.escape(str(root))) as info:
        create_dataset(f"folder:{root}", split)
    assert "unicorn" in str(info.value) if case == "unknown_val_class" else "train/<class>/<image>" in str(info.value)


# ----------------------------------------------------------------------------------------------- paths
def test_paths_layout(paths_root):
    train = create_dataset(f"paths:{paths_root}", "train")
    assert train.classes == ["beach", "forest", "airport"] and train.num_classes == 3  # ordered by id
    assert len(train) == 6
    for img, label in (train[i] for i in range(len(train))):
        assert round(red(img) / 40) == label
    assert len(create_dataset(f"paths:{paths_root}", "val")) == 3
    test = create_dataset(f"paths:{paths_root}", "test")
    assert sorted(test.targets) == [0, 1, 2] and all(abs(red(x) - 40 * y - 3) <= 3 for x, y in test)


def test_paths_lists_without_txt_extension(paths_root):
    # myrtle-vision's prepare_resisc45.py writes 'train_imagepaths' with no extension
    os.rename(paths_root / "train_imagepaths.txt", paths_root / "train_imagepaths")
    assert len(create_dataset(f"paths:{paths_root}", "train")) == 6


@pytest.mark.parametrize("case", ["no_map", "bad_json", "bad_ids", "no_list", "unknown_class", "wrong_root"])
def test_paths_errors_name_path_and_layout(paths_root, case):
    err, where = ValueError, paths_root / "label_map.json"
    if case == "no_map":
        os.remove(where)
        err = FileNotFoundError
    elif case == "bad_json":
        where.write_text("{not json")
    elif case == "bad_ids":
        where.write_text(json.dumps({"beach": 0, "forest": 2, "airport": 3}))
    elif case == "no_list":
        where, err = paths_root / "val_imagepaths.txt", FileNotFoundError
        os.remove(where)
    elif case == "unknown_class":
        where = paths_root / "val_imagepaths.txt"
        where.write_text("images/volcano/v.jpg\n")
    elif case == "wrong_root":
        where, err = paths_root / "val_imagepaths.txt", FileNotFoundError
        where.write_text("elsewhere/beach/b.jpg\n")
    with pytest.raises(err, match=re.escape(str(where))) as info:
        create_dataset(f"paths:{paths_root}", "val")
    assert "label_map.json" in str(info.value) and "_imagepaths.txt" in str(info.value)


# ----------------------------------------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar_batches_and_archive(tmp_path, kind, as_tar):
    import pickle

    files = write_cifar(tmp_path, kind, as_tar=as_tar)
    train = create_dataset(f"{kind}:{tmp_path}", "train")
    k = 10 if kind == "cifar10" else 100
    assert train.num_classes == k and train.classes[:2] == ["class0", "class1"]
    batches = [pickle.loads(files[f]) for f in sorted(files) if f.startswith(("data_batch", "train"))]
    assert len(train) == 6 * len(batches)
    first = batches[0]
    img, label = train[1]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32)
    assert torch.equal(img, torch.from_numpy(first[b"data"][1].reshape(3, 32, 32)))  # CHW planes R, G, B
    assert label == first[b"labels" if kind == "cifar10" else b"fine_labels"][1]
    for split in ("val", "test"):
        assert len(create_dataset(f"{kind}:{tmp_path}", split)) == 4
    x, _ = create_dataset(f"{kind}:{tmp_path}", "val", transform=create_transform(32, False, crop_pct=1.0))[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_cifar_batch_folder_given_directly(tmp_path):
    write_cifar(tmp_path, "cifar10")
    assert len(create_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", "train")) == 30


def test_cifar_archive_given_directly(tmp_path):
    write_cifar(tmp_path, "cifar10", as_tar=True)
    assert len(create_dataset(f"cifar10:{tmp_path / 'cifar-10-python.tar.gz'}", "test")) == 4


def test_cifar_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path)) + ".*cifar-10-batches-py.*download=True"):
        create_dataset(f"cifar10:{tmp_path}", "train")  # never downloads unless asked
    write_cifar(tmp_path, "cifar10")
    folder = tmp_path / "cifar-10-batches-py"
    os.remove(folder / "data_batch_3")
    with pytest.raises(FileNotFoundError, match=re.escape(str(folder / "data_batch_3"))):
        create_dataset(f"cifar10:{tmp_path}", "train")
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=re.escape(str(folder / "test_batch")) + ".*not a CIFAR python batch"):
        create_dataset(f"cifar10:{tmp_path}", "test")
    import pickle

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=re.escape(str(folder / "test_batch")) + r".*malformed.*\(N, 3072\)"):
        create_dataset(f"cifar10:{tmp_path}", "test")
    (folder / "test_batch").write_bytes(pickle.dumps(os.system))  # a pickle that would run code
    with pytest.raises(ValueError, match="unexpected object"):
        create_dataset(f"cifar10:{tmp_path}", "test")


def test_cifar_bad_archive(tmp_path):
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "cifar-100-python.tar.gz"))):
        create_dataset(f"cifar100:{tmp_path}", "train")
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(__file__, arcname="cifar-100-python/readme")
    with pytest.raises(FileNotFoundError, match="has no cifar-100-python/train"):
        create_dataset(f"cifar100:{tmp_path}", "train")


def test_cifar_reads_python2_numpy_pickles(tmp_path):
    # the real batches were pickled by Python 2 with numpy.core.multiarray (not numpy._core)
    files = cifar_batches("cifar10", n_train=2, n_test=2)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, raw in files.items():
        (folder / name).write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert len(create_dataset(f"cifar10:{tmp_path}", "train")) == 10


# ----------------------------------------------------------------------------------------- spec / split
@pytest.mark.parametrize("spec", ["", "imagenet:/x", "folder", "folder:", "cifar10", "builtin:/x", None])
def test_bad_specs(spec):
    with pytest.raises(ValueError, match="builtin|takes no path"):
        create_dataset(spec)


def test_bad_split():
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        create_dataset("builtin", "validation")


# ------------------------------------------------------------------------------------ unreadable images
def _corrupt(folder_root):
    bad = folder_root / "train" / "dog" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # a PNG header then junk
    truncated = folder_root / "train" / "zebra" / "0.jpg"
    truncated.write_bytes(truncated.read_bytes()[:60])
    return [str(truncated), str(bad)]


def test_corrupt_images_are_skipped_and_counted(folder_root):
    bad = _corrupt(folder_root)
    ds = create_dataset(f"folder:{folder_root}", "train")
    with pytest.warns(UserWarning, match="skipped unreadable image"):
        items = [ds[i] for i in range(len(ds))]
    assert ds.skipped == 2 and sorted(ds.skipped_paths) == sorted(bad)
    assert len(items) == 9  # the bad ones replaced by the next readable sample
    assert [label for _, label in items] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert abs(red(items[4][0]) - 12) <= 3  # dog/1.png -> dog/2.jpg
    assert ds.verify() == 2  # nothing new


def test_corrupt_images_counted_across_loader_workers(folder_root):
    from vitfast.data import create_loader

    bad = _corrupt(folder_root)
    ds = create_dataset(f"folder:{folder_root}", "train", transform=create_transform(8, False))
    for _ in create_loader(ds, 4, train=False, num_workers=2):  # the workers warn on their own stderr
        pass
    assert ds.skipped == 2 and sorted(ds.skipped_paths) == sorted(bad)  # counted in the workers, seen here


def test_strict_raises_naming_the_file(folder_root):
    bad = _corrupt(folder_root)
    ds = create_dataset(f"folder:{folder_root}", "train", strict=True)
    with pytest.raises(RuntimeError, match=re.escape(bad[1])):
        ds[4]


def test_verify_counts_up_front(folder_root):
    _corrupt(folder_root)
    ds = create_dataset(f"folder:{folder_root}", "train")
    with pytest.warns(UserWarning):
        assert ds.verify() == 2


def test_all_images_unreadable_is_an_error(paths_root):
    for rel in (paths_root / "train_imagepaths.txt").read_text().split():
        (paths_root / rel).write_bytes(b"")
    ds = create_dataset(f"paths:{paths_root}", "train")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="6 of 6 images .* unreadable"):
        ds[0]


def test_missing_listed_file_is_skipped(paths_root):
    os.remove(paths_root / "images" / "forest" / "forest_001.jpg")
    ds = create_dataset(f"paths:{paths_root}", "train")
    with pytest.warns(UserWarning, match="forest_001.jpg"):
        [ds[i] for i in range(len(ds))]
    assert ds.skipped == 1


# --------------------------------------------------------------------------------------------- builtin
def test_builtin_deterministic_balanced_and_split():
    train, val = create_dataset("builtin", "train"), create_dataset("builtin", "val")
    assert len(train) == 10_000 and len(val) == 2_000 and train.classes == BUILTIN_CLASSES
    assert train.num_classes == 10 and train.skipped == 0
    assert np.bincount(train.targets).tolist() == [1000] * 10 and np.bincount(val.targets).tolist() == [200] * 10
    img, label = train[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32) and 0 <= label < 10
    assert create_dataset("builtin", "test").images.data_ptr() == val.images.data_ptr()  # test = val, one copy
    images, labels = generate_builtin("val", seed=0, n=200)
    again, labels2 = generate_builtin("val", seed=0, n=200)
    assert np.array_equal(images, again) and np.array_equal(labels, labels2)
    other, _ = generate_builtin("val", seed=1, n=200)
    assert not np.array_equal(images, other)
    assert not np.array_equal(images[:100], train.images[:100].permute(0, 2, 3, 1).numpy())  # splits differ


def test_builtin_images_vary_within_a_class():
    images, labels = generate_builtin("train", seed=3, n=100)
    per_class = images[labels == 0].reshape(10, -1).astype(np.float64)
    assert per_class.std(0).mean() > 40  # colour, phase and period vary: no fixed template
    assert images.min() == 0 and images.max() == 255


def test_builtin_disk_cache(tmp_path):
    from vitfast.data import BuiltinDataset

    ds = BuiltinDataset("val", n=50, seed=7, cache_dir=str(tmp_path))
    (cached,) = os.listdir(tmp_path)
    assert cached.endswith(".npz")
    with np.load(tmp_path / cached) as f:
        assert np.array_equal(f["images"], ds.images.permute(0, 2, 3, 1).numpy())


def test_the_builtin_arrays_are_cached_in_the_users_cache_and_read_back_by_the_next_process(tmp_path, monkeypatch):
    """By default in builtin/ of the user's vitfast cache, under a name with the generator's digest; a file
    there is read instead of drawn; a file that is not a whole .npz is drawn again and replaced; a folder
    that cannot be written leaves the arrays in memory."""
    from vitfast.data import builtin

    monkeypatch.setenv("VITFAST_CACHE_DIR", str(tmp_path / "cache"))
    key = ("val", 11, 30, builtin.IMG_SIZE)
    monkeypatch.setattr(builtin, "_cache", {})
    drawn = builtin.BuiltinDataset("val", n=30, seed=11)
    (name,) = os.listdir(tmp_path / "cache" / "builtin")
    assert name == f"builtin_val_seed11_n30_32_{builtin._generator_digest()}.npz"
    path = tmp_path / "cache" / "builtin" / name
    # the next process: nothing in memory, and drawing again would fail the test
    monkeypatch.setattr(builtin, "_cache", {})
    monkeypatch.setattr(builtin, "generate_builtin", lambda *a: pytest.fail("drawn again despite the cache"))
    read = builtin.BuiltinDataset("val", n=30, seed=11)
    assert torch.equal(read.images, drawn.images) and read.targets == drawn.targets
    monkeypatch.undo()
    path.write_bytes(b"PK\x03\x04 cut short")
    images, labels = builtin._load_or_generate(key, str(path.parent))
    assert np.array_equal(images, drawn.images.permute(0, 2, 3, 1).numpy())
    with np.load(path) as f:  # replaced by a whole file
        assert np.array_equal(f["labels"], labels)
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    images, _ = builtin._load_or_generate(key, str(blocked / "builtin"))
    assert np.array_equal(images, drawn.images.permute(0, 2, 3, 1).numpy()) and blocked.read_text() == "not a folder"
