#!/usr/bin/env bash
# A GPU sitting. The sitting is two device calls of at most 9 minutes each (benchmarks/sitting.py):
#
#   bash benchmarks/gpu_checks.sh call1 [--dry-run]   # the attention shapes, every family's tests, the records
#   bash benchmarks/gpu_checks.sh call2 [--dry-run]   # sanitizers, tune.py, bench_models
#   bash benchmarks/gpu_checks.sh short [--dry-run]   # one call: the unrecorded families' tests, tune.py,
#                                                     # a ViT-Ti profile, the backend against timm eager
#   bash benchmarks/gpu_checks.sh ssl [--dry-run]     # one call: the SSL step's speed, dino_cifar10 by k-NN
#   bash benchmarks/gpu_checks.sh check [--dry-run]   # one call: vitfast.check --gpu as a user runs it, the
#                                                     # families' test files beside it, ViT-B on the backend
#
# each writing at most 8 files into $OUT; then here: python benchmarks/write_records.py <files>/results.json
# (the records: vitfast/kernels/records/), the tune tables into benchmarks/results/ and python
# benchmarks/write_dispatch.py on them (dispatch_data/). On the GPU machine both go into its checkout
# as the call makes them, so the call's later stages run what the records allow.
# --dry-run prints the plan with each stage's budget and runs the plumbing with the CUDA parts skipped.
# A debug-sync build carried beside the release one (VITFAST_DEBUG_SYNC_SO=path/to/_C.abi3.so, made by
# VITFAST_DEBUG_SYNC=1 bash ../shared/tools/prebuild.sh) reruns a shape that hangs or crashes.
# Carry the builds compressed (a call carries 64 MiB; the release build is 59 MiB, 6.5 MiB as xz):
# `xz -6 -c vitfast/_C.abi3.so > .gpu/_C.abi3.so.xz` (and the debug-sync build as .gpu/debug_sync.so.xz),
# carry .gpu; sitting.py unpacks them into place first (unpack_carried).
#
# The single stages of earlier sittings stay for runs by hand. Logs and tables go to
# ${OUT:-benchmarks/results/gpu}. Stages run in the order given:
#
#   bash benchmarks/gpu_checks.sh [build] [tests] [sanitize] [tune] [bench] [models] [models-quick]
#                                 [train-tests] [train-loop] [cifar10]   (CIFAR_ARGS=... adds flags to the recipe's run)
#                                 [attention-shapes] [sm90-attention]
#
# attention-shapes: the Hopper attention's many-tile shapes first (the first GPU run's launch failure,
# fixed since by reading the protocol: csrc/attention/NOTES.md), each test case in a process of its own
# with a time limit, one line each: ok, wrong (a failed comparison), hang (the limit) or crash.
# sm90-attention: the Hopper attention kernels' tests alone.
#
# tune: benchmarks/tune.py, the kernel and attention tables and the dispatch data measured from them,
# all under $out (copy them into benchmarks/results/ and vitfast/layers/dispatch_data/ after the call).
#
# build compiles the extension in place (MAX_JOBS=$(nproc)); without it a prebuilt vitfast/_C*.so
# (../shared/tools/prebuild.sh) is used as it is. Each stage has its own time limit, so one hung kernel
# costs that stage, not the call.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == call1 || "${1:-}" == call2 || "${1:-}" == short || "${1:-}" == ssl || "${1:-}" == check ]]; then
  exec env PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} ${PYTHON:-python3} benchmarks/sitting.py "$@"
fi
out=${OUT:-benchmarks/results/gpu}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# A sitting tests and times every kernel, whether or not a record verifies it on this kind of GPU yet
# (vitfast.kernels.gate): by default only recorded ones run.
export VITFAST_UNVERIFIED_KERNELS=1
stages=${*:-build tests sanitize tune bench models}
# prebuild.sh builds for sm_90 alone; tests/test_build.py reads the archs asked for from here.
[[ " $stages " == *" build "* ]] || export VITFAST_CUDA_ARCHS=${VITFAST_CUDA_ARCHS:-90}
kernels="tests/ops/test_float_quantize.py tests/ops/test_fixed_point_quantize.py tests/ops/test_block_quantize.py
         tests/ops/test_attention.py tests/ops/test_attention_sm90.py tests/ops/test_attention_bwd_sm90.py
         tests/ops/test_layer_norm.py tests/ops/test_layer_norm_fp8.py tests/ops/test_linear_fused.py tests/ops/test_lp_matmul.py
         tests/ops/test_gemm_sm90.py tests/ops/test_fp8_linear.py tests/ops/test_scaled_cast.py"
stamp() { echo "== $1 at $(date -u +%H:%M:%S) (${SECONDS}s)"; }
# A pytest log's failures and errors (-v's inline results too) and its totals.
outcomes() { grep -E "^(FAILED|ERROR)|\] (FAILED|ERROR) |passed|failed" "$1" | tail -40; }

