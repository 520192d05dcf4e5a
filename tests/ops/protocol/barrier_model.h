#pragma once
// A recording model of the Hopper kernels' synchronisation, the Sync policy attention_protocol.h's
// skeletons are compiled with on the host. Each role (the producer thread, each consumer warpgroup)
// runs the kernel's own skeleton on its own stack (ucontext); every Sync call is a scheduling point,
// and TMA fills and stores complete as separate events, so a scheduler can interleave the roles and
// the copies in any order: seeded at random, or every schedule within a few delays of a round-robin one.
//
// The barriers behave as sm_90 mbarriers: an arrival count and a transaction count per phase, the
// phase completing when both reach zero, waits on a phase's parity. What is checked, with the role,
// the barrier and the schedule named on failure:
//   - an arrival lands on the phase it is meant for, and never on a phase with no pending arrival;
//   - a wait returns for the phase it is meant for (never a later one of the same parity), and every
//     wait is eventually satisfied (no deadlock);
//   - a buffer is filled only when no role reads, writes or stores from it (every consumer released
//     its previous use);
//   - a consumer reads or writes a filled buffer only after waiting, in that use, for the phase its
//     fill completes on, and only once the fill has landed;
//   - a fill lands within its phase: the phase's expected bytes are the boxes' bytes;
//   - a role releases no buffer its own store still reads, and exits with no store in flight;
//   - at the end every fill was waited for and no barrier holds a partial phase.
#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "attention/sm90/attention_protocol.h"

namespace model {

using vitfast::attention::sm90::protocol::Arrivals;
using vitfast::attention::sm90::protocol::Buf;

inline std::string buf_name(const Buf& b) {
  static const char* kinds[] = {"q", "k", "v", "dout", "o", "ds"};
  std::ostringstream s;
  s << kinds[b.kind] << "[" << b.stage << "][" << b.slot << "]";
  return s.str();
}
struct BufLess {
  bool operator()(const Buf& a, const Buf& b) const {
    return std::tie(a.kind, a.stage, a.slot) < std::tie(b.kind, b.stage, b.slot);
  }
};
inline bool same(const Buf& a, const Buf& b) { return a.kind == b.kind && a.stage == b.stage && a.slot == b.slot; }

// Faults a test injects into one role's policy, to show the checks catch each class of defect.
struct Faults {
  // Checks by what the hardware does alone: no check of the phase a role means by an arrival or a
  // wait (which the kernels' barriers do not carry), a wait's phase taken as the latest completed.
  bool hardware_only = false;
  std::string skip_wait;     // this role's waits on barriers whose name starts so return at once
  int skip_wait_role = -1;
  int expect_delta = 0;      // added to every expected byte count
  bool skip_store_wait = false;
  int skip_arrive_role = -1;  // this role never arrives on `skip_arrive`-named barriers
  std::string skip_arrive;
};

struct Barrier {
  std::string name;
  bool inited = false;
  int count = 0, pending = 0;
  int64_t tx = 0;
  int completed = 0;           // phases completed; the current phase's index
  std::vector<Buf> releases;   // what an arrival hands back
  std::set<int> waited;        // phases some role waited for
};

struct Fill {
  Barrier* bar;
  Buf buf;
  int bytes, phase;
  int role;
};
struct Store {
  Buf buf;
  int role;
};

struct BufState {
  Barrier* bar = nullptr;  // the barrier and phase its last fill completes on
  int phase = -1;
  bool landed = true;
  std::map<int, bool> holders;  // role -> writing (true) or reading (false)
  int stores = 0;               // TMA stores reading it, in flight
};

class World;

// The Sync policy of one role.
struct Sync {
  World* w;
  int role;
  void init(Barrier& bar, int arrivals);
  void releases(Barrier& bar, Buf buf);
  void wait(Barrier& bar, int phase);
  void expect(Barrier& bar, int phase, int bytes);
  template <class Load>
  void fill(Barrier& bar, Buf buf, int bytes, Load&&) {
    fill_box(bar, buf, bytes);
  }
  void fill_box(Barrier& bar, Buf buf, int bytes);
  void arrive(Barrier& bar, int phase, Arrivals who);
  void read(Buf buf);
  bool fill_seen(Buf buf, const char* verb);
  void done(Buf buf);
  void write(Buf buf);
  void store(Buf buf);
  void store_wait();
  void sync_role();
  void sync_consumers();
  void item(int i);
};

// Chooses the next event among n: at random, or replaying a prefix then taking the first (with the
// preemption bound of a systematic search applied by the caller).
struct Chooser {
  virtual int choose(int n, int preferred) = 0;
  virtual ~Chooser() = default;
};

class World {
 public:
  struct Role {
    std::string name;
    ucontext_t ctx;
    std::vector<char> stack;
    bool done = false;
    std::function<bool()> ready;     // set while blocked
    std::string blocked_on;
    std::map<const Barrier*, int> waited;  // the last phase this role waited for, per barrier
    int stores = 0;
    std::function<void(Sync&)> body;
  };

