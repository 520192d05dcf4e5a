// The sm90 backward for float16: d in {32, 64} x key tiles of 64, 128, 192, 256 and d in {80, 96, 128}
// x 64, 128 (sm90_bwd_fits).
#include "attention/sm90/attention_bwd_sm90_launch.cuh"

namespace vitfast::attention::sm90 {

int attention_bwd_fp16(const AttnBwdParams& p, cudaStream_t stream) {
  return launch_bwd_typed<cutlass::half_t>(p, stream);
}

}  // namespace vitfast::attention::sm90
