#pragma once
// VF_HD marks scalar code shared, bit for bit, by the CPU and CUDA kernels.
#if defined(__CUDACC__)
#define VF_HD __host__ __device__ __forceinline__
#else
#define VF_HD inline
#endif
