#!/usr/bin/env bash
# FlashAttention-4 (the flash-attn-4 wheel, CuTe DSL kernels) onto the GPU machine, where
# bench_attention.py times it as a peer. Its wheels are ~100 MB, their CUDA 13 libraries alone 92 MB
# (61 MiB as xz): with the extension that is more than one device call carries (64 MiB), so two calls
# on a warm machine:
#
#   bash tools/fa4_carry.sh pack      # here: .fa4/libs.tar.xz and .fa4/wheels/ (git-ignored)
#   call A, carry [".fa4/libs.tar.xz"]:         bash tools/fa4_carry.sh unpack
#   call B, carry [".gpu", ".fa4/wheels"]:      bash tools/fa4_carry.sh install && . .fa4/env && \
#       PYTHONPATH=$PWD:$PYTHONPATH python3 benchmarks/bench_attention.py --shapes ViT-B/16 ...
#
# unpack puts the libraries into .fa4/site, an ignored folder the device keeps while the machine stays
# warm (it goes back ~30 s after a call: start call B at once); install adds the other wheels there.
set -euo pipefail
cd "$(dirname "$0")/.."
FA4=4.0.0b36 DSL=4.8.1
case "${1:-}" in
  pack)
    mkdir -p .fa4/wheels .fa4/tmp
    plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    python3 -m pip download -q --no-deps "${plat[@]}" -d .fa4/wheels "flash-attn-4==$FA4" "nvidia-cutlass-dsl==$DSL" \
      "nvidia-cutlass-dsl-libs-base==$DSL" "nvidia-cutlass-dsl-libs-core==$DSL" "apache-tvm-ffi>=0.1.11,<0.2" \
      torch-c-dlpack-ext "quack-kernels>=0.5.3"  # the GPU machine has their other needs (cuda-bindings, einops, ...)
    python3 -m pip download -q --no-deps "${plat[@]}" -d .fa4/tmp "nvidia-cutlass-dsl-libs-cu13==$DSL"
    rm -rf .fa4/tmp/x && mkdir .fa4/tmp/x
    (cd .fa4/tmp/x && python3 -m zipfile -e ../nvidia_cutlass_dsl_libs_cu13-*.whl .)
    tar cf - -C .fa4/tmp/x . | xz -9 -T2 > .fa4/libs.tar.xz
    rm -rf .fa4/tmp
    du -sh .fa4/libs.tar.xz .fa4/wheels ;;
  unpack)
    mkdir -p .fa4/site && xz -dc .fa4/libs.tar.xz | tar xf - -C .fa4/site && echo "libraries in .fa4/site" ;;
  install)
    if [ ! -d .fa4/site/nvidia_cutlass_dsl ]; then
      echo "fa4_carry.sh: .fa4/site has no libraries: run unpack first (call A)"; exit 1
    fi
    # a wheel is a zip of what goes into site-packages: extracted, the base and libraries wheels share
    # nvidia_cutlass_dsl/ (pip --target --upgrade would replace one with the other)
    for w in .fa4/wheels/*.whl; do python3 -m zipfile -e "$w" .fa4/site; done
    # site-packages would run nvidia_cutlass_dsl_packages.pth; a PYTHONPATH entry does not: its path too
    echo "PYTHONPATH=$PWD/.fa4/site:$PWD/.fa4/site/nvidia_cutlass_dsl/dsl_packages" > .fa4/env
    (. .fa4/env && export PYTHONPATH &&
      python3 -c "import flash_attn.cute as f; print('flash-attn-4', f.__version__)") ;;
  *)
    echo "usage: bash tools/fa4_carry.sh pack | unpack | install" >&2; exit 2 ;;
esac
