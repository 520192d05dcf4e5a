"""The benchmark scripts run as a user runs them, `python benchmarks/<script>.py` from the clone's root,
where Python imports the clone's ./vitfast (so its compiled extension must be there after either
install: setup.py leaves it in the clone). Tiny CPU sizes: this checks that they run and write their
tables, not their speed."""
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
from tests.values import COMMAND_ENV

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script,args", [
    ("bench_quant.py", ["--size", "4096", "--repeats", "1", "--device", "cpu"]),
    ("bench_attention.py", ["--device", "cpu", "--quick", "--shapes", "smoke"]),
    ("bench_train_loop.py", ["--device", "cpu", "--quick", "--models", "vit_pico_patch4_32", "--batch-size", "8",
                             "--steps", "2", "--train-steps", "2", "--log-every", "1"]),
    ("profile_backend.py", ["--device", "cpu", "--quick", "--train", "--steps", "1"]),
    ("profile_step.py", ["--device", "cpu", "--quick", "--steps", "1", "--variants", "timm,vitfast,fp8-chain"]),
    ("bench_sharding.py", ["--quick", "--port", "29701"]),
])
def test_benchmark_script_runs_from_the_clone(script, args, tmp_path):
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", *args, "--out", str(out)], cwd=ROOT, env=COMMAND_ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_text().count("|") > 10, out.read_text()


def test_bench_attention_names_an_unknown_shape():
    proc = subprocess.run([sys.executable, "benchmarks/bench_attention.py", "--device", "cpu", "--quick", "--shapes",
                           "smoke,ViT-Q/7"], cwd=ROOT, env=COMMAND_ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "bench_attention: --shapes: unknown label(s) ViT-Q/7; expected some of smoke"], proc.stderr


