// The GEMM launcher of every fused linear: the kernel gemm_path.h chose, the Hopper kernels
// (csrc/gemm/sm90/) or the mma.sync GEMM (mma_gemm.cu). Both are compiled without torch's headers;
// this file holds what needs them: the device's properties, the stream, the checks and messages.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <cstdlib>
#include <string>

#include "gemm/linear_cuda.h"
#include "gemm/mma_gemm.h"
#include "kernel_gate_cuda.h"

namespace vitfast::gemm {

// VITFAST_GEMM_SM90=0 (read once) keeps the mma.sync kernel where the Hopper ones would run: a GPU
// sitting tests that family on an H100 / H200 this way (tools/sitting.py).
bool sm90_gemm_switched_off() {
  static const bool off = [] {
    const char* v = std::getenv("VITFAST_GEMM_SM90");
    return v != nullptr && std::string(v) == "0";
  }();
  return off;
}

GemmPath gemm_path_for(const at::Tensor& x, int64_t M, int64_t N, int64_t K, bool accumulate_fp16, bool out_f32,
                       bool fused) {
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(x.device().index());
  const bool sm90 = kSm90Built && !sm90_gemm_switched_off();
  // kernel_gate.h: a family not verified on this GPU kind gives way to the next path, warning once.
  return gated_path(choose_gemm_path(gemm_case(prop->major, prop->minor, x.scalar_type(), M, N, K, accumulate_fp16,
                                               out_f32, sm90, fused)),
                    family::kGemmSm90, family::kGemmMma, x);
}

namespace {

void launch_mma_gemm(const GemmParams& p, at::ScalarType operand, bool accumulate_fp16) {
  TORCH_CHECK((p.M + kBM - 1) / kBM <= 65535, "mma_gemm: M (", p.M, ") exceeds ", 65535 * kBM, " rows");
  TORCH_CHECK(operand == at::kHalf || (operand == at::kBFloat16 && !accumulate_fp16),
              "mma_gemm: fp16 or bf16 operands, fp16 accumulation with fp16 only; got ", operand);
  C10_CUDA_CHECK(mma_gemm(p, operand_of(operand), accumulate_fp16, at::cuda::getCurrentCUDAStream()));
}

// The sm90 kernel for p; false, after one warning, where it cannot take the case (the caller then runs
// the next path, so no user sees the difference but the time).
bool launch_sm90(const GemmParams& p, at::ScalarType operand, bool accumulate_fp16) {
#ifdef VITFAST_WITH_SM90
  const bool bf16 = operand == at::kBFloat16;
  auto kernel = accumulate_fp16            ? sm90::lp_matmul_fp16_accumulate
                : p.epilogue == kResidual ? (bf16 ? sm90::linear_residual_bf16 : sm90::linear_residual_fp16)
                : p.out_f32               ? sm90::lp_matmul_fp32_output
                : !p.round_pre            ? sm90::lp_matmul_fp32_accumulate  // FP16_32 into fp16: no rounding
                : bf16                    ? sm90::linear_gelu_bf16
                                          : sm90::linear_gelu_fp16;
  const char* why = launch_sm90_kernel(p, 2, "GEMM", kernel);
  if (why == nullptr) return true;
  TORCH_WARN_ONCE("vitfast: the sm90 GEMM cannot take M=", p.M, ", N=", p.N, ", K=", p.K, " (", why,
                  "); the mma.sync kernel runs such cases instead");
  return false;
#else
  (void)p, (void)operand, (void)accumulate_fp16;
  return false;
#endif
}

}  // namespace

bool launch_gemm(const GemmParams& p, at::ScalarType operand, bool accumulate_fp16, GemmPath path) {
  TORCH_CHECK(path != GemmPath::kAten, "launch_gemm: the ATen path has no GEMM kernel to launch");
  if (p.M == 0 || p.N == 0) return true;
  check_no_pending_error("the GEMM");
  if (path == GemmPath::kSm90 && launch_sm90(p, operand, accumulate_fp16)) return true;
  if (const char* why = mma_sync_refusal(p, 2)) {
    TORCH_WARN_ONCE("vitfast: the mma.sync GEMM cannot take M=", p.M, ", N=", p.N, ", K=", p.K, " (", why,
                    "); ATen's ops run such cases instead");
    return false;
  }
  launch_mma_gemm(p, operand, accumulate_fp16);
  return true;
}

}  // namespace vitfast::gemm
