#pragma once
// kernel_gate.h on a tensor's GPU, for the CUDA entry points; and the CPU twin they fall back to where
// a family may not run and no ATen composite exists (the quantizers, lp_matmul's fp16 accumulators).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <optional>
#include <string>

#include "kernel_gate.h"

namespace vitfast {

// gpu_key of t's GPU.
inline const std::string& gpu_key(const at::Tensor& t) {
  static thread_local int index = -1;
  static thread_local std::string key;
  if (t.device().index() != index) {
    const cudaDeviceProp* prop = at::cuda::getDeviceProperties(t.device().index());
    key = gpu_key(prop->major, prop->minor, prop->multiProcessorCount);
    index = t.device().index();
  }
  return key;
}

inline bool is_hopper(const at::Tensor& t) {
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(t.device().index());
  return prop->major == 9 && prop->minor == 0;
}

// Whether `family`'s kernels may run on t's GPU (warning once per kind of GPU where not).
inline bool kernel_allowed(const char* family, const at::Tensor& t) {
  return kernel_allowed(family, gpu_key(t), is_hopper(t));
}

// gated_path on t's GPU.
inline KernelPath gated_path(KernelPath path, const char* sm90_family, const char* mma_family, const at::Tensor& t) {
  return gated_path(path, sm90_family, mma_family, gpu_key(t), is_hopper(t));
}

inline at::Tensor to_host(const at::Tensor& t) { return t.cpu(); }
inline std::optional<at::Tensor> to_host(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->cpu()) : std::nullopt;
}
template <typename T>
const T& to_host(const T& v) {
  return v;
}
template <typename T>
struct Same {  // std::type_identity (C++20): keeps args from deducing Args
  using type = T;
};

// cuda(x, args...) where `family` may run on x's GPU; else cpu(...) on copies of the tensors, its result
// moved back to x's device: the kernels' CPU twin, which their GPU tests hold them to.
template <typename... Args>
at::Tensor cuda_or_host(const char* family, at::Tensor (*cuda)(const at::Tensor&, Args...),
                        at::Tensor (*cpu)(const at::Tensor&, Args...), const at::Tensor& x,
                        typename Same<Args>::type... args) {
  if (kernel_allowed(family, x)) return cuda(x, args...);
  return cpu(x.cpu(), to_host(args)...).to(x.device());
}

}  // namespace vitfast
