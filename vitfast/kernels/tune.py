"""This GPU's dispatch rows, measured on it: our fused ops against the library path they replace, at the
shape classes the ViT models use, so that the "vitfast" backend takes ours only where it was faster
here (vitfast.kernels.dispatch). `python -m vitfast.check --gpu` runs it after the self-tests, in a
process of its own:

    python -m vitfast.kernels.tune --out-dir DIR [--batch 256] [--quick]

- layer_norm (with and without the residual; inference, training, and training's float32 residual
  stream) against F.layer_norm;
- linear_gelu (fc1) and linear_residual (fc2, proj), inference and training, in every Hopper
  configuration built (the fastest kept), against cuBLAS + the PyTorch epilogue;
- lp_matmul (FP16_16, FP16_32) against cuBLAS's product of the same accumulation;
- fp8_linear (the FP8 chain's qkv, fc1, fc2, proj) in every configuration, on Hopper GPUs;
- attention at ViT shapes, with and without a bias, forward and forward + backward, against each SDPA
  backend.
Only kernels the gate lets run here are timed as ours (a family not verified runs its library path:
the row says "library"). Each row keeps both times and which path won (ours only where its median x
MARGIN <= the library's), and the file the build's fingerprints, so a rebuild makes the rows stale.
Each run names the choices that changed against the file it replaces. In a clone,
benchmarks/bench_kernels.py prints the same timings as a table (every configuration, the bare GEMM)."""
import argparse
import datetime
import json
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

from .dispatch import MARGIN, gpu_slug
from . import gate, records
from .timing import input_sets, measure

WIDTHS = {"vit_tiny": 192, "vit_small": 384, "vit_base": 768, "vit_large": 1024}
ATTENTION_SHAPES = [("ViT-B/16", 256, 12, 197, 64), ("ViT-B/16@384", 64, 12, 577, 64), ("ViT-B/32", 1024, 12, 50, 64),
                    ("ViT-Ti/16", 512, 3, 197, 64), ("ViT-H/14", 64, 16, 257, 80)]
QUICK_WIDTHS, QUICK_ATTENTION = {"vit_base": 768}, ATTENTION_SHAPES[:1]
CPU_WIDTHS, CPU_ATTENTION = {"smoke": 64}, [("smoke", 2, 2, 65, 64)]  # a run of the plumbing, not of speed
RULE = f"ours where its median time x {MARGIN} <= the best library path's"
LINEAR_LIBRARY = {"linear_gelu": "F.gelu(F.linear)", "linear_residual": "F.linear + r"}
LP_LIBRARY = {"fp16": "cuBLAS fp16 accumulation", "fp32": "torch.mm(out_dtype=float32)"}
FP8_EPILOGUE = {"qkv": "none", "fc1": "gelu_e4m3", "fc2": "residual", "proj": "residual"}
FP8_LIBRARY = {"qkv": "F.linear (bf16)", "fc1": "F.gelu(F.linear) (bf16)", "fc2": "F.linear + r (bf16)",
               "proj": "F.linear + r (bf16)"}


def entry(shape, ours_ms, library_ms, library, dtype="bfloat16", **extra):
    """One dispatch row: the shape's keys, both times, the library path's name, and which one runs."""
    use = "vitfast" if ours_ms * MARGIN <= library_ms else "library"
    return dict(shape, dtype=dtype, ours_ms=ours_ms, library_ms=library_ms, library=library, use=use, **extra)


def fastest(times):
    """(the fastest configuration, the row's config fields) of {config: ms}."""
    best = min(times, key=times.get)
    return best, (dict(config=best, configs=times) if len(times) > 1 or best != "auto" else {})


def product_row(shape, times, library_ms, library, dtype="bfloat16"):
    """The row of a matrix product timed in each configuration {config: ms}: the fastest one's."""
    best, extra = fastest(times)
    return entry(shape, times[best], library_ms, library, dtype, **extra)


