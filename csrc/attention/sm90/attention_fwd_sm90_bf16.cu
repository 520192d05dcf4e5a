// The sm90 forward for bfloat16: d in {32, 64, 80, 96, 128} x key tiles of 64, 128, 192, 256.
#include "attention/sm90/attention_fwd_sm90_launch.cuh"

namespace vitfast::attention::sm90 {

int attention_fwd_bf16(const AttnFwdParams& p, cudaStream_t stream) {
  return launch_fwd_typed<cutlass::bfloat16_t>(p, stream);
}

}  // namespace vitfast::attention::sm90
