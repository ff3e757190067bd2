#include "kernels/cuda/sampling.h"

#include <algorithm>
#include <climits>

namespace nsa::cuda {
namespace {

using u64 = unsigned long long;

// One block per draw. Every pass over a row gives id i to thread i % kThreads (so the weights can
// overwrite the processed logits in place); the passes load kUnroll values per thread before
// using them, since one block streams a whole row and a pass that waits on each load in turn is
// bound by memory latency, not bandwidth.
constexpr int kThreads = 1024;
constexpr int kUnroll = 8;
constexpr int kWarps = kThreads / 32;
static_assert(kWarps == 32, "the block reductions scan one value per warp within one warp");
// Radix select: 32-bit keys in four passes of 8 bits. Each lane adds into its own copy of the
// histogram: the ids of a row crowd into a few bins (the exponents of their values), and lanes
// of a warp adding to one shared address serialise.
constexpr int kRadixBits = 8;
constexpr int kRadixBins = 1 << kRadixBits;
constexpr int kCopies = 32;
static_assert(kRadixBins <= kThreads, "one thread per bin");
// Masses are integers: weights in [0, 1] times 2^45, rounded. 2^18 ids of weight <= 1 sum below 2^63.
constexpr float kQuantScale = 35184372088832.0f;  // 2^45

struct Shared {
  u64 scan[kWarps];  // block reductions and scans of integers
  double dscan[kWarps];  // ... of doubles
  u64 before;  // radix select: the mass above the chosen bin; tie scan and draw: before the walker
  u64 equal;  // radix select: the mass in the chosen bin
  int digit;  // radix select: the chosen bin
  int walker;  // tie scan and draw: the thread whose ids hold the one sought
  int cut;  // tie scan: the last id kept
  int token;  // the draw
  int count;  // logprob alternatives gathered
  int top_ids[kMaxTopLogprobs];
};

__device__ __forceinline__ float NegInf() { return __int_as_float(0xff800000); }

// Order-preserving map of a float onto uint32: a < b (as floats) iff Key(a) < Key(b). -0 and +0
// get the same key (the CPU's comparisons tie them); NaN gets 0, below every number.
__device__ __forceinline__ uint32_t FloatKey(float f) {
  if (f != f) return 0u;
  if (f == 0.0f) f = 0.0f;
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float KeyFloat(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// A weight in [0, 1] as an integer multiple of 2^-45 (exact for weights >= 2^-21).
__device__ __forceinline__ u64 Quantize(float w) { return __float2ull_rn(__fmul_rn(w, kQuantScale)); }

// Reduces v over the block; every thread gets the result. The combination order is fixed (a
// tree per warp, then a tree over the warps, redone identically by every warp), so double sums
// are deterministic and equal in all threads.
template <typename T, typename Op>
__device__ T BlockReduce(T v, Op op, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
  __syncthreads();  // a previous call has read scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = scratch[lane];
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
  return __shfl_sync(0xffffffffu, v, 0);
}

struct MaxOp {
  __device__ u64 operator()(u64 a, u64 b) const { return a > b ? a : b; }
};
struct AddOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};

// Exclusive prefix sum of v over the threads in order; *total gets the block's sum.
__device__ u64 BlockExclusiveSum(u64 v, u64* total, u64* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u64 x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const u64 y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  __syncthreads();
  if (lane == 31) scratch[warp] = x;
  __syncthreads();
  u64 w = scratch[lane];  // every warp scans the warp totals itself: no third barrier
  for (int o = 1; o < 32; o <<= 1) {
    const u64 y = __shfl_up_sync(0xffffffffu, w, o);
    if (lane >= o) w += y;
  }
  const u64 warps_before = __shfl_sync(0xffffffffu, w, (warp + 31) & 31);
  *total = __shfl_sync(0xffffffffu, w, 31);
  return (warp ? warps_before : 0) + x - v;
}

// Calls body(i, x[i], valid) for the ids of this thread (i % kThreads == threadIdx.x), kUnroll
// loads at a time. Warp-uniform: every lane of a warp calls body the same number of times (in the
// tail with valid = false past n), so body may use warp collectives.
template <typename Body>
__device__ __forceinline__ void ForRow(const float* x, int n, Body body) {
  const int lane = threadIdx.x & 31;
  int base = threadIdx.x & ~31;
  for (; base + (kUnroll - 1) * kThreads + 31 < n; base += kUnroll * kThreads) {
    float v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = x[base + u * kThreads + lane];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) body(base + u * kThreads + lane, v[u], true);
  }
  for (; base < n; base += kThreads) {
    const int i = base + lane;
    body(i, i < n ? x[i] : 0.0f, i < n);
  }
}

struct Selection {
  uint32_t key;  // the threshold key T
  u64 above;  // the weight of the ids with key > T
  u64 equal;  // the weight of the ids with key == T
};

// Finds the key T at which the weight of the ids, walked from the largest key down, reaches
// `need`: above < need <= above + equal. key_weight(i, x[i], key, w) gives id i's key and weight,
// or false when the id takes no part. Precondition: 1 <= need <= the total weight. Four passes
// over the row; each builds a histogram of the weight per digit among the ids that match the
// digits chosen so far, then finds the bin where the running weight from the top crosses need.
// hist: [kRadixBins][kCopies].
template <typename KeyWeight>
__device__ Selection RadixSelect(const float* x, int n, u64 need, KeyWeight key_weight, u64* hist, Shared& sh) {
  const int lane = threadIdx.x & 31;
  uint32_t prefix = 0, mask = 0;
  u64 above = 0, equal = 0;
  for (int shift = 32 - kRadixBits; shift >= 0; shift -= kRadixBits) {
    __syncthreads();  // the previous pass (or caller) is done with hist and sh
    for (int b = threadIdx.x; b < kRadixBins * kCopies; b += kThreads) hist[b] = 0;
    if (threadIdx.x == 0) sh.digit = 0, sh.before = 0, sh.equal = 0;
    __syncthreads();
    ForRow(x, n, [&](int i, float v, bool valid) {
      uint32_t key;
      u64 w = 0;
      if (valid && key_weight(i, v, key, w) && (key & mask) == prefix && w != 0) {
        atomicAdd(&hist[((key >> shift) & (kRadixBins - 1)) * kCopies + lane], w);
      }
    });
    __syncthreads();
    // Thread t < kRadixBins owns bin kRadixBins - 1 - t: thread order is bin order from the top.
    // Its lanes start at different copies so that their reads fall in different banks.
    const int bin = kRadixBins - 1 - static_cast<int>(threadIdx.x);
    u64 local = 0;
    if (bin >= 0) {
      for (int c = 0; c < kCopies; ++c) local += hist[bin * kCopies + ((c + lane) & (kCopies - 1))];
    }
    u64 total;
    const u64 before = BlockExclusiveSum(local, &total, sh.scan);
    if (before < need && need <= before + local) sh.digit = bin, sh.before = before, sh.equal = local;  // one thread
    __syncthreads();
    prefix |= static_cast<uint32_t>(sh.digit) << shift;
    mask |= static_cast<uint32_t>(kRadixBins - 1) << shift;
    above += sh.before;
    need -= sh.before;
    equal = sh.equal;
  }
  return {prefix, above, equal};
}

// The id of the need-th id (need >= 1) in id order for which is_tie holds: ties at a threshold
// go to the lower ids, as the CPU's sorts by (value desc, id asc) have it. INT_MAX when fewer.
// Only rows whose ties straddle a boundary get here (with bf16 logits, not rare). Thread t counts
// the ties in the t-th contiguous chunk of ids, a scan over the threads orders the chunks, and the
// warp of the chunk that holds the one sought walks it 32 ids at a time.
template <typename IsTie>
__device__ int TieCut(int n, u64 need, IsTie is_tie, Shared& sh) {
  const int lane = threadIdx.x & 31;
  const int chunk = (n + kThreads - 1) / kThreads;
  const int begin = min(n, static_cast<int>(threadIdx.x) * chunk), end = min(n, begin + chunk);
  unsigned count = 0;
  for (int i = begin; i < end; i += kUnroll) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) count += i + u < end && is_tie(i + u);
  }
  __syncthreads();  // a previous user of sh is done
  if (threadIdx.x == 0) sh.cut = INT_MAX, sh.walker = -1;
  u64 total;
  const u64 before = BlockExclusiveSum(count, &total, sh.scan);  // its barriers publish the above
  if (before < need && need <= before + count) sh.walker = threadIdx.x, sh.before = before;
  __syncthreads();
  const int walker = sh.walker;
  if (walker >= 0 && (threadIdx.x >> 5) == (walker >> 5)) {
    const int wb = min(n, walker * chunk), we = min(n, wb + chunk);
    u64 running = sh.before;
    for (int base = wb; base < we; base += 32) {
      const int i = base + lane;
      const bool tie = i < we && is_tie(i);
      const unsigned ballot = __ballot_sync(0xffffffffu, tie);
      const unsigned c = __popc(ballot);
      if (running + c >= need) {  // the same in every lane
        if (tie && running + __popc(ballot & ((1u << lane) - 1u)) + 1 == need) sh.cut = i;
        break;
      }
      running += c;
    }
  }
  __syncthreads();
  return sh.cut;
}

