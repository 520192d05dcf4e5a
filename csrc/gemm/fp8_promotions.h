#pragma once
// The order of fp8_linear's overlapped mainloop (sm90/fp8_mainloop.cuh): which k-tile's wgmma go into
// which of the two partial-sum fragments, and when each partial sum is waited for and added into the
// fp32 accumulators. Plain C++ so that the host test (tests/ops/test_fp8_promotions.py) runs this very
// function against a model of the wgmma groups: each k-tile issued once, in order, into a fragment no
// unread sum is in; each sum read only after its group completed, added in k order (the first one
// assigned), its shared-memory stage released then; one group always queued behind the one being
// added; none left in flight at the end.
//
//   issue(part)                       k-tile k's wgmma into fragment `part` (0 or 1) from zero, committed
//                                     as one group; k counts up from 0
//   promote(part, in_flight, first)   wait until at most `in_flight` groups are pending, then add the
//                                     oldest k-tile's sum (in `part`) into the accumulators (`first`:
//                                     assign it) and release its stage
// Each argument is a std::integral_constant: the device code picks fragments and wait counts at compile
// time (wgmma's registers and warpgroup.wait's count are immediates).
#include <type_traits>

#include "macros.h"

namespace vitfast::gemm {

template <class Issue, class Promote>
VF_HD void overlapped_promotions(int k_tiles, Issue&& issue, Promote&& promote) {
  using Part0 = std::integral_constant<int, 0>;
  using Part1 = std::integral_constant<int, 1>;
  using Drained = std::integral_constant<int, 0>;  // the last sum: nothing behind it
  using Queued = std::integral_constant<int, 1>;   // the next k-tile stays in flight
  using First = std::true_type;
  using Next = std::false_type;
  if (k_tiles <= 0) return;
  issue(Part0{});
  if (k_tiles == 1) {
    promote(Part0{}, Drained{}, First{});
    return;
  }
  issue(Part1{});
  promote(Part0{}, Queued{}, First{});
  int k = 2;  // the next k-tile to issue; k-tile k - 1 is in flight in part 1
  for (; k + 1 < k_tiles; k += 2) {
    issue(Part0{});
    promote(Part1{}, Queued{}, Next{});
    issue(Part1{});
    promote(Part0{}, Queued{}, Next{});
  }
  if (k < k_tiles) {  // one more k-tile (an odd count): into part 0
    issue(Part0{});
    promote(Part1{}, Queued{}, Next{});
    promote(Part0{}, Drained{}, Next{});
  } else {
    promote(Part1{}, Drained{}, Next{});
  }
}

}  // namespace vitfast::gemm
