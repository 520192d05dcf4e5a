"""Where a model's step goes on the GPU, by op kind: torch.profiler's kernel times over a few steps of
one model, exactly as bench_models.py times them (bf16 inference; training under bf16 autocast with
AdamW), for timm eager, torch.compile(timm), the vitfast backend, torch.compile of it and the FP8 chain
(inference). Each kernel is sorted into a kind by its name (KINDS); the table gives each kind's ms per
step and its share of the step's wall time, and the wall time no kernel covers (the GPU waiting on the
host, or between kernels). The heaviest kernels of each variant follow, so the sorting can be checked.

    python benchmarks/profile_step.py [--model vit_base_patch16_224] [--batch 256] [--modes inference]
                                      [--variants timm,vitfast] [--train-variants timm] [--out FILE]
    python benchmarks/profile_step.py --device cpu --quick     # a smoke run: a tiny model, the CPU's ops sorted
"""
import argparse
import re

import torch

from bench_models import bench_inference, bench_training, build, images, prepare  # the steps it times
from common import environment, write_table  # benchmarks/common.py
from profile_backend import QUICK, profiled_steps  # the same tiny model and the same profiled steps

# (kind, pattern on the kernel's name), the first match wins: epilogue-fused GEMMs before plain ones,
# FP8 GEMMs before bf16 ones, GEMMs before the elementwise kinds whose words their names may contain.
# Our Hopper GEMMs are CUTLASS kernels named by their epilogue's types (csrc/gemm/sm90/gemm_sm90.cuh):
# vitfast::gemm::sm90::Gelu for fc1, Sm90SrcFetch (the residual, C) for proj and fc2.
KINDS = [
    ("attention", r"flash|fmha|attention|attn|sdpa|_efficient_|cudnn.*mha"),
    ("convolution (patch embedding)", r"conv|implicit_gemm|fprop|wgrad|dgrad|im2col"),
    ("FP8 GEMM", r"(gemm|cutlass|nvjet|xmma|matmul).*(e4m3|e5m2|fp8|float8)|(e4m3|e5m2|fp8|float8).*(gemm|cutlass|nvjet)"),
    ("GEMM + GELU epilogue", r"(cutlass|gemm|nvjet|xmma).*gelu"),
    ("GEMM + residual epilogue", r"(cutlass|gemm).*(srcfetch|residual)"),
    ("GEMM", r"gemm|cutlass|nvjet|xmma|wgmma|cublas|matmul|aten::(mm|addmm|bmm|linear|matmul)$"),
    ("layer norm", r"layer_?norm"),
    ("softmax", r"softmax"),
    ("GELU (its own pass)", r"gelu"),
    ("optimizer", r"adam|multi_tensor|foreach|sgd"),
    ("reduction", r"reduce|triton_(red|per)_|aten::(sum|mean)$"),
    ("cast or copy", r"copy|cast|convert|memcpy|memset|fill|cat_|aten::(to|_to_copy|copy_|cat|fill_|zero_)$"),
    ("elementwise", r"elementwise|triton_poi_|aten::(add|mul|div|sub|add_|mul_)$"),
]


def demangled(names):
    """{name: its C++ name} for mangled kernel names (c++filt, where the machine has it)."""
    import shutil
    import subprocess

    mangled = [n for n in names if n.startswith("_Z")]
    if not mangled or shutil.which("c++filt") is None:
        return {}
    out = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(mangled, out)) if len(out) == len(mangled) else {}


def short_name(name):
    """A kernel's name for the tables: a CUTLASS GEMM (ours) by schedule, tile and epilogue; others cut short."""
    if "GemmUniversal" in name and not name.startswith("_Z"):
        schedule = next((s for s in ("Pingpong", "Cooperative") if s in name), "")
        tile = re.search(r"KernelTmaWarpSpecialized\w*>, cute::tuple<cute::C<(\d+)>, cute::C<(\d+)>", name)
        epilogue = kind_of(name).replace("FP8 GEMM", "FP8").replace("GEMM", "").strip(" +") or "bias"
        return " ".join(p for p in ("CUTLASS", schedule, "x".join(tile.groups()) if tile else "", epilogue) if p)
    return name[:110]


def kind_of(name):
    low = name.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, low)), "other")


