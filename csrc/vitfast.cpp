// vitfast._C: every operator's schema, declared once. Implementations attach per device in the
// ops' own files (TORCH_LIBRARY_IMPL(vitfast, CPU/CUDA, m)). Importing the module runs these
// registrations; it defines no Python functions of its own.
#include <Python.h>
#include <torch/library.h>

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(vitfast, m) {
  m.def("float_quantize(Tensor x, int exp, int man, str rounding, bool saturate, bool subnormals, bool finite, "
        "Tensor? seed) -> Tensor");
  m.def("fixed_point_quantize(Tensor x, int wl, int fl, bool clamp, bool symmetric, str rounding, "
        "Tensor? seed) -> Tensor");
  m.def("block_quantize(Tensor x, int wl, int? dim, int? block_size, str rounding, Tensor? seed) -> Tensor");
  m.def("scaled_cast(Tensor x, Tensor scale, ScalarType dtype) -> Tensor");
  m.def("attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? bias, float scale, bool return_logits, "
        "bool fp16_accumulate, bool out_bnhd=False, bool with_lse=True) -> (Tensor out, Tensor lse, Tensor logits)");
  m.def("attention_bwd(Tensor grad_out, Tensor? grad_logits, Tensor q, Tensor k, Tensor v, Tensor? bias, "
        "Tensor out, Tensor lse, float scale, bool fp16_accumulate, bool bias_grad) -> (Tensor dq, Tensor dk, Tensor dv, Tensor dbias)");
  m.def("layer_norm(Tensor x, Tensor? residual, Tensor weight, Tensor bias, float eps, bool stats=True) "
        "-> (Tensor out, Tensor sum, Tensor mean, Tensor rstd)");
  m.def("layer_norm_backward(Tensor dout, Tensor? dsum, Tensor x, Tensor weight, Tensor mean, Tensor rstd) "
        "-> (Tensor dx, Tensor dweight, Tensor dbias)");
  m.def("layer_norm_fp8(Tensor x, Tensor weight, Tensor bias, Tensor scale, float eps) -> Tensor");
  m.def("linear_gelu(Tensor x, Tensor weight, Tensor? bias, str approximate, bool save_pre, str config='auto') "
        "-> (Tensor out, Tensor pre)");
  m.def("gelu_grad_bias(Tensor dout, Tensor pre, str approximate, bool bias_grad) -> (Tensor dpre, Tensor dbias)");
  m.def("linear_residual(Tensor x, Tensor weight, Tensor? bias, Tensor residual, str config='auto') -> Tensor");
  m.def("lp_matmul(Tensor x, Tensor weight, Tensor? bias, str epilogue, Tensor? residual, bool accumulate_fp16, "
        "ScalarType out_dtype) -> Tensor");
  m.def("fp8_linear(Tensor x, Tensor weight, Tensor scale_a, Tensor scale_b, Tensor? bias, Tensor? residual, "
        "str activation, ScalarType out_dtype, Tensor? out_scale, bool amax, str config='auto') "
        "-> (Tensor out, Tensor amax)");
}

// Every op picks its own precision, so autocast must not reach inside it: without this, the ATen
// calls of a CPU path (and of the CUDA wrappers) would be recast to bf16/fp16 behind the op's back
// (an fp32 log-sum-exp coming out bf16, an fp32-accumulated emulation computed in bf16). Autocast
// passes the ops' inputs through unchanged, like PyTorch's own fused ops with explicit dtypes.
namespace {
constexpr const char* kOps[] = {"float_quantize", "fixed_point_quantize", "block_quantize", "scaled_cast",
                                "attention_fwd", "attention_bwd", "layer_norm", "layer_norm_backward", "layer_norm_fp8",
                                "linear_gelu", "gelu_grad_bias", "linear_residual", "lp_matmul", "fp8_linear"};

void without_autocast(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  op.callBoxed(stack);
}

void register_autocast_passthrough(torch::Library& m) {
  for (const char* name : kOps) m.impl(name, torch::CppFunction::makeFromBoxedFunction<&without_autocast>());
}
}  // namespace

TORCH_LIBRARY_IMPL(vitfast, AutocastCPU, m) { register_autocast_passthrough(m); }
TORCH_LIBRARY_IMPL(vitfast, AutocastCUDA, m) { register_autocast_passthrough(m); }