// The lowest id among the largest values (the CPU's std::max_element).
__device__ int ArgMax(const float* x, int n, Shared& sh) {
  u64 best = 0;  // key in the high half, then ~id so that the lower id wins ties
  ForRow(x, n, [&](int i, float v, bool valid) {
    if (valid) best = MaxOp()(best, (static_cast<u64>(FloatKey(v)) << 32) | (0xffffffffu - static_cast<uint32_t>(i)));
  });
  best = BlockReduce(best, MaxOp(), sh.scan);
  return static_cast<int>(0xffffffffu - static_cast<uint32_t>(best));
}

__device__ float RowMax(const float* x, int n, Shared& sh) {
  u64 key = 0;
  ForRow(x, n, [&](int, float v, bool valid) {
    if (valid) key = MaxOp()(key, FloatKey(v));
  });
  return KeyFloat(static_cast<uint32_t>(BlockReduce(key, MaxOp(), sh.scan)));
}

// Float addition by compare-and-swap: IEEE round-to-nearest without flushing subnormals (global
// float atomicAdd flushes them), and safe for repeated ids.
__device__ void AtomicAddExact(float* p, float v) {
  unsigned* u = reinterpret_cast<unsigned*>(p);
  unsigned old = *u, assumed;
  do {
    assumed = old;
    old = atomicCAS(u, assumed, __float_as_uint(__fadd_rn(__uint_as_float(assumed), v)));
  } while (old != assumed);
}

