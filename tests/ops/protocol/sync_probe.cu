// The kernels' Sync policies (csrc/attention/sm90/sm90_sync.cuh) driving the three skeletons with
// hooks that do nothing, compiled for sm_90a by tests/ops/test_attention_protocol.py with and without
// VITFAST_DEBUG_SYNC: the policies compile against each protocol, and only the debug build carries
// the bounded waits' traps.
#include "attention/sm90/attention_protocol.h"
#include "attention/sm90/sm90_sync.cuh"

namespace sm90 = vitfast::attention::sm90;
namespace proto = vitfast::attention::sm90::protocol;

template <class Protocol, class Shape, class Load, class Body>
__device__ void roles(typename Protocol::template Bars<uint64_t>& bars, const int& count, const Shape& shape,
                      Load load, Body body) {
  const int wg = threadIdx.x / 128;
  const sm90::GridWalk walk{count};
  if (threadIdx.x == 0) {
    sm90::ProducerSync<Protocol> sync{{-1, &bars}};
    Protocol::init(sync, bars);
  }
  __syncthreads();
  if (wg == 0) {
    if (threadIdx.x != 0) return;
    sm90::ProducerSync<Protocol> sync{{-1, &bars}};
    Protocol::producer(sync, bars, walk, shape, load);
    return;
  }
  sm90::ConsumerSync<Protocol> sync{{wg - 1, &bars}};
  Protocol::consumer(sync, bars, walk, shape, wg - 1, body);
}

struct Params {
  int count, N, m_blocks, chunks, key_tiles, key_groups;
};

__global__ void probe_fwd(const __grid_constant__ Params p) {
  using P = proto::FwdConfig<64, 192>::Protocol;
  __shared__ P::Bars<uint64_t> bars;
  auto nop = [](auto&&...) {};
  roles<P>(bars, p.count, P::ShapeOf<const int&>{p.N, p.m_blocks}, proto::LoadQKV{nop, nop, nop},
           proto::FwdBody{nop, nop, nop});
}

__global__ void probe_fwd_long(const __grid_constant__ Params p) {
  using P = proto::FwdLongConfig<64>::Protocol;
  __shared__ P::Bars<uint64_t> bars;
  auto nop = [](auto&&...) {};
  roles<P>(bars, p.count, P::ShapeOf<const int&>{p.N, p.m_blocks, p.chunks, p.key_tiles},
           proto::LoadQKV{nop, nop, nop}, proto::FwdLongBody{nop, nop, nop, nop});
}

__global__ void probe_bwd(const __grid_constant__ Params p) {
  using P = proto::BwdConfig<64, 128>::Protocol;
  __shared__ P::Bars<uint64_t> bars;
  auto nop = [](auto&&...) {};
  roles<P>(bars, p.count, P::ShapeOf<const int&>{p.chunks, p.key_groups}, proto::BwdLoad{nop, nop, nop},
           proto::BwdBody{nop, nop, nop, nop, nop, nop});
}
