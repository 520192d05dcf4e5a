// kernel_gate.h's gate, and the questions Python asks of it: torch.ops.vitfast.kernel_fingerprints()
// ("family=hex;...", what this build compiled), kernel_toolchain() (the JSON of the toolchain those
// hash), gpu_key(major, minor, sms), set_kernel_records(records) (vitfast/kernels/gate.py, at import:
// "gpu key\tfamily,family\n..." for the families whose record matches this build), kernel_verdict(family,
// gpu key, hopper, warn) and build_flavor() ("release", or "debug_sync": the sm90 attention's bounded,
// phase-checked barrier waits).
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "generated/kernel_fingerprints.h"
#include "kernel_gate.h"

namespace vitfast {
namespace {

const std::vector<std::string>& built_families() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    std::stringstream text(VITFAST_KERNEL_FINGERPRINTS);
    for (std::string item; std::getline(text, item, ';');) out.push_back(item.substr(0, item.find('=')));
    return out;
  }();
  return names;
}

bool opted_in() {
  const char* v = std::getenv("VITFAST_UNVERIFIED_KERNELS");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

struct Gate {
  std::mutex mutex;
  std::map<std::string, std::set<std::string>> verified;  // gpu key -> families recorded at this build
  std::set<std::string> warned;                           // gpu keys
  bool opt_in = opted_in();
};

Gate& gate() {
  static Gate g;
  return g;
}

bool is_sm90(const std::string& family) { return family.size() > 5 && family.substr(family.size() - 5) == "_sm90"; }

std::string refusal(const std::string& gpu, const std::set<std::string>& verified, bool hopper) {
  std::string names;
  for (const std::string& f : built_families()) {
    if (!verified.count(f) && (hopper || !is_sm90(f))) names += (names.empty() ? "" : ", ") + f;
  }
  return "vitfast: no record shows these CUDA kernels passing their tests on this kind of GPU (" + gpu +
         ": compute capability and SM count) as this build compiled them: " + names +
         ". Their ops run the library path, the ATen composite or the CPU twin instead (the same ops, slower). "
         "`python -m vitfast.check --gpu` tests them on this GPU and records those that pass; "
         "VITFAST_UNVERIFIED_KERNELS=1 runs them unverified.";
}

void set_kernel_records(const std::string& records) {
  Gate& g = gate();
  const std::lock_guard<std::mutex> lock(g.mutex);
  g.verified.clear();
  g.warned.clear();
  g.opt_in = opted_in();
  std::stringstream lines(records);
  for (std::string line; std::getline(lines, line);) {
    const size_t tab = line.find('\t');
    TORCH_CHECK(tab != std::string::npos, "set_kernel_records: expected 'gpu key<TAB>family,...', got '", line, "'");
    std::set<std::string>& families = g.verified[line.substr(0, tab)];
    std::stringstream list(line.substr(tab + 1));
    for (std::string f; std::getline(list, f, ',');) {
      if (!f.empty()) families.insert(f);
    }
  }
}

}  // namespace

std::string gpu_key(int major, int minor, int sms) {
  return "sm_" + std::to_string(major) + std::to_string(minor) + "x" + std::to_string(sms);
}

namespace {

// Whether family may run on GPUs of key gpu; where not (and warn), *message is the refusal's warning if
// it is that kind's first.
bool decide(const std::string& family, const std::string& gpu, bool hopper, bool warn, std::string* message) {
  const auto& names = built_families();
  TORCH_CHECK(std::find(names.begin(), names.end(), family) != names.end(), "kernel_allowed: no kernel family '",
              family, "' in this build (vitfast/kernels/fingerprints.py names them)");
  Gate& g = gate();
  const std::lock_guard<std::mutex> lock(g.mutex);
  if (g.opt_in) return true;
  static const std::set<std::string> none;
  const auto it = g.verified.find(gpu);
  const std::set<std::string>& verified = it == g.verified.end() ? none : it->second;
  if (verified.count(family)) return true;
  if (warn && g.warned.insert(gpu).second) *message = refusal(gpu, verified, hopper);
  return false;
}

}  // namespace

bool kernel_allowed(const std::string& family, const std::string& gpu, bool hopper, bool warn) {
  std::string message;
  const bool allowed = decide(family, gpu, hopper, warn, &message);
  if (!message.empty()) TORCH_WARN(message);
  return allowed;
}

// Python's question (vitfast.kernels.gate.allowed): the verdict, and the warning for Python to raise (a C++
// warning from an op called through torch.ops reaches stderr, not Python's warnings).
TORCH_LIBRARY_FRAGMENT(vitfast, m) {
  m.def("kernel_fingerprints() -> str", [] { return std::string(VITFAST_KERNEL_FINGERPRINTS); });
  m.def("kernel_toolchain() -> str", [] { return std::string(VITFAST_KERNEL_TOOLCHAIN); });
  m.def("gpu_key(int major, int minor, int sms) -> str", [](int64_t major, int64_t minor, int64_t sms) {
    TORCH_CHECK(major > 0 && minor >= 0 && sms > 0, "gpu_key: expected a compute capability and an SM count, got ",
                major, ".", minor, " and ", sms);
    return gpu_key(static_cast<int>(major), static_cast<int>(minor), static_cast<int>(sms));
  });
#ifdef VITFAST_DEBUG_SYNC
  m.def("build_flavor() -> str", [] { return std::string("debug_sync"); });  // setup.py, VITFAST_DEBUG_SYNC=1
#else
  m.def("build_flavor() -> str", [] { return std::string("release"); });
#endif
  m.def("set_kernel_records(str records) -> ()", [](std::string records) { set_kernel_records(records); });
  m.def("kernel_verdict(str family, str gpu, bool hopper=True, bool warn=True) -> (bool, str?)",
        [](std::string family, std::string gpu, bool hopper, bool warn) {
          std::string message;
          const bool allowed = decide(family, gpu, hopper, warn, &message);
          return std::make_tuple(allowed, message.empty() ? std::nullopt : std::optional<std::string>(message));
        });
}

}  // namespace vitfast
