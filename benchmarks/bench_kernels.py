"""Kernel-level timings of the fused ops against what they replace, at ViT shapes, on one GPU.

    python benchmarks/bench_kernels.py [--batch 256] [--repeats 50] [--out FILE]

For ViT-Ti/S/B/L token matrices (M = batch * 197): linear_gelu (fc1) against F.gelu(F.linear(...)),
linear_residual (fc2, proj) against F.linear(...) + residual, in every Hopper configuration built for
the case on an H100/H200 (a row each, "[config]"; elsewhere the one kernel there is), inference
(forward) and training (forward + backward: the pre-activation stored, the residual stream in float32),
the fastest against cuBLAS's bare product F.linear(x, w) (the epilogue's cost); lp_matmul FP16_16 / FP16_32 against
cuBLAS's fp16 product with an fp16 accumulator (allow_fp16_accumulation) / into fp32 (torch.mm's out_dtype), layer_norm (+ residual) against
F.layer_norm (and x + r first); on an H100/H200 fp8_linear as the FP8 chain calls it (qkv into bf16, fc1 +
GELU into e4m3, fc2 / proj + residual) in every configuration, against the same bf16 peers; forward
and, for the training ops, forward + backward, in bf16 and
as autocast training meets them (a float32 residual stream: "fp32" rows and the residual's). Reports the
median time (benchmarks/common.py's measure(): common.METHOD, in the table's header), TFLOP/s for the
products and GB/s (bytes each op must move) for layer_norm, and the ratio to the PyTorch peer.
"""
import argparse

import torch
import torch.nn.functional as F

from common import METHOD, environment, input_sets, measure, write_table  # benchmarks/common.py

WIDTHS = {"vit_tiny": 192, "vit_small": 384, "vit_base": 768, "vit_large": 1024}


