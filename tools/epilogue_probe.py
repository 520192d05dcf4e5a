"""Where an fc1 epilogue's time goes, at one ViT width (issue 96): one process times the same product
with each epilogue our Hopper GEMMs build, beside cuBLAS's bare product, so the difference between two
rows is one part of the epilogue:

  cuBLAS bare / + bias          the mainloop's cost, and cuBLAS's bias epilogue
  linear_residual per config    our kernels' cost before any GELU (+ bias + residual), per tile and schedule
  lp_matmul fp32 acc, bias      our CUTLASS kernel with the cheapest epilogue (fp16 operands)
  lp_matmul fp32 acc, gelu      the same kernel with erf GELU: the GELU's own cost
  linear_gelu erf / tanh        the bf16 op the models run, per configuration: erff against one MUFU.TANH
  fp8_linear none->bf16 / gelu->e4m3 (+ amax)   the FP8 product's epilogues (bf16 GELU is not built)
  fc2 (4D -> D): cuBLAS bf16 / fp8_linear + residual   FP8's mainloop where 4x deeper sums leave the
                                epilogue little weight: what the k-tiles' promotions and operand traffic cost
  FP8 accumulation error       each fp8_linear configuration's, where the exact sum is 0, at K = 384,
                                768, 1,024: the promoted mainloops' against fast accumulation's
  training fc1, by piece        linear_gelu's forward storing the pre-activation per configuration against
                                cuBLAS + F.gelu; the backward's GELU and bias gradients (gelu_grad_bias
                                against ATen's gelu_backward + sum) and its two products (cuBLAS's dgrad and
                                wgrad, which both paths run); forward + backward whole, ours against ATen's

    python tools/epilogue_probe.py [--width 768] [--batch 256] [--out FILE]
    ncu --metrics ... python tools/epilogue_probe.py --once [--fp8-only]   # each product once, for a profiler
Every kernel is allowed to run (VITFAST_UNVERIFIED_KERNELS=1 is set here): this times, it proves nothing."""
import argparse
import os
import sys

