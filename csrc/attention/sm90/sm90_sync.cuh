#pragma once
// The Sync policies the Hopper attention kernels compile attention_protocol.h's skeletons with:
// CUTLASS's mbarriers, TMA store waits and named barriers. What only the host model records (buffer
// reads and writes, the buffers a barrier releases, the phase an arrival is meant for) costs nothing
// here.
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

// What both roles' policies share: waits on a phase's parity, barrier set-up, the model-only calls.
struct SyncBase {
  __device__ __forceinline__ void init(uint64_t& bar, int arrivals) {
    cutlass::arch::ClusterBarrier::init(&bar, arrivals);
  }
  __device__ __forceinline__ void wait(uint64_t& bar, int phase) {
    cutlass::arch::ClusterBarrier::wait(&bar, uint32_t(phase) & 1);
  }
  __device__ __forceinline__ void releases(uint64_t&, protocol::Buf) {}
  __device__ __forceinline__ void read(protocol::Buf) {}
  __device__ __forceinline__ void done(protocol::Buf) {}
  __device__ __forceinline__ void write(protocol::Buf) {}
  __device__ __forceinline__ void store(protocol::Buf) {}
};

// The producer: one thread, alone in its warpgroup (the others have exited), so no warp-wide sync.
struct ProducerSync : SyncBase {
  __device__ __forceinline__ void expect(uint64_t& bar, int, int bytes) {
    cutlass::arch::ClusterTransactionBarrier::arrive_and_expect_tx(&bar, uint32_t(bytes));
  }
  template <class Load>
  __device__ __forceinline__ void fill(uint64_t& bar, protocol::Buf, int, Load&& load) {
    load(bar);
  }
};

// A consumer warpgroup (cw: 0 or 1). Arrivals and store waits are made by one thread (or one per warp);
// each ends with __syncwarp(), so the warp is converged again before the next .sync.aligned
// instruction (ldmatrix, wgmma, bar.sync) whatever ptxas makes of the branch.
struct ConsumerSync : SyncBase {
  int cw;
  __device__ __forceinline__ void arrive(uint64_t& bar, int, protocol::Arrivals who) {
    const bool elected = who == protocol::kOne ? threadIdx.x % 128 == 0 : threadIdx.x % 32 == 0;
    if (elected) cutlass::arch::ClusterBarrier::arrive(&bar);
    __syncwarp();
  }
  __device__ __forceinline__ void store_wait() {
    if (threadIdx.x % 128 == 0) cute::tma_store_wait<0>();
    __syncwarp();
  }
  __device__ __forceinline__ void sync_role() { cutlass::arch::NamedBarrier::sync(128, 1 + cw); }
  __device__ __forceinline__ void sync_consumers() { cutlass::arch::NamedBarrier::sync(256, 3); }
};

}  // namespace vitfast::attention::sm90
