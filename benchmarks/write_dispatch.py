"""Turn one GPU's benchmark tables into the data the "vitfast" backend dispatches on.

    python benchmarks/write_dispatch.py benchmarks/results/kernels_h100.md benchmarks/results/attention_h100.md

Reads bench_kernels.py's and bench_attention.py's markdown tables (the GPU's name is in their headers;
both must come from one GPU) and writes vitfast/kernels/dispatch_data/<gpu>.json: per fused op (and
lp_matmul, FP16_16 / FP16_32's product) and measured shape, our kernel's median time (for the matrix
products, that of the fastest configuration measured, named, with every configuration's time beside
it), the best library path's, and which one the backend runs. Ours is chosen only where it measured at least MARGIN faster: a smaller difference is
within the spread of repeated timings, and the library path is the one users already trust. It also
writes the source fingerprints of the kernel families each table measured (their headers' "kernels:"
line: the backend takes ours only while they are this build's). Prints what changed against the file
it replaces.
"""
import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from vitfast.kernels.dispatch import DATA_DIR, MARGIN, OP_FAMILIES, gpu_slug  # noqa: E402
from vitfast.kernels.gate import parse_fingerprints  # noqa: E402
from vitfast.kernels.tune import entry, fastest  # noqa: E402  (the rows vitfast.check --gpu writes too)
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


def table_fingerprints(text, ops):
    """{family: fingerprint} of the kernel families of `ops` that a table measured: its header's
    "kernels:" line (common.environment writes it), {} where it has none."""
    value = header_value(text, "kernels")
    if not value:
        return {}
    prints = parse_fingerprints(value.split(" (")[0])  # a table annotated afterwards says how, in parentheses
    return {f: prints[f] for op in ops for f in OP_FAMILIES[op] if f in prints}


# "vit_base layer_norm + residual fwd", "vit_base linear_residual fwd+bwd (fc2) [coop_128x192]": the rows
# write_dispatch reads (not the "vs bare cuBLAS GEMM" rows, whose peer is another op)
# "vit_base layer_norm fwd+bwd fp32": float32 input (the residual stream under autocast), else bf16
ROW = re.compile(r"(?P<model>\w+) (?P<op>layer_norm|linear_gelu|linear_residual)(?P<residual> \+ residual)? "
                 r"(?P<mode>fwd\+bwd|fwd)(?P<fp32> fp32)?(?: \((?:fc1|fc2|proj)\))?(?: \[(?P<config>\w+)\])?")
LIBRARY = {"linear_gelu": "F.gelu(F.linear)", "linear_residual": "F.linear + r"}
# "vit_base lp_matmul fp16 acc (fc1)": FP16_16 / FP16_32's product against cuBLAS's of the same kind
LP_ROW = re.compile(r"(?P<model>\w+) lp_matmul (?P<acc>fp16|fp32) acc \((?:fc1|fc2|proj)\)")
LP_LIBRARY = {"fp16": "cuBLAS fp16 accumulation", "fp32": "torch.mm(out_dtype=float32)"}


# "vit_base fp8_linear (fc1) [coop_128x128]": the FP8 chain's product in one configuration
FP8_ROW = re.compile(r"(?P<model>\w+) fp8_linear \((?P<what>qkv|fc1|fc2|proj)\) \[(?P<config>\w+)\]")
FP8_EPILOGUE = {"qkv": "none", "fc1": "gelu_e4m3", "fc2": "residual", "proj": "residual"}
FP8_LIBRARY = {"qkv": "F.linear (bf16)", "fc1": "F.gelu(F.linear) (bf16)", "fc2": "F.linear + r (bf16)",
               "proj": "F.linear + r (bf16)"}


def measured(text, pattern):
    """(match, shape cell, ours ms, peer ms) for each bench_kernels.py row whose name `pattern` matches in
    full, for a model of WIDTHS, with both times measured."""
    for cells in table_rows(text):
        m = pattern.fullmatch(cells[0]) if len(cells) >= 4 else None
        if not m or m["model"] not in WIDTHS:
            continue
        try:
            yield m, cells[1], float(cells[2]), float(cells[3])
        except ValueError:
            continue


def product_shape(cell):
    """(K, N) of a product's "MxK->N" shape cell."""
    K, N = (int(v) for v in cell.split("x", 1)[1].split("->"))
    return K, N


def fp8_entries(text):
    """bench_kernels.py's fp8_linear rows -> [entry] keyed by (K, N, epilogue): the fastest configuration.
    The chain has no library path for its e4m3 products ("use" is always ours); the bf16 peer's time is
    kept beside it, for the record."""
    cases = {}
    for m, shape, ours, peer in measured(text, FP8_ROW):
        times, _ = cases.setdefault((*product_shape(shape), m["what"]), ({}, peer))
        times[m["config"]] = ours
    out = []
    for (K, N, what), (times, peer) in cases.items():
        best, extra = fastest(times)
        row = entry(dict(K=K, N=N, epilogue=FP8_EPILOGUE[what]), times[best], peer, FP8_LIBRARY[what], "float8_e4m3fn",
                    **extra)
        out.append({**row, "use": "vitfast"})
    return out


