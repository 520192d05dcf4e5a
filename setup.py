"""Builds vitfast._C: CPU kernels always, CUDA kernels whenever a CUDA toolkit (nvcc) is found
and the installed torch is a CUDA build. A GPU is never needed to build.

Environment:
  VITFAST_SKIP_CUDA=1        build the CPU kernels only
  VITFAST_CUDA_ARCHS="80;90" compute capabilities to compile for (PTX is added for the newest); with 90
                             among them and CUTLASS's headers installed (pip install --no-deps
                             nvidia-cutlass==4.2.0.0), csrc/gemm/sm90/ adds the Hopper (sm_90a) GEMMs
  VITFAST_DEBUG_SYNC=1       the Hopper attention kernels with bounded barrier waits and phase checks that
                             trap naming block, role, barrier, stage, phase and work item
                             (csrc/attention/sm90/sm90_sync.cuh): a GPU sitting's first run of them
  VITFAST_PREBUILT=path      install this already built vitfast._C (a _C.abi3.so built elsewhere against
                             the same torch, e.g. by ../shared/tools/prebuild.sh) instead of compiling:
                             its kernels and fingerprints are those it was built with
  MAX_JOBS, NVCC_THREADS     parallelism of ninja and of each nvcc
  CUDA_HOME                  the toolkit, when nvcc on PATH is not enough to find it
"""
import concurrent.futures
import filecmp
import glob
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

try:
    import torch
except ImportError:
    sys.exit(
        "vitfast compiles its kernels against the torch already installed, and none was found.\n"
        "Install torch first (for example: pip install -c constraints.txt torch torchvision),\n"
        "then: pip install --no-build-isolation ."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
PREBUILT = os.environ.get("VITFAST_PREBUILT")
if PREBUILT is not None and not os.path.isfile(PREBUILT):
    sys.exit(f"VITFAST_PREBUILT: no file {PREBUILT!r}; expected a built vitfast/_C.abi3.so")


def find_cuda_home():
    """The toolkit folder (holding bin/nvcc and include/cuda_runtime.h), or None."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        # nvcc on PATH may be a wrapper script (e.g. /usr/local/bin/nvcc), so also try its target.
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for home in candidates:
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")) and os.path.isfile(
            os.path.join(home, "include", "cuda_runtime.h")
        ):
            return home
    return None


def wheel_cuda_include_dirs():
    """Include folders of torch's pip CUDA packages (nvidia/*/include): they ship the cuBLAS and
    cuSPARSE headers that ATen's CUDA headers include and that a runtime-only toolkit lacks."""
    import site

    roots = set(site.getsitepackages() + [site.getusersitepackages()])
    roots.add(os.path.dirname(os.path.dirname(torch.__file__)))
    dirs = []
    for root in sorted(roots):
        dirs += sorted(glob.glob(os.path.join(root, "nvidia", "*", "include")))
    return [d for d in dirs if glob.glob(os.path.join(d, "cublas*.h")) or glob.glob(os.path.join(d, "cusparse*.h"))]


def cuda_archs():
    archs = os.environ.get("VITFAST_CUDA_ARCHS", "80;90").replace(",", ";").split(";")
    archs = [a.strip().replace("sm_", "").replace(".", "") for a in archs if a.strip()]
    if not archs or not all(a.isdigit() for a in archs):
        sys.exit(f"VITFAST_CUDA_ARCHS must list compute capabilities like '80;90', got {os.environ.get('VITFAST_CUDA_ARCHS')!r}")
    return archs


def cuda_arch_flags():
    archs = cuda_archs()
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    newest = max(archs, key=int)
    return flags + [f"-gencode=arch=compute_{newest},code=compute_{newest}"]


def cutlass_include_dirs():
    """CUTLASS's and CuTe's headers from the nvidia-cutlass wheel (cutlass_library/source/include and
    .../tools/util/include), found without importing the package; None when it is not installed."""
    spec = importlib.util.find_spec("cutlass_library")
    for root in (spec.submodule_search_locations or []) if spec else []:
        dirs = [os.path.join(root, "source", "include"), os.path.join(root, "source", "tools", "util", "include")]
        if os.path.isfile(os.path.join(dirs[0], "cutlass", "cutlass.h")) and os.path.isdir(dirs[1]):
            return dirs
    return None


# The Hopper kernels, each folder with the headers outside it that its files include.
SM90_DIRS = {
    os.path.join("csrc", "gemm", "sm90"): [os.path.join("csrc", "gemm", h)
                                           for h in ("fp8_promotions.h", "gelu_poly.h", "gemm_params.h", "gemm_path.h",
                                                     "sm90_config.h")]
                                          + [os.path.join("csrc", h) for h in ("kernel_path.h", "macros.h")],
    os.path.join("csrc", "attention", "sm90"): [os.path.join("csrc", "attention", h)
                                                for h in ("attention_params.h", "attention_path.h", "mma.cuh")]
                                               + [os.path.join("csrc", "kernel_path.h")],
}


DEBUG_SYNC = os.environ.get("VITFAST_DEBUG_SYNC", "0") in ("1", "true", "yes")
SM90_FLAGS = (["-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", "-lineinfo",
               "-gencode=arch=compute_90a,code=sm_90a"] + (["-DVITFAST_DEBUG_SYNC"] if DEBUG_SYNC else []))


def compile_sm90(build_temp, cuda_home, cutlass_dirs, pool):
    """nvcc each .cu of SM90_DIRS for sm_90a alone (wgmma and TMA need the arch-specific target; the
    rest of the extension keeps its portable gencodes), on `pool`, without torch's headers. Returns
    (object file, future) pairs; an object newer than its sources is reused."""
    # Objects of the debug-sync build in a folder of their own: an object is reused by its age alone.
    out_dir = os.path.join(build_temp, "sm90_debug_sync" if DEBUG_SYNC else "sm90")
    os.makedirs(out_dir, exist_ok=True)
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    flags = SM90_FLAGS + [f"-I{d}" for d in [os.path.join(ROOT, "csrc")] + cutlass_dirs]

    def build(src, obj, newest_header):
        if os.path.exists(obj) and os.path.getmtime(obj) > max(os.path.getmtime(src), newest_header):
            return
        cmd = [nvcc, "-c", src, "-o", obj] + flags
        print(" ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)

    jobs = []
    for folder, outside in SM90_DIRS.items():
        headers = [h for h in glob.glob(os.path.join(folder, "*")) if h.endswith((".h", ".cuh", ".hpp"))] + outside
        newest_header = max(os.path.getmtime(h) for h in headers)
        for src in sorted(glob.glob(os.path.join(folder, "*.cu"))):
            obj = os.path.join(out_dir, os.path.basename(src).replace(".cu", ".o"))
            jobs.append((obj, pool.submit(build, src, obj, newest_header)))
    return jobs


def nvcc_version(cuda_home):
    """nvcc's release and build lines ("Cuda compilation tools, release 13.0, V13.0.88; Build ..."), or None."""
    if not cuda_home:
        return None
    out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True)
    return "; ".join(line.strip() for line in out.stdout.splitlines() if line.startswith(("Cuda", "Build")))


def cutlass_version(cutlass_dirs):
    """CUTLASS's version from its headers (cutlass/version.h), or None when none are used."""
    if not cutlass_dirs:
        return None
    with open(os.path.join(cutlass_dirs[0], "cutlass", "version.h")) as f:
        text = f.read()
    parts = [re.search(rf"#define CUTLASS_{p} (\d+)", text) for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) for m in parts if m)