// ws[0, n) = the processed logits: raw + bias, banned -> -inf, then the penalties, each step
// finished by the whole block before the next starts (the CPU's order). The float operations are
// the CPU's, written with _rn intrinsics so that nvcc does not contract them into FMAs (the CPU
// build has none). `seen` (shared, n bits) makes the repetition penalty once per token.
__device__ void ProcessLogits(const float* raw, float* ws, int n, const DeviceSampleRow& row,
                              const DeviceSampleExtra* extras, uint32_t* seen) {
  ForRow(raw, n, [&](int i, float v, bool valid) {
    if (valid) ws[i] = v;
  });
  const float r = row.repetition_penalty, f = row.frequency_penalty, p = row.presence_penalty;
  const bool repetition = r != 1.0f, additive = f != 0.0f || p != 0.0f;
  if (repetition) {
    for (int w = threadIdx.x; w < (n + 31) / 32; w += kThreads) seen[w] = 0;
  }
  __syncthreads();
  const DeviceSampleExtra* e = extras + row.extra_begin;
  const int count = row.extra_end - row.extra_begin;
  for (int j = threadIdx.x; j < count; j += kThreads) {
    const DeviceSampleExtra x = e[j];
    if (x.kind == kExtraBias && x.token >= 0 && x.token < n) AtomicAddExact(&ws[x.token], x.value);
  }
  __syncthreads();
  for (int j = threadIdx.x; j < count; j += kThreads) {
    const DeviceSampleExtra x = e[j];
    if (x.kind == kExtraBanned && x.token >= 0 && x.token < n) ws[x.token] = NegInf();
  }
  __syncthreads();
  if (repetition) {
    for (int j = threadIdx.x; j < count; j += kThreads) {
      const DeviceSampleExtra x = e[j];
      if ((x.kind != kExtraPrompt && x.kind != kExtraOutput) || x.token < 0 || x.token >= n) continue;
      const uint32_t bit = 1u << (x.token & 31);
      if (atomicOr(&seen[x.token >> 5], bit) & bit) continue;  // another entry of this token did it
      const float v = ws[x.token];
      if (v != NegInf()) ws[x.token] = v > 0.0f ? __fdiv_rn(v, r) : __fmul_rn(v, r);
    }
    __syncthreads();
  }
  if (additive) {
    for (int j = threadIdx.x; j < count; j += kThreads) {
      const DeviceSampleExtra x = e[j];
      if (x.kind != kExtraOutput || x.token < 0 || x.token >= n) continue;
      // CPU: logits[t] -= f * count + p; x - d is x + (-d) exactly, -inf stays -inf.
      AtomicAddExact(&ws[x.token], -__fadd_rn(__fmul_rn(f, x.value), p));
    }
    __syncthreads();
  }
}

