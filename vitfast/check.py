"""python -m vitfast.check: exercise every installed operator on every device it was built for.

`python -m vitfast.check --gpu` instead proves each CUDA kernel family on this machine's GPU and records
those that pass, so that they run by default here (vitfast.kernels.check_gpu).

Each quantizer runs on fresh adversarial data and is compared, bit for bit, with its pure-PyTorch
twin (and CUDA with CPU where a GPU is present); the fused operators (attention, layer_norm,
linear_gelu, linear_residual, lp_matmul, fp8_linear, layer_norm_fp8) are compared with their twins by relative
error, within a tolerance for their precision (lp_matmul's CPU emulation and the FP8 ops' composites bit for bit); then every named format's rounding error on
Gaussian data is printed. Exits non-zero on any mismatch."""
import time

import torch

import vitfast
from vitfast import ops
from vitfast.cli import ArgumentParser, UsageError, run
from vitfast.quant import FORMATS, quantize


def _data(n, generator):
    x = torch.randn(n, generator=generator) * torch.exp2(torch.randint(-30, 30, (n,), generator=generator).float())
    return torch.cat([x, torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 65520.0, 464.0])])


def _same(a, b):
    """Bitwise equal values (zeros' signs included); any NaN matches any NaN."""
    nan = a.isnan() & b.isnan()
    return bool((((a == b) & (torch.signbit(a) == torch.signbit(b))) | nan).all())


CASES = [
    ("float_quantize", "fp16 (5,10)", lambda x, r, s: torch.ops.vitfast.float_quantize(x, 5, 10, r, False, True, False, s),
     lambda x, r, s: ops.float_quantize_ref(x, 5, 10, r, seed=s)),
    ("float_quantize", "e4m3fn (4,3)", lambda x, r, s: torch.ops.vitfast.float_quantize(x, 4, 3, r, True, True, True, s),
     lambda x, r, s: ops.float_quantize_ref(x, 4, 3, r, True, seed=s, finite=True)),
    ("fixed_point_quantize", "(wl=8, fl=4)",
     lambda x, r, s: torch.ops.vitfast.fixed_point_quantize(x, 8, 4, True, False, r, s),
     lambda x, r, s: ops.fixed_point_quantize_ref(x, 8, 4, rounding=r, seed=s)),
    ("block_quantize", "(wl=8, blocks of 32)",
     lambda x, r, s: torch.ops.vitfast.block_quantize(x.view(-1, 32), 8, 1, 32, r, s),
     lambda x, r, s: ops.block_quantize_ref(x.view(-1, 32), 8, 1, 32, r, s)),
]


