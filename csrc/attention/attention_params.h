#pragma once
// What the host hands the attention kernels: pointers and element strides. q, k, v, grad_out have a
// contiguous last dim, 16-byte-aligned rows and any batch/head/token strides (views of a fused qkv
// projection run in place); broadcast bias dims have stride 0.
#include <cuda_runtime.h>

#include <cstdint>

namespace vitfast {

struct Strides3 {
  int64_t b, h, n;  // elements between consecutive batches, heads, tokens
};

struct AttnFwdParams {
  const void* q;
  const void* k;
  const void* v;
  const void* bias;  // nullptr when there is none
  void* out;         // (B, H, N, d) with strides os: contiguous, or a view of (B, N, H, d)
  Strides3 os;
  float* lse;        // (B, H, N); the sm90 kernel skips it when null
  void* logits;      // (B, H, N, N) contiguous, or nullptr
  Strides3 qs, ks, vs;
  Strides3 bias_s;
  int64_t bias_col;  // bias stride along keys
  int B, H, N, d;
  int bh_offset;     // first (batch * H + head) of this launch (grids hold at most 65535 of them)
  float scale;
};

struct AttnBwdParams {
  const void* q;
  const void* k;
  const void* v;
  const void* bias;       // nullptr when there is none
  const void* dout;       // (B, H, N, d), strides in dos
  const void* dlogits;    // (B, H, N, N) contiguous, or nullptr
  const void* out;        // the forward's output, (B, H, N, d) with strides os
  Strides3 os;
  const float* lse;       // (B, H, N)
  const float* delta;     // (B, H, N): rowsum(dout * out) (mma.sync; the sm90 kernel takes its own)
  float* dq_accum;        // (B, H, N, d) fp32, zeroed: summed over key blocks with atomics (mma.sync)
  void* dq;               // (B, H, N, d) contiguous: written whole by the sm90 kernel
  void* dk;               // (B, H, N, d) contiguous
  void* dv;               // (B, H, N, d) contiguous
  float* dbias_accum;     // (Bb, Hb, N, N) fp32, zeroed, or nullptr; dbias_s: strides, 0 where broadcast
  void* dbias;            // sm90: (B, H, N, N) contiguous dS, T or fp32 (dbias_f32), or nullptr
  bool dbias_f32;
  float* dbias_part;      // sm90, a bias broadcast over the batch: (slots, H, N, ld) fp32, zeroed, or nullptr
  int dbias_slots;        // batch b adds into slot b % dbias_slots
  int dbias_ld;           // N rounded up to 4: rows of 16-byte reductions
  Strides3 qs, ks, vs, dos;
  Strides3 bias_s;
  int64_t bias_col;
  Strides3 dbias_s;
  int B, H, N, d;
  int bh_offset;
  float scale;
  bool fp16_accumulate;   // rebuild q kᵀ with fp16 accumulators, as the forward did
};

// Launchers (attention_fwd_cuda.cu / attention_bwd_cuda.cu): dispatch on dtype (is_bf16), d and the
// accumulator; every argument already checked by the caller.
void launch_attention_fwd(const AttnFwdParams& p, bool is_bf16, bool fp16_accumulate, cudaStream_t stream);
void launch_attention_bwd(const AttnBwdParams& p, bool is_bf16, cudaStream_t stream);

}  // namespace vitfast
