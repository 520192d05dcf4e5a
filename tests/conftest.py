"""Fixtures for every test folder."""
import os
import tempfile

import pytest

# The suite neither reads nor writes the user's vitfast cache (kernel records, dispatch rows): set before
# any test module imports vitfast, whose gate reads the cache at import.
os.environ["VITFAST_CACHE_DIR"] = tempfile.mkdtemp(prefix="vitfast-tests-cache-")


@pytest.fixture(scope="session")
def small_builtin(tmp_path_factory):
    """`folder:DIR` of 160 training and 40 validation images drawn from the built-in data (16 and 4 per
    class): for runs whose every validation reads the training split too (k-NN's memory bank), where
    the built-in 10,000 would cost seconds each time."""
    from PIL import Image

    from vitfast.data import BUILTIN_CLASSES, generate_builtin

    root = tmp_path_factory.mktemp("small_builtin")
    for split, n in (("train", 160), ("val", 40)):
        images, labels = generate_builtin(split, n=n)
        for i, (pixels, label) in enumerate(zip(images, labels)):
            folder = root / split / BUILTIN_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return f"folder:{root}"
