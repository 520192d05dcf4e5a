"""Fixtures for every test folder."""
import os
import tempfile

import pytest

# The suite neither reads nor writes the user's vitfast cache (kernel records, dispatch rows): set before
# any test module imports vitfast, whose gate reads the cache at import.
os.environ["VITFAST_CACHE_DIR"] = tempfile.mkdtemp(prefix="vitfast-tests-cache-")


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true",
                     help="also run the long variants (marked long) of tests whose short variants run by default")


def pytest_collection_modifyitems(config, items):
    """A test marked long is a longer variant of what the default suite checks in a shorter one (an
    exhaustive sweep beside its sampled twin, a case whose path another case runs): it runs with --long,
    so that the README's test command fits CI's time."""
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="a long variant (its short one runs): --long runs it")
    for item in items:
        if item.get_closest_marker("long"):
            item.add_marker(skip)


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
