// The quantizers' gradient, the straight-through estimator (the incoming gradient passed to x unchanged),
// registered for the Autograd key in C++: QAT calls a quantizer per weight and activation, and a Python
// autograd wrapper costs ~70-90 us a call on a GPU machine's host (norm/layer_norm_autograd.cpp). Device
// kernels below this key: *_quantize_cpu.cpp, *_quantize_cuda.cu.
#include <torch/autograd.h>
#include <torch/library.h>

namespace vitfast {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr char kFloat[] = "vitfast::float_quantize";
constexpr char kFixed[] = "vitfast::fixed_point_quantize";
constexpr char kBlock[] = "vitfast::block_quantize";

// One quantizer op, named kName, with the arguments after x of types Args (its schema's C++ types).
template <const char* kName, class... Args>
struct StraightThrough : public torch::autograd::Function<StraightThrough<kName, Args...>> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, Args... args) {
    at::AutoDispatchBelowADInplaceOrView below;
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(kName, "").template typed<Tensor(const Tensor&, Args...)>();
    return {op.call(x, args...)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(1 + sizeof...(Args));  // x's gradient; none for the format, rounding and seed
    out[0] = grads[0];
    return out;
  }

  static Tensor call(const Tensor& x, Args... args) {
    return StraightThrough::apply(x, args...)[0];
  }
};

using FloatQuantize = StraightThrough<kFloat, int64_t, int64_t, c10::string_view, bool, bool, bool,
                                      const std::optional<Tensor>&>;
using FixedPointQuantize = StraightThrough<kFixed, int64_t, int64_t, bool, bool, c10::string_view,
                                           const std::optional<Tensor>&>;
using BlockQuantize = StraightThrough<kBlock, int64_t, std::optional<int64_t>, std::optional<int64_t>, c10::string_view,
                                      const std::optional<Tensor>&>;

}  // namespace

TORCH_LIBRARY_IMPL(vitfast, Autograd, m) {
  m.impl("float_quantize", &FloatQuantize::call);
  m.impl("fixed_point_quantize", &FixedPointQuantize::call);
  m.impl("block_quantize", &BlockQuantize::call);
}

}  // namespace vitfast
