#!/usr/bin/env bash
# One call on a GPU machine: build, run every CUDA test (quantizers, attention, fused ops, models),
# compute-sanitizer (memcheck, racecheck) over the kernels' own tests, then every benchmark. Logs and
# tables go to ${OUT:-benchmarks/results}. Usage: bash benchmarks/gpu_checks.sh [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
py=${PYTHON:-python}
MAX_JOBS=${MAX_JOBS:-$(nproc)} NVCC_THREADS=${NVCC_THREADS:-2} $py setup.py -q build_ext --inplace 2>&1 | tail -3
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
kernels="tests/ops/test_float_quantize.py tests/ops/test_fixed_point_quantize.py tests/ops/test_block_quantize.py
         tests/ops/test_attention.py tests/ops/test_layer_norm.py tests/ops/test_linear_fused.py tests/ops/test_lp_matmul.py"
tests="$kernels tests/models/test_vitfast_backend.py tests/quant tests/test_build.py"
$py -m pytest -q $tests 2>&1 | tee "$out/cuda_tests.log" | tail -15
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --target-processes all $py -m pytest -q -x \
      $kernels -k cuda \
      > "$out/sanitizer_$tool.log" 2>&1
    tail -3 "$out/sanitizer_$tool.log"
  done
fi
$py benchmarks/bench_quant.py --device all --out "$out/quant_h200.md" 2>&1 | tail -12
$py benchmarks/bench_attention.py --out "$out/attention_h200.md" 2>&1 | tail -30
$py benchmarks/bench_kernels.py --out "$out/kernels_h200.md" 2>&1 | tail -40
if [ "${1:-}" = "--quick" ]; then
  $py benchmarks/bench_models.py --models vit_base_patch16_224 --batch-sizes 256 --no-compile --out "$out/models_quick.md"
else
  $py benchmarks/bench_models.py --out "$out/models_h200.md"
fi