def kernel_entries(text):
    """bench_kernels.py rows -> {op: [entry]} for layer_norm, linear_gelu, linear_residual and lp_matmul;
    a matrix product measured in several configurations gets the fastest one's entry."""
    ops = {"layer_norm": [], "linear_gelu": [], "linear_residual": [], "lp_matmul": []}
    products = {}  # (op, K, N, grad) -> {config: ours ms}, library ms
    for m, shape, ours, peer in measured(text, ROW):
        if m["op"] == "layer_norm":
            residual, grad = m["residual"] is not None, m["mode"] == "fwd+bwd"
            ops["layer_norm"].append(entry(dict(D=WIDTHS[m["model"]], residual=residual, grad=grad), ours, peer,
                                           "F.layer_norm" + (" after x + r" if residual else ""),
                                           "float32" if m["fp32"] else "bfloat16"))
        else:
            times, _ = products.setdefault((m["op"], *product_shape(shape), m["mode"] == "fwd+bwd"), ({}, peer))
            times[m["config"] or "auto"] = ours
    for lp, shape, ours, peer in measured(text, LP_ROW):
        K, N = product_shape(shape)
        ops["lp_matmul"].append(entry(dict(K=K, N=N, accumulate=lp["acc"]), ours, peer, LP_LIBRARY[lp["acc"]],
                                      "float16"))
    for (op, K, N, grad), (times, peer) in products.items():
        best, extra = fastest(times)
        ops[op].append(entry(dict(K=K, N=N, grad=grad), times[best], peer, LIBRARY[op], **extra))
    return ops


def attention_entries(text):
    """bench_attention.py rows -> [entry] keyed by (H, N, d, bias, grad), against the best SDPA backend."""
    cases = {}
    for cells in table_rows(text):
        if len(cells) < 9 or cells[1] == "B":
            continue
        _, _, H, N, d, bias, mode, impl, ms = cells[:9]
        try:
            ms = float(ms)
        except ValueError:
            continue  # "n/a: ..." (a backend that does not take this input)
        key = (int(H), int(N), int(d), bias == "yes", mode == "fwd+bwd")
        cases.setdefault(key, {})[impl] = ms
    dtype = (header_value(text, "dtype") or "torch.bfloat16").replace("torch.", "")
    out = []
    for (H, N, d, bias, grad), times in sorted(cases.items()):
        sdpa = {k: v for k, v in times.items() if k.startswith("sdpa")}
        if "vitfast" not in times or not sdpa:
            continue
        best = min(sdpa, key=sdpa.get)
        out.append(entry(dict(H=H, N=N, d=d, bias=bias, grad=grad), times["vitfast"], sdpa[best], best, dtype))
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
    ops = {**kernel_entries(kernels), "attention": attention_entries(attention)}
    fp8 = fp8_entries(kernels)
    if fp8:  # the FP8 chain's configurations (Hopper tables only)
        ops["fp8_linear"] = fp8
    fingerprints = {**table_fingerprints(kernels, [op for op in ops if op != "attention"]),
                    **table_fingerprints(attention, ["attention"])}
    data = {"gpu": gpu,
            "source": {"tables": [os.path.relpath(p, ROOT) for p in texts],
                       **{k: header_value(kernels, k) for k in ("date", "commit", "torch", "CUDA", "driver")},
                       "fingerprints": fingerprints},
            "rule": f"ours where its median time x {MARGIN} <= the best library path's",
            "ops": ops}
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, gpu_slug(gpu) + ".json")
    old = None
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    for op, rows in data["ops"].items():
        print(f"{op}: ours on {sum(r['use'] == 'vitfast' for r in rows)} of {len(rows)} measured shapes")
    for line in changes(old, data):
        print(line)
    print(f"wrote {os.path.relpath(path, ROOT)}")


RESULT_KEYS = ("dtype", "ours_ms", "library_ms", "library", "use", "config", "configs")


def choice_text(row):
    return row["use"] if row["use"] == "library" else f"vitfast {row.get('config', 'auto')}"


def changes(old, new):
    """One line per measured shape whose choice differs from the replaced file's (or that is new)."""
    if old is None:
        return ["(no earlier file for this GPU)"]
    lines = []
    for op, rows in new["ops"].items():
        before = {tuple((k, v) for k, v in r.items() if k not in RESULT_KEYS): r for r in old["ops"].get(op, [])}
        for r in rows:
            shape = tuple((k, v) for k, v in r.items() if k not in RESULT_KEYS)
            was = before.get(shape)
            text = ", ".join(f"{k}={v}" for k, v in shape)
            if was is None:
                lines.append(f"new: {op} {text}: {choice_text(r)}")
            elif choice_text(was) != choice_text(r):
                lines.append(f"changed: {op} {text}: {choice_text(was)} ({was['ours_ms']} vs {was['library_ms']} ms) "
                             f"-> {choice_text(r)} ({r['ours_ms']} vs {r['library_ms']} ms)")
    return lines or ["no choice changed"]


if __name__ == "__main__":
    main()
