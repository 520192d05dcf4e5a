"""Where the "vitfast" backend runs our fused kernels and where the library path (SDPA, cuBLAS + ATen,
F.layer_norm) that timm runs: decided per GPU from measurements of that GPU, or of another GPU of its
key (vitfast.kernels.records.gpu_key) where it has none of its own.

<gpu>.json in the user's cache (dispatch/, written by `python -m vitfast.check --gpu` through
vitfast.kernels.tune) or in dispatch_data/ (the package's, from our GPU sittings) lists, per op and
measured shape, which path was faster and, for the matrix products, which of the Hopper kernel's
configurations (tile, cluster, schedule) was the fastest there, and the fingerprints of the kernels
measured. A shape takes the choice of the nearest measured shape of its kind (same flags: bias,
residual, gradient; sizes within a factor NEAR); a GPU with no data, a shape far from every measured
one, or an op whose kernels changed since they were measured or are not verified on that kind of GPU
(vitfast.kernels.gate) takes the library path, the safe default. On the CPU our ops are the reference
implementations and always run. The ops called directly (vitfast.ops.*) run our kernels wherever the
gate allows: this only steers the model backend."""
import json
import math
import os
import re
import warnings

import torch

from ..files import cache_dir
from . import gate, records

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dispatch_data")
MARGIN = 1.05  # ours must be at least 5% faster: smaller differences are within the timings' spread
NEAR = 2.0  # a measured size stands for sizes within this factor of it

_data = {}  # (gpu name, key) -> tables(): the measured tables that may speak for it
_names = {}  # device index -> (gpu name, gpu key)
_choices = {}  # (op, gpu, key, shape) -> choice()'s answer: a model asks the same few questions every step
_generation = None  # the gate's install() that _choices' answers came from

# The kernel families an op's measured "ours" may have run (vitfast/kernels/fingerprints.py): its rows
# count only where each of them that the data's GPU has (the data's fingerprints name them) is unchanged
# since the measurement and verified there.
OP_FAMILIES = {
    "layer_norm": ("layer_norm",),
    "linear_gelu": ("gemm_sm90", "gemm_mma"),
    "linear_residual": ("gemm_sm90", "gemm_mma"),
    "lp_matmul": ("gemm_sm90", "gemm_mma"),
    "attention": ("attention_sm90", "attention_mma"),
    "fp8_linear": ("fp8_gemm_sm90",),
}


def gpu_slug(name):
    """'NVIDIA H100 80GB HBM3' -> 'nvidia_h100_80gb_hbm3' (the data file's name)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def user_dir():
    """The user's cache of dispatch data, where `python -m vitfast.check --gpu` writes this machine's."""
    return os.path.join(cache_dir(), "dispatch")


def data_dirs():
    """Where a GPU's data is looked for, first found first: the user's cache (`python -m vitfast.check
    --gpu` measured this machine), then the package's (measured by us)."""
    return user_dir(), DATA_DIR


def _read(path):
    """The table in path, or None where it cannot be read (named in one warning: load() caches its answer)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        warnings.warn(f"vitfast: ignoring the dispatch data in {path} ({str(e).splitlines()[0]}); "
                      "`python -m vitfast.check --gpu` measures it again", stacklevel=3)
        return None


def tables(gpu, key=None):
    """The measured tables that may speak for the GPU named `gpu`, most trusted first: its own, the user's
    before the package's; then, with `key`, those of other GPUs of that key (the shipped H100 rows serve
    an H200: one die, one SM count, as cuBLASLt's heuristics key them), the user's first. A file that
    cannot be read is named in one warning and passed over."""
    if (gpu, key) not in _data:
        own = gpu_slug(gpu) + ".json"
        found = [data for folder in data_dirs() if os.path.isfile(os.path.join(folder, own))
                 for data in [_read(os.path.join(folder, own))] if data is not None]
        for folder in data_dirs() if key is not None else ():
            for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                data = _read(os.path.join(folder, name)) if name.endswith(".json") and name != own else None
                if data and data.get("key") == key:
                    found.append(data)
        _data[(gpu, key)] = found
    return _data[(gpu, key)]


def load(gpu, key=None):
    """The most trusted of tables(gpu, key), or None where there is none."""
    found = tables(gpu, key)
    return found[0] if found else None


def forget_data():
    """Drops load()'s cached tables (vitfast.check --gpu has just measured this GPU anew)."""
    _data.clear()
    _choices.clear()


