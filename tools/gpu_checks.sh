#!/usr/bin/env bash
# A GPU sitting of ours: one device call of at most 9 minutes and 8 result files (tools/sitting.py).
#
#   bash tools/gpu_checks.sh check [--dry-run]   # python -m vitfast.check --gpu as a user runs it (records
#                                                     # and dispatch rows into the package), the families' test
#                                                     # files beside it, ViT-B on the backend with no opt-in
#   bash tools/gpu_checks.sh bench [--dry-run]   # the kernel and attention tables, the models
#   bash tools/gpu_checks.sh ssl [--dry-run]     # the SSL step's speed, the CIFAR-10 recipes by k-NN (table, plot)
#   bash tools/gpu_checks.sh debug [--dry-run]   # a failing kernel: the many-tile shapes, sanitizers
#   bash tools/gpu_checks.sh epilogue [--dry-run]  # fc1's epilogues timed, ncu's stall reasons, ViT-B by op kind
#
# Logs and tables go to $OUT (else benchmarks/results/gpu). --dry-run prints the plan with each stage's
# budget and runs the plumbing with the CUDA parts skipped. Build for the default architectures, as a user's
# install does (the records name the flags): VITFAST_CUDA_ARCHS="80;90" bash ../shared/tools/prebuild.sh.
# Carry the builds compressed (a call carries 64 MiB; the release build is 60 MiB, 6.7 MiB as xz):
# `xz -6 -c vitfast/_C.abi3.so > .gpu/_C.abi3.so.xz` (and a debug-sync build, VITFAST_DEBUG_SYNC=1 bash ../shared/tools/prebuild.sh, as .gpu/debug_sync.so.xz),
# carry .gpu; sitting.py unpacks them into place first. After a check call, copy <key>.json into
# vitfast/kernels/records/ and <gpu>.json into vitfast/kernels/dispatch_data/; after the others, the
# tables into benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
exec env PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} ${PYTHON:-python3} tools/sitting.py "$@"