def main(argv=None):
    parser = ArgumentParser(prog="python -m vitfast.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1 << 16, metavar="N",
                        help="elements per quantizer check, >= 64 (default: 65536)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data (default: 0)")
    parser.add_argument("--gpu", action="store_true",
                        help="test each CUDA kernel family on this GPU, each in a process of its own, and record "
                             "those that pass so they run by default here (a few minutes)")
    parser.add_argument("--quick", action="store_true", help="with --gpu: a few cases per family, nothing recorded")
    parser.add_argument("--families", metavar="A,B", type=lambda s: [f for f in s.split(",") if f],
                        help="with --gpu: only these kernel families (default: every one this build has)")
    parser.add_argument("--record-into", metavar="DIR",
                        help="with --gpu: write the records into DIR instead of the user's cache "
                             "(vitfast/kernels/records: the package's own, from our GPU sittings)")
    parser.add_argument("--dispatch-into", metavar="DIR",
                        help="with --gpu: write this GPU's dispatch rows into DIR instead of the user's cache "
                             "(vitfast/kernels/dispatch_data: the package's own)")
    args = parser.parse_args(argv)
    gpu_only = [f for f in ("quick", "families", "record_into", "dispatch_into") if getattr(args, f)]
    if gpu_only and not args.gpu:
        raise UsageError(f"--{gpu_only[0].replace('_', '-')} belongs to --gpu, which was not given")
    if args.gpu:
        from vitfast.kernels import check_gpu
        return check_gpu.main(args.families, args.quick, args.record_into, args.dispatch_into)
    if args.size < 64:
        raise UsageError(f"--size must be >= 64, got {args.size}")

    cuda = torch.cuda.is_available() and vitfast.has_cuda_kernels()
    print(f"vitfast {vitfast.__version__}  torch {torch.__version__}  "
          f"CUDA kernels {'built' if vitfast.has_cuda_kernels() else 'not built'}  "
          f"GPU {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    g = torch.Generator().manual_seed(args.seed)
    failures = 0
    print(f"\n{'operator':<22}{'format':<22}{'rounding':<14}{'dtype':<10}{'vs twin':<9}{'vs CPU':<8}")
    for name, fmt, op, ref in CASES:
        for rounding in ("nearest", "stochastic", "nearest_away"):
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                x = _data(args.size - 7, g)[: args.size // 32 * 32].to(dtype)
                seed = torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64, generator=g)
                seed = seed if rounding == "stochastic" else None
                y = op(x, rounding, seed)
                ok_ref = _same(y, ref(x, rounding, seed))
                ok_cuda = _same(op(x.cuda(), rounding, seed).cpu(), y) if cuda else None
                failures += (not ok_ref) + (ok_cuda is False)
                cuda_txt = "-" if ok_cuda is None else ("same" if ok_cuda else "DIFFERS")
                print(f"{name:<22}{fmt:<22}{rounding:<14}{str(dtype)[6:]:<10}"
                      f"{'same' if ok_ref else 'DIFFERS':<9}{cuda_txt:<8}")

    failures += _check_fused(g, cuda)

    x = torch.randn(1 << 20, generator=g)
    print(f"\n{'format':<10}{'relative RMS error on N(0,1)':<30}{'ms per 1M (CPU)':<16}")
    for fmt in FORMATS:
        t = time.perf_counter()
        q = quantize(x, fmt)
        ms = (time.perf_counter() - t) * 1e3
        err = ((q - x).norm() / x.norm()).item()
        print(f"{fmt:<10}{err:<30.3e}{ms:<16.2f}")
    print(f"\n{'all operators agree with their references' if not failures else f'{failures} MISMATCHES'}")
    return 1 if failures else 0


def _rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def _check_fused(g, cuda):
    """Relative error of each fused operator against its twin (tolerance by dtype); returns failures."""
    def r(*shape):
        return torch.randn(*shape, generator=g)

    x, res, w, b = r(394, 384), r(394, 384), r(384) + 1, r(384)
    W1, b1, W2 = r(1536, 384) / 20, r(1536), r(384, 1536) / 40
    q, k, v, ab = r(2, 6, 197, 64), r(2, 6, 197, 64), r(2, 6, 197, 64), r(2, 6, 197, 197)
    e4m3, one = torch.float8_e4m3fn, torch.ones(1)
    x8, w8, sa, sb = ops.scaled_cast(x * 64, one, e4m3), ops.scaled_cast(W1 * 2048, one, e4m3), one / 64, one / 2048
    cases = [
        ("layer_norm", lambda d, t: ops.layer_norm(x.to(d, t), w.to(d), b.to(d), 1e-6, residual=res.to(d, t))[1],
         lambda: ops.layer_norm_ref(x.double(), w.double(), b.double(), 1e-6, residual=res.double())[1]),
        ("linear_gelu", lambda d, t: ops.linear_gelu(x.to(d, t), W1.to(d, t), b1.to(d, t)),
         lambda: ops.linear_gelu_ref(x.double(), W1.double(), b1.double())),
        ("linear_residual", lambda d, t: ops.linear_residual(ops.linear_gelu_ref(x, W1, b1).to(d, t), W2.to(d, t),
                                                              b.to(d, t), res.to(d, t)),
         lambda: ops.linear_residual_ref(ops.linear_gelu_ref(x, W1, b1).double(), W2.double(), b.double(),
                                         res.double())),
        # ViT-S/16 attention at odd length: 6 heads, 197 tokens, d=64, with an additive bias (DVT's reuse)
        ("attention", lambda d, t: ops.attention(q.to(d, t), k.to(d, t), v.to(d, t), ab.to(d, t)),
         lambda: ops.attention_ref(q.double(), k.double(), v.double(), ab.double())),
        ("lp_matmul fp32 acc", lambda d, t: ops.lp_matmul(x.to(d), W1.t().to(d), accumulate="fp32"),
         lambda: x.half().double() @ W1.t().half().double()),
        ("lp_matmul fp16 acc", lambda d, t: ops.lp_matmul(x.to(d), W1.t().to(d)),
         lambda: x.half().double() @ W1.t().half().double()),
        # LayerNorm into e4m3 codes (scale 1/16), decoded, against float64: e4m3 rounding, RMS 2.65e-2 on N(0, 1)
        ("layer_norm_fp8", lambda d, t: ops.layer_norm_fp8(x.to(d, t), w.to(d), b.to(d), one.to(d) / 16, 1e-6).float() / 16,
         lambda: ops.layer_norm_ref(x.double(), w.double(), b.double(), 1e-6)),
        # e4m3 operands (x and W1 as scaled codes), fp32 sums, scales, bias and GELU, a bf16 output
        ("fp8_linear", lambda d, t: ops.fp8_linear(x8.to(d), w8.to(d), sa.to(d), sb.expand(1536).to(d), b1.to(d),
                                                   activation="gelu"),
         lambda: torch.nn.functional.gelu((x8.double() @ w8.double().t()) * sa.double() * sb.double() + b1.double())),
    ]
    tol = {torch.float32: 1e-5, torch.bfloat16: 1.5e-2, torch.float16: 2e-3}
    failures = 0
    print(f"\n{'fused operator':<22}{'dtype':<10}{'rel. err CPU':<14}{'rel. err CUDA':<14}{'tolerance':<10}")
    for name, op, ref in cases:
        for dtype in ((torch.float32,) if name.startswith(("lp_", "fp8_")) else (torch.float32, torch.bfloat16)):
            want = ref()
            limit = {"lp_matmul fp16 acc": 2e-3, "lp_matmul fp32 acc": 1e-5, "fp8_linear": tol[torch.bfloat16],
                     "layer_norm_fp8": 4e-2}.get(name, tol[dtype])
            e_cpu = _rel(op("cpu", dtype), want)
            e_cuda = _rel(op("cuda", dtype), want) if cuda else None
            bad = e_cpu > limit or (e_cuda is not None and e_cuda > limit)
            failures += bad
            cuda_txt = "-" if e_cuda is None else f"{e_cuda:.2e}"
            print(f"{name:<22}{str(dtype)[6:]:<10}{e_cpu:<14.2e}{cuda_txt:<14}{limit:<10.1e}{'  FAILS' if bad else ''}")
    a, bm = x[:64].half(), W1.t()[:, :48].half()
    twin = _same(ops.lp_matmul(a, bm).float(), ops.lp_matmul_ref(a, bm).float())
    print(f"{'lp_matmul CPU emulation vs its twin':<46}{'same' if twin else 'DIFFERS'}")
    args = (x8[:64], w8[:48], sa, sb.expand(48).contiguous(), b1[:48])
    kw = dict(activation="gelu", out_dtype=e4m3, out_scale=one / 8)
    twin8 = _same(ops.fp8_linear(*args, **kw).float(), ops.fp8_linear_ref(*args, **kw).float())
    print(f"{'fp8_linear CPU composite vs its twin':<46}{'same' if twin8 else 'DIFFERS'}")
    ln8 = _same(ops.layer_norm_fp8(x, w, b, one / 16).float(), ops.layer_norm_fp8_ref(x, w, b, one / 16).float())
    print(f"{'layer_norm_fp8 CPU composite vs its twin':<46}{'same' if ln8 else 'DIFFERS'}")
    return failures + (not twin) + (not twin8) + (not ln8)


if __name__ == "__main__":
    run("vitfast.check", main)