def fp8_row(what, K, N, times, bf16_ms):
    """The FP8 chain's product (qkv, fc1, fc2 or proj): the chain has no library path for its e4m3
    products, so the row runs ours; the bf16 product's time is kept beside it, for the record."""
    row = product_row(dict(K=K, N=N, epilogue=FP8_EPILOGUE[what]), times, bf16_ms, FP8_LIBRARY[what], "float8_e4m3fn")
    return {**row, "use": "vitfast"}


class Tuner:
    """Times our ops and their library paths at the ViT models' shapes on one device. bare=True also
    times each product's bare library GEMM, F.linear(x, w) (bare_ms[(K, N)]: what an epilogue costs; the
    benchmark tables report it, the dispatch does not need it)."""

    def __init__(self, device, batch, repeats, bare=False):
        self.device, self.M, self.repeats = device, batch * 197, repeats
        self.bare_ms = {} if bare else None
        self.dtype = torch.bfloat16 if device != "cpu" else torch.float32
        self.hopper = (device != "cpu" and torch.cuda.get_device_capability() == (9, 0)
                       and torch.ops.vitfast.sm90_kernels_built())

    def ms(self, fn, sets):
        return round(measure(fn, self.device, sets, self.repeats).median, 5)

    def sets(self, *shapes, grad=False, dtypes=None):
        dtypes = dtypes or [self.dtype] * len(shapes)
        return input_sets(lambda: tuple(torch.randn(s, device=self.device, dtype=t).requires_grad_(grad)
                                        for s, t in zip(shapes, dtypes)), self.device)

    def configs(self, kind):
        return torch.ops.vitfast.sm90_configs(kind) if self.hopper else ["auto"]

    def layer_norm(self, D):
        from ..ops import layer_norm

        M, dt = self.M, self.dtype
        g, b = torch.rand(D, device=self.device) + 0.5, torch.randn(D, device=self.device)
        gl, bl = g.to(dt), b.to(dt)
        rows, xs = [], self.sets((M, D), (M, D))
        for residual in (False, True):
            ours = self.ms(lambda x, r: layer_norm(x, g, b, 1e-6, residual=r if residual else None), xs)
            peer = self.ms(lambda x, r: F.layer_norm(x + r if residual else x, (D,), gl, bl, 1e-6), xs)
            rows.append(entry(dict(D=D, residual=residual, grad=False), ours, peer,
                              "F.layer_norm" + (" after x + r" if residual else ""), str(dt)[6:]))
        dy = torch.randn(M, D, device=self.device, dtype=dt)
        gg, bb, gp, bp = (t.clone().requires_grad_() for t in (g, b, gl, bl))
        xg = self.sets((M, D), grad=True)
        ours = self.ms(lambda x: torch.autograd.grad(layer_norm(x, gg, bb, 1e-6), (x, gg, bb), dy), xg)
        peer = self.ms(lambda x: torch.autograd.grad(F.layer_norm(x, (D,), gp, bp, 1e-6), (x, gp, bp), dy), xg)
        rows.append(entry(dict(D=D, residual=False, grad=True), ours, peer, "F.layer_norm", str(dt)[6:]))
        # training under autocast: a float32 residual stream meets a 16-bit branch (norm2), and norm1
        # normalises the float32 stream itself
        xr = self.sets((M, D), (M, D), grad=True, dtypes=[dt, torch.float32])
        dyf, gf, bf = dy.float(), g.clone().requires_grad_(), b.clone().requires_grad_()
        ours = self.ms(lambda x, r: torch.autograd.grad(layer_norm(x, gg, bb, 1e-6, residual=r), (x, r, gg, bb),
                                                        (dyf, dyf)), xr)

        def peer_residual(x, r):
            s = x + r
            return torch.autograd.grad((s, F.layer_norm(s, (D,), gf, bf, 1e-6)), (x, r, gf, bf), (dyf, dyf))
        rows.append(entry(dict(D=D, residual=True, grad=True), ours, self.ms(peer_residual, xr),
                          "F.layer_norm after x + r", str(dt)[6:]))
        ours = self.ms(lambda x, r: torch.autograd.grad(layer_norm(r, gg, bb, 1e-6), (r, gg, bb), dyf), xr)
        peer = self.ms(lambda x, r: torch.autograd.grad(F.layer_norm(r, (D,), gf, bf, 1e-6), (r, gf, bf), dyf), xr)
        rows.append(entry(dict(D=D, residual=False, grad=True), ours, peer, "F.layer_norm", "float32"))
        return rows

    def products(self, D):
        """{op: [row]} of fc1, fc2 and proj at width D: linear_gelu / linear_residual, lp_matmul, fp8_linear."""
        from ..ops import linear_gelu, linear_residual, lp_matmul
        from ..quant.lowp import cublas_lowp_linear

        out = {"linear_gelu": [], "linear_residual": [], "lp_matmul": [], "fp8_linear": []}
        M, dt, dev = self.M, self.dtype, self.device
        if self.hopper:
            w, b = torch.randn(3 * D, D, device=dev, dtype=dt) / D**0.5, torch.randn(3 * D, device=dev, dtype=dt)
            xs = [(x, None) for x, in self.sets((M, D))]
            out["fp8_linear"].append(self.fp8("qkv", w, b, xs, self.ms(lambda x, r: F.linear(x, w, b), xs)))
        for K, N, what in ((D, 4 * D, "fc1"), (4 * D, D, "fc2"), (D, D, "proj")):
            op = "linear_gelu" if what == "fc1" else "linear_residual"
            w, b = torch.randn(N, K, device=dev, dtype=dt) / K**0.5, torch.randn(N, device=dev, dtype=dt)
            xs = self.sets((M, K), (M, N))
            if what == "fc1":
                peer = self.ms(lambda x, r: F.gelu(F.linear(x, w, b)), xs)
                times = {c: self.ms(lambda x, r, c=c: linear_gelu(x, w, b, config=c), xs) for c in self.configs("act")}
            else:
                peer = self.ms(lambda x, r: F.linear(x, w, b) + r, xs)
                times = {c: self.ms(lambda x, r, c=c: linear_residual(x, w, b, r, config=c), xs)
                         for c in self.configs("residual")}
            out[op].append(product_row(dict(K=K, N=N, grad=False), times, peer, LINEAR_LIBRARY[op], str(dt)[6:]))
            if self.bare_ms is not None:
                self.bare_ms[(K, N)] = self.ms(lambda x, r: F.linear(x, w), xs)
            if self.hopper:
                out["fp8_linear"].append(self.fp8(what, w, b, xs, peer))
            # training: the forward stores GELU's input; the residual stream is float32 (autocast's)
            wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
            train = [(x.clone().requires_grad_(), r.float().requires_grad_()) for x, r in xs]
            dy = torch.randn(M, N, device=dev, dtype=dt)
            if what == "fc1":
                def step(f):
                    return lambda x, r: torch.autograd.grad(f(x), (x, wg, bg), dy)
                peer = self.ms(step(lambda x: F.gelu(F.linear(x, wg, bg))), train)
                times = {c: self.ms(step(lambda x, c=c: linear_gelu(x, wg, bg, config=c)), train)
                         for c in self.configs("act_aux")}
            else:
                def step(f):
                    return lambda x, r: torch.autograd.grad(f(x, r), (x, wg, bg, r), dy.float())
                peer = self.ms(step(lambda x, r: F.linear(x, wg, bg).float() + r), train)
                times = {c: self.ms(step(lambda x, r, c=c: linear_residual(x, wg, bg, r, config=c)), train)
                         for c in self.configs("residual_f32")}
            out[op].append(product_row(dict(K=K, N=N, grad=True), times, peer, LINEAR_LIBRARY[op], str(dt)[6:]))
            del train
            wh, xh = w.half(), [(x.half(),) for x, _ in xs]
            for acc in ("fp16", "fp32") if dev != "cpu" else ():  # the library path is cuBLAS's
                into = torch.float16 if acc == "fp16" else torch.float32
                ours = self.ms(lambda x: lp_matmul(x, wh.t(), accumulate=acc, out_dtype=into), xh)
                peer = self.ms(lambda x: cublas_lowp_linear(x, wh, None, acc), xh)
                out["lp_matmul"].append(entry(dict(K=K, N=N, accumulate=acc), ours, peer, LP_LIBRARY[acc], "float16"))
        return {op: rows for op, rows in out.items() if rows}

    def fp8(self, what, w, b, xs, peer):
        """fp8_linear as the FP8 chain calls it, in each configuration built for it (fp8_row)."""
        from ..ops import fp8_linear, scaled_cast

        e4m3, one = torch.float8_e4m3fn, torch.ones(1, device=self.device)
        kind = {"fc1": "fp8_act_e4m3", "qkv": "fp8_act"}.get(what, "fp8_residual")
        w8, sb, bias = scaled_cast(w.float(), one, e4m3), torch.rand(w.shape[0], device=self.device) / 64, b.float()
        x8s = [(scaled_cast(x.float(), one, e4m3), r if kind == "fp8_residual" else None) for x, r in xs]
        kw = dict(activation="gelu", out_dtype=e4m3, out_scale=one / 8) if what == "fc1" else {}
        times = {c: self.ms(lambda x8, r, c=c: fp8_linear(x8, w8, one, sb, bias, residual=r, config=c, **kw), x8s)
                 for c in torch.ops.vitfast.sm90_configs(kind)}
        return fp8_row(what, w.shape[1], w.shape[0], times, peer)

    def attention(self, shapes):
        from ..ops import attention

        peers = {"sdpa": None}
        if self.device != "cpu":
            from torch.nn.attention import SDPBackend
            peers = {n: getattr(SDPBackend, a) for n, a in (("sdpa-flash", "FLASH_ATTENTION"),
                     ("sdpa-efficient", "EFFICIENT_ATTENTION"), ("sdpa-cudnn", "CUDNN_ATTENTION"))
                     if hasattr(SDPBackend, a)}
        rows = []
        for _, B, H, N, d in shapes:
            for bias in (False, True):
                for grad in (False, True):
                    sets = input_sets(lambda: self.qkv(B, H, N, d, bias, grad), self.device)
                    ours = self.time_attention(lambda q, k, v, m: attention(q, k, v, m), sets, grad)
                    times = {n: self.time_attention(self.sdpa(be), sets, grad) for n, be in peers.items()}
                    times = {n: t for n, t in times.items() if t is not None}
                    if ours is not None and times:
                        best = min(times, key=times.get)
                        rows.append(entry(dict(H=H, N=N, d=d, bias=bias, grad=grad), ours, times[best], best,
                                          str(self.dtype)[6:]))
                    del sets
        return rows

    def qkv(self, B, H, N, d, bias, grad):
        """q, k, v as views of one fused qkv projection (the layout the models hand over), and the bias."""
        qkv = torch.randn(B, N, 3, H, d, device=self.device, dtype=self.dtype)
        q, k, v = (t.detach().requires_grad_(grad) for t in qkv.permute(2, 0, 3, 1, 4).unbind(0))
        m = torch.randn(B, H, N, N, device=self.device, dtype=self.dtype).requires_grad_(grad) if bias else None
        return q, k, v, m

    @staticmethod
    def sdpa(backend):
        def f(q, k, v, m):
            if backend is None:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=m)
            from torch.nn.attention import sdpa_kernel
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        return f

    def time_attention(self, f, sets, grad):
        """Median ms of the forward (grad=False) or forward + backward; None where it does not run."""
        dout = torch.randn_like(sets[0][0])

        def run(q, k, v, m):
            if not grad:
                with torch.no_grad():
                    return f(q, k, v, m)
            return torch.autograd.grad(f(q, k, v, m), [t for t in (q, k, v, m) if t is not None], dout)
        try:
            run(*sets[0])
        except (RuntimeError, ValueError, NotImplementedError):  # an SDPA backend that does not take this case
            return None
        return self.ms(run, sets)