// Temperature, min-p, top-k, top-p and the draw over the processed logits L[0, n). W is the
// row's workspace (it may be L itself: each id is read, then overwritten by its weight).
__device__ int Draw(const float* L, float* W, int n, const DeviceSampleRow& row, u64* hist, Shared& sh,
                    float* debug_probs, int vocab) {
  auto one_hot = [&](int token) {  // the fallback's debug output, as for greedy
    if (debug_probs) {
      for (int i = threadIdx.x; i < vocab; i += kThreads) debug_probs[i] = i == token ? 1.0f : -1.0f;
    }
    return token;
  };
  const float top = RowMax(L, n, sh);
  if (!(top > NegInf())) return one_hot(ArgMax(L, n, sh));  // every id banned: no distribution

  // Top-k on the logits: the ids with key > k_key, and those == k_key up to id k_cut.
  const bool use_k = row.top_k > 0 && row.top_k < n;
  uint32_t k_key = 0;
  int k_cut = INT_MAX;
  if (use_k) {
    const Selection s = RadixSelect(
        L, n, static_cast<u64>(row.top_k),
        [](int, float v, uint32_t& key, u64& w) {
          key = FloatKey(v);
          w = 1;
          return true;
        },
        hist, sh);
    k_key = s.key;
    const u64 need = static_cast<u64>(row.top_k) - s.above;
    if (need < s.equal) k_cut = TieCut(n, need, [&](int i) { return FloatKey(L[i]) == k_key; }, sh);
  }

  // Weights relative to the most likely id (which weighs exactly 1), as the CPU:
  // exp((logit - top) * (1 / T)), dropped below min_p. W = the weight, or -1 for ids outside
  // top-k or below min_p.
  const float inv_t = __fdiv_rn(1.0f, row.temperature);
  ForRow(L, n, [&](int i, float x, bool valid) {
    if (!valid) return;
    const uint32_t key = FloatKey(x);
    float w = -1.0f;
    if (!use_k || key > k_key || (key == k_key && i <= k_cut)) {
      const float e = static_cast<float>(exp(static_cast<double>(__fmul_rn(__fsub_rn(x, top), inv_t))));
      if (!(e < row.min_p)) w = e;
    }
    W[i] = w;
  });
  __syncthreads();

  // Top-p: the shortest prefix in (weight desc, id asc) order whose mass reaches top_p * mass.
  // Weights are non-negative floats, so their bits order them.
  const bool use_p = row.top_p < 1.0f;
  uint32_t p_bits = 0;
  int p_cut = INT_MAX;
  if (use_p) {
    u64 mass = 0;
    ForRow(W, n, [&](int, float w, bool valid) {
      if (valid && w >= 0.0f) mass += Quantize(w);
    });
    mass = BlockReduce(mass, AddOp(), sh.scan);
    u64 target = static_cast<u64>(ceil(static_cast<double>(row.top_p) * static_cast<double>(mass)));
    target = target < 1 ? 1 : target > mass ? mass : target;
    const Selection s = RadixSelect(
        W, n, target,
        [](int, float w, uint32_t& key, u64& q) {
          if (!(w >= 0.0f)) return false;
          key = __float_as_uint(w);
          q = Quantize(w);
          return true;
        },
        hist, sh);
    p_bits = s.key;
    // Every id at the threshold weighs the same q: keep the lowest ids until the target is met.
    const u64 q = Quantize(__uint_as_float(p_bits));
    if (q > 0) {
      const u64 need = (target - s.above + q - 1) / q;
      if (need < s.equal / q) {
        p_cut = TieCut(n, need, [&](int i) { const float w = W[i]; return w >= 0.0f && __float_as_uint(w) == p_bits; }, sh);
      }
    }
  }
  auto kept = [&](int i, float w) {  // w = W[i]
    if (!(w >= 0.0f)) return false;
    if (!use_p) return true;
    const uint32_t b = __float_as_uint(w);
    return b > p_bits || (b == p_bits && i <= p_cut);
  };

  // The draw: r = floor(u * mass) in the kept ids' integer masses, in thread-major order (thread
  // 0's ids t, t + kThreads, ..., then thread 1's). The warp of the thread whose range holds r
  // walks that thread's ids, 32 at a time.
  u64 local = 0;
  ForRow(W, n, [&](int i, float w, bool valid) {
    if (valid && kept(i, w)) local += Quantize(w);
  });
  if (threadIdx.x == 0) sh.token = -1, sh.walker = -1;
  u64 mass;
  const u64 before = BlockExclusiveSum(local, &mass, sh.scan);  // its barriers publish the above
  const double u = fmin(fmax(row.u, 0.0), 1.0);
  u64 r = static_cast<u64>(u * static_cast<double>(mass));
  if (r >= mass) r = mass - 1;  // mass >= 2^45: the most likely id is always kept
  if (before <= r && r < before + local) sh.walker = threadIdx.x, sh.before = before;
  __syncthreads();
  const int walker = sh.walker;
  if (walker >= 0 && (threadIdx.x >> 5) == (walker >> 5)) {
    const int lane = threadIdx.x & 31;
    const int count = (n - walker + kThreads - 1) / kThreads;  // the walker's ids
    u64 running = sh.before;
    for (int j0 = 0; j0 < count; j0 += 32) {
      const int j = j0 + lane, i = walker + j * kThreads;
      const float w = j < count ? W[i] : -1.0f;
      u64 incl = j < count && kept(i, w) ? Quantize(w) : 0;
      for (int o = 1; o < 32; o <<= 1) {
        const u64 y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
      }
      const unsigned hit = __ballot_sync(0xffffffffu, r < running + incl);
      if (hit) {  // the first lane whose running mass passes r
        if (lane == __ffs(hit) - 1) sh.token = i;
        break;
      }
      running += __shfl_sync(0xffffffffu, incl, 31);
    }
  }
  __syncthreads();
  const int token = sh.token;
  if (token < 0) return one_hot(ArgMax(L, n, sh));  // cannot happen (mass > 0); kept for safety
  if (debug_probs) {
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float w = i < n ? W[i] : -1.0f;
      debug_probs[i] = i < n && kept(i, w) ? static_cast<float>(static_cast<double>(Quantize(w)) / static_cast<double>(mass)) : -1.0f;
    }
  }
  return token;
}

