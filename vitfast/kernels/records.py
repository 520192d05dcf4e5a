"""Records of kernel families passing their self-tests on a kind of GPU, keyed by the GPU's architecture
(gpu_key: compute capability and SM count, "sm_90x132" for an H100 SXM and an H200 alike) and by the
fingerprint of what was compiled (vitfast.kernels.fingerprints). The GPU's name, driver and torch are
kept as information; they decide nothing.

Two folders hold them, one file per key (<key>.json):
- the package's own (vitfast/kernels/records/), from our GPU sittings: `python -m vitfast.check --gpu
  --record-into vitfast/kernels/records` there, then committed;
- the user's cache (records/ under $VITFAST_CACHE_DIR, else $XDG_CACHE_HOME/vitfast, else
  ~/.cache/vitfast), written by `python -m vitfast.check --gpu` on the user's own GPU.

    {"key": "sm_90x132",
     "records": [{"family": "gemm_sm90", "fingerprint": "942e087a3fbe07dd", "gpu": "NVIDIA H200",
                  "driver": "580.159.04", "torch": "2.11.0+cu130", "vitfast": "0.1.0",
                  "date": "2026-11-28", "tests": "31 cases passed in 12.3 s"}, ...]}

Files are written whole to a temporary name and renamed into place (a reader never sees half a file),
under a lock file so two processes recording at once both keep their records. A file that cannot be read
is named in one warning and ignored."""
import contextlib
import json
import os
import re
import tempfile
import warnings

from ..files import cache_dir

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "records")
KEY = re.compile(r"sm_\d+x\d+")
USER_KEEPS = 8  # records kept per family in the user's cache (a few builds side by side, in several venvs)

_warned = set()  # paths already named in a warning


def user_dir():
    """Where `python -m vitfast.check --gpu` records what passed on this machine."""
    return os.path.join(cache_dir(), "records")


def gpu_key(major, minor, sms):
    """"sm_<major><minor>x<SMs>" (the C++ gate's key for a kind of GPU)."""
    import torch
    return torch.ops.vitfast.gpu_key(major, minor, sms)


def device_key(index=None):
    """The key of CUDA device `index` (default: the current one)."""
    import torch
    prop = torch.cuda.get_device_properties(torch.cuda.current_device() if index is None else index)
    return gpu_key(prop.major, prop.minor, prop.multi_processor_count)


def _problem(data, path):
    """Why data (a parsed records file) is not one, or None."""
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        return 'expected {"key": ..., "records": [...]}'
    if data.get("key") != os.path.basename(path)[:-len(".json")]:
        return f"its key {data.get('key')!r} is not its file's name"
    for record in data["records"]:
        if not (isinstance(record, dict) and isinstance(record.get("family"), str)
                and isinstance(record.get("fingerprint"), str)):
            return f"a record without a family and a fingerprint: {record!r}"[:200]
    return None


def read_file(path):
    """The records of one file, or [] (with one warning naming it) where it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        problem = _problem(data, path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
    if problem is None:
        return data["records"]
    if path not in _warned:
        _warned.add(path)
        warnings.warn(f"vitfast: ignoring the kernel records in {path} ({problem}); "
                      "`python -m vitfast.check --gpu` writes them again", stacklevel=2)
    return []


def read(folder):
    """{key: [record]} of every <key>.json in folder (none where the folder does not exist)."""
    if not os.path.isdir(folder):
        return {}
    names = sorted(n for n in os.listdir(folder) if n.endswith(".json") and KEY.fullmatch(n[:-len(".json")]))
    return {name[:-len(".json")]: read_file(os.path.join(folder, name)) for name in names}


def merged(*folders):
    """{key: [record]} of every folder, together."""
    out = {}
    for folder in folders:
        for key, recs in read(folder).items():
            out.setdefault(key, []).extend(recs)
    return out


def verified_families(recs, built):
    """{key: [family]}: the families of each key with a record at the fingerprint this build has."""
    return {key: sorted({r["family"] for r in rs if built.get(r["family"]) == r["fingerprint"]})
            for key, rs in recs.items()}


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on path + ".lock" where the platform has flock (one writer at a time)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: renames stay atomic, concurrent writers may lose one
        yield
        return
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write(folder, key, new, keep=USER_KEEPS):
    """Adds the records `new` to folder/<key>.json: a record of the same family and fingerprint is
    replaced, and each family keeps its `keep` newest (keep=1: only the build just checked, as the
    package ships). Atomic; returns the file's path."""
    if not KEY.fullmatch(key):
        raise ValueError(f"records.write: expected a GPU key like 'sm_90x132', got {key!r}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, key + ".json")
    with _locked(path):
        old = read_file(path) if os.path.exists(path) else []
        fresh = {(r["family"], r["fingerprint"]) for r in new}
        kept = [r for r in old if (r["family"], r["fingerprint"]) not in fresh] + list(new)
        by_family = {}
        for record in reversed(kept):  # newest first
            by_family.setdefault(record["family"], []).append(record)
        recs = sorted((r for rs in by_family.values() for r in rs[:keep]),
                      key=lambda r: (r["family"], r.get("date", "")))
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"key": key, "records": recs}, f, indent=1)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    _warned.discard(path)
    return path
