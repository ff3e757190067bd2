// Sampling on the GPU: the twin of the CPU Sampler (engine/sampler/sampler.cc), one thread block
// per draw, in vLLM's order:
//
//   logit bias -> banned ids masked -> repetition, frequency and presence penalties ->
//   temperature (0 = greedy argmax, lowest id on ties) -> min-p -> top-k -> top-p -> one draw
//
// and logprobs of the raw distribution (log-softmax of the logits as the model produced them)
// with up to kMaxTopLogprobs alternatives. Nothing here is sorted: top-k and top-p are threshold
// searches (radix select over the float bits, block-wide histograms), the draw an inverse CDF.
//
// Exact (bit for bit the CPU's float operations): the processed logits (bias, -inf for banned
// ids, the penalties), the greedy token, the top-k set (ties at the boundary to the lower ids),
// the order of the logprob alternatives. The same up to rounding (the requirement is the same
// distribution as the CPU, not the same token for the same u):
//   - weights exp((logit - max) / T) are float(exp(double)): correctly rounded but for rare
//     double roundings; glibc's expf (the CPU) misrounds a fraction of a percent of arguments by
//     one ulp. Only a token within an ulp of the min-p threshold can fall on the other side of
//     it. (CUDA's expf would save ~35 us per 152k-id row and be off by up to 2 ulp more often.)
//   - masses are exact sums of weights quantised to multiples of 2^-45 (integers: deterministic
//     and independent of the summation order); the CPU sums the float weights in double. Weights
//     >= 2^-21 are quantised exactly; a smaller one moves by at most 2^-46, against a total mass
//     >= 1 (the most likely token weighs 1). The top-p boundary (the shortest prefix in (weight
//     desc, id asc) order whose mass reaches top_p * mass, as on the CPU) can differ only where
//     the target lies within such rounding of a prefix sum.
//   - the draw walks the kept set in a fixed order that is not the CPU's (thread-major: ids t,
//     t+1024, t+2048, ... for thread t = 0, 1, ...), so the same u picks a different token; each
//     token is chosen with probability weight / mass, u in [0, 1) resolved to 2^-53.
//   - logprobs: the log-normaliser sums float exps in double (the CPU: double exps), in a
//     different order; the two agree to about 1e-7.
// Not supported, as on the CPU: NaN logits (never chosen here); a row whose every id is banned
// has no distribution (the CPU's result is unspecified; here the lowest id, as greedy would).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace nsa::cuda {

inline constexpr int kMaxTopLogprobs = 20;  // OpenAI's top_logprobs limit

// Per-token controls of one draw, in CSR form (rows name a range of the extras array).
enum SampleExtraKind : int32_t {
  kExtraBias = 0,  // value added to the logit (token ids may repeat: summed, in no set order)
  kExtraBanned = 1,  // logit -> -inf (EOS and stop ids before min_tokens)
  kExtraPrompt = 2,  // a prompt token: repetition penalty
  kExtraOutput = 3,  // an output token, value = its count: repetition, frequency, presence
};
// The repetition penalty is applied once per token however often it appears as prompt or output
// entry; output entries must name each token once (their counts are what the CPU's map holds).
// Entries with ids outside [0, vocab_limit) are ignored.
struct DeviceSampleExtra {
  int32_t token;
  int32_t kind;  // SampleExtraKind
  float value;
};

// One draw. Several rows may read the same logits row (n > 1 sampling).
struct DeviceSampleRow {
  int32_t logits_row = 0;  // which row of SampleArgs::logits
  int32_t vocab_limit = 0;  // ids >= this are never chosen and are left out of logprobs; in [1, vocab]
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 1.0f;  // (0, 1]
  float min_p = 0.0f;  // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; 1 = off
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t top_k = 0;  // 0 = off (as is any value >= the vocabulary)
  int32_t num_top = -1;  // < 0: no logprobs; else the chosen token's logprob and min(num_top, 20) alternatives
  int32_t extra_begin = 0, extra_end = 0;  // [begin, end) of SampleArgs::extras
  // Uniform in [0, 1), drawn on the host from the sequence's own generator, so that a seeded
  // sequence keeps its own stream. Double: a float's 2^-24 steps would distort the tail of a
  // 256k vocabulary.
  double u = 0.0;
};

struct DeviceLogprob {
  int32_t token;  // -1 past the alternatives asked for
  float logprob;
};

struct SampleArgs {
  int num_rows = 0;
  int vocab = 0;  // columns of logits
  int64_t logits_stride = 0;  // elements from one row of logits to the next, >= vocab
  const float* logits = nullptr;
  const DeviceSampleRow* rows = nullptr;  // [num_rows]
  const DeviceSampleExtra* extras = nullptr;  // may be null when no row has extras
  void* workspace = nullptr;  // SampleWorkspaceBytes(num_rows, vocab) bytes
  // Outputs: [num_rows]; logprob and top may be null (then not written). top is
  // [num_rows][kMaxTopLogprobs], most likely first (ties: lower id); the chosen token's logprob
  // and the alternatives are written for rows with num_top >= 0 (0 and {-1, 0} otherwise).
  int32_t* token = nullptr;
  float* logprob = nullptr;
  DeviceLogprob* top = nullptr;
  // Optional, for tests: [num_rows][vocab] each. debug_logits: the processed logits (after bias,
  // bans and penalties; -inf from vocab_limit on). debug_probs: the final probability of each
  // kept id (greedy: 1 for the chosen one), -1 for ids outside the kept set.
  float* debug_logits = nullptr;
  float* debug_probs = nullptr;
};

// The workspace LaunchSample needs: one float row per draw (processed logits, then weights).
size_t SampleWorkspaceBytes(int num_rows, int vocab);

// grid (num_rows), 1024 threads; returns cudaErrorInvalidValue for missing pointers or sizes.
cudaError_t LaunchSample(const SampleArgs& args, cudaStream_t stream);

}  // namespace nsa::cuda