// The chosen token's logprob and the `num_top` most likely ids of the raw distribution (ties:
// lower id), as the CPU: log_z = max + log(sum exp(x - max)), summed in double; the terms are
// float exps (2 ulp) of the float difference where the CPU takes double ones: ~1e-7 apart.
__device__ void Logprobs(const float* raw, int n, int token, int num_top, u64* hist, Shared& sh, float* out_logprob,
                         DeviceLogprob* out_top) {
  const float max_raw = RowMax(raw, n, sh);
  double z = 0.0;
  ForRow(raw, n, [&](int, float v, bool valid) {
    if (valid) z += expf(__fsub_rn(v, max_raw));
  });
  z = BlockReduce(z, AddOp(), sh.dscan);
  const double log_z = static_cast<double>(max_raw) + log(z);
  if (threadIdx.x == 0 && out_logprob) *out_logprob = static_cast<float>(static_cast<double>(raw[token]) - log_z);
  if (!out_top) return;
  const int k = min(min(num_top, kMaxTopLogprobs), n);
  if (k > 0) {
    const Selection s = RadixSelect(
        raw, n, static_cast<u64>(k),
        [](int, float v, uint32_t& key, u64& w) {
          key = FloatKey(v);
          w = 1;
          return true;
        },
        hist, sh);
    const u64 need = static_cast<u64>(k) - s.above;
    int cut = INT_MAX;
    if (need < s.equal) cut = TieCut(n, need, [&](int i) { return FloatKey(raw[i]) == s.key; }, sh);
    if (threadIdx.x == 0) sh.count = 0;
    __syncthreads();
    ForRow(raw, n, [&](int i, float v, bool valid) {
      const uint32_t key = FloatKey(v);
      if (valid && (key > s.key || (key == s.key && i <= cut))) {
        const int slot = atomicAdd(&sh.count, 1);
        if (slot < kMaxTopLogprobs) sh.top_ids[slot] = i;  // exactly k ids pass
      }
    });
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    // At most 20: insertion sort by (logit desc, id asc).
    int* ids = sh.top_ids;
    for (int a = 1; a < k; ++a) {
      const int id = ids[a];
      const uint32_t key = FloatKey(raw[id]);
      int b = a;
      for (; b > 0; --b) {
        const uint32_t kb = FloatKey(raw[ids[b - 1]]);
        if (kb > key || (kb == key && ids[b - 1] < id)) break;
        ids[b] = ids[b - 1];
      }
      ids[b] = id;
    }
    for (int j = 0; j < kMaxTopLogprobs; ++j) {
      out_top[j] = j < k ? DeviceLogprob{ids[j], static_cast<float>(static_cast<double>(raw[ids[j]]) - log_z)}
                         : DeviceLogprob{-1, 0.0f};
    }
  }
}