  Faults faults;
  std::string error;
  std::vector<std::string> trace;  // the last events, for the failure message
  int steps = 0;
  int preemptions = 0;

  explicit World(Chooser& chooser) : chooser_(chooser) {}

  void name(Barrier& bar, const std::string& n) { bar.name = n; }
  int add_role(const std::string& name, std::function<void(Sync&)> body) {
    roles_.push_back(std::make_unique<Role>());
    roles_.back()->name = name;
    roles_.back()->body = std::move(body);
    return int(roles_.size()) - 1;
  }
  void add_barrier(Barrier* bar) { bars_.push_back(bar); }
  bool is_consumer(int role) const { return roles_[role]->name.rfind("consumer", 0) == 0; }
  const std::string& role_name(int r) const { return roles_[r]->name; }

  // Runs every role to its end (or the first failure). Returns true when every check passed.
  bool run(int max_steps = 1 << 22);

  // ---- what the policy calls ----
  void fail(const std::string& what);
  void yield(int role);
  void block(int role, const std::string& on, std::function<bool()> ready);
  void note(int role, const std::string& what);
  BufState& buf(const Buf& b) { return bufs_[b]; }
  Role& role(int r) { return *roles_[r]; }
  void issue_fill(const Fill& f) { fills_.push_back(f); }
  void issue_store(const Store& s) { stores_.push_back(s); }
  void complete(Barrier& bar);
  void named_barrier(int role);
  bool storing(int role, const Buf& b) const {
    for (const Store& s : stores_) {
      if (s.role == role && same(s.buf, b)) return true;
    }
    return false;
  }
  std::vector<Fill> all_fills;

 private:
  static void trampoline(unsigned hi, unsigned lo);
  void land_fill(size_t i);
  void finish_store(size_t i);
  void final_checks();

