"""Turn one GPU's benchmark tables into the data the "vitfast" backend dispatches on.

    python benchmarks/write_dispatch.py benchmarks/results/kernels_h100.md benchmarks/results/attention_h100.md

Reads bench_kernels.py's and bench_attention.py's markdown tables (the GPU's name is in their headers;
both must come from one GPU) and writes vitfast/layers/dispatch_data/<gpu>.json: per fused op and
measured shape, our kernel's median time, the best library path's, and which one the backend runs.
Ours is chosen only where it measured at least MARGIN faster: a smaller difference is within the
spread of repeated timings, and the library path is the one users already trust.
"""
import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from vitfast.layers.dispatch import DATA_DIR, MARGIN, gpu_slug  # noqa: E402
from bench_kernels import WIDTHS  # noqa: E402  (the model names its rows start with)


def table_rows(text):
    """The cells of every markdown table row that is not a header or rule."""
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            yield [c.strip() for c in line.strip().strip("|").split("|")]


def header_value(text, key):
    m = re.search(rf"{key}: ([^|\n]+)", text)
    return m.group(1).strip() if m else None


def gpu_name(text):
    """'NVIDIA H100 80GB HBM3' from 'GPU: NVIDIA H100 80GB HBM3 (132 SMs, 79 GiB)'."""
    value = header_value(text, "GPU")
    if not value:
        raise SystemExit("write_dispatch.py: a table has no 'GPU:' line in its header")
    return value.split(" (")[0]


def entry(shape, ours_ms, library_ms, library, dtype="bfloat16"):
    use = "vitfast" if ours_ms * MARGIN <= library_ms else "library"
    return dict(shape, dtype=dtype, ours_ms=ours_ms, library_ms=library_ms, library=library, use=use)


def kernel_entries(text):
    """bench_kernels.py rows -> {op: [entry]} for layer_norm, linear_gelu and linear_residual."""
    ops = {"layer_norm": [], "linear_gelu": [], "linear_residual": []}
    for cells in table_rows(text):
        if len(cells) < 4 or cells[0].split(" ")[0] not in WIDTHS:
            continue
        model, what = cells[0].split(" ", 1)
        D = WIDTHS[model]
        try:
            ours, peer = float(cells[2]), float(cells[3])
        except ValueError:
            continue
        grad = what.endswith("fwd+bwd")
        rest = cells[1].split("x", 1)[1]  # "MxK->N"
        if what.startswith("layer_norm"):
            ops["layer_norm"].append(entry(dict(D=D, residual="residual" in what, grad=grad), ours, peer,
                                           "F.layer_norm" + (" after x + r" if "residual" in what else "")))
        elif what.startswith("linear_gelu"):
            K, N = (int(v) for v in rest.split("->"))
            ops["linear_gelu"].append(entry(dict(K=K, N=N, grad=grad), ours, peer, "F.gelu(F.linear)"))
        elif what.startswith("linear_residual"):
            K, N = (int(v) for v in rest.split("->"))
            ops["linear_residual"].append(entry(dict(K=K, N=N, grad=grad), ours, peer, "F.linear + r"))
    return ops


def attention_entries(text):
    """bench_attention.py rows -> [entry] keyed by (N, d, bias, grad), against the best SDPA backend."""
    cases = {}
    for cells in table_rows(text):
        if len(cells) < 9 or cells[1] == "B":
            continue
        _, _, _, N, d, bias, mode, impl, ms = cells[:9]
        try:
            ms = float(ms)
        except ValueError:
            continue  # "n/a: ..." (a backend that does not take this input)
        key = (int(N), int(d), bias == "yes", mode == "fwd+bwd")
        cases.setdefault(key, {})[impl] = ms
    dtype = (header_value(text, "dtype") or "torch.bfloat16").replace("torch.", "")
    out = []
    for (N, d, bias, grad), times in sorted(cases.items()):
        sdpa = {k: v for k, v in times.items() if k.startswith("sdpa")}
        if "vitfast" not in times or not sdpa:
            continue
        best = min(sdpa, key=sdpa.get)
        out.append(entry(dict(N=N, d=d, bias=bias, grad=grad), times["vitfast"], sdpa[best], best, dtype))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kernels", help="bench_kernels.py's table")
    p.add_argument("attention", help="bench_attention.py's table")
    p.add_argument("--out-dir", default=DATA_DIR)
    args = p.parse_args(argv)
    texts = {path: open(path).read() for path in (args.kernels, args.attention)}
    names = {gpu_name(t) for t in texts.values()}
    if len(names) != 1:
        raise SystemExit(f"write_dispatch.py: the tables come from different GPUs: {sorted(names)}")
    gpu = names.pop()
    kernels, attention = texts[args.kernels], texts[args.attention]
    data = {"gpu": gpu,
            "source": {"tables": [os.path.relpath(p, ROOT) for p in texts],
                       **{k: header_value(kernels, k) for k in ("date", "commit", "torch", "CUDA", "driver")}},
            "rule": f"ours where its median time x {MARGIN} <= the best library path's",
            "ops": {**kernel_entries(kernels), "attention": attention_entries(attention)}}
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, gpu_slug(gpu) + ".json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    for op, rows in data["ops"].items():
        print(f"{op}: ours on {sum(r['use'] == 'vitfast' for r in rows)} of {len(rows)} measured shapes")
    print(f"wrote {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