for stage in $stages; do
  stamp "$stage"
  case $stage in
    build)
      MAX_JOBS=${MAX_JOBS:-$(nproc)} $py setup.py -q build_ext --inplace 2>&1 | tail -3 ;;
    tests)
      nvidia-smi > "$out/nvidia-smi.txt" 2>&1
      $py -c "import torch, vitfast; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), 'kernels:', vitfast.has_cuda_kernels())" 2>&1 | tee "$out/env.txt"
      # xdist spreads the CPU halves of these files; the GPU tests share the one card. -v names every
      # result as it comes, so a run cut by the time limit still says which tests failed.
      timeout ${TESTS_LIMIT:-420} $py -m pytest -v -p no:cacheprovider -n ${WORKERS:-8} --timeout 240 -rfE \
        $kernels tests/models/test_vitfast_backend.py tests/models/test_dispatch.py tests/quant tests/test_build.py \
        tests/test_bench_timing.py \
        > "$out/cuda_tests.log" 2>&1
      outcomes "$out/cuda_tests.log" ;;
    attention-shapes)
      $py -m pytest --collect-only -q -p no:cacheprovider -k "many_tiles or many_heads" \
        tests/ops/test_attention_sm90.py tests/ops/test_attention_bwd_sm90.py 2>/dev/null | grep "::" > "$out/shapes.txt"
      : > "$out/attention_shapes.log"
      while read -r node; do
        timeout ${SHAPE_LIMIT:-60} $py -m pytest -q -p no:cacheprovider -rs "$node" \
          > "$out/shape.log" 2>&1
        rc=$?
        cat "$out/shape.log" >> "$out/attention_shapes.log"
        case $rc in 0) verdict=ok ;; 1) verdict=wrong ;; 124) verdict=hang ;; *) verdict="crash (exit $rc)" ;; esac
        [ $rc = 0 ] && grep -q " skipped" "$out/shape.log" && verdict=skipped
        echo "$verdict  $node" | tee -a "$out/attention_shapes.log"
      done < "$out/shapes.txt"
      rm -f "$out/shape.log" ;;
    sm90-attention)
      timeout ${SM90_ATTENTION_LIMIT:-400} $py -m pytest -v -p no:cacheprovider -n ${WORKERS:-8} \
        --timeout 240 -rfE tests/ops/test_attention_sm90.py tests/ops/test_attention_bwd_sm90.py \
        > "$out/sm90_attention_tests.log" 2>&1
      outcomes "$out/sm90_attention_tests.log" ;;
    sanitize)
      # benchmarks/sanitize_ops.py reaches every kernel (tails, head dims, backward) at small sizes.
      for tool in memcheck racecheck; do
        timeout ${SANITIZE_LIMIT:-200} compute-sanitizer --tool $tool --error-exitcode 9 \
          $py benchmarks/sanitize_ops.py > "$out/sanitizer_$tool.log" 2>&1
        echo "$tool: exit $?"; grep -E "ERROR SUMMARY|: ran|Error|error" "$out/sanitizer_$tool.log" | head -12
      done ;;
    tune)
      timeout ${TUNE_LIMIT:-540} $py benchmarks/tune.py --out-dir "$out" --data-dir "$out/dispatch_data" 2>&1 \
        | grep -v "^smoke" | tail -60 ;;
    bench)
      # the quantizers (the kernels and attention tables come from the tune stage)
      timeout 120 $py benchmarks/bench_quant.py --device cuda --out "$out/quant.md" 2>&1 | tail -12 ;;
    models-quick)
      timeout 300 $py benchmarks/bench_models.py --models vit_base_patch16_224 --batch-sizes 256 --no-compile \
        --out "$out/models_quick.md" 2>&1 | tail -20 ;;
    models)
      timeout ${MODELS_LIMIT:-540} $py benchmarks/bench_models.py --batch-sizes 256 --repeats 10 \
        --out "$out/models.md" 2>&1 | tail -60 ;;
    train-tests)
      # the training loop and data paths on the GPU (the device defaults to cuda there)
      timeout ${TRAIN_TESTS_LIMIT:-240} $py -m pytest -q -p no:cacheprovider -n ${WORKERS:-8} --timeout 200 -rfE \
        tests/training/test_train.py tests/data tests/models/test_dispatch.py > "$out/train_tests.log" 2>&1
      outcomes "$out/train_tests.log" ;;
    train-loop)
      timeout ${TRAIN_LOOP_LIMIT:-240} $py benchmarks/bench_train_loop.py --loader-workers 12 \
        --out "$out/train_loop.md" 2>&1 | grep -v Warning | tail -12 ;;
    cifar10)
      # the packaged recipe on the CIFAR-10 JPEGs: .gpu/cifar10-jpeg-train.tar.gz (git-ignored, carried)
      mkdir -p data/cifar10 && tar xzf .gpu/cifar10-jpeg-train.tar.gz -C data/cifar10
      timeout ${CIFAR_LIMIT:-590} $py -m vitfast.train -c cifar10_vit --output "$out/cifar10_vit" --overwrite \
        ${CIFAR_ARGS:-} > "$out/cifar10_vit.log" 2>&1
      echo "exit $?"; grep -v "^\[train\]" "$out/cifar10_vit.log" | tail -25 ;;
    *) echo "unknown stage $stage (build, tests, attention-shapes, sm90-attention, sanitize, tune, bench, models, models-quick, train-tests,"\
            "train-loop, cifar10)"
       exit 2 ;;
  esac
done
stamp done