os.environ.setdefault("VITFAST_UNVERIFIED_KERNELS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import environment, input_sets, measure, write_table  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=768, help="the model's width D: fc1 is D -> 4D")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--once", action="store_true", help="run each product once, untimed (under ncu)")
    p.add_argument("--fp8-only", action="store_true", help="only the FP8 products (and the bf16 one beside fc2's)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("epilogue_probe.py: needs a CUDA GPU")
    import vitfast.ops as ops
    from vitfast.ops._linear_args import sm90_configs

    M, K, N, dev = args.batch * 197, args.width, 4 * args.width, "cuda"
    flops = 2 * M * N * K
    rows = []

    def row(label, fn, sets, products=1):  # products: how many fc1-sized matrix products fn runs
        try:
            if args.once:
                fn(*sets[0])
                torch.cuda.synchronize()
                return
            t = measure(fn, dev, sets)
            rate = f"{products * flops / t.median / 1e9:,.0f}" if products else "-"
            rows.append(f"| {label} | {t.median:.3f} | {rate} |")
        except Exception as e:  # a kernel this build lacks is reported, not fatal
            rows.append(f"| {label} | {type(e).__name__}: {str(e)[:80]} | |")
        print(rows[-1], flush=True)

    def operands(dtype):
        return input_sets(lambda: (torch.randn(M, K, device=dev).to(dtype),), dev)

    w = torch.randn(N, K, device=dev) / K**0.5
    b = torch.randn(N, device=dev) * 0.1
    xb, wb, bb = operands(torch.bfloat16), w.bfloat16(), b.bfloat16()
    if not args.fp8_only:
        row("cuBLAS F.linear bare (bf16)", lambda x: F.linear(x, wb), xb)
        row("cuBLAS F.linear + bias (bf16)", lambda x: F.linear(x, wb, bb), xb)
        row("cuBLAS + F.gelu (bf16, two passes)", lambda x: F.gelu(F.linear(x, wb, bb)), xb)
        for approximate in ("none", "tanh"):
            for config in sm90_configs("act" if approximate == "none" else "act_tanh")[1:]:
                row(f"linear_gelu {approximate} [{config}]",
                    lambda x, a=approximate, c=config: ops.linear_gelu(x, wb, bb, a, config=c), xb)
        # the same product with the cheapest epilogue each configuration builds (+ bias + residual): what
        # the tile, cluster and schedule cost before any GELU
        xr = input_sets(lambda: (torch.randn(M, K, device=dev).bfloat16(), torch.randn(M, N, device=dev).bfloat16()),
                        dev)
        row("cuBLAS F.linear + bias + residual (bf16, two passes)", lambda x, r: r + F.linear(x, wb, bb), xr)
        for config in sm90_configs("residual")[1:]:
            row(f"linear_residual [{config}]",
                lambda x, r, c=config: ops.linear_residual(x, wb, bb, r, config=c), xr)
        training_fc1(row, ops, sm90_configs, xb, wb, bb, dev)
        xh, wh = operands(torch.float16), w.half().t().contiguous()
        for epi in (None, "bias", "gelu"):  # tanh GELU in lp_matmul runs the mma.sync kernel
            row(f"lp_matmul fp32 acc, epilogue {epi} (fp16 -> fp16)",
                lambda x, e=epi: ops.lp_matmul(x, wh, b if e else None, e, accumulate="fp32"), xh)
    one, ones = torch.ones((), device=dev), torch.ones(N, device=dev)
    x8 = [(x.to(torch.float8_e4m3fn),) for (x,) in xb[:8]]
    w8 = wb.to(torch.float8_e4m3fn)
    for config in sm90_configs("fp8_act")[1:]:
        row(f"fp8_linear none -> bf16 [{config}]", lambda x, c=config: ops.fp8_linear(x, w8, one, ones, bb, config=c), x8)
    for config in sm90_configs("fp8_act_e4m3")[1:]:
        for amax in (False, True):
            row(f"fp8_linear gelu -> e4m3{' + amax' if amax else ''} [{config}]",
                lambda x, c=config, a=amax: ops.fp8_linear(x, w8, one, ones, bb, activation="gelu",
                                                           out_dtype=torch.float8_e4m3fn, out_scale=one, amax=a,
                                                           config=c), x8)
    # fc2: the FP8 mainloop over 4D-deep sums, against cuBLAS's bf16 product and residual add
    h = input_sets(lambda: (torch.randn(M, N, device=dev).bfloat16(), torch.randn(M, K, device=dev).bfloat16()), dev)
    w2 = (torch.randn(K, N, device=dev) / N**0.5).bfloat16()
    h8 = [(x.to(torch.float8_e4m3fn), r) for x, r in h[:8]]
    w28 = w2.to(torch.float8_e4m3fn)
    ones2 = torch.ones(K, device=dev)
    row(f"fc2 {N}->{K}: cuBLAS F.linear + bias + residual (bf16)", lambda x, r: r + F.linear(x, w2, bb[:K]), h)
    for config in sm90_configs("fp8_residual")[1:]:
        row(f"fc2 {N}->{K}: fp8_linear + residual -> bf16 [{config}]",
            lambda x, r, c=config: ops.fp8_linear(x, w28, one, ones2, bb[:K], residual=r, config=c), h8)
    accuracy = [] if args.once else fp8_accuracy(ops, sm90_configs("fp8_act")[1:], dev)
    lines = [f"# epilogue_probe.py: fc1 {M}x{K}->{N}", "", *(f"- {k}: {v}" for k, v in environment(dev).items()),
             "", "| product | ms | TFLOP/s |", "|---|---|---|", *rows, "", *accuracy]
    write_table("\n".join(lines) + "\n", args.out, echo=False)


def fp8_accuracy(ops, configs, dev, widths=(384, 768, 1024), M=4096, N=768):
    """fp8_linear's accumulation error per configuration, measured where the exact sum is zero: x = [u, uP]
    and each weight row [w, -wP] (halves of K, P a permutation), so the running sum climbs over the first
    half and returns to 0 over the second, and the bf16 output is the accumulator's own error, rounded to
    2^-9 of itself. As a
    fraction of the sum of |products|: the largest (2^-13.8 measured with promotions on an H100,
    2026-11-24; the test bound is fp8_accumulation_bound's), the mean, and the outputs not exactly 0.
    Returns the table's lines."""
    from vitfast.kernels.selftests.gemm import fp8_codes

    E4M3, one = torch.float8_e4m3fn, torch.ones(1)

    def log2(t):  # a fraction as a power of two
        return f"2^{torch.log2(t).item():.1f}" if t > 0 else "0"

    lines = ["| FP8 accumulation error (into bf16, exact sum 0) | K | max / sum of abs products | mean | "
             "outputs not 0 |", "|---|---|---|---|---|"]
    for K in widths:
        u, w = fp8_codes((M, K // 2), 0, 4.0).float(), fp8_codes((N, K // 2), 2, 8.0).float()
        # the second half's products in another order: no k-tile's partial sum cancels another's exactly
        perm = torch.randperm(K // 2, generator=torch.Generator().manual_seed(K))
        x8 = torch.cat([u, u[:, perm]], 1)
        w8 = torch.cat([w, -w[:, perm]], 1)  # e4m3 values: exact again as codes
        x8, w8 = (ops.scaled_cast(t, one, E4M3).to(dev) for t in (x8, w8))
        sa, sb = torch.tensor([2.0**-3], device=dev), torch.full((N,), 0.004, device=dev)
        sums = (x8.double().abs() @ w8.double().abs().t()) * sa.double() * sb.double()
        for config in configs:
            try:
                out = ops.fp8_linear(x8, w8, sa, sb, config=config).double()
            except Exception as e:  # a kernel this build lacks is reported, not fatal
                lines.append(f"| [{config}] | {K} | {type(e).__name__}: {str(e)[:80]} | | |")
                continue
            fraction = out.abs() / sums
            lines.append(f"| [{config}] | {K} | {log2(fraction.max())} | {log2(fraction.mean())} | "
                         f"{(out != 0).double().mean().item():.2%} |")
            print(lines[-1], flush=True)
    return lines


def training_fc1(row, ops, sm90_configs, xb, wb, bb, dev):
    """linear_gelu's fwd + bwd at fc1, by piece (issue 96 item 3: where 1.02x of cuBLAS + GELU goes)."""
    M, N = xb[0][0].shape[0], wb.shape[0]
    pre = [(F.linear(x, wb, bb),) for (x,) in xb[:4]]
    dout = torch.randn(M, N, device=dev).bfloat16()
    row("training fc1: cuBLAS F.linear + F.gelu, forward", lambda x: F.gelu(F.linear(x, wb, bb)), xb)
    for config in sm90_configs("act_aux")[1:]:  # the kernel storing the pre-activation for the backward
        row(f"training fc1: linear_gelu storing the pre-activation [{config}]",
            lambda x, c=config: torch.ops.vitfast.linear_gelu(x, wb, bb, "none", True, c), xb)
    row("training fc1: ATen gelu_backward + bias sum", lambda p: torch.ops.aten.gelu_backward(dout, p).sum(0), pre, 0)
    row("training fc1: gelu_grad_bias (GELU and bias gradients, one pass)",
        lambda p: torch.ops.vitfast.gelu_grad_bias(dout, p, "none", True), pre, 0)
    row("training fc1: cuBLAS dgrad (dpre @ W)", lambda p: p @ wb, pre)
    row("training fc1: cuBLAS wgrad (dpre.T @ x)", lambda p: p.t() @ xb[0][0], pre)
    wg, bg = wb.detach().requires_grad_(), bb.detach().requires_grad_()
    xg = [(x.detach().requires_grad_(),) for (x,) in xb[:4]]

    def fwd_bwd(f):  # the three gradients returned, none accumulated into .grad
        return lambda x: torch.autograd.grad(f(x), (x, wg, bg), dout)

    row("training fc1: ATen fwd + bwd", fwd_bwd(lambda x: F.gelu(F.linear(x, wg, bg))), xg, 3)
    for config in sm90_configs("act_aux")[1:]:
        row(f"training fc1: linear_gelu fwd + bwd [{config}]",
            fwd_bwd(lambda x, c=config: ops.linear_gelu(x, wg, bg, config=c)), xg, 3)


if __name__ == "__main__":
    main()