def write_fingerprints(toolchain):
    """csrc/generated/kernel_fingerprints.h from vitfast/kernels/fingerprints.py (loaded by its path: the
    package itself imports the extension being built), rewritten only when it changes so nothing
    rebuilds without cause. toolchain: what compiles the kernels, -I folders left out (where a header
    lives is no part of what it says)."""
    path = os.path.join(ROOT, "vitfast", "kernels", "fingerprints.py")
    spec = importlib.util.spec_from_file_location("vitfast_fingerprints", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    csrc = os.path.join(ROOT, "csrc")
    text = module.header(module.fingerprints(csrc, toolchain), toolchain)
    path = os.path.join(csrc, "generated", "kernel_fingerprints.h")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.isfile(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


cuda_home = None
if os.environ.get("VITFAST_SKIP_CUDA", "0") not in ("1", "true", "yes") and torch.version.cuda and not PREBUILT:
    cuda_home = find_cuda_home()
    if cuda_home:
        # torch.utils.cpp_extension reads CUDA_HOME once, at import.
        os.environ["CUDA_HOME"] = cuda_home
with_cuda = cuda_home is not None

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

if "MAX_JOBS" not in os.environ:
    os.environ["MAX_JOBS"] = str(max(1, os.cpu_count() or 1))



def cxx_standard():
    """C++17, or C++20 where the installed torch's headers demand it (newer releases do)."""
    aten = os.path.join(os.path.dirname(torch.__file__), "include", "ATen", "ATen.h")
    with open(aten) as f:
        return "c++20" if "C++20 or later" in f.read() else "c++17"


STD = cxx_standard()
# *_cuda.cpp: the CUDA ops' torch-facing halves (checks, allocation, streams), compiled by the host
# compiler; their kernels are in .cu files that include no torch header, because every device pass of
# nvcc over ATen's headers costs ~40 s on the 2-core build machine.
cpp_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
sources = [s for s in cpp_sources if not s.endswith("_cuda.cpp")]
# -g0: Python's CFLAGS ask for debug info, which makes each torch-including file ~40% slower to build.
cxx_flags = ["-O3", "-g0", f"-std={STD}", "-fopenmp", "-fno-math-errno", "-fvisibility=hidden"]
if DEBUG_SYNC:
    cxx_flags.append("-DVITFAST_DEBUG_SYNC")  # torch.ops.vitfast.build_flavor() says so
extra = {"cxx": cxx_flags}
define_macros = [("Py_LIMITED_API", "0x030A0000")]
cutlass_dirs = None
if with_cuda:
    sources += [s for s in cpp_sources if s.endswith("_cuda.cpp")]
    sources += sorted(s for s in glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True)
                      if not any(s.startswith(d + os.sep) for d in SM90_DIRS))
    define_macros.append(("VITFAST_WITH_CUDA", None))
    if "90" in cuda_archs():
        cutlass_dirs = cutlass_include_dirs()
        if cutlass_dirs:
            define_macros.append(("VITFAST_WITH_SM90", None))
        else:
            print("vitfast: CUTLASS headers not found (pip install --no-deps nvidia-cutlass==4.2.0.0): building "
                  "without the Hopper (sm_90a) GEMMs; the mma.sync kernels serve H100/H200 too", file=sys.stderr)
    nvcc_flags = ["-O3", f"-std={STD}", "--expt-relaxed-constexpr", "-lineinfo",
                  f"--threads={os.environ.get('NVCC_THREADS', '2')}"] + cuda_arch_flags()
    # After the toolkit's own include folder, so its headers win wherever both have one; the host
    # compiler needs them too, for the *_cuda.cpp files (ATen's CUDA headers include cuSPARSE's).
    wheel_includes = [f"-I{d}" for d in wheel_cuda_include_dirs()]
    extra["nvcc"] = nvcc_flags + wheel_includes
    extra["cxx"] = cxx_flags + wheel_includes
    Extension = CUDAExtension
else:
    Extension = CppExtension


def without_paths(flags):
    return [f for f in flags if not f.startswith(("-I", "--threads"))]


if PREBUILT:  # the build's fingerprints are compiled into it: the header is left as it is
    print(f"vitfast: installing the prebuilt extension {PREBUILT} (nothing is compiled)", file=sys.stderr)
else:
    write_fingerprints({"nvcc": nvcc_version(cuda_home), "cutlass": cutlass_version(cutlass_dirs),
                        "cxx_flags": without_paths(extra["cxx"]) + sorted(f"-D{k}" for k, _ in define_macros),
                        "nvcc_flags": without_paths(extra.get("nvcc", [])),
                        "sm90_flags": SM90_FLAGS if cutlass_dirs else []})
    print(f"vitfast: building {'CPU and CUDA' if with_cuda else 'CPU'} kernels"
          + (f" with the toolkit at {cuda_home}" if with_cuda else "")
          + (f" and CUTLASS's sm90 GEMMs ({cutlass_dirs[0]})" if cutlass_dirs else ""), file=sys.stderr)


def place(src, dst):
    """dst's bytes become src's: not touched where they already are, else by a rename, so that a Python
    which has the old file loaded keeps its mapping (a copy over it in place can crash that process)."""
    if os.path.isfile(dst) and filecmp.cmp(src, dst, shallow=False):
        return
    shutil.copy(src, dst + ".tmp")
    os.replace(dst + ".tmp", dst)


# torch's headers, parsed once: every .cpp includes ATen's, about half of its compile (4-12 s of one core on
# the 2-core build machine); GCC builds them once (about 30 s) into a precompiled header that each .cpp is
# given first. One built with other flags GCC skips (-Winvalid-pch says so) and parses the text: only the
# time changes. torch's inline JIT builds do the same (load_inline(use_pch=True)).
PCH_HEADERS = ["ATen/ATen.h", "ATen/Parallel.h", "torch/autograd.h", "torch/library.h"]
PCH_CUDA_HEADERS = ["ATen/cuda/CUDAContext.h", "c10/cuda/CUDAGuard.h"]


def precompile_torch_headers(compiler, ext, folder):
    """The flags that give each .cpp of `ext` PCH_HEADERS precompiled, built under `folder` by the compiler
    and flags ninja compiles the .cpp files with; none where that compiler is not GCC or the build fails
    (each file then parses the headers itself). The header's folder is named by what built it: the
    objects' dependencies do not list a precompiled header's, so a new torch or new flags must change the
    files' command, for ninja to compile them again."""
    try:  # where this torch lacks them, each file parses the headers itself
        from torch.utils.cpp_extension import check_compiler_is_gcc, get_cxx_compiler
    except ImportError:
        return []
    cxx = get_cxx_compiler()
    if not check_compiler_is_gcc(cxx):
        return []
    text = "".join(f"#include <{h}>\n" for h in PCH_HEADERS + (PCH_CUDA_HEADERS if with_cuda else []))
    macros = [f"-D{name}" if value is None else f"-D{name}={value}" for name, value in ext.define_macros]
    flags = ([cxx] + compiler.compiler_so[1:] + macros + [f"-I{d}" for d in ext.include_dirs + compiler.include_dirs]
             + ext.extra_compile_args["cxx"])
    key = hashlib.sha256("\n".join([torch.__version__, str(torch.version.git_version), text] + flags).encode())
    root = os.path.abspath(folder)
    header = os.path.join(root, key.hexdigest()[:16], "torch_headers.h")
    if not os.path.isfile(header + ".gch"):
        shutil.rmtree(root, ignore_errors=True)  # the headers of an earlier torch or flags: 0.5 GB each
        os.makedirs(os.path.dirname(header))
        with open(header, "w") as f:
            f.write(text)
        cmd = flags + ["-x", "c++-header", header, "-o", header + ".gch.tmp"]
        print("vitfast: precompiling torch's headers: " + " ".join(cmd), file=sys.stderr)
        if subprocess.run(cmd).returncode != 0:
            print("vitfast: torch's headers did not precompile; each file parses them itself", file=sys.stderr)
            return []
        os.replace(header + ".gch.tmp", header + ".gch")
    return ["-include", header, "-Winvalid-pch"]


class Build(BuildExtension.with_options(use_ninja=True)):
    """torch's BuildExtension, with the sm90a objects linked into vitfast._C. They compile while ninja
    builds the rest, so both cores stay busy to the end (one after the other left one idle for a
    minute of the sm90 step); the link waits for them."""

    def finalize_options(self):
        super().finalize_options()
        # An editable install (`pip install -e .`) builds in a new temporary folder each time, so it
        # recompiled every kernel (~10 minutes on 2 cores) even right after `pip install .` from the
        # same clone: build in the clone's build/ as the normal install does, where ninja and the sm90
        # step reuse every object that is up to date with its sources and flags.
        if not os.path.abspath(self.build_temp).startswith(os.path.join(ROOT, "build") + os.sep):
            self.build_temp = os.path.join(ROOT, "build", f"temp.{self.plat_name}-{sys.implementation.cache_tag}")

    def run(self):
        super().run()
        # `pip install .` from a clone builds in the clone: put vitfast._C beside the sources too (as an
        # editable install does), because Python run from the clone's root imports ./vitfast before the
        # installed copy: `python -m vitfast.train` there, and the benchmark scripts, need it.
        if not self.inplace:
            for ext in self.extensions:
                place(self.get_ext_fullpath(ext.name), os.path.join(ROOT, self.get_ext_filename(ext.name)))

    def build_extension(self, ext):
        # here torch's BuildExtension has added its flags: the .cpp files' command is whole
        ext.extra_compile_args["cxx"] = ext.extra_compile_args["cxx"] + precompile_torch_headers(
            self.compiler, ext, os.path.join(self.build_temp, "pch"))
        super().build_extension(ext)

    def build_extensions(self):
        if PREBUILT:
            for ext in self.extensions:
                target = self.get_ext_fullpath(ext.name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if not os.path.exists(target) or not os.path.samefile(PREBUILT, target):
                    shutil.copy(PREBUILT, target)
            return
        if not cutlass_dirs:
            return super().build_extensions()
        with concurrent.futures.ThreadPoolExecutor(max(1, int(os.environ["MAX_JOBS"]))) as pool:
            jobs = compile_sm90(self.build_temp, cuda_home, cutlass_dirs, pool)
            for ext in self.extensions:
                ext.extra_objects = list(ext.extra_objects or []) + [obj for obj, _ in jobs]
            link = self.compiler.link_shared_object

            def link_after_sm90(*args, **kwargs):
                for _, job in jobs:
                    job.result()  # raises the failed nvcc's error
                return link(*args, **kwargs)

            self.compiler.link_shared_object = link_after_sm90
            try:
                super().build_extensions()
            finally:
                pool.shutdown(cancel_futures=True)


setup(
    packages=find_packages(include=["vitfast", "vitfast.*"]),
    package_data={"vitfast": ["configs/*.yaml", "kernels/dispatch_data/*.json", "kernels/records/*.json"]},
    ext_modules=[
        Extension(
            "vitfast._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
            define_macros=define_macros,
            py_limited_api=True,
        )
    ],
    cmdclass={"build_ext": Build},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
