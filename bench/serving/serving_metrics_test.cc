// The figures on synthetic traces with known gaps, every expected value worked out by hand
// (times are binary fractions, so sums are exact); numpy's percentile on small samples; the
// gamma arrivals' mean and coefficient of variation; prompts, SLO and metrics-page parsing.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <numeric>

#include "bench/serving/arrivals.h"
#include "bench/serving/prometheus_text.h"
#include "bench/serving/serving_metrics.h"
#include "bench/serving/workload.h"

namespace nsa::bench {
namespace {

// A request sent at `start` whose chunks arrive at the given absolute times, through the same
// ChunkTimer the clients use.
RequestOutput Trace(double start, const std::vector<double>& chunks, int64_t prompt_len, int64_t output_tokens) {
  RequestOutput o;
  o.start_time = start;
  ChunkTimer timer(start);
  for (double t : chunks) timer.OnChunk(t, &o);
  timer.Finish(&o);
  o.success = true;
  o.prompt_len = prompt_len;
  o.output_tokens = output_tokens;
  return o;
}

RequestOutput Failed(const std::string& error) {
  RequestOutput o;
  o.error = error;
  return o;
}

// R0: sent at 0,   chunks at .125 .375 .5 .875   TTFT .125  ITL .25 .125 .375  E2EL .875  TPOT .75/3 = .25
// R1: sent at .5,  chunks at .75 .875 1.125      TTFT .25   ITL .125 .25       E2EL .625  TPOT .375/2 = .1875
// R2: sent at 1,   one chunk at 1.375            TTFT .375  ITL -              E2EL .375  TPOT - (0 for goodput)
// R3, R4: failed. The benchmark lasted 2 s.
std::vector<RequestOutput> KnownTrace() {
  return {Trace(0, {0.125, 0.375, 0.5, 0.875}, 10, 4), Trace(0.5, {0.75, 0.875, 1.125}, 20, 3), Trace(1.0, {1.375}, 5, 1),
          Failed("HTTP 429: busy"), Failed("HTTP 429: busy")};
}

double P(const LatencySummary& s, double p) {
  for (const auto& [q, v] : s.percentiles_ms) {
    if (q == p) return v;
  }
  ADD_FAILURE() << "no p" << p;
  return -1;
}

TEST(ChunkTimer, GapsFromChunkTimes) {
  const RequestOutput o = Trace(0.5, {0.75, 0.875, 1.125}, 20, 3);
  EXPECT_DOUBLE_EQ(o.ttft, 0.25);
  EXPECT_EQ(o.itl, (std::vector<double>{0.125, 0.25}));
  EXPECT_DOUBLE_EQ(o.latency, 0.625);
  EXPECT_EQ(o.num_chunks, 3);
  // TTFT plus every ITL is the E2EL.
  EXPECT_DOUBLE_EQ(o.ttft + std::accumulate(o.itl.begin(), o.itl.end(), 0.0), o.latency);
}

TEST(Percentile, MatchesNumpyLinear) {
  // np.percentile([4, 1, 3, 2], q) for q = 0, 25, 50, 90, 100: 1, 1.75, 2.5, 3.7, 4
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 25), 1.75);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 3.7);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 4);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);  // np.percentile([] or 0, 50)
}

