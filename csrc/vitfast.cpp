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
  m.def("layer_norm(Tensor x, Tensor? residual, Tensor weight, Tensor bias, float eps) "
        "-> (Tensor out, Tensor sum, Tensor mean, Tensor rstd)");
  m.def("layer_norm_backward(Tensor dout, Tensor? dsum, Tensor x, Tensor weight, Tensor mean, Tensor rstd) "
        "-> (Tensor dx, Tensor dweight, Tensor dbias)");
  m.def("linear_gelu(Tensor x, Tensor weight, Tensor? bias, str approximate, bool save_pre) -> (Tensor out, Tensor pre)");
  m.def("linear_residual(Tensor x, Tensor weight, Tensor? bias, Tensor residual) -> Tensor");
  m.def("lp_matmul(Tensor x, Tensor weight, Tensor? bias, str epilogue, Tensor? residual, bool accumulate_fp16, "
        "ScalarType out_dtype) -> Tensor");
}
