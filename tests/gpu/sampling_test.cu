// The GPU sampler (kernels/cuda/sampling.cu) against the CPU Sampler (engine/sampler/sampler.cc)
// on fresh random logits: vocabularies of 50 to 262144 ids (32000 and 151936 among them), rows
// with and without every control, ties at the top-k and top-p boundaries and at the maximum.
//   1. greedy rows give the CPU's argmax;
//   2. the processed logits equal the CPU's bit for bit, and the kept set and the normalised
//      probabilities equal the exact distribution computed here from sampler.cc's logic, within
//      1e-5 (that reference is itself checked against sampler.cc's draws);
//   3. 20,000 GPU draws per mode (u from a fixed-seed generator) pass a chi-square test against
//      the exact distribution, and never leave the kept set;
//   4. the chosen token's logprob and the top alternatives equal the CPU's within 1e-4;
//   5. bias, bans and penalties change exactly the ids they name, by hand-computed amounts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "engine/sampler/sampler.h"
#include "kernels/cuda/sampling.h"
#include "tests/gpu/cuda_check.h"

namespace nsa {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Device memory owned by the test; freed on scope exit, also when an assertion returns early.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (ptr_) cudaFree(ptr_);
  }
  cudaError_t Alloc(size_t n) {
    size_ = n;
    return cudaMalloc(&ptr_, std::max<size_t>(n, 1) * sizeof(T));
  }
  cudaError_t Upload(const std::vector<T>& v) {
    const cudaError_t e = Alloc(v.size());
    if (e != cudaSuccess || v.empty()) return e;
    return cudaMemcpy(ptr_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  cudaError_t Download(std::vector<T>* v) const {
    v->resize(size_);
    return size_ ? cudaMemcpy(v->data(), ptr_, size_ * sizeof(T), cudaMemcpyDeviceToHost) : cudaSuccess;
  }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

// One draw as the CPU Sampler sees it.
struct Spec {
  std::string name;
  int logits_row = 0;
  SamplingParams params;
  std::optional<TokenHistory> history;
  std::vector<int> banned;
  int num_top = -1;
  int vocab_limit = 0;
  double u = 0.5;
  // Extra entries appended as they are (tests of the kernel's own contract).
  std::vector<cuda::DeviceSampleExtra> raw_extras;
};

// What a GPU runner would build from the CPU's inputs: the row and its extras.
cuda::DeviceSampleRow ToDevice(const Spec& s, std::vector<cuda::DeviceSampleExtra>* extras) {
  const SamplingParams& p = s.params;
  cuda::DeviceSampleRow r;
  r.logits_row = s.logits_row;
  r.vocab_limit = s.vocab_limit;
  r.temperature = p.temperature, r.top_p = p.top_p, r.min_p = p.min_p, r.top_k = p.top_k;
  r.repetition_penalty = p.repetition_penalty, r.presence_penalty = p.presence_penalty;
  r.frequency_penalty = p.frequency_penalty;
  r.num_top = s.num_top;
  r.u = s.u;
  r.extra_begin = static_cast<int32_t>(extras->size());
  for (const auto& [t, b] : p.logit_bias) extras->push_back({t, cuda::kExtraBias, b});
  for (int t : s.banned) extras->push_back({t, cuda::kExtraBanned, 0.0f});
  if (s.history && p.NeedsPenalties()) {
    for (const auto& [t, unused] : s.history->prompt_tokens) extras->push_back({t, cuda::kExtraPrompt, 0.0f});
    for (const auto& [t, c] : s.history->output_counts) extras->push_back({t, cuda::kExtraOutput, static_cast<float>(c)});
  }
  for (const auto& x : s.raw_extras) extras->push_back(x);
  r.extra_end = static_cast<int32_t>(extras->size());
  return r;
}

// sampler.cc's Sample up to the draw: bias, bans, penalties, over [0, n).
std::vector<float> Processed(std::span<const float> raw, const Spec& s) {
  const SamplingParams& params = s.params;
  const int n = std::min<int>(s.vocab_limit, static_cast<int>(raw.size()));
  std::vector<float> logits(raw.begin(), raw.begin() + n);
  for (const auto& [token, bias] : params.logit_bias) {
    if (token < n) logits[token] += bias;
  }
  for (int token : s.banned) {
    if (token >= 0 && token < n) logits[token] = -kInf;
  }
  if (s.history && params.NeedsPenalties()) {
    const TokenHistory& h = *s.history;
    const float r = params.repetition_penalty;
    if (r != 1.0f) {
      auto penalise = [&](int t) {
        if (t < n && logits[t] != -kInf) logits[t] = logits[t] > 0 ? logits[t] / r : logits[t] * r;
      };
      for (const auto& [t, unused] : h.prompt_tokens) penalise(t);
      for (const auto& [t, count] : h.output_counts) {
        if (!h.prompt_tokens.contains(t)) penalise(t);
      }
    }
    for (const auto& [t, count] : h.output_counts) {
      if (t < n) logits[t] -= params.frequency_penalty * count + params.presence_penalty;
    }
  }
  return logits;
}

// The exact distribution of sampler.cc's Draw over processed logits (greedy: the argmax with
// probability 1), written plainly: full sorts instead of the CPU's buckets. prob = -1 outside
// the kept set.
struct Exact {
  std::vector<double> prob;
  std::vector<float> weight;  // exp((logit - top) / T), for messages
};
Exact ExactDistribution(const std::vector<float>& logits, const SamplingParams& params) {
  const int n = static_cast<int>(logits.size());
  Exact e;
  e.prob.assign(n, -1.0);
  e.weight.assign(n, 0.0f);
  if (params.temperature == 0.0f) {
    e.prob[std::max_element(logits.begin(), logits.end()) - logits.begin()] = 1.0;
    return e;
  }
  const float top = *std::max_element(logits.begin(), logits.end());
  auto by_logit = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::vector<int> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  if (params.top_k > 0 && params.top_k < n) {
    std::sort(ids.begin(), ids.end(), by_logit);
    ids.resize(params.top_k);
  }
  const float inv_t = 1.0f / params.temperature;
  std::vector<int> kept;
  for (int id : ids) {
    const float x = std::exp((logits[id] - top) * inv_t);
    e.weight[id] = x;
    if (!(x < params.min_p)) kept.push_back(id);
  }
  if (params.top_p < 1.0f) {
    double mass = 0;
    for (int id : kept) mass += e.weight[id];
    std::sort(kept.begin(), kept.end(), [&](int a, int b) {
      return e.weight[a] > e.weight[b] || (e.weight[a] == e.weight[b] && a < b);
    });
    const double target = params.top_p * mass;
    double cum = 0;
    size_t m = 0;
    while (m < kept.size() && cum < target) cum += e.weight[kept[m++]];
    kept.resize(m);
  }
  double mass = 0;
  for (int id : kept) mass += e.weight[id];
  for (int id : kept) e.prob[id] = e.weight[id] / mass;
  return e;
}

// sampler.cc's log-normaliser of the raw logits.
double LogZ(std::span<const float> raw, int n) {
  const float m = *std::max_element(raw.begin(), raw.begin() + n);
  double z = 0;
  for (int i = 0; i < n; ++i) z += std::exp(static_cast<double>(raw[i]) - m);
  return m + std::log(z);
}

struct GpuResult {
  std::vector<int32_t> token;
  std::vector<float> logprob;
  std::vector<cuda::DeviceLogprob> top;
  std::vector<float> debug_logits, debug_probs;  // [rows][vocab] when asked for
};

// Runs one launch over `specs`. The logits rows are padded (stride > vocab) with huge values and
// the workspace filled with NaNs, so that a read of either would show.
void RunGpu(const std::vector<std::vector<float>>& logits, int vocab, const std::vector<Spec>& specs, bool debug,
            GpuResult* out) {
  const int64_t stride = vocab + 64;
  std::vector<float> flat(logits.size() * stride, 1e30f);
  for (size_t r = 0; r < logits.size(); ++r) std::copy(logits[r].begin(), logits[r].end(), flat.begin() + r * stride);
  std::vector<cuda::DeviceSampleExtra> extras;
  std::vector<cuda::DeviceSampleRow> rows;
  for (const Spec& s : specs) rows.push_back(ToDevice(s, &extras));
  const int num_rows = static_cast<int>(rows.size());

  DeviceArray<float> d_logits, d_dlogits, d_dprobs, d_logprob;
  DeviceArray<cuda::DeviceSampleRow> d_rows;
  DeviceArray<cuda::DeviceSampleExtra> d_extras;
  DeviceArray<unsigned char> d_ws;
  DeviceArray<int32_t> d_token;
  DeviceArray<cuda::DeviceLogprob> d_top;
  CUDA_OK(d_logits.Upload(flat));
  CUDA_OK(d_rows.Upload(rows));
  CUDA_OK(d_extras.Upload(extras));
  CUDA_OK(d_ws.Alloc(cuda::SampleWorkspaceBytes(num_rows, vocab)));
  CUDA_OK(cudaMemset(d_ws.get(), 0xff, cuda::SampleWorkspaceBytes(num_rows, vocab)));
  CUDA_OK(d_token.Alloc(num_rows));
  CUDA_OK(cudaMemset(d_token.get(), 0x55, num_rows * sizeof(int32_t)));
  CUDA_OK(d_logprob.Alloc(num_rows));
  CUDA_OK(cudaMemset(d_logprob.get(), 0xff, num_rows * sizeof(float)));
  CUDA_OK(d_top.Alloc(static_cast<size_t>(num_rows) * cuda::kMaxTopLogprobs));
  CUDA_OK(cudaMemset(d_top.get(), 0x55, static_cast<size_t>(num_rows) * cuda::kMaxTopLogprobs * sizeof(cuda::DeviceLogprob)));
  if (debug) {
    CUDA_OK(d_dlogits.Alloc(static_cast<size_t>(num_rows) * vocab));
    CUDA_OK(d_dprobs.Alloc(static_cast<size_t>(num_rows) * vocab));
  }
  cuda::SampleArgs a;
  a.num_rows = num_rows, a.vocab = vocab, a.logits_stride = stride, a.logits = d_logits.get();
  a.rows = d_rows.get(), a.extras = d_extras.get(), a.workspace = d_ws.get();
  a.token = d_token.get(), a.logprob = d_logprob.get(), a.top = d_top.get();
  a.debug_logits = d_dlogits.get(), a.debug_probs = d_dprobs.get();
  CUDA_OK(cuda::LaunchSample(a, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(d_token.Download(&out->token));
  CUDA_OK(d_logprob.Download(&out->logprob));
  CUDA_OK(d_top.Download(&out->top));
  if (debug) {
    CUDA_OK(d_dlogits.Download(&out->debug_logits));
    CUDA_OK(d_dprobs.Download(&out->debug_probs));
  }
}

std::vector<float> NormalRow(int vocab, float scale, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> x(vocab);
  for (float& v : x) v = nd(rng);
  return x;
}

// `count` scattered ids tied at the top, together holding at least `share` of the softmax mass
// (T = 1): top-k below `count` and top-p below `share` both cut through the tie.
std::vector<float> PlateauRow(int vocab, int count, double share, std::mt19937_64& rng) {
  std::vector<float> x = NormalRow(vocab, 1.0f, rng);
  std::vector<int> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  ids.resize(count);
  for (int id : ids) x[id] = -kInf;  // out of the rest's mass
  double rest = 0;
  float rest_max = -kInf;
  for (float v : x) {
    if (v != -kInf) rest += std::exp(static_cast<double>(v)), rest_max = std::max(rest_max, v);
  }
  float c = static_cast<float>(std::log(share / (1 - share) * rest / count));
  c = std::max(c, rest_max + 1.0f);  // small vocabularies: the plateau stays on top, its share grows
  for (int id : ids) x[id] = c;
  return x;
}

// Ties at ranks [36, 45) of the row (value of rank 36): top-k = 40 keeps 4 of the 9.
std::vector<float> BoundaryTieRow(int vocab, std::mt19937_64& rng) {
  std::vector<float> x = NormalRow(vocab, 1.5f, rng);
  std::vector<int> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [&](int a, int b) { return x[a] > x[b]; });
  const float v = x[ids[36]];
  for (int r = 36; r < 45; ++r) x[ids[r]] = v;
  return x;
}

TokenHistory MakeHistory(int vocab, int prompt, int outputs, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> id(0, vocab - 1);
  std::vector<int> p(prompt);
  for (int& t : p) t = id(rng);
  TokenHistory h;
  h.AddPrompt(p);
  for (int j = 0; j < outputs; ++j) h.AddOutput(j % 3 == 0 ? p[j % prompt] : id(rng));  // some in both
  return h;
}

class SamplingTest : public ::testing::TestWithParam<int> {};

TEST_P(SamplingTest, MatchesTheCpuSampler) {
  const int V = GetParam();
  std::mt19937_64 rng(1000 + V);
  std::uniform_int_distribution<int> any_id(0, V - 1);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const int plateau = V < 100 ? 8 : 12;
  std::vector<std::vector<float>> logits = {
      NormalRow(V, 2.0f, rng),  // 0
      PlateauRow(V, plateau, 0.7, rng),  // 1: ties at the top
      BoundaryTieRow(V, rng),  // 2: ties at the top-k = 40 boundary
      NormalRow(V, 4.0f, rng),  // 3: peaked
  };
  const int raw_argmax0 = static_cast<int>(std::max_element(logits[0].begin(), logits[0].end()) - logits[0].begin());

  std::vector<Spec> specs;
  auto add = [&](std::string name, int row, auto set) {
    Spec s;
    s.name = std::move(name);
    s.logits_row = row;
    s.vocab_limit = V;
    s.u = uniform(rng);
    set(s);
    specs.push_back(std::move(s));
  };
  auto controls = [&](Spec& s) {  // bias, bans (the raw argmax among them), penalties
    s.params.logit_bias = {{any_id(rng), 2.5f}, {any_id(rng), -3.0f}, {any_id(rng), 1.25f}};
    s.banned = {raw_argmax0, any_id(rng)};
    s.params.repetition_penalty = 1.3f, s.params.frequency_penalty = 0.5f, s.params.presence_penalty = 0.3f;
    s.history = MakeHistory(V, std::min(300, V / 3), std::min(40, V / 4), rng);
  };
  add("greedy", 0, [](Spec& s) { s.params.temperature = 0.0f; });
  add("greedy_controls", 0, [&](Spec& s) {
    s.params.temperature = 0.0f;
    controls(s);
  });
  add("greedy_tied_max", 1, [](Spec& s) { s.params.temperature = 0.0f; });
  add("t1", 0, [](Spec& s) { s.params.temperature = 1.0f; });
  add("t07_k50", 3, [](Spec& s) { s.params.temperature = 0.7f, s.params.top_k = 50; });
  add("p09", 0, [](Spec& s) { s.params.top_p = 0.9f; });
  add("minp005", 0, [](Spec& s) { s.params.min_p = 0.05f; });
  add("all", 0, [&](Spec& s) {
    s.params.temperature = 0.8f, s.params.top_k = 40, s.params.top_p = 0.8f, s.params.min_p = 0.02f;
    controls(s);
  });
  add("all_peaked", 3, [&](Spec& s) {
    s.params.temperature = 1.3f, s.params.top_k = 200, s.params.top_p = 0.95f, s.params.min_p = 0.001f;
    controls(s);
  });
  add("k1", 0, [](Spec& s) { s.params.top_k = 1; });
  add("k_is_vocab", 0, [&](Spec& s) { s.params.top_k = V, s.params.temperature = 1.5f; });
  add("minp1_tied_top", 1, [](Spec& s) { s.params.min_p = 1.0f; });
  add("t_tiny", 3, [](Spec& s) { s.params.temperature = 1e-3f; });
  add("t2", 3, [](Spec& s) { s.params.temperature = 2.0f; });
  add("p05_through_plateau", 1, [](Spec& s) { s.params.top_p = 0.5f; });
  add("k5_through_plateau", 1, [](Spec& s) { s.params.top_k = 5; });
  add("k40_boundary_ties", 2, [](Spec& s) { s.params.top_k = 40; });
  add("k40_p095_minp_boundary_ties", 2, [](Spec& s) {
    s.params.top_k = 40, s.params.top_p = 0.95f, s.params.min_p = 0.001f;
  });
  add("vocab_limit", 0, [&](Spec& s) {
    s.vocab_limit = V - V / 7;
    s.params.top_p = 0.9f;
    s.params.logit_bias = {{V - 1, 50.0f}};  // beyond the limit: ignored
    s.params.presence_penalty = 1.0f;
    s.history = MakeHistory(V, std::min(300, V / 3), std::min(40, V / 4), rng);
  });
  // n > 1: two draws of one logits row with different histories and the same u.
  for (int j = 0; j < 2; ++j) {
    add("n2_" + std::to_string(j), 3, [&](Spec& s) {
      s.params.repetition_penalty = 1.2f, s.params.presence_penalty = 0.5f, s.params.top_k = 100;
      s.history = MakeHistory(V, std::min(100, V / 3), std::min(60, V / 2), rng);
      s.u = 0.37;
    });
  }
  const int num_tops[] = {-1, 0, 1, 5, 20};
  for (size_t i = 0; i < specs.size(); ++i) {
    specs[i].num_top = num_tops[i % 5];
    ASSERT_TRUE(specs[i].params.Validate(V).ok()) << specs[i].name;
  }

  GpuResult g;
  ASSERT_NO_FATAL_FAILURE(RunGpu(logits, V, specs, /*debug=*/true, &g));

  for (size_t r = 0; r < specs.size(); ++r) {
    const Spec& s = specs[r];
    SCOPED_TRACE("vocab " + std::to_string(V) + ", row " + s.name);
    const std::vector<float>& raw = logits[s.logits_row];
    const int n = std::min(s.vocab_limit, V);
    const float* d_logits = &g.debug_logits[r * V];
    const float* d_probs = &g.debug_probs[r * V];
    const int token = g.token[r];
    ASSERT_GE(token, 0);
    ASSERT_LT(token, n);

    // 2a. Processed logits: bit for bit (-inf from the limit on).
    const std::vector<float> processed = Processed(raw, s);
    int bad = 0;
    for (int i = 0; i < V; ++i) {
      const float want = i < n ? processed[i] : -kInf;
      if (std::memcmp(&want, &d_logits[i], sizeof(float)) != 0 && ++bad <= 5) {
        ADD_FAILURE() << "processed logit of id " << i << ": gpu " << d_logits[i] << ", cpu " << want << " (raw " << raw[i] << ")";
      }
    }
    EXPECT_EQ(bad, 0);

    // 1 and 2b. The kept set and its probabilities.
    const Exact exact = ExactDistribution(processed, s.params);
    bad = 0;
    for (int i = 0; i < V; ++i) {
      const double want = i < n ? exact.prob[i] : -1.0;
      const bool kept_cpu = want >= 0, kept_gpu = d_probs[i] >= 0;
      if ((kept_cpu != kept_gpu || (kept_cpu && std::abs(want - d_probs[i]) > 1e-5)) && ++bad <= 5) {
        ADD_FAILURE() << "id " << i << ": gpu prob " << d_probs[i] << ", cpu " << want
                      << (i < n ? " (weight " + std::to_string(exact.weight[i]) + ", logit " + std::to_string(processed[i]) + ")" : "");
      }
    }
    EXPECT_EQ(bad, 0);
    EXPECT_GT(exact.prob[token], 0.0) << "drew id " << token << " outside the kept set or of weight 0";

    Sampler cpu(42 + r);
    const TokenHistory* history = s.history ? &*s.history : nullptr;
    const SampleResult c = cpu.Sample(raw, s.params, s.vocab_limit, history, s.banned, s.num_top);
    if (s.params.temperature == 0.0f) {
      EXPECT_EQ(token, c.token) << "greedy";
    } else {
      // The reference is sampler.cc's: its own draws stay in the kept set.
      EXPECT_GT(exact.prob[c.token], 0.0) << "sampler.cc drew " << c.token << " outside this test's kept set";
      for (int j = 0; j < 20; ++j) {
        const int t = cpu.Sample(raw, s.params, s.vocab_limit, history, s.banned).token;
        EXPECT_GT(exact.prob[t], 0.0) << "sampler.cc drew " << t << " outside this test's kept set";
      }
    }

    // 4. Logprobs of the raw distribution.
    const cuda::DeviceLogprob* top = &g.top[r * cuda::kMaxTopLogprobs];
    if (s.num_top < 0) {
      EXPECT_EQ(g.logprob[r], 0.0f);
      for (int j = 0; j < cuda::kMaxTopLogprobs; ++j) EXPECT_EQ(top[j].token, -1);
      continue;
    }
    const double log_z = LogZ(raw, n);
    EXPECT_NEAR(g.logprob[r], raw[token] - log_z, 1e-4);
    if (token == c.token) EXPECT_NEAR(g.logprob[r], c.logprob, 1e-4);
    ASSERT_EQ(c.top.size(), static_cast<size_t>(std::min(s.num_top, n)));
    for (int j = 0; j < cuda::kMaxTopLogprobs; ++j) {
      if (j < static_cast<int>(c.top.size())) {
        EXPECT_EQ(top[j].token, c.top[j].token) << "alternative " << j;
        EXPECT_NEAR(top[j].logprob, c.top[j].logprob, 1e-4) << "alternative " << j;
      } else {
        EXPECT_EQ(top[j].token, -1) << "alternative " << j;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, SamplingTest, ::testing::Values(50, 1000, 32000, 151936, 262144),
                         [](const auto& info) { return "V" + std::to_string(info.param); });

// Pearson's statistic over bins of expected count >= 5 (the rest pooled); bins of probability 0
// must be empty. Returns false (with a message) when the counts fail at p < 1e-6.
testing::AssertionResult ChiSquare(const std::vector<int>& counts, const std::vector<double>& prob, int draws) {
  double stat = 0, pooled_e = 0, pooled_o = 0;
  int bins = 0;
  for (size_t i = 0; i < prob.size(); ++i) {
    const double e = std::max(prob[i], 0.0) * draws;
    if (e == 0) {
      if (counts[i] != 0) return testing::AssertionFailure() << counts[i] << " draws of id " << i << " (probability 0)";
      continue;
    }
    if (e < 5) {
      pooled_e += e, pooled_o += counts[i];
      continue;
    }
    stat += (counts[i] - e) * (counts[i] - e) / e;
    ++bins;
  }
  if (pooled_e > 0) stat += (pooled_o - pooled_e) * (pooled_o - pooled_e) / pooled_e, ++bins;
  const int dof = std::max(bins - 1, 1);
  // Wilson-Hilferty: the chi-square quantile at 1 - 1e-6 (z = 4.753).
  const double a = 2.0 / (9.0 * dof), crit = dof * std::pow(1 - a + 4.753 * std::sqrt(a), 3);
  if (stat > crit) return testing::AssertionFailure() << "chi2 " << stat << " > " << crit << " (dof " << dof << ")";
  return testing::AssertionSuccess() << "chi2 " << stat << " <= " << crit << " (dof " << dof << ")";
}

TEST(SamplingDraws, ChiSquareAgainstTheExactDistribution) {
  constexpr int V = 50, kDraws = 20000;
  std::mt19937_64 rng(77);
  std::uniform_int_distribution<int> any_id(0, V - 1);
  struct Mode {
    const char* name;
    int row;
    SamplingParams params;
    bool controls;
  };
  std::vector<std::vector<float>> logits = {NormalRow(V, 1.5f, rng), PlateauRow(V, 8, 0.7, rng)};
  auto params = [](float t, int k, float p, float min_p) {
    SamplingParams s;
    s.temperature = t, s.top_k = k, s.top_p = p, s.min_p = min_p;
    return s;
  };
  const std::vector<Mode> modes = {
      {"t1", 0, params(1.0f, 0, 1.0f, 0.0f), false},
      {"t07_k10", 0, params(0.7f, 10, 1.0f, 0.0f), false},
      {"p08", 0, params(1.0f, 0, 0.8f, 0.0f), false},
      {"minp01", 0, params(1.0f, 0, 1.0f, 0.1f), false},
      {"all", 0, params(1.3f, 20, 0.9f, 0.02f), true},
      {"k5_through_plateau", 1, params(1.0f, 5, 1.0f, 0.0f), false},
      {"p05_through_plateau", 1, params(1.0f, 0, 0.5f, 0.0f), false},
  };
  for (const Mode& m : modes) {
    SCOPED_TRACE(m.name);
    Spec s;
    s.logits_row = m.row, s.vocab_limit = V, s.params = m.params;
    if (m.controls) {
      s.params.logit_bias = {{any_id(rng), 2.0f}, {any_id(rng), -1.0f}};
      s.banned = {static_cast<int>(std::max_element(logits[0].begin(), logits[0].end()) - logits[0].begin())};
      s.params.repetition_penalty = 1.5f, s.params.frequency_penalty = 0.4f, s.params.presence_penalty = 0.2f;
      s.history = MakeHistory(V, 10, 12, rng);
    }
    ASSERT_TRUE(s.params.Validate(V).ok());
    const Exact exact = ExactDistribution(Processed(logits[m.row], s), s.params);

    // The GPU: kDraws rows over one logits row and one range of extras, u from a fixed seed.
    std::vector<Spec> specs(kDraws, s);
    std::mt19937_64 urng(5);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    for (Spec& d : specs) d.u = uniform(urng);
    GpuResult g;
    ASSERT_NO_FATAL_FAILURE(RunGpu(logits, V, specs, /*debug=*/false, &g));
    std::vector<int> gpu_counts(V, 0), cpu_counts(V, 0);
    for (int t : g.token) {
      ASSERT_TRUE(t >= 0 && t < V) << t;
      ++gpu_counts[t];
    }
    EXPECT_TRUE(ChiSquare(gpu_counts, exact.prob, kDraws)) << "gpu";

    // sampler.cc's own draws against the same reference: the reference is the CPU's distribution.
    Sampler cpu(9);
    for (int j = 0; j < kDraws; ++j) {
      ++cpu_counts[cpu.Sample(logits[m.row], s.params, V, s.history ? &*s.history : nullptr, s.banned).token];
    }
    EXPECT_TRUE(ChiSquare(cpu_counts, exact.prob, kDraws)) << "cpu";

    // The test has power: moving mass from the most likely kept id to the least likely one fails.
    std::vector<double> wrong = exact.prob;
    int hi = -1, lo = -1;
    for (int i = 0; i < V; ++i) {
      if (wrong[i] <= 0) continue;
      if (hi < 0 || wrong[i] > wrong[hi]) hi = i;
      if (lo < 0 || wrong[i] < wrong[lo]) lo = i;
    }
    if (hi != lo && wrong[hi] - wrong[lo] > 0.05) {
      const double d = 0.02;
      wrong[hi] -= d, wrong[lo] += d;
      EXPECT_FALSE(ChiSquare(gpu_counts, wrong, kDraws)) << "a distribution off by " << d << " passes";
    }
  }
}

// 5. Bias, bans and penalties by hand: every value is exact in float.
TEST(SamplingControls, ChangeExactlyTheIdsTheyName) {
  constexpr int V = 1000, kLimit = 990;
  std::mt19937_64 rng(3);
  std::vector<float> raw = NormalRow(V, 1.0f, rng);
  for (float& x : raw) x = std::clamp(x, -3.0f, 3.0f);
  raw[10] = 1.5f;  // bias +2.25 -> 3.75, the new argmax
  raw[11] = 0.5f;  // bias -3 -> -2.5
  raw[12] = 5.0f;  // banned (the raw argmax) and an output token: stays -inf
  raw[20] = 2.0f;  // prompt: / 2 -> 1
  raw[21] = -1.5f;  // prompt: * 2 -> -3
  raw[22] = 3.0f;  // prompt and output x3: / 2 once -> 1.5, then - (0.5 * 3 + 0.25) -> -0.25
  raw[23] = -0.5f;  // output x1: * 2 -> -1, then - 0.75 -> -1.75
  raw[24] = 1.0f;  // bias +1 -> 2, prompt: / 2 -> 1
  raw[25] = 2.5f;  // prompt twice (a duplicate entry): / 2 once -> 1.25
  raw[995] = 9.0f;  // beyond the limit: never chosen, not even with a bias

  Spec s;
  s.vocab_limit = kLimit;
  s.params.temperature = 0.0f;
  s.params.logit_bias = {{10, 2.25f}, {11, -3.0f}, {24, 1.0f}, {995, 100.0f}};
  s.banned = {12};
  s.params.repetition_penalty = 2.0f, s.params.frequency_penalty = 0.5f, s.params.presence_penalty = 0.25f;
  TokenHistory h;
  const std::vector<int> prompt = {20, 21, 22, 24, 25, 996};
  h.AddPrompt(prompt);
  for (int t : {22, 22, 22, 23, 12, 997}) h.AddOutput(t);
  s.history = h;
  s.raw_extras = {{25, cuda::kExtraPrompt, 0.0f}, {-5, cuda::kExtraBias, 7.0f}, {5000, cuda::kExtraBanned, 0.0f}};
  s.num_top = 3;
  Spec sampled = s;  // the same controls at temperature 1
  sampled.params.temperature = 1.0f;
  sampled.u = 0.999;

  GpuResult g;
  ASSERT_NO_FATAL_FAILURE(RunGpu({raw}, V, {s, sampled}, /*debug=*/true, &g));
  const std::vector<std::pair<int, float>> changed = {{10, 3.75f}, {11, -2.5f}, {12, -kInf}, {20, 1.0f}, {21, -3.0f},
                                                      {22, -0.25f}, {23, -1.75f}, {24, 1.0f}, {25, 1.25f}};
  for (int row = 0; row < 2; ++row) {
    SCOPED_TRACE(row == 0 ? "greedy" : "sampled");
    const float* got = &g.debug_logits[row * V];
    for (int i = 0; i < V; ++i) {
      float want = i < kLimit ? raw[i] : -kInf;
      for (const auto& [id, v] : changed) {
        if (id == i) want = v;
      }
      EXPECT_EQ(got[i], want) << "id " << i;
    }
    // The same through this test's copy of sampler.cc's steps.
    const std::vector<float> processed = Processed(raw, row == 0 ? s : sampled);
    for (int i = 0; i < kLimit; ++i) EXPECT_EQ(got[i], processed[i]) << "id " << i;
  }
  EXPECT_EQ(g.token[0], 10) << "greedy: the biased id, not the banned raw argmax";
  EXPECT_EQ(Sampler(1).Sample(raw, s.params, kLimit, &h, s.banned).token, 10) << "the CPU agrees";
  const float* p = &g.debug_probs[V];
  EXPECT_EQ(p[12], 0.0f) << "banned: kept with weight 0 (min_p 0), as on the CPU";
  EXPECT_EQ(p[995], -1.0f) << "beyond the limit";
  EXPECT_NE(g.token[1], 12);
  EXPECT_LT(g.token[1], kLimit);
  // Logprobs are of the raw distribution: the banned raw argmax leads the alternatives.
  const cuda::DeviceLogprob* top = &g.top[0];
  EXPECT_EQ(top[0].token, 12);
  EXPECT_NEAR(top[0].logprob, raw[12] - LogZ(raw, kLimit), 1e-4);
}

// Argument checks and the documented corner: a row with every id banned has no distribution.
TEST(SamplingControls, ArgumentsAndAllBanned) {
  cuda::SampleArgs a;
  EXPECT_EQ(cuda::LaunchSample(a, nullptr), cudaSuccess) << "no rows: nothing to do";
  a.num_rows = 1, a.vocab = 8, a.logits_stride = 8;
  EXPECT_EQ(cuda::LaunchSample(a, nullptr), cudaErrorInvalidValue) << "null pointers";
  EXPECT_EQ(cuda::SampleWorkspaceBytes(3, 1000), 3u * 1000 * sizeof(float));

  const std::vector<float> raw = {0.5f, 1.0f, 1.0f, -2.0f, 0.0f, 3.0f, 0.25f, 1.0f};
  Spec s;
  s.vocab_limit = 8;
  s.banned = {0, 1, 2, 3, 4, 5, 6, 7};
  s.num_top = 2;
  GpuResult g;
  ASSERT_NO_FATAL_FAILURE(RunGpu({raw}, 8, {s}, /*debug=*/true, &g));
  EXPECT_EQ(g.token[0], 0) << "every id banned: the lowest id";
  EXPECT_EQ(g.top[0].token, 5);
  EXPECT_EQ(g.top[1].token, 1) << "ties: the lower id first";
}

}  // namespace
}  // namespace nsa