// grid (num_rows), kThreads. Dynamic shared memory: the repetition penalty's bitmask, later the
// radix histogram (the two are never live together).
__global__ void __launch_bounds__(kThreads) SampleKernel(SampleArgs a) {
  extern __shared__ u64 dyn[];
  __shared__ Shared sh;
  const DeviceSampleRow row = a.rows[blockIdx.x];
  const int64_t b = blockIdx.x;
  const int n = min(row.vocab_limit, a.vocab);
  const float* raw = a.logits + static_cast<int64_t>(row.logits_row) * a.logits_stride;
  float* ws = static_cast<float*>(a.workspace) + b * a.vocab;
  float* debug_logits = a.debug_logits ? a.debug_logits + b * a.vocab : nullptr;
  float* debug_probs = a.debug_probs ? a.debug_probs + b * a.vocab : nullptr;
  float* out_logprob = a.logprob ? a.logprob + b : nullptr;
  DeviceLogprob* out_top = a.top ? a.top + b * kMaxTopLogprobs : nullptr;
  if (n <= 0) {  // an invalid row: an id no caller can mistake for a token
    if (threadIdx.x == 0) a.token[b] = -1;
    if (threadIdx.x == 0 && out_logprob) *out_logprob = 0.0f;
    if (out_top && threadIdx.x < kMaxTopLogprobs) out_top[threadIdx.x] = {-1, 0.0f};
    for (int i = threadIdx.x; i < a.vocab; i += kThreads) {
      if (debug_logits) debug_logits[i] = NegInf();
      if (debug_probs) debug_probs[i] = -1.0f;
    }
    return;
  }

  const float* L = raw;
  if (row.extra_end > row.extra_begin) {
    ProcessLogits(raw, ws, n, row, a.extras, reinterpret_cast<uint32_t*>(dyn));
    L = ws;
  }
  if (debug_logits) {
    for (int i = threadIdx.x; i < a.vocab; i += kThreads) debug_logits[i] = i < n ? L[i] : NegInf();
  }

  int token;
  if (row.temperature == 0.0f) {
    token = ArgMax(L, n, sh);
    if (debug_probs) {
      for (int i = threadIdx.x; i < a.vocab; i += kThreads) debug_probs[i] = i == token ? 1.0f : -1.0f;
    }
  } else {
    token = Draw(L, ws, n, row, dyn, sh, debug_probs, a.vocab);
  }
  if (threadIdx.x == 0) a.token[b] = token;

  if (row.num_top >= 0) {
    Logprobs(raw, n, token, row.num_top, dyn, sh, out_logprob, out_top);
  } else {
    if (threadIdx.x == 0 && out_logprob) *out_logprob = 0.0f;
    if (out_top && threadIdx.x < kMaxTopLogprobs) out_top[threadIdx.x] = {-1, 0.0f};
  }
}