  Chooser& chooser_;
  ucontext_t sched_;
  int current_ = -1;
  bool aborted_ = false;
  std::vector<std::unique_ptr<Role>> roles_;
  std::vector<Barrier*> bars_;
  std::map<Buf, BufState, BufLess> bufs_;
  std::vector<Fill> fills_;
  std::vector<Store> stores_;
  int named_arrived_ = 0, named_generation_ = 0;
};

// ---- World ----

inline void World::fail(const std::string& what) {
  if (error.empty()) {
    std::ostringstream s;
    s << what << "\n  after " << steps << " steps; the last events:";
    const size_t from = trace.size() > 24 ? trace.size() - 24 : 0;
    for (size_t i = from; i < trace.size(); ++i) s << "\n    " << trace[i];
    error = s.str();
  }
  aborted_ = true;
  if (current_ >= 0) {
    Role& r = *roles_[current_];
    swapcontext(&r.ctx, &sched_);  // never resumed
  }
}

inline void World::note(int role, const std::string& what) {
  trace.push_back((role >= 0 ? roles_[role]->name + ": " : std::string()) + what);
  if (trace.size() > 64) trace.erase(trace.begin(), trace.begin() + 32);
}

inline void World::yield(int role) {
  Role& r = *roles_[role];
  swapcontext(&r.ctx, &sched_);
}

inline void World::block(int role, const std::string& on, std::function<bool()> ready) {
  Role& r = *roles_[role];
  if (ready()) return;
  r.blocked_on = on;
  r.ready = std::move(ready);
  swapcontext(&r.ctx, &sched_);
  r.ready = nullptr;
  r.blocked_on.clear();
}

inline void World::complete(Barrier& bar) {
  if (bar.pending == 0 && bar.tx == 0) {
    bar.completed += 1;
    bar.pending = bar.count;
    note(-1, bar.name + " completes phase " + std::to_string(bar.completed - 1));
  }
}

inline void World::named_barrier(int role) {
  const int gen = named_generation_;
  if (++named_arrived_ == 2) {
    named_arrived_ = 0;
    ++named_generation_;
    return;
  }
  block(role, "the consumers' named barrier", [this, gen] { return named_generation_ != gen; });
}

inline void World::trampoline(unsigned hi, unsigned lo) {
  World* w = reinterpret_cast<World*>((uintptr_t(hi) << 32) | uintptr_t(lo));
  const int r = w->current_;
  Sync sync{w, r};
  w->roles_[r]->body(sync);
  if (w->roles_[r]->stores != 0) w->fail(w->roles_[r]->name + " exits with a TMA store in flight");
  w->roles_[r]->done = true;
  w->note(r, "exits");
  swapcontext(&w->roles_[r]->ctx, &w->sched_);
}

inline void World::land_fill(size_t i) {
  const Fill f = fills_[i];
  fills_.erase(fills_.begin() + long(i));
  Barrier& bar = *f.bar;
  note(-1, "TMA lands " + buf_name(f.buf) + " (" + std::to_string(f.bytes) + " bytes) on " + bar.name);
  if (bar.completed != f.phase) {
    fail("a fill of " + buf_name(f.buf) + " landed after " + bar.name + "'s phase " + std::to_string(f.phase) +
         " had completed: the phase expected fewer bytes than its boxes hold");
    return;
  }
  bar.tx -= f.bytes;
  if (bar.tx < 0 && bar.pending == 0) {
    fail(bar.name + ": more bytes landed in phase " + std::to_string(f.phase) + " than it expected");
    return;
  }
  bufs_[f.buf].landed = true;
  complete(bar);
}

inline void World::finish_store(size_t i) {
  const Store s = stores_[i];
  stores_.erase(stores_.begin() + long(i));
  bufs_[s.buf].stores -= 1;
  roles_[s.role]->stores -= 1;
  note(s.role, "TMA store from " + buf_name(s.buf) + " has read it");
}

inline bool World::run(int max_steps) {
  constexpr size_t kStack = 256 * 1024;
  for (size_t r = 0; r < roles_.size(); ++r) {
    Role& role = *roles_[r];
    role.stack.resize(kStack);
    getcontext(&role.ctx);
    role.ctx.uc_stack.ss_sp = role.stack.data();
    role.ctx.uc_stack.ss_size = kStack;
    role.ctx.uc_link = nullptr;
    const uintptr_t self = reinterpret_cast<uintptr_t>(this);
    makecontext(&role.ctx, reinterpret_cast<void (*)()>(&World::trampoline), 2, unsigned(self >> 32),
                unsigned(self & 0xffffffffu));
  }
  int last = -1;
  while (!aborted_) {
    // Options: each runnable role, then each fill that may land, then each store that may finish.
    std::vector<int> options;  // >= 0: a role; -1 - i: fill i; -1000000 - i: store i
    for (size_t r = 0; r < roles_.size(); ++r) {
      Role& role = *roles_[r];
      if (!role.done && (!role.ready || role.ready())) options.push_back(int(r));
    }
    for (size_t i = 0; i < fills_.size(); ++i) options.push_back(-1 - int(i));
    for (size_t i = 0; i < stores_.size(); ++i) options.push_back(-1000000 - int(i));
    if (options.empty()) break;
    if (++steps > max_steps) {
      fail("no end after " + std::to_string(max_steps) + " steps");
      break;
    }
    // The role that ran last goes on unless the chooser preempts it.
    int preferred = -1;
    for (size_t k = 0; k < options.size(); ++k) {
      if (options[k] == last) preferred = int(k);
    }
    const int k = chooser_.choose(int(options.size()), preferred);
    if (preferred >= 0 && k != preferred) ++preemptions;
    const int o = options[size_t(k)];
    if (o >= 0) {
      current_ = o;
      last = o;
      swapcontext(&sched_, &roles_[size_t(o)]->ctx);
      current_ = -1;
    } else if (o > -1000000) {
      land_fill(size_t(-1 - o));
    } else {
      finish_store(size_t(-1000000 - o));
    }
  }
  if (!aborted_) {
    std::ostringstream blocked;
    for (auto& r : roles_) {
      if (!r->done) blocked << "\n    " << r->name << " waits on " << r->blocked_on;
    }
    if (!blocked.str().empty()) {
      fail("deadlock: no role can go on and no copy is in flight:" + blocked.str());
    } else {
      final_checks();
    }
  }
  return error.empty();
}

inline void World::final_checks() {
  for (const Fill& f : all_fills) {
    if (!f.bar->waited.count(f.phase)) {
      fail("the fill of " + buf_name(f.buf) + " on " + f.bar->name + " phase " + std::to_string(f.phase) +
           " was waited for by no role: the CTA may exit with it in flight");
      return;
    }
  }
  for (Barrier* bar : bars_) {
    if (bar->pending != bar->count || bar->tx != 0) {
      fail(bar->name + " ends in a partial phase (" + std::to_string(bar->count - bar->pending) + " of " +
           std::to_string(bar->count) + " arrivals, " + std::to_string(bar->tx) +
           " bytes pending): a role skipped a use another did not");
      return;
    }
  }
}

// ---- Sync ----

inline void Sync::init(Barrier& bar, int arrivals) {
  bar.inited = true;
  bar.count = bar.pending = arrivals;
  w->add_barrier(&bar);
}

inline void Sync::releases(Barrier& bar, Buf buf) { bar.releases.push_back(buf); }

inline void Sync::wait(Barrier& bar, int phase) {
  w->yield(role);
  if (!w->faults.skip_wait.empty() && w->faults.skip_wait_role == role &&
      bar.name.rfind(w->faults.skip_wait, 0) == 0) {
    w->note(role, "skips its wait on " + bar.name + " phase " + std::to_string(phase) + " (injected)");
    return;
  }
  const bool intent = !w->faults.hardware_only;
  if (intent && bar.completed >= phase + 2) {
    w->fail(w->role_name(role) + " waits for " + bar.name + " phase " + std::to_string(phase) + ", but " +
            std::to_string(bar.completed) + " phases have completed: its parity names a later phase");
    return;
  }
  const uint32_t parity = uint32_t(phase) & 1;
  w->note(role, "waits on " + bar.name + " phase " + std::to_string(phase));
  w->block(role, bar.name + " phase " + std::to_string(phase), [&bar, parity] {
    return (uint32_t(bar.completed) & 1) != parity;  // the hardware's try_wait.parity
  });
  if (intent && bar.completed != phase + 1) {
    w->fail(w->role_name(role) + " waited for " + bar.name + " phase " + std::to_string(phase) +
            " and returned at " + std::to_string(bar.completed) + " completed phases");
    return;
  }
  const int seen = intent ? phase : bar.completed - 1;
  bar.waited.insert(seen);
  w->role(role).waited[&bar] = seen;
}

inline void Sync::expect(Barrier& bar, int phase, int bytes) {
  w->yield(role);
  bytes += w->faults.expect_delta;
  w->note(role, "expects " + std::to_string(bytes) + " bytes on " + bar.name + " phase " + std::to_string(phase));
  if (!w->faults.hardware_only && bar.completed != phase) {
    w->fail(w->role_name(role) + " arms " + bar.name + " for phase " + std::to_string(phase) + " in phase " +
            std::to_string(bar.completed));
    return;
  }
  if (bar.pending == 0) {
    w->fail(w->role_name(role) + " arrives on " + bar.name + ", whose phase has no pending arrival");
    return;
  }
  bar.pending -= 1;
  bar.tx += bytes;
  w->complete(bar);
}

inline void Sync::fill_box(Barrier& bar, Buf buf, int bytes) {
  w->yield(role);
  BufState& b = w->buf(buf);
  w->note(role, "fills " + buf_name(buf) + " on " + bar.name + " phase " + std::to_string(bar.completed));
  for (auto& [r, writing] : b.holders) {
    w->fail("the producer refills " + buf_name(buf) + " while " + w->role_name(r) +
            (writing ? " writes it" : " reads it") + ": a stage refilled before every consumer released it");
    return;
  }
  if (b.stores != 0) {
    w->fail("the producer refills " + buf_name(buf) + " while a TMA store still reads it");
    return;
  }
  b.bar = &bar;
  b.phase = bar.completed;
  b.landed = false;
  const Fill f{&bar, buf, bytes, bar.completed, role};
  w->issue_fill(f);
  w->all_fills.push_back(f);
}

inline void Sync::arrive(Barrier& bar, int phase, Arrivals who) {
  for (int i = 0; i < int(who); ++i) {
    w->yield(role);
    if (w->faults.skip_arrive_role == role && bar.name.rfind(w->faults.skip_arrive, 0) == 0) {
      w->note(role, "skips its arrival on " + bar.name + " (injected)");
      continue;
    }
    w->note(role, "arrives on " + bar.name + " for phase " + std::to_string(phase));
    if (!w->faults.hardware_only && bar.completed != phase) {
      w->fail(w->role_name(role) + " releases " + bar.name + " for phase " + std::to_string(phase) +
              " while it is in phase " + std::to_string(bar.completed) + ": a release " +
              (phase > bar.completed ? "ahead of" : "behind") + " its phase");
      return;
    }
    if (bar.pending == 0) {
      w->fail(w->role_name(role) + " arrives on " + bar.name + ", whose phase has no pending arrival");
      return;
    }
    for (const Buf& b : bar.releases) {
      BufState& s = w->buf(b);
      if (w->storing(role, b)) {
        w->fail(w->role_name(role) + " releases " + buf_name(b) + " on " + bar.name +
                " while its TMA store still reads it");
        return;
      }
      s.holders.erase(role);
    }
    bar.pending -= 1;
    w->complete(bar);
  }
}

// Whether this role may touch buf (verb: "reads", "writes"): a TMA-filled buffer only after its fill
// landed and after this role waited, in that use, for the phase the fill completes on. Fails if not.
inline bool Sync::fill_seen(Buf buf, const char* verb) {
  BufState& b = w->buf(buf);
  const std::string who = w->role_name(role) + " " + verb + " " + buf_name(buf);
  if (b.bar == nullptr) {
    if (buf.kind == vitfast::attention::sm90::protocol::kDs) return true;  // written by the consumers
    w->fail(who + " before any fill of it");
    return false;
  }
  auto it = w->role(role).waited.find(b.bar);
  if (it == w->role(role).waited.end() || it->second != b.phase) {
    w->fail(who + ", filled on " + b.bar->name + " phase " + std::to_string(b.phase) +
            ", without having waited for that phase (its last wait: " +
            (it == w->role(role).waited.end() ? std::string("none") : std::to_string(it->second)) + ")");
    return false;
  }
  if (!b.landed) {
    w->fail(who + " before its fill landed");
    return false;
  }
  return true;
}

inline void Sync::read(Buf buf) {
  w->yield(role);
  BufState& b = w->buf(buf);
  w->note(role, "reads " + buf_name(buf));
  if (!fill_seen(buf, "reads")) return;
  for (auto& [r, writing] : b.holders) {
    if (r != role && writing) {
      w->fail(w->role_name(role) + " reads " + buf_name(buf) + " while " + w->role_name(r) + " writes it");
      return;
    }
  }
  b.holders.emplace(role, false);  // a role that writes it keeps writing
}

inline void Sync::done(Buf buf) {
  w->yield(role);
  w->note(role, "is done with " + buf_name(buf));
  w->buf(buf).holders.erase(role);
}

inline void Sync::write(Buf buf) {
  w->yield(role);
  BufState& b = w->buf(buf);
  w->note(role, "writes " + buf_name(buf));
  if (!fill_seen(buf, "writes")) return;
  for (auto& [r, writing] : b.holders) {
    if (r != role) {
      w->fail(w->role_name(role) + " writes " + buf_name(buf) + " while " + w->role_name(r) +
              (writing ? " writes it too" : " reads it"));
      return;
    }
  }
  if (b.stores != 0) {
    w->fail(w->role_name(role) + " writes " + buf_name(buf) + " while a TMA store reads it");
    return;
  }
  b.holders[role] = true;
}

inline void Sync::store(Buf buf) {
  w->yield(role);
  w->note(role, "stores from " + buf_name(buf));
  w->buf(buf).stores += 1;
  w->role(role).stores += 1;
  w->issue_store(Store{buf, role});
}

inline void Sync::store_wait() {
  w->yield(role);
  if (w->faults.skip_store_wait) {
    w->note(role, "skips its store wait (injected)");
    return;
  }
  World::Role& r = w->role(role);
  w->block(role, "its TMA stores", [&r] { return r.stores == 0; });
}

inline void Sync::sync_role() {
  w->yield(role);
  w->note(role, "passes its warpgroup's named barrier");
}

inline void Sync::sync_consumers() {
  w->yield(role);
  w->note(role, "arrives at the consumers' named barrier");
  w->named_barrier(role);
}

inline void Sync::item(int i) { w->note(role, "starts work item " + std::to_string(i)); }

// ---- choosers ----

// Uniform choices from a seed.
struct RandomChooser : Chooser {
  std::mt19937_64 rng;
  explicit RandomChooser(uint64_t seed) : rng(seed) {}
  int choose(int n, int) override { return int(rng() % uint64_t(n)); }
};

// One schedule of a depth-first search over the schedules with at most `bound` delays (delay-bounded
// scheduling, Emmi, Qadeer and Rakamaric 2011): the default scheduler keeps the role that ran last
// (or the first option), and each step may skip r options in rotation from it at a cost of r delays.
// The schedule replays `prefix` (ranks), then takes rank 0.
struct SearchChooser : Chooser {
  std::vector<int> prefix, ranks, counts, delays_before;
  int bound;
  SearchChooser(std::vector<int> p, int b) : prefix(std::move(p)), bound(b) {}
  int choose(int n, int pref) override {
    const size_t i = ranks.size();
    const int used = i == 0 ? 0 : delays_before[i - 1] + ranks[i - 1];
    const int rank = i < prefix.size() ? prefix[i] : 0;
    ranks.push_back(rank);
    counts.push_back(n);
    delays_before.push_back(used);
    return ((pref >= 0 ? pref : 0) + rank) % n;
  }
  // The next schedule's prefix, or false when the search is complete.
  bool next(std::vector<int>& out) const {
    for (size_t i = ranks.size(); i-- > 0;) {
      const int r = ranks[i] + 1;
      if (r < counts[i] && delays_before[i] + r <= bound) {
        out.assign(ranks.begin(), ranks.begin() + long(i));
        out.push_back(r);
        return true;
      }
    }
    return false;
  }
};

}  // namespace model
