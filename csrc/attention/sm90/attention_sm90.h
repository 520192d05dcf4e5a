#pragma once
// The Hopper (sm_90a) attention kernels as plain host functions: their files are compiled apart from
// torch (setup.py, gencode sm_90a only) and called by attention_cuda.cpp when attention_path.h chooses
// them. Each returns a Status; only kOk means the outputs were written.
#include <cuda_runtime.h>

#include "attention/attention_params.h"

namespace vitfast::attention::sm90 {

// kNotBuilt: no instantiation for p.d or p.N (attention_path.h keeps such cases away); kLaunchFailed:
// the launch returned an error (the caller raises it); kRefused: more than 2^31 - 1 tiles.
enum Status : int { kOk = 0, kNotBuilt = 1, kLaunchFailed = 2, kRefused = 3 };

// attention_fwd_sm90_{bf16,fp16}.cu: softmax(q kᵀ · scale + bias) v for N <= 4096 and the head dims
// of attention_path.h; out and lse written (lse skipped when p.lse is null), fp32 accumulators. N > 256
// goes to attention_fwd_long_{bf16,fp16} (attention_fwd_long_sm90_{bf16,fp16}.cu).
int attention_fwd_bf16(const AttnFwdParams& p, cudaStream_t stream);
int attention_fwd_fp16(const AttnFwdParams& p, cudaStream_t stream);
int attention_fwd_long_bf16(const AttnFwdParams& p, cudaStream_t stream);
int attention_fwd_long_fp16(const AttnFwdParams& p, cudaStream_t stream);
// attention_fwd_sm90_fp16acc.cu: the same for float16 with fp16 accumulators (accumulate="fp16"), every
// N up to 4096 by the key-tiled kernel.
int attention_fwd_fp16acc(const AttnFwdParams& p, cudaStream_t stream);

// attention_bwd_sm90_{bf16,fp16}.cu: dq, dk, dv (and dS into p.dbias when set) for N <= 4096: dq
// written whole where sm90_bwd_key_groups(d, N) is 1 (attention_path.h), else added into p.dq_accum
// (fp32, zeroed); fp32 accumulators, the dO·O row sums taken in the kernel.
int attention_bwd_bf16(const AttnBwdParams& p, cudaStream_t stream);
int attention_bwd_fp16(const AttnBwdParams& p, cudaStream_t stream);

}  // namespace vitfast::attention::sm90
