#pragma once
// The tensor-core GEMM behind lp_matmul, linear_gelu and linear_residual:
//   out (M, N) = epilogue(a (M, K) @ b (N, K)^T)   (b is an nn.Linear weight: row n holds output n)
// a and b row-major, contiguous, 16-byte aligned, K % 8 == 0. The epilogue runs in fp32 on the
// accumulator: + bias[n], then GELU or + residual[m, n], one rounding into out's dtype.
#include <ATen/ATen.h>

#include <iterator>
#include <string>
#include <vector>

#include "gemm/gemm_params.h"
#include "gemm/gemm_path.h"

namespace vitfast::gemm {

inline Operand operand_of(at::ScalarType t) {
  return t == at::kHalf ? Operand::kHalf : t == at::kBFloat16 ? Operand::kBFloat16 : Operand::kOther;
}

// The case gemm_path.h decides on, for a device of compute capability major.minor.
inline GemmCase gemm_case(int major, int minor, at::ScalarType dtype, int64_t M, int64_t N, int64_t K,
                          bool accumulate_fp16, bool out_f32, bool sm90_built, bool fused) {
  GemmCase c;
  c.major = major;
  c.minor = minor;
  c.operand = operand_of(dtype);
  c.M = M;
  c.N = N;
  c.K = K;
  c.accumulate_fp16 = accumulate_fp16;
  c.out_f32 = out_f32;
  c.sm90_built = sm90_built;
  c.fused = fused;
  return c;
}

// gemm_path.h's choice for x's device and dtype, and the launch of the chosen kernel (sm90 or mma.sync).
// launch_gemm goes on to the next path where a kernel cannot take p's tensors (sm90_refusal,
// mma_sync_refusal), warning once; false when none could: the caller then runs ATen's ops.
GemmPath gemm_path_for(const at::Tensor& x, int64_t M, int64_t N, int64_t K, bool accumulate_fp16, bool out_f32,
                       bool fused);
bool launch_gemm(const GemmParams& p, at::ScalarType operand, bool accumulate_fp16, GemmPath path);

// The names of the configurations built for a kernel kind ("coop_128x128", ...), without "auto".
inline std::vector<std::string> sm90_built_names(Sm90Kind kind) {
  std::vector<std::string> out;
  for (int i = 1; i < static_cast<int>(Sm90Config::kCount); ++i) {
    if (sm90_config_built(kind, static_cast<Sm90Config>(i))) out.emplace_back(kSm90ConfigNames[i]);
  }
  return out;
}

// "'auto', 'coop_128x128', ...": names for a message, "auto" first.
inline std::string quoted_names(const std::vector<std::string>& names) {
  std::string out = "'auto'";
  for (const auto& n : names) out += ", '" + n + "'";
  return out;
}

// The configuration an op's `config` argument names (sm90_config.h's names); any other is refused in one line.
inline Sm90Config sm90_config_of(const char* op, c10::string_view name) {
  const Sm90Config c = sm90_config_named(std::string(name).c_str());
  TORCH_CHECK(c != Sm90Config::kCount, op, ": config must be one of ",
              quoted_names({std::begin(kSm90ConfigNames) + 1, std::end(kSm90ConfigNames)}), ", got '", name, "'");
  return c;
}

// The op's `config` argument for the kernel kind that will run; a name that is not one, or a configuration
// this build does not hold for the kind, is refused in one line.
inline int sm90_config_arg(const char* op, c10::string_view name, Sm90Kind kind) {
  const Sm90Config c = sm90_config_of(op, name);
  TORCH_CHECK(c == Sm90Config::kAuto || sm90_config_built(kind, c), op, ": config '", name, "' is not built for ",
              sm90_kind_name(kind), "; built: ", quoted_names(sm90_built_names(kind)));
  return static_cast<int>(c);
}

// Host-side argument checks shared by the CPU and CUDA ops. Returns (M, N, K).
inline std::tuple<int64_t, int64_t, int64_t> check_linear(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                                         const std::optional<at::Tensor>& bias, bool same_dtype = true) {
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least one dimension");
  TORCH_CHECK(weight.dim() == 2, op, ": weight must be 2-D (out_features, in_features), got ", weight.sizes());
  const int64_t K = x.size(-1), N = weight.size(0);
  TORCH_CHECK(weight.size(1) == K, op, ": weight.size(1) (", weight.size(1), ") must equal x's last dimension (", K, ")");
  TORCH_CHECK(weight.device() == x.device(), op, ": weight must be on x's device");
  if (same_dtype) {
    TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight must have x's dtype ", x.scalar_type(), ", got ",
                weight.scalar_type());
  }
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N, op, ": bias must have shape (", N, "), got ", bias->sizes());
    TORCH_CHECK(bias->device() == x.device(), op, ": bias must be on x's device");
    if (same_dtype) {
      TORCH_CHECK(bias->scalar_type() == x.scalar_type(), op, ": bias must have x's dtype ", x.scalar_type(), ", got ",
                  bias->scalar_type());
    }
  }
  int64_t M = 1;
  for (int64_t i = 0; i + 1 < x.dim(); ++i) M *= x.size(i);
  return {M, N, K};
}

inline std::vector<int64_t> out_shape(const at::Tensor& x, int64_t N) {
  std::vector<int64_t> s(x.sizes().begin(), x.sizes().end());
  s.back() = N;
  return s;
}

}  // namespace vitfast::gemm
