// NSA's per-layer settings as every kernel (CPU twin and CUDA) sees them. models/config.h fills
// this from config.json; the meaning of each field is nsa-spec.md section 1.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/common/host_device.h"

namespace nsa {

enum class CompressFn { kMean, kLinear };
enum class ScoreMap { kIdentity, kGeometric };
enum class KvSharing { kShared, kPerBranch };

struct NsaParams {
  int compress_block = 64;  // l: raw tokens per compressed block
  int compress_stride = 64;  // d: distance between compressed blocks
  int select_block = 64;  // l': tokens per selection block (= one cache page)
  int num_selected = 16;  // n: selected blocks per query, forced ones included
  int window = 512;  // w
  int init_blocks = 1;
  int local_blocks = 2;
  CompressFn compress_fn = CompressFn::kMean;
  ScoreMap score_map = ScoreMap::kIdentity;
  KvSharing kv_sharing = KvSharing::kShared;

  // N_cmp(T): compressed blocks visible to a query with T tokens (itself included) behind it.
  NSA_HOST_DEVICE int64_t NumCompressed(int64_t num_tokens) const {
    return num_tokens >= compress_block ? (num_tokens - compress_block) / compress_stride + 1 : 0;
  }
  // Position of the last raw token of compressed block i: its summary exists from this step on.
  NSA_HOST_DEVICE int64_t CompressedBlockEnd(int64_t i) const { return i * compress_stride + compress_block - 1; }

  // Weight of compressed block i in the score of selection block j: the number of stride-d
  // chunks they share (block i covers chunks [i, i + l/d), block j covers [j*l'/d, (j+1)*l'/d)).
  // With l = d = l' this is the identity map.
  NSA_HOST_DEVICE int GeometricWeight(int64_t cmp_block, int64_t sel_block) const {
    const int64_t chunks_per_cmp = compress_block / compress_stride;
    const int64_t chunks_per_sel = select_block / compress_stride;
    const int64_t a = sel_block * chunks_per_sel, b = cmp_block + chunks_per_cmp, c = (sel_block + 1) * chunks_per_sel;
    const int64_t lo = cmp_block > a ? cmp_block : a;
    const int64_t hi = b < c ? b : c;
    return hi > lo ? static_cast<int>(hi - lo) : 0;
  }
};

}  // namespace nsa