size_t DynamicSmemBytes(int vocab) {
  const size_t bitmask = (static_cast<size_t>(vocab) + 31) / 32 * sizeof(uint32_t);
  return std::max(bitmask, static_cast<size_t>(kRadixBins) * kCopies * sizeof(u64));
}

}  // namespace

size_t SampleWorkspaceBytes(int num_rows, int vocab) {
  if (num_rows <= 0 || vocab <= 0) return 0;
  return static_cast<size_t>(num_rows) * static_cast<size_t>(vocab) * sizeof(float);
}

cudaError_t LaunchSample(const SampleArgs& a, cudaStream_t stream) {
  if (a.num_rows == 0) return cudaSuccess;
  if (a.num_rows < 0 || a.vocab <= 0 || a.logits_stride < a.vocab) return cudaErrorInvalidValue;
  if (!a.logits || !a.rows || !a.workspace || !a.token) return cudaErrorInvalidValue;
  // 64 KiB of histograms (more for the bitmask of vocabularies beyond 512k ids): opt in to large
  // shared memory once per process (the attribute is per kernel, not per launch).
  static const cudaError_t opt_in = [] {
    int device = 0, max_smem = 0;
    cudaFuncAttributes attr;
    cudaError_t e = cudaGetDevice(&device);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (e == cudaSuccess) e = cudaFuncGetAttributes(&attr, SampleKernel);
    if (e == cudaSuccess) {
      e = cudaFuncSetAttribute(SampleKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               max_smem - static_cast<int>(attr.sharedSizeBytes));
    }
    return e;
  }();
  if (opt_in != cudaSuccess) return opt_in;
  SampleKernel<<<a.num_rows, kThreads, DynamicSmemBytes(a.vocab), stream>>>(a);
  return cudaGetLastError();
}

}  // namespace nsa::cuda
