// torch.ops.vitfast.gemm_path, fp8_path, sm90_config, sm90_configs and gemm_refusal: gemm_path.h's and
// sm90_config.h's choices and refusals (and kernel_gate.h's, given a GPU's key), asked from Python
// without a GPU.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <iterator>
#include <optional>
#include <string>

#include "gemm/gemm.h"
#include "kernel_gate.h"

namespace vitfast::gemm {
namespace {

// gpu: also kernel_gate.h's verdict for GPUs of that key (gpu_key), as the CUDA entry points apply it.
std::string gemm_path_op(int64_t major, int64_t minor, at::ScalarType dtype, int64_t M, int64_t N, int64_t K,
                         bool accumulate_fp16, bool out_f32, std::optional<bool> sm90_built,
                         std::optional<std::string> gpu) {
  const GemmPath path = choose_gemm_path(gemm_case(static_cast<int>(major), static_cast<int>(minor), dtype, M, N, K,
                                                   accumulate_fp16, out_f32, sm90_built.value_or(kSm90Built),
                                                   /*fused=*/true));
  const bool hopper = major == 9 && minor == 0;
  return gemm_path_name(gpu ? gated_path(path, family::kGemmSm90, family::kGemmMma, *gpu, hopper) : path);
}

Sm90Kind kind_named(c10::string_view key) {
  for (int i = 0; i < static_cast<int>(std::size(kSm90KindKeys)); ++i) {
    if (key == kSm90KindKeys[i]) return static_cast<Sm90Kind>(i);
  }
  std::string keys;
  for (const char* k : kSm90KindKeys) keys += (keys.empty() ? "" : ", ") + std::string(k);
  TORCH_CHECK(false, "sm90_config: kind must be one of ", keys, "; got '", key, "'");
}

// The configuration an sm90 kernel of `kind` runs at (M, N) when asked for `config` on a GPU of `sms` SMs.
std::string sm90_config_op(c10::string_view kind, int64_t M, int64_t N, bool gelu, c10::string_view config,
                           int64_t sms) {
  const Sm90Kind k = kind_named(kind);
  const auto c = static_cast<Sm90Config>(sm90_config_arg("sm90_config", config, k));
  return kSm90ConfigNames[static_cast<int>(
      c == Sm90Config::kAuto ? default_sm90_config(k, M, N, gelu, static_cast<int>(sms)) : c)];
}

std::vector<std::string> sm90_configs_op(c10::string_view kind) { return sm90_built_names(kind_named(kind)); }

// Why a kernel ("sm90", "mma_sync") would refuse tensors at these addresses (None: it takes them).
std::optional<std::string> gemm_refusal_op(c10::string_view path, int64_t M, int64_t N, int64_t K, int64_t a,
                                           int64_t b, int64_t out, std::optional<int64_t> residual,
                                           std::optional<int64_t> pre, std::optional<int64_t> bias, bool out_f32) {
  TORCH_CHECK(path == "sm90" || path == "mma_sync", "gemm_refusal: path must be 'sm90' or 'mma_sync', got '", path, "'");
  auto ptr = [](int64_t v) { return reinterpret_cast<void*>(static_cast<uintptr_t>(v)); };
  GemmParams p;
  p.M = M;
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.a = ptr(a);
  p.b = ptr(b);
  p.out = ptr(out);
  p.epilogue = residual.has_value() ? kResidual : kGeluErf;
  p.residual = residual.has_value() ? ptr(*residual) : nullptr;
  p.pre = pre.has_value() ? ptr(*pre) : nullptr;
  p.bias = bias.has_value() ? ptr(*bias) : nullptr;
  p.out_f32 = out_f32;
  const char* why = path == "sm90" ? sm90_refusal(p, 2) : mma_sync_refusal(p, 2);
  return why ? std::optional<std::string>(why) : std::nullopt;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(vitfast, m) {
  m.def("gemm_path(int major, int minor, ScalarType dtype, int M, int N, int K, bool accumulate_fp16=False, "
        "bool out_f32=False, bool? sm90_built=None, str? gpu=None) -> str",
        &gemm_path_op);
  m.def("fp8_path(int major, int minor, int M, int N, int K, bool? sm90_built=None, str? gpu=None) -> str",
        [](int64_t major, int64_t minor, int64_t M, int64_t N, int64_t K, std::optional<bool> sm90_built,
           std::optional<std::string> gpu) {
          const GemmPath path = choose_fp8_path(static_cast<int>(major), static_cast<int>(minor), M, N, K,
                                                sm90_built.value_or(kSm90Built));
          const bool refused = gpu && path == GemmPath::kSm90 && !kernel_allowed(family::kFp8GemmSm90, *gpu, true);
          return std::string(gemm_path_name(refused ? GemmPath::kAten : path));
        });
  m.def("sm90_kernels_built() -> bool", [] { return kSm90Built; });
  m.def("fp8_promotion_interval(str config='auto', int K=128) -> int", [](c10::string_view config, int64_t K) {
    return fp8_promotion_interval(sm90_config_of("fp8_promotion_interval", config), K);
  });
  m.def("sm90_config(str kind, int M, int N, bool gelu=False, str config='auto', int sms=132) -> str", &sm90_config_op);
  m.def("sm90_configs(str kind) -> str[]", &sm90_configs_op);
  m.def("gemm_refusal(str path, int M, int N, int K, int a, int b, int out, int? residual=None, int? pre=None, "
        "int? bias=None, bool out_f32=False) -> str?",
        &gemm_refusal_op);
}

}  // namespace vitfast::gemm