TEST(CalculateMetrics, KnownTrace) {
  const BenchmarkMetrics m = CalculateMetrics(KnownTrace(), 2.0, {50, 90, 99}, {});
  EXPECT_EQ(m.completed, 3);
  EXPECT_EQ(m.failed, 2);
  EXPECT_EQ(m.total_input, 35);
  EXPECT_EQ(m.total_output, 8);
  EXPECT_EQ(m.output_lens, (std::vector<int64_t>{4, 3, 1, 0, 0}));
  EXPECT_DOUBLE_EQ(m.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(m.output_throughput, 4.0);
  EXPECT_DOUBLE_EQ(m.total_token_throughput, 21.5);
  EXPECT_FALSE(m.request_goodput.has_value());
  EXPECT_EQ(m.errors.size(), 1u);
  EXPECT_EQ(m.errors.at("HTTP 429: busy"), 2);

  // TTFT {.125, .25, .375}
  EXPECT_DOUBLE_EQ(m.ttft.mean_ms, 250);
  EXPECT_DOUBLE_EQ(m.ttft.median_ms, 250);
  EXPECT_NEAR(m.ttft.std_ms, 125 * std::sqrt(2.0 / 3.0), 1e-9);
  EXPECT_DOUBLE_EQ(P(m.ttft, 50), 250);
  EXPECT_NEAR(P(m.ttft, 90), 350, 1e-9);    // rank 1.8: .25 + .8 * .125
  EXPECT_NEAR(P(m.ttft, 99), 372.5, 1e-9);  // rank 1.98
  // TPOT {.25, .1875}: R2 has one output token and is left out
  EXPECT_DOUBLE_EQ(m.tpot.mean_ms, 218.75);
  EXPECT_DOUBLE_EQ(m.tpot.median_ms, 218.75);
  EXPECT_DOUBLE_EQ(m.tpot.std_ms, 31.25);
  EXPECT_NEAR(P(m.tpot, 90), 243.75, 1e-9);
  EXPECT_NEAR(P(m.tpot, 99), 249.375, 1e-9);
  // ITL pooled {.25, .125, .375, .125, .25}
  EXPECT_DOUBLE_EQ(m.itl.mean_ms, 225);
  EXPECT_DOUBLE_EQ(m.itl.median_ms, 250);
  EXPECT_NEAR(m.itl.std_ms, std::sqrt(0.00875) * 1000, 1e-9);
  EXPECT_NEAR(P(m.itl, 90), 325, 1e-9);  // rank 3.6
  EXPECT_NEAR(P(m.itl, 99), 370, 1e-9);  // rank 3.96
  // E2EL {.875, .625, .375}
  EXPECT_DOUBLE_EQ(m.e2el.mean_ms, 625);
  EXPECT_DOUBLE_EQ(m.e2el.median_ms, 625);
  EXPECT_NEAR(m.e2el.std_ms, 250 * std::sqrt(2.0 / 3.0), 1e-9);
  EXPECT_NEAR(P(m.e2el, 90), 825, 1e-9);
  EXPECT_NEAR(P(m.e2el, 99), 870, 1e-9);

  // Chunks per second since the first send: [0, 1) holds 4 of R0 and 2 of R1; [1, 2) the rest.
  EXPECT_DOUBLE_EQ(m.max_output_tokens_per_s, 6);
  // [0, .875), [.5, 1.125), [1, 1.375): at most two overlap.
  EXPECT_EQ(m.max_concurrent_requests, 2);
}

TEST(CalculateMetrics, Goodput) {
  const std::vector<RequestOutput> trace = KnownTrace();
  auto goodput = [&](const std::string& slos) {
    const BenchmarkMetrics m = CalculateMetrics(trace, 2.0, {}, *ParseSlos(slos));
    return *m.request_goodput;
  };
  EXPECT_DOUBLE_EQ(goodput("ttft:300,tpot:200"), 0.5);  // R0 misses TPOT, R2 misses TTFT
  EXPECT_DOUBLE_EQ(goodput("e2el:700"), 1.0);           // R0 misses
  EXPECT_DOUBLE_EQ(goodput("tpot:0"), 0.5);             // only R2, whose TPOT counts as 0
  EXPECT_DOUBLE_EQ(goodput("ttft:250"), 1.0);           // meeting the SLO exactly is good
  EXPECT_DOUBLE_EQ(goodput("ttft:1000 tpot:1000 e2el:1000"), 1.5);
}

TEST(CalculateMetrics, TouchingIntervalsDoNotOverlap) {
  // One ends at .5 as the next starts: a departure sorts before an arrival.
  const BenchmarkMetrics m = CalculateMetrics({Trace(0, {0.25, 0.5}, 1, 2), Trace(0.5, {0.75, 1.0}, 1, 2)}, 1.0, {}, {});
  EXPECT_EQ(m.max_concurrent_requests, 1);
}

TEST(CalculateMetrics, NothingCompleted) {
  const BenchmarkMetrics m = CalculateMetrics({Failed("x")}, 1.0, {99}, *ParseSlos("ttft:1"));
  EXPECT_EQ(m.completed, 0);
  EXPECT_EQ(m.failed, 1);
  EXPECT_DOUBLE_EQ(m.ttft.mean_ms, 0);
  EXPECT_DOUBLE_EQ(P(m.ttft, 99), 0);
  EXPECT_DOUBLE_EQ(*m.request_goodput, 0);
  EXPECT_DOUBLE_EQ(m.max_output_tokens_per_s, 0);
}

TEST(ParseSlos, Errors) {
  EXPECT_FALSE(ParseSlos("ttft").ok());
  EXPECT_FALSE(ParseSlos("ttft:abc").ok());
  EXPECT_FALSE(ParseSlos("ttft:-1").ok());
  EXPECT_FALSE(ParseSlos("latency:5").ok());
  EXPECT_FALSE(ParseSlos("").value().any());
  const SloConfig s = *ParseSlos("ttft:500,e2el:2000");
  EXPECT_EQ(*s.ttft_ms, 500);
  EXPECT_FALSE(s.tpot_ms.has_value());
  EXPECT_EQ(*s.e2el_ms, 2000);
}

TEST(ParsePercentiles, ValuesAndNames) {
  EXPECT_EQ(*ParsePercentiles("50,90,99"), (std::vector<double>{50, 90, 99}));
  EXPECT_FALSE(ParsePercentiles("101").ok());
  EXPECT_FALSE(ParsePercentiles("p99").ok());
  EXPECT_EQ(PercentileName(99), "p99");
  EXPECT_EQ(PercentileName(99.9), "p99.9");
}

// Gamma intervals: mean 1 / rate, coefficient of variation 1 / sqrt(burstiness).
TEST(Arrivals, GammaMeanAndCoefficientOfVariation) {
  for (double burstiness : {0.25, 1.0, 4.0}) {
    const std::vector<double> v = GammaIntervals(200000, 8.0, burstiness, 42);
    const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
    double var = 0;
    for (double x : v) var += (x - mean) * (x - mean);
    const double cv = std::sqrt(var / static_cast<double>(v.size())) / mean;
    EXPECT_NEAR(mean, 0.125, 0.125 * 0.02) << "burstiness " << burstiness;
    EXPECT_NEAR(cv, 1 / std::sqrt(burstiness), 0.03 / std::sqrt(burstiness)) << "burstiness " << burstiness;
  }
}

TEST(Arrivals, OffsetsAreRescaledToTheTargetDuration) {
  const std::vector<double> t = ArrivalOffsets(100, 20.0, 1.0, 7);
  ASSERT_EQ(t.size(), 100u);
  EXPECT_GT(t[0], 0);  // the first request waits one interval too
  EXPECT_TRUE(std::is_sorted(t.begin(), t.end()));
  EXPECT_NEAR(t.back(), 100 / 20.0, 1e-9);
  EXPECT_EQ(t, ArrivalOffsets(100, 20.0, 1.0, 7));  // seeded
  EXPECT_NE(t, ArrivalOffsets(100, 20.0, 1.0, 8));
  EXPECT_EQ(ArrivalOffsets(5, kInfinity, 1.0, 7), std::vector<double>(5, 0.0));  // all at once
  const std::vector<double> even = ArrivalOffsets(4, 2.0, kInfinity, 7);            // fixed interval
  EXPECT_EQ(even, (std::vector<double>{0.5, 1.0, 1.5, 2.0}));
}

TEST(Workload, LengthMixes) {
  const LengthMix mix = *ParseLengthMix("8192:0.5,65536:0.5", "input-len");
  ASSERT_EQ(mix.entries.size(), 2u);
  EXPECT_EQ(mix.max(), 65536);
  EXPECT_EQ(ParseLengthMix("1024", "input-len")->entries, (std::vector<std::pair<int64_t, double>>{{1024, 1.0}}));
  for (const char* bad : {"", "0", "-5", "abc", "8192:0.5,65536", "8192:0", "8192:x", "1:2:3"}) {
    EXPECT_FALSE(ParseLengthMix(bad, "input-len").ok()) << bad;
  }
}

TEST(Workload, SyntheticPrompts) {
  SyntheticOptions o;
  o.num = 4000;
  o.input = *ParseLengthMix("100:0.75,1000:0.25", "input-len");
  o.output = *ParseLengthMix("10", "output-len");
  o.range_ratio = 0.1;
  o.vocab_size = 50;
  o.seed = 3;
  const std::vector<Prompt> prompts = SyntheticPrompts(o);
  int64_t long_ones = 0;
  for (const Prompt& p : prompts) {
    ASSERT_EQ(static_cast<int64_t>(p.token_ids.size()), p.input_len);
    const bool is_long = p.input_len > 500;
    long_ones += is_long;
    EXPECT_GE(p.input_len, is_long ? 900 : 90);
    EXPECT_LE(p.input_len, is_long ? 1100 : 110);
    EXPECT_GE(p.output_len, 9);
    EXPECT_LE(p.output_len, 11);
    for (int t : p.token_ids) {
      ASSERT_GE(t, kFirstRegularTokenId);
      ASSERT_LT(t, 50);
    }
  }
  EXPECT_NEAR(static_cast<double>(long_ones) / 4000, 0.25, 0.03);
  EXPECT_EQ(SyntheticPrompts(o)[17].token_ids, prompts[17].token_ids);  // seeded
  o.range_ratio = 0;
  for (const Prompt& p : SyntheticPrompts(o)) {
    EXPECT_TRUE(p.input_len == 100 || p.input_len == 1000);
    EXPECT_EQ(p.output_len, 10);
  }
}

TEST(Workload, Dataset) {
  const std::string path = ::testing::TempDir() + "/prompts.jsonl";
  std::ofstream(path) << "{\"prompt\": \"Hello there\", \"output_len\": 5}\n\n{\"prompt\": [5, 6, 7]}\n";
  const std::vector<Prompt> p = *ReadDataset(path, 9);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].text, "Hello there");
  EXPECT_EQ(p[0].output_len, 5);
  EXPECT_EQ(p[1].token_ids, (std::vector<int>{5, 6, 7}));
  EXPECT_EQ(p[1].input_len, 3);
  EXPECT_EQ(p[1].output_len, 9);
  std::ofstream(path) << "{\"prompt\": \"ok\"}\n{\"text\": \"no prompt\"}\n";
  const absl::Status bad = ReadDataset(path, 9).status();
  EXPECT_NE(bad.message().find("line 2"), std::string::npos) << bad;
  EXPECT_FALSE(ReadDataset(path + ".missing", 9).ok());
}

TEST(PrometheusText, SumsLabelSets) {
  const MetricSums m = *ParsePrometheusText(
      "# HELP vllm:request_success_total Finished requests.\n"
      "# TYPE vllm:request_success_total counter\n"
      "vllm:request_success_total{finished_reason=\"length\",model_name=\"tiny\"} 3\n"
      "vllm:request_success_total{finished_reason=\"stop\",model_name=\"a} b\"} 1\n"
      "vllm:generation_tokens_total{model_name=\"tiny\"} 96 1700000000\n"
      "nsa:kv_pages 12\n");
  EXPECT_EQ(m.at("vllm:request_success_total"), 4);
  EXPECT_EQ(m.at("vllm:generation_tokens_total"), 96);
  EXPECT_EQ(m.at("nsa:kv_pages"), 12);
  EXPECT_FALSE(ParsePrometheusText("x{a=\"1\" 3\n").ok());
  EXPECT_FALSE(ParsePrometheusText("x abc\n").ok());
}

}  // namespace
}  // namespace nsa::bench
