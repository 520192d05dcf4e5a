// torch.ops.vitfast.attention_path: attention_path.h's choice for the forward or (backward=True) the
// backward (and kernel_gate.h's, given a GPU's key), asked from Python without a GPU.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <string>

#include "attention/attention_path.h"
#include "kernel_gate.h"

namespace vitfast {
namespace {

// gpu: also kernel_gate.h's verdict for GPUs of that key (gpu_key), as attention_cuda.cpp applies it.
std::string attention_path_op(int64_t major, int64_t minor, at::ScalarType dtype, int64_t N, int64_t d, bool logits,
                              bool accumulate_fp16, std::optional<bool> sm90_built, bool backward,
                              std::optional<std::string> gpu) {
  AttnCase c;
  c.major = static_cast<int>(major);
  c.minor = static_cast<int>(minor);
  c.half_or_bf16 = dtype == at::kHalf || dtype == at::kBFloat16;
  c.N = N;
  c.d = d;
  c.backward = backward;
  c.logits = logits;
  c.accumulate_fp16 = accumulate_fp16;
  c.sm90_built = sm90_built.value_or(kSm90Built);
  const AttnPath path = choose_attention_path(c);
  const bool hopper = major == 9 && minor == 0;
  return kernel_path_name(gpu ? gated_path(path, family::kAttentionSm90, family::kAttentionMma, *gpu, hopper) : path);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(vitfast, m) {
  m.def("attention_path(int major, int minor, ScalarType dtype, int N, int d, bool logits=False, "
        "bool accumulate_fp16=False, bool? sm90_built=None, bool backward=False, str? gpu=None) -> str",
        &attention_path_op);
}

}  // namespace vitfast
