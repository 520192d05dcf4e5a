// The sm90 forward for N > 256 in bfloat16: d in {32, 64, 80, 96, 128}, key tiles sized to N.
#include "attention/sm90/attention_fwd_long_sm90_launch.cuh"

namespace vitfast::attention::sm90 {

int attention_fwd_long_bf16(const AttnFwdParams& p, cudaStream_t stream) {
  return launch_fwd_long_typed<cutlass::bfloat16_t>(p, stream);
}

}  // namespace vitfast::attention::sm90