def test_profile_step_sorts_kernels_by_what_they_do():
    """Kernel names as torch.profiler reports them on an H100/H200 (ours are CUTLASS kernels named by their
    epilogue's types; cuBLAS's nvjet; cuDNN's and inductor's) land in the kind a reader expects."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from profile_step import kind_of, short_name

    ours = "void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<cute::tuple<int, int, int, int>, {}>>"
    assert kind_of(ours.format("cutlass::epilogue::fusion::Sm90Compute<vitfast::gemm::sm90::Gelu<false, "
                               "cutlass::bfloat16_t>::Fn, cutlass::bfloat16_t, float>")) == "GEMM + GELU epilogue"
    assert kind_of(ours.format("cutlass::epilogue::fusion::Sm90SrcFetch<cutlass::bfloat16_t>")) == \
        "GEMM + residual epilogue"
    assert kind_of(ours.format("cutlass::float_e4m3_t, vitfast::gemm::sm90::Gelu<false, float>::Fn")) == "FP8 GEMM"
    for name, kind in [("nvjet_tst_192x192_64x4_2x1_v_bz_coopA_TNT", "GEMM"),
                       ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_kernel0_0",
                        "attention"),
                       ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl(at::"
                        "TensorIteratorBase&, at::native::GeluType)::{lambda()#2}", "GELU (its own pass)"),
                       ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>",
                        "layer norm"),
                       ("triton_red_fused_native_layer_norm_2", "layer norm"),
                       ("triton_poi_fused_add_5", "elementwise"),
                       ("void at::native::multi_tensor_apply_kernel<at::native::FusedAdamMathFunctor<float, 4>>",
                        "optimizer"),
                       ("Memcpy DtoD (Device -> Device)", "cast or copy"),
                       ("void at::native::elementwise_kernel<128, 2, at::native::direct_copy_kernel_cuda>",
                        "cast or copy"),
                       ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper>>",
                        "reduction"),
                       ("void (anonymous namespace)::cunn_SoftMaxForward<8, float>", "softmax"),
                       ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc",
                        "convolution (patch embedding)"),
                       ("void at::native::index_elementwise_kernel<128, 4>", "elementwise"),
                       ("void at::native::unrolled_elementwise_kernel<at::native::FillFunctor<float>>", "cast or copy"),
                       ("void at::native::(anonymous namespace)::distribution_elementwise_grid_stride_kernel",
                        "elementwise"),
                       ("void at::native::_scatter_gather_elementwise_kernel<128, 8>", "elementwise"),
                       ("void at::native::tensor_kernel_scan_innermost_dim<float>", "other")]:
        assert kind_of(name) == kind, (name, kind_of(name))
    demangled = ("void cutlass::device_kernel<cutlass::GemmUniversal<cute::tuple<int, int, int, int>, "
                 "cutlass::CollectiveMma<cutlass::MainloopSm90TmaGmmaWarpSpecialized<6, "
                 "cute::tuple<cute::C<1>, cute::C<1>, cute::C<1>>, cutlass::KernelTmaWarpSpecializedPingpong>, "
                 "cute::tuple<cute::C<64>, cute::C<128>, cute::C<64>>, cutlass::bfloat16_t"
                 ">, cutlass::Sm90TreeVisitor<cutlass::Sm90Compute<vitfast::gemm::sm90::Gelu<0, cutlass::bfloat16_t, "
                 "cutlass::bfloat16_t>::Fn, cutlass::bfloat16_t, float, 2, void>>>(T1::Params)")
    assert short_name(demangled) == "CUTLASS Pingpong 64x128 GELU epilogue"


@pytest.mark.parametrize("script,line", [
    ("profile_backend.py",
     "profile_backend.py: --device cuda: no CUDA GPU here (--device cpu profiles the host side alone)"),
    ("bench_kernels.py", "bench_kernels.py: --device cuda: no CUDA GPU here (--device cpu runs the plumbing)"),
])
def test_a_gpu_script_on_no_gpu_is_one_line(script, line):
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, f"benchmarks/{script}"], cwd=ROOT, env=COMMAND_ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [line], proc.stderr


def test_bench_kernels_tables_the_tuner_s_timings(tmp_path):
    """The rows the dispatch is chosen from, each configuration's (one, "auto", on the CPU), with the
    bare product beside each forward epilogue."""
    out = tmp_path / "kernels.md"
    proc = subprocess.run([sys.executable, "benchmarks/bench_kernels.py", "--device", "cpu", "--quick", "--out",
                           str(out)], cwd=ROOT, env=COMMAND_ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = [line.split(" | ")[0].lstrip("| ") for line in out.read_text().splitlines() if line.startswith("| smoke")]
    assert labels == ["smoke layer_norm fwd", "smoke layer_norm + residual fwd", "smoke layer_norm fwd+bwd fp32",
                      "smoke layer_norm + residual fwd+bwd fp32", "smoke layer_norm fwd+bwd fp32",
                      "smoke linear_gelu fwd [auto]", "smoke linear_gelu vs bare cuBLAS GEMM (fc1) [auto]",
                      "smoke linear_gelu fwd+bwd [auto]", "smoke linear_residual fwd (fc2) [auto]",
                      "smoke linear_residual vs bare cuBLAS GEMM (fc2) [auto]",
                      "smoke linear_residual fwd+bwd (fc2) [auto]", "smoke linear_residual fwd (proj) [auto]",
                      "smoke linear_residual vs bare cuBLAS GEMM (proj) [auto]",
                      "smoke linear_residual fwd+bwd (proj) [auto]"], labels


# the sitting's call: two recipes in one table (a recipe's run, the other rows on its model, data and
# normalisation), each run's training cut at --max-time
TWO_RECIPES = ["--no-supervised", "--recipe", "mocov3_cifar10,swav_cifar10", "--holdout", "40", "--max-time",
               "900", "--set", "warmup_epochs=0"]


@pytest.mark.parametrize("extra", [["--set-both", "drop_path=0.05"],
                                   ["--no-supervised", "--ssl", "swav", "--probe-lr", "sweep"],
                                   ["--no-supervised", "--ssl", "mocov3"], TWO_RECIPES])
def test_the_ssl_knn_benchmark_writes_its_table(small_builtin, tmp_path, extra):
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, "benchmarks/ssl_knn.py", "--quick", "--data", small_builtin, "--out",
                           str(out), *extra], cwd=ROOT, env=COMMAND_ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    methods = ["mocov3", "swav"] if extra == TWO_RECIPES else [next((m for m in ("swav", "mocov3") if m in extra),
                                                                     "dino")]
    rows = [f"--ssl {m}" for m in methods] if len(methods) == 1 else \
        ["--ssl mocov3 (-c mocov3_cifar10)", "--ssl swav (-c swav_cifar10)"]  # each recipe's row names it
    assert all(f"| {row} |" in table for row in ("raw pixels", "random init", *rows)), table
    assert ("| supervised |" in table) == ("--no-supervised" not in extra) == ("Supervised run: " in table), table
    # every row's pipeline alike: the supervised run's on the device too, so its timed steps time the long run's
    assert all("--data-on-device" in line for line in table.splitlines() if line.startswith("Supervised run: "))
    assert "| linear probe top-1 % |" in table, table
    assert f"command: python benchmarks/ssl_knn.py --quick --data {small_builtin} --out {out}" in table, table
    swept = "--probe-lr" in extra  # each row's probe names the rate it kept
    assert ("most accurate on a tenth of the training features held out" in table) == swept, table
    assert (re.search(r"\| \d+\.\d\d \(lr [0-9.e-]+\) \|", table) is not None) == swept, table
    for method in methods:  # each run's command and k-NN curve
        name = {"dino": "DINO", "swav": "SwAV", "mocov3": "MoCo v3"}[method]
        assert f"{name} run: " in table and f"{name}'s k-NN top-1 during pretraining (step: %): 4: " in table, table
    # the plot beside the table: each run's k-NN (and the supervised classifier) against epochs and minutes
    svg = ElementTree.parse(tmp_path / "table.svg").getroot()
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    curves = [f"{row} k-NN" for row in rows] + (["supervised (its classifier)"] if "| supervised |" in table else [])
    assert all(label in texts for label in curves + ["raw pixels k-NN", "random init k-NN"]), texts
    assert {"top-1 % against epochs", "top-1 % against minutes"} <= set(texts), texts
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}polyline"))) == 2 * len(curves)
    if extra == TWO_RECIPES:
        assert "(120 training images as memory bank, 40 validation images)" in table, table
        assert "MoCo v3 run: -c mocov3_cifar10 " in table and "SwAV run: -c swav_cifar10 " in table, table
        assert sum("--max-time 900" in line for line in table.splitlines() if " run: " in line) == 2, table


def test_line_chart_ticks_are_round_and_cover_the_data(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from line_chart import Panel, nice_ticks, write_svg
    assert nice_ticks(25.3, 39.5) == [25, 30, 35, 40] and nice_ticks(0, 0.7) == [0, 0.2, 0.4, 0.6, 0.8]
    assert nice_ticks(3, 3) == [3, 3.2, 3.4, 3.6, 3.8, 4]  # one value: a unit range, not a division by zero
    panel = Panel("k-NN", "epochs", "top-1 %")
    panel.add_line("run", [(2, 30.0), (0, 20.0), (4, 35.0)])  # drawn in x order
    panel.add_line("no validations yet", [])  # left out, not an empty polyline
    panel.add_ref("raw pixels", 37.3)
    write_svg([panel], tmp_path / "a.svg", "caption")
    svg = ElementTree.parse(tmp_path / "a.svg").getroot()
    (line,) = svg.iter("{http://www.w3.org/2000/svg}polyline")
    xs = [float(p.split(",")[0]) for p in line.get("points").split()]
    ys = [float(p.split(",")[1]) for p in line.get("points").split()]
    assert xs == sorted(xs) and ys[0] > ys[1] > ys[2]  # higher accuracy is higher up (smaller y)
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "run" in texts and "raw pixels" in texts and "no validations yet" not in texts and "caption" in texts


@pytest.mark.parametrize("recipes, flag, expected", [
    ("mocov3_cifar10,swav_builtin", [], "--recipe: mocov3_cifar10,swav_builtin differ in model, model_kwargs"),
    ("mocov3_cifar10,swav_cifar10", ["--ssl", "dino"], "--ssl: several recipes (mocov3_cifar10,swav_cifar10) each "
                                                       "train their own method"),
])
def test_the_ssl_knn_benchmark_refuses_recipes_it_cannot_compare_in_one_line(recipes, flag, expected):
    proc = subprocess.run([sys.executable, "benchmarks/ssl_knn.py", "--recipe", recipes, *flag], cwd=ROOT,
                          env=COMMAND_ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("ssl_knn.py: " + expected), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_ssl_ablation_writes_its_table_and_reads_finished_rows_back(small_builtin, tmp_path):
    args = [sys.executable, "benchmarks/ssl_ablation.py", "--data", small_builtin, "--model", "vit_tiny_patch16_224",
            "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2", "--steps", "4",
            "--batch-size", "32", "--only", "base", "out-256", "mocov3", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "table.md")]
    proc = subprocess.run(args, cwd=ROOT, env=COMMAND_ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "table.md").read_text()
    for row in ("raw pixels", "random init", "base", "out-256", "mocov3"):
        assert f"| {row} |" in table, table
    assert "| out-256 | output dimension | `--head-out-dim 256` |" in table, table
    assert "- mocov3: `python -m vitfast.train --model vit_tiny_patch16_224 " in table and "--ssl mocov3 " in table
    assert re.search(r"\| \d+\.\d{3} \(5\.545\) \|", table), table  # ln 256 = 5.545
    again = subprocess.run(args, cwd=ROOT, env=COMMAND_ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "[base] " not in again.stdout, again.stdout  # read back, not run again
    assert (tmp_path / "table.md").read_text().split("date:")[0] == table.split("date:")[0]


def test_the_ssl_step_benchmark_writes_its_table(small_builtin, tmp_path):
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, "benchmarks/bench_ssl_step.py", "--device", "cpu", "--quick", "--data",
                           small_builtin, "--backends", "sdpa", "--out", str(out)], cwd=ROOT, env=COMMAND_ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    for row in ("supervised", "DINO, 2 global + 6 local", "SwAV, 2 global + 6 local"):
        assert f"| {row} |" in table, table
    assert "| supervised | 1 |" in table and "| 1.00x |" in table, table


def test_the_fsdp_memory_table_shards_what_ddp_holds_whole(tmp_path):
    """benchmarks/fsdp_memory.py: a rank's bytes under FSDP are DDP's divided by the ranks, but for the
    padding of each tensor's first dimension to a multiple of them (ViT-g/G build on the meta device)."""
    out = tmp_path / "memory.md"
    proc = subprocess.run([sys.executable, "benchmarks/fsdp_memory.py", "--models",
                           "vit_base_patch16_224,vit_giant_patch14_224", "--ranks", "2,8", "--out", str(out)],
                          cwd=ROOT, env=COMMAND_ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| vit_")]
    for model in ("vit_base_patch16_224", "vit_giant_patch14_224"):
        ddp, *fsdp = [r for r in rows if r[0].strip() == model]
        assert ddp[2].strip() == "DDP" and [r[3].strip() for r in fsdp] == ["2", "8"]
        for r in fsdp:
            assert abs(float(r[7]) * int(r[3]) - float(ddp[7])) <= 0.02 * float(ddp[7]) + 0.01, (ddp, r)
    assert "| vit_giant_patch14_224 | 1,013M |" in out.read_text()  # timm's ViT-g/14: 1,012.6M parameters
    bad = subprocess.run([sys.executable, "benchmarks/fsdp_memory.py", "--ranks", "1"], cwd=ROOT, env=COMMAND_ENV,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--ranks must be whole numbers of at least 2" in bad.stderr


def test_the_epilogue_probe_s_fp8_accuracy_rows_measure_the_accumulation_error():
    """tools/epilogue_probe.py's FP8 accumulation table on the CPU, whose fp8_linear sums in fp32: the
    exact sum is 0 by construction, so what is left is fp32's rounding, far below the GPU accumulator's
    2^-13.8 of the sum of |products|; a row per configuration and K."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import epilogue_probe
    finally:
        sys.path.remove(str(ROOT / "tools"))
    import vitfast.ops as ops

    lines = epilogue_probe.fp8_accuracy(ops, ["auto", "coop_128x128"], "cpu", widths=(64, 256), M=32, N=48)
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [("[auto]", "64"), ("[coop_128x128]", "64"), ("[auto]", "256"),
                                            ("[coop_128x128]", "256")]
    for r in rows:
        worst = r[2]
        assert worst == "0" or -40 < float(worst[2:]) < -18, r  # fp32's rounding at most, nothing like 2^-13
        assert 0 <= float(r[4].rstrip("%")) < 100


def test_the_epilogue_probe_s_training_rows_run_each_piece():
    """tools/epilogue_probe.py's training rows (linear_gelu's backward by piece) on CPU tensors: each row's
    function runs (the per-configuration rows need the Hopper kernels), the bias gradients agree."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import epilogue_probe
    finally:
        sys.path.remove(str(ROOT / "tools"))
    import torch

    import vitfast.ops as ops
    from vitfast.ops._linear_args import sm90_configs

    g = torch.Generator().manual_seed(0)
    xb = [(torch.randn(12, 8, generator=g).bfloat16(),) for _ in range(4)]
    wb, bb = torch.randn(32, 8, generator=g).bfloat16(), torch.randn(32, generator=g).bfloat16()
    ran = {}

    def row(label, fn, sets, products=1):
        ran[label] = fn(*sets[0])

    epilogue_probe.training_fc1(row, ops, sm90_configs, xb, wb, bb, "cpu")
    assert any("gelu_grad_bias" in k for k in ran) and any("ATen gelu_backward" in k for k in ran), list(ran)
    ours, aten = ran["training fc1: gelu_grad_bias (GELU and bias gradients, one pass)"], \
        ran["training fc1: ATen gelu_backward + bias sum"]
    assert torch.allclose(ours[1].float(), aten.float(), rtol=1e-2, atol=1e-2)
    whole = [k for k in ran if "fwd + bwd" in k]
    assert whole[0] == "training fc1: ATen fwd + bwd" and len(ran[whole[0]]) == 3
