#pragma once
// Which kernel runs a fused attention forward or backward on a GPU. Plain host code, so CPU builds
// answer it too (torch.ops.vitfast.attention_path, which the tests ask for every capability, dtype and
// shape):
//   sm90      the Hopper kernels (csrc/attention/sm90/): compute capability 9.0 exactly (sm_90a code
//             runs nowhere else), d in kSm90HeadDims, no logits output (nor their gradient), and not
//             switched off by VITFAST_ATTENTION_SM90=0; N up to kSm90MaxLongKeys. The forward holds a
//             head's K and V whole up to kSm90MaxKeys and streams them beyond (and at every N with
//             fp16 accumulators); the backward (fp32 accumulation only) finishes a head in one CTA
//             where sm90_bwd_fits, else splits its keys;
//   mma_sync  the FlashAttention-2-style kernels (attention_fwd_kernel.cuh, attention_bwd_kernel.cuh):
//             every other fp16/bf16 case;
//   aten      float32/float64: the ATen composite (attention_cpu.cpp).
#include <cstdint>
#include <type_traits>

#include "kernel_path.h"

namespace vitfast {

using AttnPath = KernelPath;

constexpr int kSm90MaxKeys = 256;       // a head's K and V held whole in shared memory
constexpr int kSm90MaxLongKeys = 4096;  // key-tiled forward, key-grouped backward
constexpr int kSm90HeadDims[] = {32, 64, 80, 96, 128};

// The sm90 backward keeps dK and dV of the keys a CTA owns in its two consumer warpgroups' registers
// (csrc/attention/sm90/attention_bwd_sm90.cuh): up to 128 keys every head dim fits, up to 256
// (kSm90MaxKeys, the whole-head kernels' largest key tile) only d <= 64. Where a head's keys fit (keys:
// N rounded up to 64), one CTA finishes the head and dQ; otherwise the keys are split into groups of
// sm90_bwd_group_keys, one CTA each, and dQ is summed over the groups in fp32.
constexpr bool sm90_bwd_fits(int d, int keys) { return keys <= 128 || (d <= 64 && keys <= kSm90MaxKeys); }
constexpr int sm90_bwd_group_keys(int d) { return d <= 64 ? 256 : 128; }
constexpr int sm90_bwd_key_groups(int d, int N) {
  return sm90_bwd_fits(d, (N + 63) / 64 * 64) ? 1 : (N + sm90_bwd_group_keys(d) - 1) / sm90_bwd_group_keys(d);
}
// A head taken whole has a key tile that is built; longer ones split (the first H200 sitting found
// d <= 64 above 256 keys taken "whole", refused as not built, and run by the mma.sync kernel).
constexpr bool sm90_bwd_groups_cover_every_length() {
  for (int d : kSm90HeadDims)
    for (int N = 1; N <= kSm90MaxLongKeys; ++N)
      if (sm90_bwd_key_groups(d, N) == 1 ? N > kSm90MaxKeys : sm90_bwd_key_groups(d, N) * sm90_bwd_group_keys(d) < N)
        return false;
  return true;
}
static_assert(sm90_bwd_groups_cover_every_length(), "a backward length the sm90 kernels cannot take whole or in groups");
static_assert(sm90_bwd_key_groups(64, 577) == 3 && sm90_bwd_key_groups(32, 257) == 2 &&
              sm90_bwd_key_groups(80, 257) == 3 && sm90_bwd_key_groups(64, 256) == 1, "NOTES.md's examples");

struct AttnCase {
  int major = 0, minor = 0;  // the device's compute capability
  bool half_or_bf16 = false;
  int64_t N = 0, d = 0;
  bool backward = false;         // the backward's choice (attention_bwd), not the forward's
  bool logits = false;           // return_logits (or, backward, their gradient): mma.sync only
  bool accumulate_fp16 = false;  // FP16_16: fp16 accumulators (the sm90 forward's, the mma.sync kernels')
  bool sm90_built = false;       // this build holds the sm90a kernels
  bool sm90_enabled = true;      // VITFAST_ATTENTION_SM90 is not "0"
};

// f(std::integral_constant<int, d>) for the head dims the CUDA kernels are built for (kSm90HeadDims:
// both kernel families take the same), otherwise() for any other.
template <class F, class Otherwise>
auto with_head_dim(int d, F&& f, Otherwise&& otherwise) {
  switch (d) {
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    case 80: return f(std::integral_constant<int, 80>{});
    case 96: return f(std::integral_constant<int, 96>{});
    case 128: return f(std::integral_constant<int, 128>{});
    default: return otherwise();
  }
}

inline bool sm90_head_dim(int64_t d) {
  for (int h : kSm90HeadDims) {
    if (d == h) return true;
  }
  return false;
}

inline AttnPath choose_attention_path(const AttnCase& c) {
  if (!c.half_or_bf16) return AttnPath::kAten;
  const bool sm90 = c.sm90_built && c.sm90_enabled && c.major == 9 && c.minor == 0 && c.N >= 1 &&
                    c.N <= kSm90MaxLongKeys && sm90_head_dim(c.d) && !c.logits &&
                    !(c.accumulate_fp16 && c.backward);
  return sm90 ? AttnPath::kSm90 : AttnPath::kMmaSync;
}

}  // namespace vitfast
