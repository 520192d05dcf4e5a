#pragma once
// The Sync policies the Hopper attention kernels compile attention_protocol.h's skeletons with:
// CUTLASS's mbarriers, TMA store waits and named barriers. What only the host model records (buffer
// reads and writes, the buffers a barrier releases) costs nothing here.
//
// Built with VITFAST_DEBUG_SYNC (setup.py: VITFAST_DEBUG_SYNC=1), for a GPU sitting's first run of a
// kernel: every wait is bounded (kDebugWaitNs) and an arrival checks that its barrier is in the phase
// the protocol means; either failure prints one line naming the block, the role, the barrier, its
// stage, the phase and the work item, and traps, so a protocol defect ends the launch with its
// place named instead of hanging it or corrupting a buffer.
#include <cstdio>

#include "attention/sm90/attention_protocol.h"
#include "cute/arch/copy_sm90_tma.hpp"
#include "cutlass/arch/barrier.h"

namespace vitfast::attention::sm90 {

// A persistent CTA's walk over `count` work items (attention_protocol.h's Walk), count a field of the
// kernel's parameters.
struct GridWalk {
  const int& count_;
  __device__ __forceinline__ int first() const { return int(blockIdx.x); }
  __device__ __forceinline__ int stride() const { return int(gridDim.x); }
  __device__ __forceinline__ int count() const { return count_; }
};

#ifdef VITFAST_DEBUG_SYNC
constexpr uint64_t kDebugWaitNs = 2'000'000'000;  // 2 s: far beyond any stage's fill at these sizes

__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}
#endif

// What both roles' policies share: waits on a phase's parity, barrier set-up, the model-only calls.
// cw: the consumer warpgroup (0, 1), -1 for the producer; bars: the protocol's barriers, which the
// debug build names by their place (Protocol::bar_name).
template <class Protocol>
struct SyncBase {
  int cw;
  const void* bars;
  int item_ = -1;

  __device__ __forceinline__ void init(uint64_t& bar, int arrivals) {
    cutlass::arch::ClusterBarrier::init(&bar, arrivals);
  }
  __device__ __forceinline__ void wait(uint64_t& bar, int phase) {
#ifdef VITFAST_DEBUG_SYNC
    const uint64_t start = global_ns();
    while (!cutlass::arch::ClusterBarrier::try_wait(&bar, uint32_t(phase) & 1)) {
      if (global_ns() - start > kDebugWaitNs) fail(bar, phase, "waited 2 s for");
    }
#else
    cutlass::arch::ClusterBarrier::wait(&bar, uint32_t(phase) & 1);
#endif
  }
  // Debug builds: the barrier is in phase `phase` (its parity), as an arrival for it requires.
  __device__ __forceinline__ void check_phase(uint64_t& bar, int phase) {
#ifdef VITFAST_DEBUG_SYNC
    // test_wait(p) is true once the phase of parity p has completed: phase `phase` must not have.
    if (cutlass::arch::ClusterBarrier::test_wait(&bar, uint32_t(phase) & 1, 1)) {
      fail(bar, phase, "arrives out of phase on");
    }
#endif
  }
  __device__ __forceinline__ void item(int i) { item_ = i; }
  __device__ __forceinline__ void releases(uint64_t&, protocol::Buf) {}
  __device__ __forceinline__ void read(protocol::Buf) {}
  __device__ __forceinline__ void done(protocol::Buf) {}
  __device__ __forceinline__ void write(protocol::Buf) {}
  __device__ __forceinline__ void store(protocol::Buf) {}

#ifdef VITFAST_DEBUG_SYNC
  __device__ __noinline__ void fail(uint64_t& bar, int phase, const char* what) {
    int stage = 0;
    const int index = int(&bar - static_cast<const uint64_t*>(bars));
    const char* name = Protocol::bar_name(index, stage);
    printf("vitfast sync: block %d %s%s %s %s[%d] phase %d (parity %d), work item %d\n", int(blockIdx.x),
           cw < 0 ? "producer" : "consumer ", cw < 0 ? "" : (cw == 0 ? "0" : "1"), what, name, stage, phase,
           phase & 1, item_);
    __trap();
  }
#endif
};

// The producer: one thread, alone in its warpgroup (the others have exited), so no warp-wide sync.
template <class Protocol>
struct ProducerSync : SyncBase<Protocol> {
  __device__ __forceinline__ void expect(uint64_t& bar, int phase, int bytes) {
    this->check_phase(bar, phase);
    cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&bar, uint32_t(bytes));
  }
  template <class Load>
  __device__ __forceinline__ void fill(uint64_t& bar, protocol::Buf, int, Load&& load) {
    load(bar);
  }
};

// A consumer warpgroup. Arrivals and store waits are made by one thread (or one per warp); each ends
// with __syncwarp(), so the warp is converged again before the next .sync.aligned instruction
// (ldmatrix, wgmma, bar.sync) whatever ptxas makes of the branch.
template <class Protocol>
struct ConsumerSync : SyncBase<Protocol> {
  __device__ __forceinline__ void arrive(uint64_t& bar, int phase, protocol::Arrivals who) {
    const bool elected = who == protocol::kOne ? threadIdx.x % 128 == 0 : threadIdx.x % 32 == 0;
    if (elected) {
      this->check_phase(bar, phase);
      cutlass::arch::ClusterBarrier::arrive(&bar);
    }
    __syncwarp();
  }
  __device__ __forceinline__ void store_wait() {
    if (threadIdx.x % 128 == 0) cute::tma_store_wait<0>();
    __syncwarp();
  }
  __device__ __forceinline__ void sync_role() { cutlass::arch::NamedBarrier::sync(128, 1 + this->cw); }
  __device__ __forceinline__ void sync_consumers() { cutlass::arch::NamedBarrier::sync(256, 3); }
};

}  // namespace vitfast::attention::sm90
