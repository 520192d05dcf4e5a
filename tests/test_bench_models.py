"""benchmarks/bench_models.py: the CPU smoke run exercises every code path; without a GPU the real run
says so and exits."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_models.py")


def test_cpu_quick_smoke_run(tmp_path):
    out = tmp_path / "table.md"
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, SCRIPT, "--device", "cpu", "--quick", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    text = out.read_text()
    for what in ("vitfast backend", "timm eager (SDPA)", "vitfast sdpa (eager baseline)", "FP16_16 convert_ptq (lp_matmul)", "FP16_16 route_lowp (fp16 model)",
                 "FP16_32 fake-quant emulation", "plain fp16", "training bf16 autocast", "commit:", "torch:",
                 "FP8_E4M3_SCALED Linear8, static scales [5x fp8 torch._scaled_mm]",
                 "FP8 chain (convert_fp8) [1 blocks on ATen composites (emulation)]",
                 "INT8 Linear8, dynamic scales [5x int8 torch._int_mm]", "INT8 emulation"):
        assert what in text, what
    rows = [line for line in text.splitlines() if line.startswith("| vit") or line.startswith("| dvt")]
    assert rows and not any("Error" in r for r in rows), text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_without_a_gpu_it_exits_with_a_clear_message():
    res = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert res.returncode != 0 and "needs a CUDA GPU" in res.stderr