def nearest(rows, shape):
    """The measured row closest to `shape` (flags and dtype must match; sizes within NEAR), or None."""
    best, best_dist = None, math.log(NEAR) + 1e-9
    exact = {k: v for k, v in shape.items() if isinstance(v, (bool, str))}
    sizes = {k: v for k, v in shape.items() if k not in exact}
    for row in rows:
        if any(row.get(k) != v for k, v in exact.items()):
            continue
        dist = max((abs(math.log(v / row[k])) for k, v in sizes.items()), default=0.0)
        if dist <= best_dist:
            best, best_dist = row, dist
    return best


def fresh(op, data):
    """Whether data timed op's kernels as this build compiled them: each family of OP_FAMILIES[op] that it
    measured has this build's fingerprint."""
    timed = data.get("source", {}).get("fingerprints", {})
    families = [f for f in OP_FAMILIES[op] if f in timed]
    built = gate.built_fingerprints()
    return bool(families) and all(timed[f] == built.get(f) for f in families)


def current(op, key, data):
    """Whether data's measurements of op still describe the kernels that would run on GPUs of key `key`:
    fresh(), and the gate lets them run there (warning once per kind of GPU where it does not)."""
    if not fresh(op, data):
        return False
    timed = data["source"]["fingerprints"]
    hopper = any(f.endswith("_sm90") for f in timed)
    return all(gate.allowed(f, key, hopper) for f in OP_FAMILIES[op] if f in timed)


def _measured_in(data, op, shape):
    row = nearest(data["ops"].get(op, []), shape)
    return row.get("config", "auto") if row is not None and row["use"] == "vitfast" else None


def measured(op, gpu, key=None, **shape):
    """What the data measured for `op` at `shape` on the GPU named `gpu` (of key `key`), in the most trusted
    of tables() that timed op: None where the library path was faster (or nothing near was measured),
    else our kernel's fastest configuration ("auto" where the data names none)."""
    data = next((d for d in tables(gpu, key) if op in d["ops"]), None)
    return _measured_in(data, op, shape) if data else None


def choice(op, gpu, key, **shape):
    """None when the vitfast backend runs the library path for `op` at `shape` on the GPU named `gpu`
    (of key `key`); else the kernel configuration measured fastest there, in the most trusted of
    tables() that timed this build's kernels (rows of an older build measured here give way to current
    ones of the package), where the gate lets them run on that kind of GPU."""
    global _generation
    if _generation != gate.generation:  # the gate's answers changed since these were cached
        _choices.clear()
        _generation = gate.generation
    asked = (op, gpu, key, tuple(sorted(shape.items())))
    if asked not in _choices:
        data = next((d for d in tables(gpu, key) if fresh(op, d)), None)
        config = _measured_in(data, op, shape) if data else None
        _choices[asked] = config if config is not None and current(op, key, data) else None
    return _choices[asked]


def choose(op, gpu, key, **shape):
    """True when the vitfast backend runs our kernel for `op` at `shape` on the GPU named `gpu`."""
    return choice(op, gpu, key, **shape) is not None


def kernel_config(op, t, dtype=None, **shape):
    """choice() for the device of tensor t and the dtype the op computes in (default t's; the tables were
    measured in bfloat16: another dtype finds no row and takes the library path); "auto" on the CPU."""
    if t.device.type != "cuda":
        return "auto"
    index = t.device.index if t.device.index is not None else torch.cuda.current_device()
    if index not in _names:
        _names[index] = torch.cuda.get_device_name(index), records.device_key(index)
    return choice(op, *_names[index], dtype=str(dtype or t.dtype).replace("torch.", ""), **shape)


def use_kernel(op, t, dtype=None, **shape):
    """Whether our kernel runs `op` on t (kernel_config is not None); True on the CPU."""
    return kernel_config(op, t, dtype, **shape) is not None
