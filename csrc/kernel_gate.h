#pragma once
// Which of this build's CUDA kernel families may run on a GPU. A family runs on a kind of GPU (its
// architecture key: compute capability and SM count) where a record shows its tests passing on that
// kind at this build's fingerprint (what it was compiled from and with: vitfast/kernels/fingerprints.py),
// or everywhere under VITFAST_UNVERIFIED_KERNELS=1. vitfast/kernels/gate.py reads the records (those
// shipped in the package and those `python -m vitfast.check --gpu` wrote into the user's cache) and
// hands the matching families over at import; without them no family is verified. An op whose family
// may not run takes its library path, ATen composite or CPU twin instead, and the first refusal on each
// kind of GPU warns once, naming the families refused there and the command that verifies them. Plain
// host code: CPU builds answer it too (tests ask it).
#include <string>

#include "kernel_path.h"

namespace vitfast {

// The families (vitfast/kernels/fingerprints.py's FAMILIES).
namespace family {
constexpr const char* kQuantizers = "quantizers";
constexpr const char* kScaledCast = "scaled_cast";
constexpr const char* kAttentionMma = "attention_mma";
constexpr const char* kAttentionSm90 = "attention_sm90";
constexpr const char* kLayerNorm = "layer_norm";
constexpr const char* kLayerNormFp8 = "layer_norm_fp8";
constexpr const char* kGemmMma = "gemm_mma";
constexpr const char* kGemmSm90 = "gemm_sm90";
constexpr const char* kFp8GemmSm90 = "fp8_gemm_sm90";
}  // namespace family

// A kind of GPU's key, "sm_<major><minor>x<SMs>" ("sm_90x132": H100 SXM and H200 alike): the machine
// code is the architecture's, and the persistent kernels' tile walks follow the SM count.
std::string gpu_key(int major, int minor, int sms);

// Whether `family`'s kernels may run on GPUs of key `gpu` (gpu_key); hopper: a compute capability 9.0
// GPU, so its warning names the sm90 families too. warn=false only asks.
bool kernel_allowed(const std::string& family, const std::string& gpu, bool hopper, bool warn = true);

// A path choice (attention_path.h's, gemm_path.h's) stepped down past each family refused on GPUs of key gpu:
// sm90 -> mma.sync -> ATen.
inline KernelPath gated_path(KernelPath path, const char* sm90_family, const char* mma_family, const std::string& gpu,
                             bool hopper) {
  if (path == KernelPath::kSm90 && !kernel_allowed(sm90_family, gpu, hopper)) path = KernelPath::kMmaSync;
  if (path == KernelPath::kMmaSync && !kernel_allowed(mma_family, gpu, hopper)) path = KernelPath::kAten;
  return path;
}

}  // namespace vitfast
