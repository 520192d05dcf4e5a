// The sm90 forward with fp16 accumulators (accumulate="fp16", float16): the key-tiled kernel at every
// N up to 4096, d in {32, 64, 80, 96, 128}. A file of its own so it compiles beside the others.
#include "attention/sm90/attention_fwd_long_sm90_launch.cuh"

namespace vitfast::attention::sm90 {

int attention_fwd_fp16acc(const AttnFwdParams& p, cudaStream_t stream) {
  return launch_fwd_long_typed<cutlass::half_t, true>(p, stream);
}

}  // namespace vitfast::attention::sm90