def tune(device="cuda", batch=256, repeats=10, widths=None, attention_shapes=None, log=print):
    """The dispatch data of this GPU (dispatch_data's format: gpu, key, source, rule, ops)."""
    cpu = device == "cpu"
    widths = widths or (CPU_WIDTHS if cpu else WIDTHS)
    tuner = Tuner(device, batch, repeats)
    ops = {"layer_norm": [], "linear_gelu": [], "linear_residual": [], "lp_matmul": []}
    for name, D in widths.items():
        ops["layer_norm"] += tuner.layer_norm(D)
        for op, rows in tuner.products(D).items():
            ops.setdefault(op, []).extend(rows)
        log(f"  {name} (width {D}) timed")
        if not cpu:
            torch.cuda.empty_cache()
    ops["attention"] = tuner.attention(attention_shapes or (CPU_ATTENTION if cpu else ATTENTION_SHAPES))
    log("  attention timed")
    from .. import __version__
    gpu = torch.cuda.get_device_name() if not cpu else "cpu"
    return {"gpu": gpu, "key": records.device_key() if not cpu else None,
            "source": {"tuned by": f"vitfast {__version__}, python -m vitfast.kernels.tune (batch {batch})",
                       "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "torch": torch.__version__, "CUDA": torch.version.cuda,
                       "fingerprints": gate.built_fingerprints()},
            "rule": RULE, "ops": ops}


