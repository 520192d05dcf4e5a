"""Fixtures for every test folder."""
import os
import tempfile

import pytest
import torch

# The suite neither reads nor writes the user's vitfast cache (kernel records, dispatch rows): set before
# any test module imports vitfast, whose gate reads the cache at import.
os.environ["VITFAST_CACHE_DIR"] = tempfile.mkdtemp(prefix="vitfast-tests-cache-")

# pytest-xdist's workers share the cores: torch's default of a thread per core in every worker, and in
# every command a test starts, oversubscribes them, and OpenMP's threads then spin waiting for each other
# (a tiny run with two validations: 7 s on one thread, 57 s on two, beside a training run and a compile).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true",
                     help="also run the long variants (marked long) of tests whose short variants run by default")


# The files that take longest (1.5 to 7 minutes of one core each), collected first so that the workers of
# `-n auto --dist loadfile` take them first and end together: xdist's own order (files with the most tests
# first) left the one-test test_ssl_learns.py running alone for the last four minutes.
LONGEST_FIRST = ["training/test_fsdp.py", "training/test_ssl_learns.py", "training/test_preemption.py",
                 "training/test_ssl_guarantees.py", "test_scripts.py", "training/test_cli.py", "training/test_train.py",
                 "test_readme.py", "training/test_resume_across_versions.py", "training/test_stops.py"]


def pytest_configure(config):
    missing = [name for name in LONGEST_FIRST if not (config.rootpath / "tests" / name).exists()]
    if missing:  # a renamed file would silently fall back to the end of the order
        raise pytest.UsageError(f"tests/conftest.py's LONGEST_FIRST names no such file: {', '.join(missing)}")
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: hand the files out in collection order
        config.option.loadscopereorder = False


def _longest_first(item):
    name = item.nodeid.split("::")[0].removeprefix("tests/")
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    """The longest files first (above); and a test marked long is a longer variant of what the default
    suite checks in a shorter one (an exhaustive sweep beside its sampled twin, a case whose path another
    case runs): it runs with --long, so that the README's test command fits CI's time."""
    items.sort(key=_longest_first)
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
