// NSA decode attention on the GPU: one query token per sequence, G query heads per KV head,
// over the paged cache of kernels/kv_layout.h in bf16. The CPU twin is
// kernels/reference/nsa_attention.h (NsaAttendGroup); tests/gpu/nsa_decode_test.cu holds them
// together.
//
// The work of a (sequence, KV head) unit is split into tasks. Attention tasks walk a run of
// tiles (64 summaries, or one page of l' tokens) with K and V loaded by 16-byte asynchronous
// copies and reused by all G heads on tensor cores, leaving one split-softmax partial:
//   compressed  raw scores + partials over the summaries
//   window      the window pages (no dependency)
//   score       once the unit's compressed tasks are done: the heads' log-sum-exps from their
//               partials, then a range of up to 512 selection blocks: the group's probabilities,
//               the blocks' scores (geometric map, group sum) and the range's best picks, sorted
//   selected    once the unit's score tasks are done: their lists merged and the forced blocks
//               added (the top-n), then the chosen blocks
// and a merge task per head (several at large batches) combines each branch's partials, applies the
// gates, writes the output.
// One launch runs them all: a fused kernel whose resident blocks take tasks from a queue in that
// order, so even one sequence spreads over every SM and no pass waits for a kernel boundary.
// `staged` runs the same tasks as five launches instead (a pass per launch), for comparison.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/kv_layout.h"
#include "kernels/nsa_params.h"

namespace nsa::cuda {

struct NsaDecodeArgs {
  int batch = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // a multiple of 16 up to 192 (64, 128, 192/128 and the tiny presets' 32, 48/32)
  int v_head_dim = 0;  // a multiple of 16 up to 128
  int layer = 0;  // which layer of the pages
  float scale = 0;
  NsaParams nsa;
  KvLayout layout;

  const __nv_bfloat16* q = nullptr;  // [batch][num_heads][head_dim], rotated
  const float* gates = nullptr;  // [batch][num_heads][3], after the sigmoid
  const __nv_bfloat16* pages = nullptr;  // [num_pages][layout.page_elems]
  const int32_t* raw_tables = nullptr;  // [batch][max_pages]: raw pages (selection K/V, summaries)
  const int32_t* win_tables = nullptr;  // [batch][max_pages]: window pages (per_branch), else null
  int max_pages = 0;  // row stride of the tables
  // Optional [batch]: which row of the tables query b reads (prefill runs each position of a
  // chunk as its own query over its sequence's tables); null: row b.
  const int32_t* table_rows = nullptr;
  const int64_t* positions = nullptr;  // [batch]: the query's position t (context t + 1)
  int64_t max_context = 0;  // largest t + 1 in the batch (sizes the grids and the workspace)

  float* out = nullptr;  // [batch][num_heads][v_head_dim]
  // Optional: the same output rounded to bf16 (the next projection's input), [batch][num_heads]
  // [v_head_dim]. With it, `out` may be null (then only the bf16 copy is written).
  __nv_bfloat16* out_bf16 = nullptr;
  int32_t* selected = nullptr;  // optional [batch][num_kv_heads][n]: chosen blocks, ascending, -1 pads
  void* workspace = nullptr;
  // A launch per pass instead of the fused kernel (tests and benchmarks compare them).
  bool staged = false;
  // For G <= 16: 1 splits each tile's keys across the block's warps, 0 V's columns (every warp
  // computing the whole S), -1 the process's default (KeySplit()). Tests run both.
  int key_split = -1;
  // Fused kernel: heads a merge task combines (a divisor of G); 0 the default: one while a task a
  // head fits one wave of resident blocks, else the fewest (a power of two) that fit one. Tests
  // run a second form.
  int merge_heads = 0;
  // Benchmarks only, fused kernel: per task of the queue (compressed, window, score, selected,
  // combine; unit-major within each kind) eight int64: start and end (%globaltimer ns), when a
  // selected task had merged the selection (0 for other tasks), the SM it ran on, and four unused.
  int64_t* trace = nullptr;
};

// Tasks of the fused kernel's queue (the rows of NsaDecodeArgs::trace) and how many are of each
// kind, in the queue's order: compressed, window, score, selected, combine.
struct NsaDecodeTasks {
  int compressed, window, score, selected, combine;
};
NsaDecodeTasks NsaDecodeTaskCounts(const NsaDecodeArgs& args);
// Tiles (chunks of 64 summaries) each compressed task walks for these arguments. Two launches
// that differ only in max_context and agree on it cut every sequence's summaries at the same
// places; the larger one only adds empty tasks, which change no output bit (a CUDA graph's context
// bucket against the eager step).
int NsaDecodeCompressedRun(const NsaDecodeArgs& args);
// Heads a merge task of the fused kernel combines for these arguments (NsaDecodeArgs::merge_heads
// and its default).
int NsaDecodeMergeHeads(const NsaDecodeArgs& args);
// Bytes of workspace LaunchNsaDecode needs for these arguments.
size_t NsaDecodeWorkspaceBytes(const NsaDecodeArgs& args);

// For G <= 16 the tiles' keys are split across a block's four warps (each computes a quarter of
// S and multiplies by all of V's columns; the partial softmaxes merged once a run) unless
// NSA_DECODE_KEY_SPLIT=0, which keeps the split by V's columns (every warp computing the whole
// S). Read once per process.
bool KeySplit();
// Checks the shapes (head dims, G <= 64, n <= 64, context <= 1M) and launches the kernel (or the
// four staged ones). The workspace needs no initial contents.
cudaError_t LaunchNsaDecode(const NsaDecodeArgs& args, cudaStream_t stream);

}  // namespace nsa::cuda