def write(data, folder):
    """data into folder/<gpu slug>.json, whole or not at all; returns the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, gpu_slug(data["gpu"]) + ".json")
    fd, tmp = tempfile.mkstemp(prefix=".dispatch.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


RESULT_KEYS = ("dtype", "ours_ms", "library_ms", "library", "use", "config", "configs")


def choice_text(row):
    return row["use"] if row["use"] == "library" else f"vitfast {row.get('config', 'auto')}"


def changes(old, new):
    """One line per measured shape whose choice differs from the replaced data's (or that is new)."""
    if old is None:
        return ["(no earlier data for this GPU here)"]
    lines = []
    for op, rows in new["ops"].items():
        before = {tuple((k, v) for k, v in r.items() if k not in RESULT_KEYS): r for r in old.get("ops", {}).get(op, [])}
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


def read(path):
    """The dispatch data in path, or None where there is none that can be read (it is replaced)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def summary(data):
    """One line per op: where ours won, and the range of ours' speed against the library path."""
    lines = []
    for op, rows in data["ops"].items():
        if not rows:
            continue
        ratios = [r["library_ms"] / r["ours_ms"] for r in rows]
        won = sum(r["use"] == "vitfast" for r in rows)
        lines.append(f"{op:<16}ours on {won} of {len(rows)} shapes; ours {min(ratios):.2f}-{max(ratios):.2f}x "
                     "the library path's speed")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vitfast.kernels.tune", description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", required=True, help="the folder of the dispatch data (<gpu>.json is written)")
    p.add_argument("--batch", type=int, default=256, help="images of 197 tokens per product (default: 256)")
    p.add_argument("--quick", action="store_true", help="ViT-B's widths and one attention shape")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a run of the plumbing")
    p.add_argument("--records", metavar="DIR", help="also run the families recorded in DIR (vitfast.check --gpu "
                                                    "--record-into DIR wrote them)")
    args = p.parse_args(argv)
    if args.records:
        gate.install((records.SHIPPED_DIR, records.user_dir(), args.records))
    quick = args.quick and args.device != "cpu"
    data = tune(args.device, args.batch, widths=QUICK_WIDTHS if quick else None,
                attention_shapes=QUICK_ATTENTION if quick else None)
    old = read(os.path.join(args.out_dir, gpu_slug(data["gpu"]) + ".json"))
    path = write(data, args.out_dir)
    print("\n".join(summary(data)))
    print("\n".join("  " + line for line in changes(old, data)))  # indented: check --gpu prints the summary alone
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
