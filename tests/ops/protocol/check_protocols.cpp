// Runs the Hopper attention kernels' barrier protocols (csrc/attention/sm90/attention_protocol.h, the
// skeletons the kernels are compiled from) in the recording model (barrier_model.h), for every
// configuration the kernels instantiate, the walks a persistent CTA takes at 1 .. 4 x SMs + 3 work items
// on 132 and 114 SMs, under seeded random schedules and a bounded search of schedules.
//
//   check_protocols [--kernel fwd|fwd_long|bwd|all] [--seeds N] [--bound P] [--sms 132,114] [--dims 64,80]
//                   [--max-items M] [--fault NAME] [--hardware-only]
// Prints one line per configuration and the first failure in full; exit status 1 when a check fails.
// --fault injects one defect into one role's policy (see faults()), to show the checks catch it;
// --hardware-only drops the checks of the phase a role means (the kernels' barriers carry none).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "attention/attention_path.h"
#include "attention/sm90/attention_protocol.h"
#include "barrier_model.h"

namespace {

namespace proto = vitfast::attention::sm90::protocol;
using model::Barrier;
using model::Faults;
using model::Sync;
using model::World;

struct Options {
  std::string kernel = "all";
  int seeds = 20;
  int bound = 1;
  std::vector<int> sms = {132, 114};
  int max_items = -1;  // work items per CTA walk in the search (-1: every walk)
  std::string fault;
  bool hardware_only = false;
  std::vector<int> dims;  // head dims to check (empty: every one built)
};

Faults faults(const std::string& name) {
  Faults f;
  if (name.empty()) return f;
  if (name == "producer_skips_empty_wait") {
    f.skip_wait = "empty";
    f.skip_wait_role = 0;
  } else if (name == "consumer_skips_full_wait") {
    f.skip_wait = "full";
    f.skip_wait_role = 2;
  } else if (name == "expect_fewer_bytes") {
    f.expect_delta = -16;
  } else if (name == "expect_more_bytes") {
    f.expect_delta = 16;
  } else if (name == "skip_store_wait") {
    f.skip_store_wait = true;
  } else if (name == "consumer_skips_release") {
    f.skip_arrive = "empty";
    f.skip_arrive_role = 2;
  } else {
    std::cerr << "--fault: unknown fault " << name << "\n";
    std::exit(2);
  }
  return f;
}

auto noop = [](auto&&...) {};

// One CTA's run of Protocol over walk w under chooser c; the barriers named by the protocol's bar_name
// (as the debug build's traps name them).
template <class Protocol, class Shape, class Load, class Body>
bool run_cta(const proto::Walk& w, const Shape& shape, model::Chooser& c, const Faults& f, Load load, Body body,
             std::string& error, int& steps) {
  World world(c);
  world.faults = f;
  typename Protocol::template Bars<Barrier> bars;
  Sync init{&world, -1};
  Protocol::init(init, bars);
  Barrier* all = reinterpret_cast<Barrier*>(&bars);
  static_assert(sizeof(bars) % sizeof(Barrier) == 0, "Bars holds barriers alone");
  for (size_t i = 0; i < sizeof(bars) / sizeof(Barrier); ++i) {
    int stage = 0;
    const char* name = Protocol::bar_name(int(i), stage);
    world.name(all[i], std::string(name) + "[" + std::to_string(stage) + "]");
  }
  world.add_role("producer", [&](Sync& s) { Protocol::producer(s, bars, w, shape, load); });
  for (int cw = 0; cw < proto::kConsumers; ++cw) {
    world.add_role("consumer " + std::to_string(cw),
                   [&, cw](Sync& s) { Protocol::consumer(s, bars, w, shape, cw, body); });
  }
  const bool ok = world.run();
  steps = world.steps;
  if (!ok) error = world.error;
  return ok;
}

// The distinct walks of a persistent CTA over `items` work items on `sms` SMs, by what the protocol
// sees of each item (sig(item)), for items in 1 .. 4 sms + 3 (in steps of `unit`).
template <class Sig>
std::vector<proto::Walk> walks(const std::vector<int>& sms_list, int unit, Sig sig) {
  std::set<std::vector<int>> seen;
  std::vector<proto::Walk> out;
  for (int sms : sms_list) {
    for (int items = unit; items <= 4 * sms + 3 + unit; items += unit) {
      const int grid = items < sms ? items : sms;
      for (int first = 0; first < grid; ++first) {
        std::vector<int> s;
        for (int i = first; i < items; i += grid) s.push_back(sig(i));
        if (seen.insert(s).second) out.push_back({first, grid, items});
      }
    }
  }
  return out;
}

struct Tally {
  int configs = 0, runs = 0, failures = 0;
  long steps = 0;
};

// Random schedules and the bounded search for each walk; stops at a configuration's first failure.
template <class Protocol, class Shape, class Load, class Body>
bool check(const std::string& label, const std::vector<proto::Walk>& ws, const Shape& shape, const Options& o,
           Load load, Body body, Tally& tally) {
  Faults f = faults(o.fault);
  f.hardware_only = o.hardware_only;
  int runs = 0;
  long steps = 0;
  auto fail = [&](const proto::Walk& w, const std::string& how, const std::string& error) {
    std::cout << "FAIL " << label << " walk(first " << w.first() << ", stride " << w.stride() << ", items " << w.count()
              << ") " << how << ":\n  " << error << "\n";
    ++tally.failures;
    return false;
  };
  // One schedule of walk w; false (after the failure's report) when a check fails.
  auto attempt = [&](const proto::Walk& w, model::Chooser& c, const std::string& how) {
    std::string error;
    int n = 0;
    ++runs;
    if (!run_cta<Protocol>(w, shape, c, f, load, body, error, n)) return fail(w, how, error);
    steps += n;
    return true;
  };
  for (const proto::Walk& w : ws) {
    for (int seed = 0; seed < o.seeds; ++seed) {
      model::RandomChooser c(uint64_t(seed) * 0x9E3779B97F4A7C15ull + uint64_t(w.first()) * 131 + uint64_t(w.count()));
      if (!attempt(w, c, "seed " + std::to_string(seed))) return false;
    }
    const int items = (w.count() - w.first() + w.stride() - 1) / w.stride();
    if (o.bound >= 0 && (o.max_items < 0 || items <= o.max_items)) {
      std::vector<int> prefix;
      for (;;) {
        model::SearchChooser c(prefix, o.bound);
        if (!attempt(w, c, "search schedule " + std::to_string(runs + 1))) return false;
        if (!c.next(prefix)) break;
      }
    }
  }
  std::cout << "ok   " << label << ": " << ws.size() << " walks, " << runs << " schedules, " << steps << " steps\n";
  ++tally.configs;
  tally.runs += runs;
  tally.steps += steps;
  return true;
}

// ---- the whole-head forward: every head dim and key tile, N at both ends of each tile's range ----
template <int D, int kKeys>
void fwd_config(const Options& o, Tally& t) {
  using C = proto::FwdConfig<D, kKeys>;
  using P = typename C::Protocol;
  // kIdleHalf is what the key tile's lengths make of a tile's second half: past N for some tile
  // exactly where the configuration compiles the idle consumer's branch.
  for (int N = kKeys - 63; N <= kKeys && !C::kHeadPerWg; ++N) {
    const int m_blocks = (N + 127) / 128;
    if (((2 * m_blocks - 1) * 64 >= N) != C::kIdleHalf) {
      std::cout << "FAIL fwd d=" << D << " keys=" << kKeys << " N=" << N << ": kIdleHalf is "
                << C::kIdleHalf << " but the last tile's second half " << ((2 * m_blocks - 1) * 64 >= N ? "is" : "is not")
                << " past N\n";
      ++t.failures;
      return;
    }
  }
  for (int N : {kKeys - 63, kKeys}) {
    const int m_blocks = (N + 64 * C::kQHalves - 1) / (64 * C::kQHalves);
    const typename P::Shape shape{N, m_blocks};
    // The protocol sees of a tile whether its last Q half lies past N.
    const auto ws = walks(o.sms, m_blocks,
                          [&](int tile) { return ((tile % m_blocks + 1) * C::kQHalves - 1) * 64 >= N ? 1 : 0; });
    check<P>("fwd d=" + std::to_string(D) + " keys=" + std::to_string(kKeys) + " N=" + std::to_string(N) +
                 " stages=" + std::to_string(C::kStages),
             ws, shape, o, proto::LoadQKV{noop, noop, noop}, proto::FwdBody{noop, noop, noop}, t);
  }
}

// ---- the key-tiled forward: every head dim, N from 1 (fp16 accumulators) to 4096 ----
template <int D>
void fwd_long_config(const Options& o, Tally& t) {
  using C = proto::FwdLongConfig<D>;
  using P = typename C::Protocol;
  for (int N : {1, 64, 65, 128, 129, 192, 256, 257, 300, 320, 577, 1025, 4096}) {
    const int chunks = (N + 63) / 64, key_tiles = (chunks + C::kChunks - 1) / C::kChunks;
    const int m_blocks = (N + 127) / 128;
    const typename P::Shape shape{N, m_blocks, chunks, key_tiles};
    Options oo = o;
    if (key_tiles > 2) oo.bound = -1;                         // long walks: random schedules only
    if (key_tiles > 4) oo.seeds = std::max(2, o.seeds / 4);  // and fewer of them
    const auto ws = walks(o.sms, m_blocks, [&](int tile) { return ((tile % m_blocks) * 2 + 1) * 64 >= N ? 1 : 0; });
    check<P>("fwd_long d=" + std::to_string(D) + " chunks=" + std::to_string(C::kChunks) + " N=" + std::to_string(N) +
                 " key_tiles=" + std::to_string(key_tiles),
             ws, shape, oo, proto::LoadQKV{noop, noop, noop}, proto::FwdLongBody{noop, noop, noop, noop}, t);
  }
}

// ---- the backward: every head dim, one CTA per head (key tile by N) and key groups ----
template <int D, int kKeys>
void bwd_config(const Options& o, Tally& t, int N, int groups) {
  using C = proto::BwdConfig<D, kKeys>;
  using P = typename C::Protocol;
  const typename P::Shape shape{(N + 63) / 64, groups};
  Options oo = o;
  if (shape.chunks > 4) {
    oo.bound = -1;
    oo.seeds = std::max(2, o.seeds / 4);
  }
  // The protocol sees how many work items a CTA walks and nothing else of them.
  const auto ws = walks(o.sms, groups, [](int) { return 0; });
  check<P>("bwd d=" + std::to_string(D) + " keys=" + std::to_string(kKeys) + " N=" + std::to_string(N) +
               " groups=" + std::to_string(groups) + " kv_stages=" + std::to_string(C::kKvStages) +
               (C::kHeadPerWg ? " head-per-consumer" : ""),
           ws, shape, oo, proto::BwdLoad{noop, noop, noop},
           proto::BwdBody{noop, noop, noop, noop, noop, noop}, t);
}

template <int D>
void bwd_dim(const Options& o, Tally& t) {
  using vitfast::sm90_bwd_key_groups;
  for (int N : {1, 64, 65, 128, 129, 192, 193, 256, 257, 577, 1025, 4096}) {
    const int groups = sm90_bwd_key_groups(D, N);
    if (groups == 1) {
      switch (proto::fwd_keys(N)) {
        case 64: bwd_config<D, 64>(o, t, N, 1); break;
        case 128: bwd_config<D, 128>(o, t, N, 1); break;
        case 192: if constexpr (vitfast::sm90_bwd_fits(D, 192)) bwd_config<D, 192>(o, t, N, 1); break;
        case 256: if constexpr (vitfast::sm90_bwd_fits(D, 256)) bwd_config<D, 256>(o, t, N, 1); break;
        default: break;
      }
    } else {
      bwd_config<D, vitfast::sm90_bwd_group_keys(D)>(o, t, N, groups);
    }
  }
}

template <int D>
void dim(const Options& o, Tally& t) {
  if (o.kernel == "fwd" || o.kernel == "all") {
    fwd_config<D, 64>(o, t);
    fwd_config<D, 128>(o, t);
    fwd_config<D, 192>(o, t);
    fwd_config<D, 256>(o, t);
  }
#ifndef VITFAST_PROTOCOL_OLD_IDLE_RELEASE  // the old protocol differs in the whole-head forward alone
  if (o.kernel == "fwd_long" || o.kernel == "all") fwd_long_config<D>(o, t);
  if (o.kernel == "bwd" || o.kernel == "all") bwd_dim<D>(o, t);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << ": a value is expected\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--kernel") {
      o.kernel = value();
    } else if (a == "--seeds") {
      o.seeds = std::atoi(value().c_str());
    } else if (a == "--bound") {
      o.bound = std::atoi(value().c_str());
    } else if (a == "--max-items") {
      o.max_items = std::atoi(value().c_str());
    } else if (a == "--fault") {
      o.fault = value();
      faults(o.fault);
    } else if (a == "--hardware-only") {
      o.hardware_only = true;
    } else if (a == "--sms" || a == "--dims") {
      std::vector<int>& list = a == "--sms" ? o.sms : o.dims;
      list.clear();
      std::stringstream s(value());
      for (std::string x; std::getline(s, x, ',');) list.push_back(std::atoi(x.c_str()));
    } else {
      std::cerr << "unknown argument " << a << "\n";
      return 2;
    }
  }
  if (o.kernel != "fwd" && o.kernel != "fwd_long" && o.kernel != "bwd" && o.kernel != "all") {
    std::cerr << "--kernel: expected fwd, fwd_long, bwd or all, got " << o.kernel << "\n";
    return 2;
  }
  Tally t;
  for (int d : vitfast::kSm90HeadDims) {
    if (!o.dims.empty() && std::find(o.dims.begin(), o.dims.end(), d) == o.dims.end()) continue;
    vitfast::with_head_dim(d, [&](auto dim_c) { dim<decltype(dim_c)::value>(o, t); }, [] {});
  }
  std::cout << (t.failures ? "FAILED" : "PASSED") << ": " << t.configs << " configurations, " << t.runs
            << " schedules, " << t.steps << " steps\n";
  return t.failures ? 1 : 0;
}
