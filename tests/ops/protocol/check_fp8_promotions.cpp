// fp8_linear's overlapped mainloop order (csrc/gemm/fp8_promotions.h) run against a model of wgmma's
// commit groups, for every k-tile count from 0 to 64. The model holds what the hardware and the
// numerics require:
//   - a k-tile is issued once, in order, into a fragment whose previous sum was already added;
//   - warpgroup.wait<n> completes the oldest groups until at most n are pending; a sum is read only
//     when its group is complete, in k order (the order CUTLASS's mainloop adds them), the first one
//     assigned and the others added; its stage is released then, once, in order;
//   - between the first issue and the last k-tile's issue, every promotion leaves a group queued
//     behind it (the overlap this order exists for);
//   - nothing is pending at the end, every k-tile was added once, and at most two groups are pending.
// FP8_PROMOTIONS_DEFECT=n swaps in an order with one defect (the tests check that each is caught).
// Prints "ok k=N" per count and PASSED, or "FAIL k=N: why" and exits 1.
#include <cstdio>
#include <deque>
#include <string>
#include <vector>

#include "gemm/fp8_promotions.h"

namespace {

struct Model {
  int k_tiles;
  std::deque<int> pending;                  // k-tiles of the groups in flight, oldest first
  int issued = 0, promoted = 0, released = 0, max_pending = 0;
  int part_tile[2] = {-1, -1};              // the k-tile whose sum each fragment holds (-1: none unread)
  bool part_complete[2] = {false, false};
  std::vector<int> added;                   // k-tiles in the order their sums were added
  std::string error;

  void fail(const std::string& why) {
    if (error.empty()) error = why;
  }
  void issue(int part) {
    if (issued >= k_tiles) return fail("issued k-tile " + std::to_string(issued) + " past the last");
    if (part_tile[part] != -1) {
      return fail("k-tile " + std::to_string(issued) + " issued into fragment " + std::to_string(part) +
                  " while k-tile " + std::to_string(part_tile[part]) + "'s sum was unread");
    }
    part_tile[part] = issued;
    part_complete[part] = false;
    pending.push_back(issued++);
    if (static_cast<int>(pending.size()) > max_pending) max_pending = static_cast<int>(pending.size());
  }
  void promote(int part, int in_flight, bool first) {
    while (static_cast<int>(pending.size()) > in_flight) {  // warpgroup.wait<in_flight>
      const int done = pending.front();
      pending.pop_front();
      for (int p = 0; p < 2; ++p) {
        if (part_tile[p] == done) part_complete[p] = true;
      }
    }
    const int tile = part_tile[part];
    if (tile == -1) return fail("fragment " + std::to_string(part) + " read with no sum in it");
    if (!part_complete[part]) return fail("k-tile " + std::to_string(tile) + "'s sum read while its group runs");
    if (tile != promoted) return fail("k-tile " + std::to_string(tile) + " added out of order");
    if (first != (tile == 0)) return fail(first ? "a later sum assigned over the accumulators" : "the first sum added to uncleared accumulators");
    if (issued < k_tiles && pending.empty()) {
      return fail("promotion of k-tile " + std::to_string(tile) + " with no group queued behind it");
    }
    added.push_back(tile);
    part_tile[part] = -1;
    ++promoted;
    ++released;  // the stage of k-tile `tile`: released in order, as the sums are added
  }
  std::string check_end() {
    if (!error.empty()) return error;
    if (!pending.empty()) return std::to_string(pending.size()) + " group(s) still in flight at the end";
    if (issued != k_tiles || promoted != k_tiles || released != k_tiles) {
      return "issued " + std::to_string(issued) + ", added " + std::to_string(promoted) + " of " +
             std::to_string(k_tiles) + " k-tiles";
    }
    if (max_pending > 2) return std::to_string(max_pending) + " groups in flight: more than the two fragments";
    return "";
  }
};

#ifdef FP8_PROMOTIONS_DEFECT
// The order with one defect each: 1 reads the newest group's sum (wait<1> where wait<0> is due at
// the end); 2 issues into the fragment still holding an unread sum; 3 drains before every promotion
// (CUTLASS's order: correct, but nothing overlaps).
template <class Issue, class Promote>
void defective(int k_tiles, Issue&& issue, Promote&& promote) {
  using P0 = std::integral_constant<int, 0>;
  using P1 = std::integral_constant<int, 1>;
  using W0 = std::integral_constant<int, 0>;
  using W1 = std::integral_constant<int, 1>;
  if (k_tiles <= 0) return;
  if (FP8_PROMOTIONS_DEFECT == 3) {
    for (int k = 0; k < k_tiles; ++k) {
      issue(P0{});
      if (k == 0) promote(P0{}, W0{}, std::true_type{}); else promote(P0{}, W0{}, std::false_type{});
    }
    return;
  }
  issue(P0{});
  if (k_tiles == 1) return promote(P0{}, W0{}, std::true_type{});
  issue(P1{});
  promote(P0{}, W1{}, std::true_type{});
  for (int k = 2; k < k_tiles; ++k) {
    if (FP8_PROMOTIONS_DEFECT == 2) {
      if (k % 2 == 0) { issue(P1{}); promote(P1{}, W1{}, std::false_type{}); }
      else { issue(P0{}); promote(P0{}, W1{}, std::false_type{}); }
    } else if (k % 2 == 0) {
      issue(P0{}); promote(P1{}, W1{}, std::false_type{});
    } else {
      issue(P1{}); promote(P0{}, W1{}, std::false_type{});
    }
  }
  using Last = std::integral_constant<int, FP8_PROMOTIONS_DEFECT == 1 ? 1 : 0>;
  if (k_tiles % 2 == 0) promote(P1{}, Last{}, std::false_type{});
  else promote(P0{}, Last{}, std::false_type{});
}
#endif

}  // namespace

int main() {
  bool ok = true;
  for (int k_tiles = 0; k_tiles <= 64; ++k_tiles) {
    Model m{k_tiles};
    auto issue = [&](auto part) { m.issue(decltype(part)::value); };
    auto promote = [&](auto part, auto in_flight, auto first) {
      m.promote(decltype(part)::value, decltype(in_flight)::value, decltype(first)::value);
    };
#ifdef FP8_PROMOTIONS_DEFECT
    defective(k_tiles, issue, promote);
#else
    vitfast::gemm::overlapped_promotions(k_tiles, issue, promote);
#endif
    const std::string why = m.check_end();
    if (why.empty()) {
      std::printf("ok k=%d\n", k_tiles);
    } else {
      std::printf("FAIL k=%d: %s\n", k_tiles, why.c_str());
      ok = false;
    }
  }
  std::printf(ok ? "PASSED\n" : "FAILED\n");
  return ok ? 0 : 1;
}