# variant -> (source, backend, compile mode, trains): how bench_models.py builds the same row
VARIANTS = {"timm": ("timm", None, None, True), "timm-compiled": ("timm", None, "default", True),
            "vitfast": ("vitfast", "vitfast", None, True),
            "vitfast-compiled": ("vitfast", "vitfast", "default", True),
            "fp8-chain": ("fp8", None, None, False)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="profiled steps per variant (after 3 unprofiled ones)")
    p.add_argument("--modes", default="inference,training", help="comma-separated: inference, training")
    p.add_argument("--variants", default="timm,timm-compiled,vitfast,vitfast-compiled,fp8-chain",
                   help="comma-separated, among " + ", ".join(VARIANTS))
    p.add_argument("--train-variants", help="the variants trained, among --variants' (default: all of them that "
                   "train; compiling a training step takes a minute or two each)")
    p.add_argument("--top", type=int, default=10, help="kernels listed per variant and mode, by device time")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        p.error(f"--steps and --batch: expected at least 1, got {args.steps} and {args.batch}")
    if not args.modes or not set(args.modes.split(",")) <= {"inference", "training"}:
        p.error(f"--modes: expected inference, training or both, got {args.modes!r}")
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"--variants: expected names among {', '.join(VARIANTS)}, got {', '.join(unknown)}")
    trained = [v for v in args.variants.split(",") if VARIANTS[v][3]]
    if args.train_variants is not None:
        asked = args.train_variants.split(",")
        if not set(asked) <= set(trained):
            p.error(f"--train-variants: expected names among {', '.join(trained)}, got {args.train_variants}")
        trained = asked
    args.trained = trained
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU here (--device cpu sorts the host's ops instead)")
    return args


def fp8_chain(name, kw, device):
    from vitfast.quant.fp8_chain import convert_fp8

    model = build(name, "vitfast", kw).to(device).eval()
    return convert_fp8(model, [images(8, kw.get("img_size", 224), device)]).to(torch.bfloat16)


def profiled(step, steps, cuda):
    """(wall ms per step, [(kernel or op name, ms per step)]): the kernels on a GPU, the ops' self time on
    a CPU."""
    wall, prof = profiled_steps(step, steps, cuda)
    times = {}
    for e in prof.events():
        on_device = e.device_type == torch.autograd.DeviceType.CUDA
        if cuda and on_device:
            times[e.name] = times.get(e.name, 0.0) + e.time_range.elapsed_us()
        elif not cuda and not on_device and e.name.startswith("aten::"):
            times[e.name] = times.get(e.name, 0.0) + e.self_cpu_time_total
    names = demangled(times)
    return wall, [(names.get(n, n), us / 1e3 / steps) for n, us in times.items()]


def by_kind(kernels):
    out = {}
    for name, ms in kernels:
        out[kind_of(name)] = out.get(kind_of(name), 0.0) + ms
    return out


def table(results):
    """results: [(label, wall ms, {kind: ms})] of one mode -> markdown lines, kinds by the first's order."""
    kinds = [k for k, _ in KINDS] + ["other"]
    kinds = [k for k in kinds if any(r[2].get(k) for r in results)]
    head = "| kind | " + " | ".join(label for label, _, _ in results) + " |"
    lines = [head, "|---|" + "---|" * len(results)]

    def cell(ms, wall):
        return f"{ms:.2f} ({100 * ms / wall:.0f}%)" if ms else "-"

    for k in kinds:
        lines.append(f"| {k} | " + " | ".join(cell(r[2].get(k, 0.0), r[1]) for r in results) + " |")
    lines.append("| **kernels, all** | " + " | ".join(cell(sum(r[2].values()), r[1]) for r in results) + " |")
    lines.append("| no kernel running | " + " | ".join(cell(max(r[1] - sum(r[2].values()), 0.0), r[1])
                                                      for r in results) + " |")
    lines.append("| **wall ms/step** | " + " | ".join(f"{r[1]:.2f}" for r in results) + " |")
    return lines


def main(argv=None):
    args = parse_args(argv)
    kw, batch = (QUICK, 2) if args.quick else ({}, args.batch)
    cuda = args.device == "cuda"
    env = environment(args.device)
    lines = ["# profile_step.py: the step's GPU time by op kind", "",
             *(f"- {k}: {v}" for k, v in env.items()),
             f"- model: {args.model}, batch {batch}, bench_models.py's steps, {args.steps} profiled after 3 "
             "(torch.profiler; its own overhead is in the wall time)",
             "- each cell: ms per step (share of the wall time); kinds sorted by kernel name (profile_step.KINDS);"
             " 'no kernel running' = wall time less the kernels' (kernels run one at a time on one stream)"
             + ("" if cuda else "; on the CPU: the aten ops' self time instead of kernels"), ""]
    tops = []
    for mode in args.modes.split(","):
        train = mode == "training"
        results = []
        for variant in args.variants.split(","):
            source, backend, compile_mode, _ = VARIANTS[variant]
            if train and variant not in args.trained:
                continue
            dtype = torch.float32 if train else torch.bfloat16
            if source == "fp8":
                model = run = fp8_chain(args.model, kw, args.device)
            else:
                model, run = prepare(lambda: build(args.model, source, kw), backend, compile_mode, args.device, dtype)
            x = images(batch, kw.get("img_size", 224), args.device, dtype)
            step = bench_training(model.train(), run, x, args.device) if train else bench_inference(model.eval(), x)
            wall, kernels = profiled(step, args.steps, cuda)
            results.append((variant, wall, by_kind(kernels)))
            tops += ["", f"## {variant}, {mode}: the kernels with the most device time (ms per step)", "",
                     "| kernel | kind | ms |", "|---|---|---|"]
            tops += [f"| {short_name(name).replace('|', '/')} | {kind_of(name)} | {ms:.3f} |"
                     for name, ms in sorted(kernels, key=lambda k: -k[1])[:args.top]]
            print(f"{variant} {mode}: {wall:.2f} ms/step, kernels {sum(ms for _, ms in kernels):.2f} ms", flush=True)
            model = run = x = step = None
            if cuda:
                torch.cuda.empty_cache()
        lines += [f"## {mode}", "", *table(results), ""]
    write_table("\n".join(lines + tops) + "\n", args.out)


if __name__ == "__main__":
    main()
