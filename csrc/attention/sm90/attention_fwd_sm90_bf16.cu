// The sm90 forward for bfloat16: d in {32, 64, 80, 96, 128} x key tiles of 64, 128, 192, 256;
// longer N streams K and V (attention_fwd_long_sm90_bf16.cu).
#include "attention/sm90/attention_fwd_sm90_launch.cuh"

namespace vitfast::attention::sm90 {

int attention_fwd_bf16(const AttnFwdParams& p, cudaStream_t stream) {
  return p.N <= kMaxKeys ? launch_fwd_typed<cutlass::bfloat16_t>(p, stream) : attention_fwd_long_bf16(p, stream);
}

}  // namespace vitfast::attention::sm90
