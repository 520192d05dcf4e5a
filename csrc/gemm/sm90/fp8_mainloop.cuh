#pragma once
// fp8_linear's mainloop with its promotions hidden behind the tensor cores (issue 96, item 2).
//
// Hopper's FP8 wgmma keeps fewer mantissa bits in its accumulator than fp32, so CUTLASS's FP8 mainloop
// sums each 128-deep k-tile on the tensor cores from zero and adds that partial sum into fp32 registers
// (the promotion). To read the partial sum it waits for every wgmma in flight (warpgroup_wait<0>), so
// the tensor pipe drains once per k-tile: at fp8_linear's widths a k-tile is ~512 tensor cycles per SM,
// and the drain, the 64 additions per thread and the next tile's issue leave it idle for a large part
// of that (the H200's FP8 fc2 at K = 3,072, where the epilogue hardly counts: 48% of FP8's peak, against
// 73% for cuBLAS's bf16 GEMM at fc1).
//
// Here the partial sums alternate between two register fragments: k-tile i is issued into one while
// k-tile i-1's, already complete (warpgroup_wait<1>), is added from the other; the wgmma pipe always has
// the next k-tile queued. The arithmetic is the one CUTLASS's mainloop does with a promotion interval
// of one k-tile (kFp8PromotionInterval wgmma of k = 32): the same partial sums, added in the same
// order, so the results are bit-identical to it, and the accumulators start from the first partial sum
// instead of being added to (the fragment the kernel hands in is not cleared by it). The cost is one
// more accumulator fragment: 64 registers per thread for a warpgroup tile of 64 x 128 (the only one
// sm90_config.h builds for FP8: 3 x 64 of the consumers' 232).
//
// Everything else (shared-memory layouts, TMA loads, the producer, parameters) is CUTLASS's collective,
// which this one derives from; the kernel layer calls mma() and mma_tail() as it calls CUTLASS's.
#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "gemm/fp8_promotions.h"
#include "gemm/sm90_config.h"

namespace vitfast::gemm::sm90 {

// Part P of the two partial-sum fragments: wgmma's registers are named at compile time.
template <int P, class Fragment>
CUTLASS_DEVICE Fragment& fragment(Fragment& part0, Fragment& part1) {
  if constexpr (P == 0) {
    return part0;
  } else {
    return part1;
  }
}

template <class Base>
struct Fp8OverlappedMainloop : Base {
  using typename Base::MainloopPipeline;
  using typename Base::Params;
  using typename Base::PipelineState;
  using typename Base::SmemLayoutA;
  using typename Base::SmemLayoutB;
  using typename Base::TensorStorage;
  using typename Base::TiledMma;
  using Base::Base;

  static constexpr int kWgmmaK = 32;  // an FP8 wgmma's k
  static_assert(cute::size<2>(typename Base::TileShape{}) == kFp8PromotionInterval * kWgmmaK,
                "one promotion per k-tile: the interval tests/ops/test_fp8_linear.py derives its bound from");

  // The tile's product of k_tile_count k-tiles into accum (fp32), each k-tile's partial sum added as the
  // next one runs; every stage consumed is released before returning, with no wgmma left in flight.
  template <class Accumulators>
  CUTLASS_DEVICE void mma(MainloopPipeline pipeline, PipelineState smem_pipe_read, Accumulators& accum,
                          int k_tile_count, int thread_idx, TensorStorage& shared_tensors, Params const&) {
    using namespace cute;
    static_assert(is_rmem<Accumulators>::value, "the accumulators live in registers");
    Tensor sA = make_tensor(make_smem_ptr(shared_tensors.smem_A.data()), SmemLayoutA{});  // (BLK_M, BLK_K, PIPE)
    Tensor sB = make_tensor(make_smem_ptr(shared_tensors.smem_B.data()), SmemLayoutB{});  // (BLK_N, BLK_K, PIPE)
    constexpr int kWarpGroups = size(TiledMma{}) / cutlass::NumThreadsPerWarpGroup;
    const auto warp_groups = make_layout(Int<kWarpGroups>{}, Int<cutlass::NumThreadsPerWarpGroup>{});
    const int warp_group = __shfl_sync(0xffffffff, thread_idx / cutlass::NumThreadsPerWarpGroup, 0);
    TiledMma tiled_mma;
    auto thread_mma = tiled_mma.get_slice(warp_groups(warp_group));
    Tensor tCrA = thread_mma.make_fragment_A(thread_mma.partition_A(sA));  // descriptors (MMA, MMA_M, MMA_K, PIPE)
    Tensor tCrB = thread_mma.make_fragment_B(thread_mma.partition_B(sB));  // (MMA, MMA_N, MMA_K, PIPE)
    Tensor part0 = make_fragment_like(accum);  // the tensor cores' partial sums, used in turn
    Tensor part1 = make_fragment_like(accum);
    PipelineState smem_pipe_release = smem_pipe_read;
    // k-tile k's wgmma into the part, from zero, left in flight (fp8_promotions.h says which part when).
    auto issue = [&](auto part) {
      auto& frag = fragment<decltype(part)::value>(part0, part1);
      pipeline.consumer_wait(smem_pipe_read, pipeline.consumer_try_wait(smem_pipe_read));
      const int stage = smem_pipe_read.index();
      tiled_mma.accumulate_ = GMMA::ScaleOut::Zero;
      warpgroup_fence_operand(frag);
      warpgroup_arrive();
      CUTLASS_PRAGMA_UNROLL
      for (int k_block = 0; k_block < size<2>(tCrA); ++k_block) {
        cute::gemm(tiled_mma, tCrA(_, _, k_block, stage), tCrB(_, _, k_block, stage), frag);
        tiled_mma.accumulate_ = GMMA::ScaleOut::One;
      }
      warpgroup_commit_batch();
      warpgroup_fence_operand(frag);
      ++smem_pipe_read;
    };
    // The oldest k-tile's sum, complete once at most in_flight groups are pending: added into accum
    // (the first assigned), its stage handed back to the producer.
    auto promote = [&](auto part, auto in_flight, auto first) {
      auto& frag = fragment<decltype(part)::value>(part0, part1);
      warpgroup_wait<decltype(in_flight)::value>();
      warpgroup_fence_operand(frag);
      warpgroup_fence_operand(accum);
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < size(accum); ++i) {
        if constexpr (decltype(first)::value) {
          accum(i) = frag(i);
        } else {
          accum(i) += frag(i);
        }
      }
      warpgroup_fence_operand(accum);
      pipeline.consumer_release(smem_pipe_release);
      ++smem_pipe_release;
    };
    if (k_tile_count <= 0) clear(accum);  // an empty sum
    overlapped_promotions(k_tile_count, issue, promote);
  }

  // mma() leaves nothing in flight and no stage held.
  CUTLASS_DEVICE void mma_tail(MainloopPipeline, PipelineState, int) {}
};

}  // namespace vitfast::gemm::sm90
