"""benchmarks/bench_models.py: the CPU smoke run exercises every code path; without a GPU the real run
says so and exits."""
import os
import subprocess
import sys

import pytest
import torch

from tests.values import COMMAND_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_models.py")


def test_cpu_quick_smoke_run(tmp_path):
    out = tmp_path / "table.md"
    env = {**COMMAND_ENV, "PYTHONPATH": ROOT}
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


def test_processes_are_summarised_by_their_medians_and_ratios(capsys):
    """--processes N: per row the median over the processes of their medians, their range, and the
    median and range of each process's own ratio to the first variant (timed beside it)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_models

    def run(base, ours):  # (model, batch, mode, label, img/s, lo ms, hi ms, ms, MiB/img)
        return [("m", 8, "inference", "timm", base, 1.0, 1.0, 1.0, 0.5),
                ("m", 8, "inference", "ours", ours, 1.0, 1.0, 1.0, 0.4),
                ("m", 8, "inference", "broken", None, None, None, None, "RuntimeError: x")]
    rows = bench_models.summarise([run(100.0, 130.0), run(100.0, 60.0), run(90.0, 99.0)])
    assert rows[0][4:10] == (100.0, 90.0, 100.0, 1.0, 1.0, 1.0)
    assert rows[1][4:7] == (99.0, 60.0, 130.0) and rows[1][7:10] == (1.1, 0.6, 1.3)  # ratios 1.3, 0.6, 1.1
    assert rows[2][4] is None and rows[2][-1] == "RuntimeError: x"
    assert "| 99 | 60-130 | 1.10x (0.60-1.30x) | 0.4 |" in bench_models.format_summary(rows[1])
    assert bench_models.without(["--processes", "3", "--out=x.md", "--quick", "--out", "y"], "--processes", "--out") \
        == ["--quick"]
    with pytest.raises(SystemExit):
        bench_models.parse_args(["--processes", "0"])
    assert "--processes: expected a count of at least 1, got 0" in capsys.readouterr().err


def test_cpu_quick_run_in_two_processes(tmp_path):
    out = tmp_path / "table.md"
    env = {**COMMAND_ENV, "PYTHONPATH": ROOT}
    res = subprocess.run([sys.executable, SCRIPT, "--device", "cpu", "--quick", "--no-lowp", "--no-8bit",
                          "--processes", "2", "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("## process ") == 2
    text = out.read_text()
    assert "processes: 2" in text and "img/s (median of 2 processes)" in text
    rows = [line for line in text.splitlines() if line.startswith("| vit")]
    assert len(rows) == 4 and all("x (" in r for r in rows), text
