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
  m.def("attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? bias, float scale, bool return_logits, "
        "bool fp16_accumulate) -> (Tensor out, Tensor lse, Tensor logits)");
  m.def("attention_bwd(Tensor grad_out, Tensor? grad_logits, Tensor q, Tensor k, Tensor v, Tensor? bias, "
        "Tensor out, Tensor lse, float scale, bool fp16_accumulate, bool bias_grad) -> (Tensor dq, Tensor dk, Tensor dv, Tensor dbias)");
}
