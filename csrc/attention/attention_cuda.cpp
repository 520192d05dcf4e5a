// CUDA entry points of vitfast::attention_fwd / attention_bwd: every precondition checked (naming
// the argument), q/k/v kept in place when their rows are 16-byte aligned (strided views of a fused
// qkv projection are), outputs allocated, then the fused kernels for fp16/bf16; fp32 and fp64 take
// the ATen composite of attention_cpu.cpp.
#include <ATen/ExpandUtils.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "attention/attention.h"
#include "attention/attention_params.h"
#include "attention/attention_path.h"
#include "kernel_gate_cuda.h"
#ifdef VITFAST_WITH_SM90
#include "attention/sm90/attention_sm90.h"
#endif

namespace vitfast {
namespace {

bool fused_dtype(const at::Tensor& q) { return q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16; }

void check_fused(const at::Tensor& q, bool fp16_accumulate) {
  TORCH_CHECK(q.is_cuda(), "q must be a CUDA tensor here, got ", q.device());
  const int64_t d = q.size(3);
  TORCH_CHECK(d == 32 || d == 64 || d == 80 || d == 96 || d == 128,
              "q's head dim must be one of 32, 64, 80, 96, 128 for the CUDA kernels, got ", d);
  TORCH_CHECK(!fp16_accumulate || q.scalar_type() == at::kHalf,
              "accumulate='fp16' needs float16 q, k, v, got ", q.scalar_type());
  TORCH_CHECK(q.size(2) <= (1 << 20), "q's length N must be at most 2^20 for the CUDA kernels, got ", q.size(2));
}

// The kernels read rows with 16-byte copies: unit stride along d, every other stride (of dims longer
// than one) a multiple of 8 elements, a 16-byte-aligned start. Otherwise, an aligned copy.
at::Tensor rows_aligned(const at::Tensor& t) {
  bool ok = t.stride(3) == 1 || t.size(3) == 1;
  for (int i = 0; i < 3; ++i) ok = ok && (t.size(i) == 1 || t.stride(i) % 8 == 0);
  ok = ok && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  return ok ? t : t.clone(at::MemoryFormat::Contiguous);
}

Strides3 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

// VITFAST_ATTENTION_SM90=0 (read once) keeps the mma.sync kernels where the Hopper ones may run, to
// compare the two in one build.
bool sm90_switched_off() {
  static const bool off = [] {
    const char* v = std::getenv("VITFAST_ATTENTION_SM90");
    return v != nullptr && std::strcmp(v, "0") == 0;
  }();
  return off;
}

// attention_path.h's choice, then kernel_gate.h's: a family not verified on this GPU kind gives way to
// the next path (sm90 -> mma.sync -> the ATen composite), warning once.
AttnPath kernel_path(const at::Tensor& q, bool backward, bool logits, bool fp16_accumulate) {
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(q.device().index());
  AttnCase c;
  c.major = prop->major;
  c.minor = prop->minor;
  c.half_or_bf16 = fused_dtype(q);
  c.N = q.size(2);
  c.d = q.size(3);
  c.backward = backward;
  c.logits = logits;
  c.accumulate_fp16 = fp16_accumulate;
  c.sm90_built = kSm90Built;
  c.sm90_enabled = !sm90_switched_off();
  return gated_path(choose_attention_path(c), family::kAttentionSm90, family::kAttentionMma, q);
}

// True where an sm90 kernel ran (kOk); false, after one warning, where it did not (the caller then
// runs the mma.sync kernel: the same result, slower); a failed launch raises. A template, so that the
// forward and the backward each warn once.
template <bool kBackward>
bool sm90_ran(int status, int N, int d, int64_t BH) {
#ifdef VITFAST_WITH_SM90
  const char* which = kBackward ? "backward" : "forward";
  if (status == attention::sm90::kOk) return true;
  TORCH_CHECK(status != attention::sm90::kLaunchFailed, "attention: the sm90 ", which, " kernel failed to launch: ",
              cudaGetErrorString(cudaGetLastError()));
  TORCH_WARN_ONCE("attention: the sm90 ", which, " kernel cannot take N = ", N, ", d = ", d, ", B * H = ", BH,
                  status == attention::sm90::kRefused ? " (over 2^31 tiles)" : " (not built)",
                  "; running the mma.sync kernel");
#else
  (void)status, (void)N, (void)d, (void)BH;
#endif
  return false;
}

bool launch_sm90_fwd(const AttnFwdParams& p, bool is_bf16, bool fp16_accumulate, cudaStream_t stream) {
#ifdef VITFAST_WITH_SM90
  const int status = fp16_accumulate ? attention::sm90::attention_fwd_fp16acc(p, stream)
                     : is_bf16       ? attention::sm90::attention_fwd_bf16(p, stream)
                                     : attention::sm90::attention_fwd_fp16(p, stream);
  return sm90_ran<false>(status, p.N, p.d, int64_t(p.B) * p.H);
#else
  (void)p, (void)is_bf16, (void)fp16_accumulate, (void)stream;
  return false;
#endif
}

bool launch_sm90_bwd(const AttnBwdParams& p, bool is_bf16, cudaStream_t stream) {
#ifdef VITFAST_WITH_SM90
  const int status =
      is_bf16 ? attention::sm90::attention_bwd_bf16(p, stream) : attention::sm90::attention_bwd_fp16(p, stream);
  return sm90_ran<true>(status, p.N, p.d, int64_t(p.B) * p.H);
#else
  (void)p, (void)is_bf16, (void)stream;
  return false;
#endif
}

// Bias strides with broadcast (size-1) batch/head dims read as stride 0.
void bias_strides(const at::Tensor& bias, Strides3& s, int64_t& col) {
  s = {bias.size(0) == 1 ? 0 : bias.stride(0), bias.size(1) == 1 ? 0 : bias.stride(1), bias.stride(2)};
  col = bias.stride(3);
}

// What the forward and backward parameter structs share: q, k, v and the bias (pointers and strides),
// the shape (B * H checked to fit in int32 by the caller) and the scale.
template <typename Params>
void fill_inputs(Params& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const std::optional<at::Tensor>& bias, double scale) {
  p.q = q.const_data_ptr();
  p.k = k.const_data_ptr();
  p.v = v.const_data_ptr();
  p.qs = strides_of(q);
  p.ks = strides_of(k);
  p.vs = strides_of(v);
  if (bias.has_value() && bias->defined()) {
    p.bias = bias->const_data_ptr();
    bias_strides(*bias, p.bias_s, p.bias_col);
  }
  p.B = static_cast<int>(q.size(0));
  p.H = static_cast<int>(q.size(1));
  p.N = static_cast<int>(q.size(2));
  p.d = static_cast<int>(q.size(3));
  p.scale = static_cast<float>(scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                                  const at::Tensor& v,
                                                                  const std::optional<at::Tensor>& bias,
                                                                  double scale, bool return_logits,
                                                                  bool fp16_accumulate, bool out_bnhd,
                                                                  bool with_lse) {
  check_attention_inputs(q, k, v, bias);
  if (fused_dtype(q)) check_fused(q, fp16_accumulate);
  const AttnPath path = fused_dtype(q) ? kernel_path(q, false, return_logits, fp16_accumulate) : AttnPath::kAten;
  if (path == AttnPath::kAten) {
    return attention_fwd_aten(q, k, v, bias, scale, return_logits, fp16_accumulate, out_bnhd, with_lse);
  }
  const c10::cuda::CUDAGuard guard(q.device());
  const at::Tensor qa = rows_aligned(q), ka = rows_aligned(k), va = rows_aligned(v);
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), d = q.size(3);
  // out_bnhd: (B, N, H, d) memory, which the output projection reads as (B, N, H·d) without a copy.
  at::Tensor out = out_bnhd ? at::empty({B, N, H, d}, q.options()) : at::empty({B, H, N, d}, q.options());
  const at::Tensor out_bhnd = out_bnhd ? out.transpose(1, 2) : out;  // the kernels write through its strides
  // Without a backward to read it, the lse is not written (the sm90 kernels skip it; the mma.sync ones
  // write a scratch buffer) and comes back empty.
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor lse = with_lse ? at::empty({B, H, N}, f32) : at::empty({0}, f32);
  at::Tensor logits = return_logits ? at::empty({B, H, N, N}, q.options()) : at::empty({0}, q.options());
  if (B * H == 0) return {out, lse, logits};
  TORCH_CHECK(B * H <= std::numeric_limits<int>::max(), "q's B * H must fit in int32, got ", B * H);

  AttnFwdParams p{};
  fill_inputs(p, qa, ka, va, bias, scale);
  p.out = out.mutable_data_ptr();
  p.lse = with_lse ? lse.mutable_data_ptr<float>() : nullptr;
  p.logits = return_logits ? logits.mutable_data_ptr() : nullptr;
  p.os = strides_of(out_bhnd);
  const bool is_bf16 = q.scalar_type() == at::kBFloat16;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (path == AttnPath::kSm90 &&
      launch_sm90_fwd(p, is_bf16, fp16_accumulate, stream)) {
    return {out, lse, logits};
  }
  at::Tensor scratch = with_lse ? at::Tensor() : at::empty({B, H, N}, f32);
  if (!with_lse) p.lse = scratch.mutable_data_ptr<float>();
  launch_attention_fwd(p, is_bf16, fp16_accumulate, stream);
  return {out, lse, logits};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_bwd_cuda(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_logits, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& bias, const at::Tensor& out,
    const at::Tensor& lse, double scale, bool fp16_accumulate, bool bias_grad) {
  check_attention_bwd_inputs(grad_out, grad_logits, q, k, v, bias, out, lse, fp16_accumulate, bias_grad);
  const bool with_dlogits = grad_logits.has_value() && grad_logits->defined();
  if (fused_dtype(q)) check_fused(q, fp16_accumulate);
  const AttnPath path = fused_dtype(q) ? kernel_path(q, true, with_dlogits, fp16_accumulate) : AttnPath::kAten;
  if (path == AttnPath::kAten) {
    return attention_bwd_aten(grad_out, grad_logits, q, k, v, bias, out, lse, scale, fp16_accumulate, bias_grad);
  }
  const c10::cuda::CUDAGuard guard(q.device());
  // out as it lies (the "bnhd" layout is a view): both kernels read it through its strides.
  const at::Tensor qa = rows_aligned(q), ka = rows_aligned(k), va = rows_aligned(v), doa = rows_aligned(grad_out),
                   oa = rows_aligned(out);
  const at::Tensor lsec = lse.contiguous();
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), d = q.size(3);
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor dk = at::empty({B, H, N, d}, q.options());
  at::Tensor dv = at::empty({B, H, N, d}, q.options());
  if (B * H == 0) {
    return {at::zeros({B, H, N, d}, q.options()), dk, dv,
            bias_grad ? at::zeros(bias->sizes(), q.options()) : at::empty({0}, q.options())};
  }
  TORCH_CHECK(B * H <= std::numeric_limits<int>::max(), "q's B * H must fit in int32, got ", B * H);

  AttnBwdParams p{};
  fill_inputs(p, qa, ka, va, bias, scale);
  p.dout = doa.const_data_ptr();
  p.dos = strides_of(doa);
  p.out = oa.const_data_ptr();
  p.os = strides_of(oa);
  p.lse = lsec.const_data_ptr<float>();
  p.dk = dk.mutable_data_ptr();
  p.dv = dv.mutable_data_ptr();
  p.fp16_accumulate = fp16_accumulate;
  const bool is_bf16 = q.scalar_type() == at::kBFloat16;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  if (path == AttnPath::kSm90) {
    // dQ finished in the kernel where one CTA holds a head's keys; summed over the key groups in an
    // fp32 accumulator otherwise. The bias gradient is dS per (b, h), in q's dtype, where the bias
    // has that shape. A bias broadcast over the batch gets dS added into fp32 partial sums, (slots,
    // H, keys, queries): batch b into slot b % slots, slots enough that the (b, h) works running at
    // once (one CTA per SM) never share one; summed, transposed and reduced to the bias's shape here.
    // (B, 1, N, N): dS per (b, h) in fp32, summed over the heads here.
    const int groups = sm90_bwd_key_groups(static_cast<int>(d), static_cast<int>(N));
    const bool dq_whole = groups == 1;
    at::Tensor dq = dq_whole ? at::empty({B, H, N, d}, q.options()) : at::zeros({B, H, N, d}, f32);
    const bool full_bias = bias_grad && bias->size(0) == B && bias->size(1) == H;
    const bool batch_broadcast = bias_grad && !full_bias && bias->size(0) == 1;
    at::Tensor ds, part;
    if (batch_broadcast) {
      const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
      part = at::zeros({std::min<int64_t>(B, sms / (H * groups) + 2), H, N, (N + 3) / 4 * 4}, f32);
      p.dbias_part = part.mutable_data_ptr<float>();
      p.dbias_slots = static_cast<int>(part.size(0));
      p.dbias_ld = static_cast<int>(part.size(3));
    } else if (bias_grad) {
      ds = at::empty({B, H, N, N}, full_bias ? q.options() : f32);
      p.dbias = ds.mutable_data_ptr();
      p.dbias_f32 = !full_bias;
    }
    p.dq = dq_whole ? dq.mutable_data_ptr() : nullptr;
    p.dq_accum = dq_whole ? nullptr : dq.mutable_data_ptr<float>();
    if (launch_sm90_bwd(p, is_bf16, stream)) {
      at::Tensor dbias = full_bias ? ds : at::empty({0}, q.options());
      if (batch_broadcast) ds = part.sum(0).narrow(2, 0, N).transpose(1, 2).unsqueeze(0);  // (1, H, queries, keys)
      if (bias_grad && !full_bias) {
        // Contiguous, as the op's fake says (the slots' sum is a transposed view).
        dbias = at::sum_to(ds, bias->sizes()).to(q.scalar_type(), false, false, at::MemoryFormat::Contiguous);
      }
      return {dq_whole ? dq : dq.to(q.scalar_type()), dk, dv, dbias};
    }
    p.dq = nullptr;
    p.dbias = nullptr;
    p.dbias_part = nullptr;
  }

  at::Tensor dq_accum = at::zeros({B, H, N, d}, f32);
  at::Tensor dbias_accum = bias_grad ? at::zeros(bias->sizes(), f32) : at::Tensor();
  at::Tensor delta = at::empty({B, H, N}, f32);
  at::Tensor dlogits;
  if (with_dlogits) dlogits = grad_logits->contiguous();
  if (bias_grad) {
    p.dbias_accum = dbias_accum.mutable_data_ptr<float>();
    p.dbias_s = {bias->size(0) == 1 ? 0 : dbias_accum.stride(0), bias->size(1) == 1 ? 0 : dbias_accum.stride(1),
                 dbias_accum.stride(2)};
  }
  p.dlogits = dlogits.defined() ? dlogits.const_data_ptr() : nullptr;
  p.delta = delta.mutable_data_ptr<float>();
  p.dq_accum = dq_accum.mutable_data_ptr<float>();
  launch_attention_bwd(p, is_bf16, stream);
  at::Tensor dbias = bias_grad ? dbias_accum.to(q.scalar_type()) : at::empty({0}, q.options());
  return {dq_accum.to(q.scalar_type()), dk, dv, dbias};
}

}  // namespace
}  // namespace vitfast

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) {
  m.impl("attention_fwd", &vitfast::attention_fwd_cuda);
  m.impl("attention_bwd", &vitfast::attention_bwd_cuda);
}