def bench(fn, inputs, repeats):
    """(median, min, max) ms of fn(*inputs[i % len(inputs)])."""
    return tuple(measure(fn, "cuda", inputs, repeats))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10, help="samples per case (at least 10)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_kernels.py needs a CUDA GPU")
    from vitfast.ops import fp8_linear, layer_norm, linear_gelu, linear_residual, lp_matmul, scaled_cast
    from vitfast.quant.lowp import cublas_lowp_linear

    dev, bf = "cuda", torch.bfloat16
    M = args.batch * 197
    lines = [f"# bench_kernels.py, M = {M}", ""] + [f"- {k}: {v}" for k, v in environment(dev).items()] + [
        f"- timing: {METHOD}; inputs rotated over more than twice the L2 cache",
        "", "| op | shape | ours ms | peer ms | ours/peer speed | ours TFLOP/s or GB/s |", "|---|---|---|---|---|---|"]
    # The bandwidth roof the memory-bound ops are held to: a device-to-device copy (bytes read + written).
    src = [torch.randn(2**28 // 2, device=dev, dtype=bf) for _ in range(2)]
    dst = torch.empty_like(src[0])
    copy = bench(lambda s: dst.copy_(s), [(s,) for s in src], args.repeats)
    copy_gbs = 2**28 * 2 / (copy[0] * 1e-3) / 1e9
    lines.append(f"| device copy (roof) | 256 MiB | {copy[0]:.3f} | - | - | {copy_gbs:,.0f} GB/s |")
    print(lines[-1], flush=True)
    del src, dst

    def row(op, shape, ours, peer, work, unit):
        rate = work / (ours[0] * 1e-3) / (1e12 if unit == "TFLOP/s" else 1e9)
        roof = f" ({rate / copy_gbs:.0%} of copy)" if unit == "GB/s" else ""
        line = f"| {op} | {shape} | {ours[0]:.3f} | {peer[0]:.3f} | {peer[0] / ours[0]:.2f}x | {rate:,.0f} {unit}{roof} |"
        lines.append(line)
        print(line, flush=True)

    hopper = torch.cuda.get_device_capability() == (9, 0) and torch.ops.vitfast.sm90_kernels_built()

    def configs(kind):
        return torch.ops.vitfast.sm90_configs(kind) if hopper else ["auto"]

    def fp8_rows(label, what, w, b, xs, peer, flops, shape):
        """fp8_linear as convert_fp8's chain calls it (fc1: GELU into e4m3; fc2, proj: + residual; qkv: into
        bf16) in every configuration built for the kind; the peer is cuBLAS bf16 with the same epilogue."""
        e4m3, one = torch.float8_e4m3fn, torch.ones(1, device=dev)
        kind = {"fc1": "fp8_act_e4m3", "qkv": "fp8_act"}.get(what, "fp8_residual")
        w8, sb, bias = scaled_cast(w.float(), one, e4m3), torch.rand(w.shape[0], device=dev) / 64, b.float()
        residual = kind == "fp8_residual"  # the others' input sets carry no residual into the product
        x8s = [(scaled_cast(x.float(), one, e4m3), r if residual else None) for x, r in xs]
        kw = dict(activation="gelu", out_dtype=e4m3, out_scale=one / 8) if what == "fc1" else {}
        for c in torch.ops.vitfast.sm90_configs(kind):
            ours = bench(lambda x8, r: fp8_linear(x8, w8, one, sb, bias, residual=r, config=c, **kw), x8s, args.repeats)
            row(f"{label} [{c}]", shape, ours, peer, flops, "TFLOP/s")

    for name, D in WIDTHS.items():
        H = 4 * D
        if hopper:  # qkv's product, which the bf16 ops leave to cuBLAS
            w = torch.randn(3 * D, D, device=dev, dtype=bf) / D**0.5
            b = torch.randn(3 * D, device=dev, dtype=bf)
            xs = input_sets(lambda: (torch.randn(M, D, device=dev, dtype=bf), None), dev)
            peer = bench(lambda x, r: F.linear(x, w, b), xs, args.repeats)
            fp8_rows(f"{name} fp8_linear (qkv)", "qkv", w, b, xs, peer, 2 * M * 3 * D * D, f"{M}x{D}->{3 * D}")
        for K, N, what in ((D, H, "fc1"), (H, D, "fc2"), (D, D, "proj")):
            w = torch.randn(N, K, device=dev, dtype=bf) / K**0.5
            b = torch.randn(N, device=dev, dtype=bf)
            xs = input_sets(lambda: (torch.randn(M, K, device=dev, dtype=bf), torch.randn(M, N, device=dev, dtype=bf)),
                            dev)
            flops, shape = 2 * M * N * K, f"{M}x{K}->{N}"
            op = "linear_gelu" if what == "fc1" else "linear_residual"
            if what == "fc1":
                peer = bench(lambda x, r: F.gelu(F.linear(x, w, b)), xs, args.repeats)
                times = {c: bench(lambda x, r: linear_gelu(x, w, b, config=c), xs, args.repeats) for c in configs("act")}
            else:
                peer = bench(lambda x, r: F.linear(x, w, b) + r, xs, args.repeats)
                times = {c: bench(lambda x, r: linear_residual(x, w, b, r, config=c), xs, args.repeats)
                         for c in configs("residual")}
            for c, ours in times.items():
                row(f"{name} {op} fwd" + ("" if what == "fc1" else f" ({what})") + f" [{c}]", shape, ours, peer, flops,
                    "TFLOP/s")
            if hopper:  # the FP8 chain's product at this shape, each configuration, against the bf16 peer
                fp8_rows(f"{name} fp8_linear ({what})", what, w, b, xs, peer, flops, shape)
            # the fastest against cuBLAS's bare product of the same shape: what the epilogue costs
            bare = bench(lambda x, r: F.linear(x, w), xs, args.repeats)
            best = min(times, key=lambda c: times[c][0])
            row(f"{name} {op} vs bare cuBLAS GEMM ({what}) [{best}]", shape, times[best], bare, flops, "TFLOP/s")
            # training: the forward stores GELU's input; the residual stream is float32 (autocast's)
            wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
            train = [(x.clone().requires_grad_(), r.float().requires_grad_()) for x, r in xs]
            dy = torch.randn(M, N, device=dev, dtype=bf)
            if what == "fc1":
                def fwd_bwd(f):
                    return lambda x, r: torch.autograd.grad(f(x), (x, wg, bg), dy)
                peer = bench(fwd_bwd(lambda x: F.gelu(F.linear(x, wg, bg))), train, args.repeats)
                times = {c: bench(fwd_bwd(lambda x, c=c: linear_gelu(x, wg, bg, config=c)), train, args.repeats)
                         for c in configs("act_aux")}
            else:
                def fwd_bwd(f):
                    return lambda x, r: torch.autograd.grad(f(x, r), (x, wg, bg, r), dy.float())
                peer = bench(fwd_bwd(lambda x, r: F.linear(x, wg, bg).float() + r), train, args.repeats)
                times = {c: bench(fwd_bwd(lambda x, r, c=c: linear_residual(x, wg, bg, r, config=c)), train,
                                  args.repeats) for c in configs("residual_f32")}
            for c, ours in times.items():
                row(f"{name} {op} fwd+bwd" + ("" if what == "fc1" else f" ({what})") + f" [{c}]", shape, ours, peer,
                    3 * flops, "TFLOP/s")
            del train, wg, bg
            wh, xh = w.half(), [(x.half(), r) for x, r in xs]
            for acc in ("fp16", "fp32"):  # against vitfast.quant.lowp's library path for each
                out = torch.float16 if acc == "fp16" else torch.float32
                ours = bench(lambda x, r: lp_matmul(x, wh.t(), accumulate=acc, out_dtype=out), xh, args.repeats)
                peer = bench(lambda x, r: cublas_lowp_linear(x, wh, None, acc), xh, args.repeats)
                row(f"{name} lp_matmul {acc} acc ({what})", f"{M}x{K}->{N}", ours, peer, flops, "TFLOP/s")
        g, be = torch.rand(D, device=dev) + 0.5, torch.randn(D, device=dev)
        xs = input_sets(lambda: (torch.randn(M, D, device=dev, dtype=bf), torch.randn(M, D, device=dev, dtype=bf)), dev)
        ours = bench(lambda x, r: layer_norm(x, g, be, 1e-6, residual=r), xs, args.repeats)
        peer = bench(lambda x, r: F.layer_norm(x + r, (D,), g.to(bf), be.to(bf), 1e-6), xs, args.repeats)
        row(f"{name} layer_norm + residual fwd", f"{M}x{D}", ours, peer, M * D * 2 * 4, "GB/s")
        ours = bench(lambda x, r: layer_norm(x, g, be, 1e-6), xs, args.repeats)
        peer = bench(lambda x, r: F.layer_norm(x, (D,), g.to(bf), be.to(bf), 1e-6), xs, args.repeats)
        row(f"{name} layer_norm fwd", f"{M}x{D}", ours, peer, M * D * 2 * 2, "GB/s")
        xg = [(x.requires_grad_(), r) for x, r in xs]
        dy = torch.randn(M, D, device=dev, dtype=bf)
        gg, bb = g.clone().requires_grad_(), be.clone().requires_grad_()
        ours = bench(lambda x, r: torch.autograd.grad(layer_norm(x, gg, bb, 1e-6), (x, gg, bb), dy), xg, args.repeats)
        gb, bbb = g.to(bf).requires_grad_(), be.to(bf).requires_grad_()
        peer = bench(lambda x, r: torch.autograd.grad(F.layer_norm(x, (D,), gb, bbb, 1e-6), (x, gb, bbb), dy), xg,
                     args.repeats)
        row(f"{name} layer_norm fwd+bwd", f"{M}x{D}", ours, peer, M * D * 2 * 5, "GB/s")
        # Training under autocast: the residual stream is float32, so norm1 normalises float32 and norm2
        # meets a bf16 branch with a float32 residual (both then run in float32, ours and F.layer_norm's).
        # Bytes per element: forward x (2), r (4) read, s, y (4 + 4) written; backward dy, ds, s (3 x 4)
        # read, dx (2) and dr (4) written: 32.
        del xg, xs
        xs = input_sets(lambda: (torch.randn(M, D, device=dev, dtype=bf).requires_grad_(),
                                 torch.randn(M, D, device=dev).requires_grad_()), dev)
        dyf = dy.float()
        ours = bench(lambda x, r: torch.autograd.grad(layer_norm(x, gg, bb, 1e-6, residual=r), (x, r, gg, bb),
                                                      (dyf, dyf)), xs, args.repeats)
        gf, bf32 = g.clone().requires_grad_(), be.clone().requires_grad_()

        def peer_residual(x, r):
            s = x + r
            return torch.autograd.grad((s, F.layer_norm(s, (D,), gf, bf32, 1e-6)), (x, r, gf, bf32), (dyf, dyf))
        peer = bench(peer_residual, xs, args.repeats)
        row(f"{name} layer_norm + residual fwd+bwd", f"{M}x{D}", ours, peer, M * D * 32, "GB/s")
        ours = bench(lambda x, r: torch.autograd.grad(layer_norm(r, gg, bb, 1e-6), (r, gg, bb), dyf), xs, args.repeats)
        peer = bench(lambda x, r: torch.autograd.grad(F.layer_norm(r, (D,), gf, bf32, 1e-6), (r, gf, bf32), dyf), xs,
                     args.repeats)
        row(f"{name} layer_norm fwd+bwd fp32", f"{M}x{D}", ours, peer, M * D * 4 * 5, "GB/s")
        del xs
    if args.out:
        write_table("\n".join(lines) + "\n", args.out, echo=False)


if __name__ == "__main__":
    main()
