"""Kernel-level timings of the fused ops against what they replace, at ViT shapes, on one GPU: the
timings `python -m vitfast.check --gpu` makes to choose this GPU's dispatch (vitfast.kernels.tune's
Tuner), as a table with every configuration's row and the bare GEMM beside the epilogues.

    python benchmarks/bench_kernels.py [--batch 256] [--repeats 10] [--out FILE]
    python benchmarks/bench_kernels.py --device cpu --quick       # a run of the plumbing, not of speed

For ViT-Ti/S/B/L token matrices (M = batch * 197): linear_gelu (fc1) against F.gelu(F.linear(...)),
linear_residual (fc2, proj) against F.linear(...) + residual, in every Hopper configuration built for
the case on an H100/H200 (a row each, "[config]"), inference (forward) and training (forward +
backward: the pre-activation stored, the residual stream in float32); the fastest against cuBLAS's bare
product F.linear(x, w) (what the epilogue costs); lp_matmul FP16_16 / FP16_32 against cuBLAS's fp16
product with an fp16 accumulator / into fp32; layer_norm (+ residual) against F.layer_norm (and x + r
first), in bf16 and as autocast training meets it (a float32 residual stream); on an H100/H200
fp8_linear as the FP8 chain calls it (qkv into bf16, fc1 + GELU into e4m3, fc2 / proj + residual) in
every configuration, against the same bf16 peers. Reports the median time (common.METHOD, in the
table's header), TFLOP/s for the products and GB/s (the bytes each op must move, against a device
copy's) for layer_norm, and the ratio to the PyTorch peer. Only kernels the gate lets run are ours
(a sitting sets VITFAST_UNVERIFIED_KERNELS=1 to time them all).
"""
import argparse

import torch

from common import METHOD, environment, input_sets, measure, write_table  # benchmarks/common.py
from vitfast.kernels.tune import CPU_WIDTHS, QUICK_WIDTHS, WIDTHS, Tuner

# layer_norm's bytes per element each op must move, by (residual, grad, dtype of the row). bf16: x read
# and y written (4), the residual's r read and s = x + r written too (8); forward + backward, x, y, dy,
# dx (10). Autocast's float32 stream with a bf16 branch: x (2) and r (4) read, s and y written (8), dy,
# ds, s read (12), dx (2) and dr (4) written: 32; norm1 on the float32 stream: 5 x 4. The CPU's rows are
# all float32.
NORM_BYTES = {(False, False, "bfloat16"): 4, (True, False, "bfloat16"): 8, (False, True, "bfloat16"): 10,
              (True, True, "bfloat16"): 32, (False, True, "float32"): 20,
              (False, False, "float32"): 8, (True, False, "float32"): 16, (True, True, "float32"): 36}


def role(K, N):
    """Which of a block's products a (K, N) is."""
    return "fc1" if N == 4 * K else "fc2" if K == 4 * N else "qkv" if N == 3 * K else "proj"


def copy_roof(device, repeats):
    """GB/s of a device-to-device copy (bytes read + written): the roof the memory-bound ops are held to."""
    n = 2**26 if device != "cpu" else 2**22
    src = input_sets(lambda: (torch.randn(n, device=device),), device)
    dst = torch.empty(n, device=device)
    ms = measure(lambda s: dst.copy_(s), device, src, repeats).median
    return 2 * 4 * n / (ms * 1e-3) / 1e9, ms, n * 4


class Table:
    def __init__(self, M, roof_gbs):
        self.M, self.roof, self.lines = M, roof_gbs, []

    def row(self, label, shape, ours, peer, work, unit):
        rate = work / (ours * 1e-3) / (1e12 if unit == "TFLOP/s" else 1e9)
        roof = f" ({rate / self.roof:.0%} of copy)" if unit == "GB/s" else ""
        self.lines.append(f"| {label} | {shape} | {ours:.3f} | {peer:.3f} | {peer / ours:.2f}x | {rate:,.0f} {unit}{roof} |")
        print(self.lines[-1], flush=True)

    def norms(self, name, rows):
        for r in rows:
            label = (f"{name} layer_norm{' + residual' if r['residual'] else ''} {'fwd+bwd' if r['grad'] else 'fwd'}"
                     f"{' fp32' if r['dtype'] == 'float32' and r['grad'] else ''}")
            work = self.M * r["D"] * NORM_BYTES[(r["residual"], r["grad"], r["dtype"])]
            self.row(label, f"{self.M}x{r['D']}", r["ours_ms"], r["library_ms"], work, "GB/s")

    def products(self, name, op, rows, bare_ms):
        for r in rows:
            K, N, what = r["K"], r["N"], role(r["K"], r["N"])
            shape, flops = f"{self.M}x{K}->{N}", 2 * self.M * N * K
            times = r.get("configs") or {r.get("config", "auto"): r["ours_ms"]}
            if op == "lp_matmul":
                self.row(f"{name} lp_matmul {r['accumulate']} acc ({what})", shape, r["ours_ms"], r["library_ms"], flops,
                         "TFLOP/s")
                continue
            if op == "fp8_linear":
                label = f"{name} fp8_linear ({what})"
            else:
                mode = "fwd+bwd" if r["grad"] else "fwd"
                label = f"{name} {op} {mode}" + ("" if what == "fc1" else f" ({what})")
            work = 3 * flops if r.get("grad") else flops
            for c, ms in times.items():
                self.row(f"{label} [{c}]", shape, ms, r["library_ms"], work, "TFLOP/s")
            if op != "fp8_linear" and not r["grad"] and (K, N) in bare_ms:  # the epilogue's cost
                best = r.get("config", "auto")
                self.row(f"{name} {op} vs bare cuBLAS GEMM ({what}) [{best}]", shape, r["ours_ms"], bare_ms[(K, N)],
                         flops, "TFLOP/s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256, help="images of 197 tokens per product (default: 256)")
    p.add_argument("--repeats", type=int, default=10, help="samples per case (at least 10)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a run of the plumbing")
    p.add_argument("--quick", action="store_true", help="ViT-B's width alone (on the CPU a tiny one)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_kernels.py: --device cuda: no CUDA GPU here (--device cpu runs the plumbing)")
    widths = CPU_WIDTHS if args.device == "cpu" else QUICK_WIDTHS if args.quick else WIDTHS
    batch = 1 if args.device == "cpu" and args.quick else args.batch
    tuner = Tuner(args.device, batch, args.repeats, bare=True)
    roof_gbs, roof_ms, roof_bytes = copy_roof(args.device, args.repeats)
    table = Table(tuner.M, roof_gbs)
    lines = [f"# bench_kernels.py, M = {tuner.M}", ""] + [f"- {k}: {v}" for k, v in environment(args.device).items()] + [
        f"- timing: {METHOD}; inputs rotated over more than twice the L2 cache",
        "", "| op | shape | ours ms | peer ms | ours/peer speed | ours TFLOP/s or GB/s |", "|---|---|---|---|---|---|",
        f"| device copy (roof) | {roof_bytes // 2**20} MiB | {roof_ms:.3f} | - | - | {roof_gbs:,.0f} GB/s |"]
    print(lines[-1], flush=True)
    for name, D in widths.items():
        table.norms(name, tuner.layer_norm(D))
        for op, rows in tuner.products(D).items():
            table.products(name, op, rows, tuner.bare_ms)
        if args.device != "cpu":
            torch.cuda.empty_cache()
    if args.out:
        write_table("\n".join(lines + table.lines) + "\n", args.out, echo=False)


if __name__ == "__main__":
    main()
