// nsa-bench-serving: a load generator for nsa-server (gRPC) and any OpenAI-compatible HTTP
// server, with `vllm bench serve`'s flags and figures (bench/serving/README.md).
//
//   nsa-bench-serving --backend grpc|openai|openai-chat [--host H] [--port P]
//       [--num-prompts N] [--request-rate R|inf] [--burstiness B] [--max-concurrency C]
//       [--input-len 1024 | 8192:0.5,65536:0.5] [--output-len 128] [--range-ratio r]
//       [--dataset FILE.jsonl] [--num-warmups W] [--seed S] [--arrival-seed A] [--goodput ttft:MS,tpot:MS,e2el:MS]
//       [--percentiles 50,90,99] [--result-json FILE] [--append-table FILE] [--metrics-url URL]
//
// Order of a run: probe the server (model, context length), build the prompts, scrape
// /metrics, warm up, send the prompts on their schedule, scrape again once the server's counters
// have caught up, print the table and write the JSON.
#include <signal.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/serving/api_client.h"
#include "bench/serving/arrivals.h"
#include "bench/serving/prometheus_text.h"
#include "bench/serving/report.h"
#include "bench/serving/request_runner.h"
#include "bench/serving/serving_metrics.h"
#include "bench/serving/workload.h"
#include "kernels/common/status.h"
#include "models/flags.h"

ABSL_FLAG(std::string, backend, "openai", "grpc (nsa.v1.Generation), openai (/v1/completions) or openai-chat (/v1/chat/completions)");
ABSL_FLAG(std::string, host, "127.0.0.1", "server address");
ABSL_FLAG(int, port, 0, "server port (0: 50051 for grpc, 8000 for openai and openai-chat)");
ABSL_FLAG(std::string, endpoint, "", "HTTP path (default: /v1/completions or /v1/chat/completions)");
ABSL_FLAG(std::string, model, "", "model name sent over HTTP (default: the first of GET /v1/models)");
ABSL_FLAG(std::string, api_key, "", "HTTP API key (default: $OPENAI_API_KEY)");
ABSL_FLAG(std::string, label, "", "name of the run in the JSON and the table (default: the backend)");
ABSL_FLAG(int64_t, num_prompts, 1000, "requests to send");
ABSL_FLAG(std::string, request_rate, "inf", "requests per second, or inf (all at once)");
ABSL_FLAG(std::string, burstiness, "1", "gamma shape of the intervals: 1 Poisson, < 1 burstier, > 1 more even, inf fixed");
ABSL_FLAG(int, max_concurrency, 0, "most requests in flight at once (0: no cap)");
ABSL_FLAG(std::string, input_len, "1024", "synthetic prompt length in tokens, or a weighted mix: 8192:0.5,65536:0.5");
ABSL_FLAG(std::string, output_len, "128", "output tokens per request (max_tokens), or a weighted mix");
ABSL_FLAG(double, range_ratio, 0.0, "spread lengths uniformly over [L(1-r), L(1+r)]; r in [0, 1)");
ABSL_FLAG(std::string, dataset, "", "JSONL prompts: {\"prompt\": TEXT or [ids], \"output_len\": N (optional)} per line");
ABSL_FLAG(int, vocab_size, 2048, "synthetic token ids are drawn from [3, vocab_size)");
ABSL_FLAG(int64_t, num_warmups, 0, "requests sent (and not counted) before the benchmark");
ABSL_FLAG(uint64_t, seed, 0, "seed of the prompts, their lengths and (unless --arrival-seed) the arrivals");
ABSL_FLAG(int64_t, arrival_seed, -1, "seed of the arrival times (-1: --seed + 1)");
ABSL_FLAG(std::string, goodput, "", "SLOs in ms for goodput: ttft:MS,tpot:MS,e2el:MS (any subset)");
ABSL_FLAG(std::string, percentiles, "50,90,99", "percentiles to report");
ABSL_FLAG(std::string, result_json, "", "write the result (figures and per-request data) here");
ABSL_FLAG(std::string, append_table, "", "append one row of figures to this table (header when new); sweep.sh plots it");
ABSL_FLAG(std::string, metrics_url, "", "the server's Prometheus page (http://H:P/metrics): report its token counters beside ours");
ABSL_FLAG(bool, ignore_eos, true, "ask for exactly output-len tokens (ignore_eos)");
ABSL_FLAG(std::string, temperature, "", "sampling temperature (default: the server's)");
ABSL_FLAG(double, request_timeout_s, 6 * 3600, "per-request timeout, seconds");

namespace nsa::bench {
namespace {

using nlohmann::json;

struct Config {
  std::string backend, label;
  double request_rate = kInfinity, burstiness = 1;
  int max_concurrency = 0;
  int64_t num_prompts = 0, num_warmups = 0;
  std::optional<LengthMix> input;  // absent with --dataset
  LengthMix output;
  std::vector<double> percentiles;
  SloConfig slos;
};

absl::StatusOr<double> ParseRate(const std::string& text, const char* flag) {
  double v = 0;
  if (!absl::SimpleAtod(text, &v) || std::isnan(v) || v <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " must be a positive number or inf, got '", text, "'"));
  }
  return v;
}

absl::Status Check(bool ok, const std::string& message) {
  return ok ? absl::OkStatus() : absl::InvalidArgumentError(message);
}

const char* const kServerCounters[] = {"vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                                       "vllm:request_success_total", "vllm:prefix_cache_hits_total",
                                       "vllm:num_preemptions_total", "nsa:engine_step_seconds_sum",
                                       "nsa:engine_step_seconds_count"};

// The server's counter deltas and ours; "match" when the tokens and requests agree.
json CompareServerCounters(const std::string& url, const MetricSums& before, const MetricSums& after,
                           const std::vector<const std::vector<RequestOutput>*>& runs) {
  auto delta = [&](const char* name) {
    auto a = after.find(name), b = before.find(name);
    return (a == after.end() ? 0.0 : a->second) - (b == before.end() ? 0.0 : b->second);
  };
  int64_t prompt = 0, generated = 0, requests = 0;
  for (const auto* outputs : runs) {
    for (const RequestOutput& o : *outputs) {
      if (!o.success) continue;
      prompt += o.prompt_len;
      generated += o.output_tokens;
      ++requests;
    }
  }
  json j;
  j["url"] = url;
  json b = json::object(), a = json::object();
  for (const char* name : kServerCounters) {
    b[name] = before.count(name) ? before.at(name) : 0.0;
    a[name] = after.count(name) ? after.at(name) : 0.0;
  }
  j["before"] = b;
  j["after"] = a;
  const double prefill = delta("vllm:prompt_tokens_total"), cached = delta("vllm:prefix_cache_hits_total");
  j["server"] = {{"prompt_tokens", prefill + cached},
                 {"prefill_tokens", prefill},
                 {"prefix_cache_hit_tokens", cached},
                 {"generation_tokens", delta("vllm:generation_tokens_total")},
                 {"requests_finished", delta("vllm:request_success_total")},
                 {"preemptions", delta("vllm:num_preemptions_total")}};
  // The engine's mean step over the run (warm-ups included): the client's inter-token latency over
  // it is what the API path adds between the engine and the client (vllm's ITL, both in ms).
  const double steps = delta("nsa:engine_step_seconds_count");
  j["server"]["engine_steps"] = steps;
  j["server"]["mean_engine_step_ms"] = steps > 0 ? 1e3 * delta("nsa:engine_step_seconds_sum") / steps : 0.0;
  j["client"] = {{"prompt_tokens", prompt}, {"generation_tokens", generated}, {"requests", requests}};
  j["match"] = prefill + cached == static_cast<double>(prompt) &&
               delta("vllm:generation_tokens_total") == static_cast<double>(generated) &&
               delta("vllm:request_success_total") == static_cast<double>(requests);
  return j;
}

std::string Now() {
  char buf[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof(buf), "%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

absl::Status Run() {
  // ---- flags ----
  Config c;
  c.backend = absl::GetFlag(FLAGS_backend);
  RETURN_IF_ERROR(Check(c.backend == "grpc" || c.backend == "openai" || c.backend == "openai-chat",
                        absl::StrCat("--backend must be grpc, openai or openai-chat, got '", c.backend, "'")));
  c.label = absl::GetFlag(FLAGS_label).empty() ? c.backend : absl::GetFlag(FLAGS_label);
  RETURN_IF_ERROR(Check(c.label.find_first_of(" \t\n") == std::string::npos, "--label must not contain whitespace"));
  int port = absl::GetFlag(FLAGS_port);
  RETURN_IF_ERROR(Check(port >= 0 && port <= 65535, absl::StrCat("--port must be in [1, 65535], got ", port)));
  if (port == 0) port = c.backend == "grpc" ? 50051 : 8000;
  const std::string host = absl::GetFlag(FLAGS_host);
  RETURN_IF_ERROR(Check(!host.empty(), "--host is empty"));
  c.num_prompts = absl::GetFlag(FLAGS_num_prompts);
  RETURN_IF_ERROR(Check(c.num_prompts >= 1, absl::StrCat("--num-prompts must be >= 1, got ", c.num_prompts)));
  ASSIGN_OR_RETURN(c.request_rate, ParseRate(absl::GetFlag(FLAGS_request_rate), "request-rate"));
  ASSIGN_OR_RETURN(c.burstiness, ParseRate(absl::GetFlag(FLAGS_burstiness), "burstiness"));
  c.max_concurrency = absl::GetFlag(FLAGS_max_concurrency);
  RETURN_IF_ERROR(Check(c.max_concurrency >= 0, absl::StrCat("--max-concurrency must be >= 0 (0: no cap), got ", c.max_concurrency)));
  const double range_ratio = absl::GetFlag(FLAGS_range_ratio);
  RETURN_IF_ERROR(Check(range_ratio >= 0 && range_ratio < 1, absl::StrCat("--range-ratio must be in [0, 1), got ", range_ratio)));
  const int vocab_size = absl::GetFlag(FLAGS_vocab_size);
  RETURN_IF_ERROR(Check(vocab_size > kFirstRegularTokenId,
                        absl::StrCat("--vocab-size must be > ", kFirstRegularTokenId, ", got ", vocab_size)));
  c.num_warmups = absl::GetFlag(FLAGS_num_warmups);
  RETURN_IF_ERROR(Check(c.num_warmups >= 0, absl::StrCat("--num-warmups must be >= 0, got ", c.num_warmups)));
  ASSIGN_OR_RETURN(c.output, ParseLengthMix(absl::GetFlag(FLAGS_output_len), "output-len"));
  ASSIGN_OR_RETURN(c.percentiles, ParsePercentiles(absl::GetFlag(FLAGS_percentiles)));
  ASSIGN_OR_RETURN(c.slos, ParseSlos(absl::GetFlag(FLAGS_goodput)));
  const double timeout_s = absl::GetFlag(FLAGS_request_timeout_s);
  RETURN_IF_ERROR(Check(timeout_s > 0, absl::StrCat("--request-timeout-s must be positive, got ", timeout_s)));
  SendOptions send;
  send.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  send.timeout_s = timeout_s;
  if (const std::string t = absl::GetFlag(FLAGS_temperature); !t.empty()) {
    double v = 0;
    RETURN_IF_ERROR(Check(absl::SimpleAtod(t, &v) && v >= 0 && std::isfinite(v),
                          absl::StrCat("--temperature must be a number >= 0, got '", t, "'")));
    send.temperature = v;
  }
  const std::string dataset = absl::GetFlag(FLAGS_dataset);
  if (dataset.empty()) {
    ASSIGN_OR_RETURN(c.input, ParseLengthMix(absl::GetFlag(FLAGS_input_len), "input-len"));
  }

  // ---- prompts (before the clock starts; warm-ups drawn apart so they share no prefix) ----
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const int64_t arrival_flag = absl::GetFlag(FLAGS_arrival_seed);
  RETURN_IF_ERROR(Check(arrival_flag >= -1, absl::StrCat("--arrival-seed must be >= 0 (or -1: --seed + 1), got ", arrival_flag)));
  const uint64_t arrival_seed = arrival_flag >= 0 ? static_cast<uint64_t>(arrival_flag) : seed + 1;
  std::vector<Prompt> prompts, warmups;
  if (dataset.empty()) {
    SyntheticOptions o{c.num_prompts, *c.input, c.output, range_ratio, vocab_size, seed};
    prompts = SyntheticPrompts(o);
    o.num = c.num_warmups;
    o.seed = seed ^ 0x9e3779b97f4a7c15ull;
    warmups = SyntheticPrompts(o);
  } else {
    ASSIGN_OR_RETURN(std::vector<Prompt> all, ReadDataset(dataset, c.output.max()));
    RETURN_IF_ERROR(Check(static_cast<int64_t>(all.size()) >= c.num_prompts,
                          absl::StrCat("--num-prompts ", c.num_prompts, " but ", dataset, " has ", all.size(),
                                       " prompts: pass --num-prompts ", all.size(), " or fewer")));
    prompts.assign(all.begin(), all.begin() + c.num_prompts);
    for (int64_t i = 0; i < c.num_warmups; ++i) warmups.push_back(all[static_cast<size_t>(i) % all.size()]);
  }

  // ---- the server ----
  std::unique_ptr<ApiClient> client;
  std::string where;
  if (c.backend == "grpc") {
    where = absl::StrCat(host, ":", port);
    client = MakeGrpcClient(where, send);
  } else {
    HttpClientOptions http;
    http.host = host;
    http.port = port;
    http.chat = c.backend == "openai-chat";
    http.endpoint = absl::GetFlag(FLAGS_endpoint);
    http.model = absl::GetFlag(FLAGS_model);
    http.api_key = absl::GetFlag(FLAGS_api_key);
    if (http.api_key.empty() && std::getenv("OPENAI_API_KEY")) http.api_key = std::getenv("OPENAI_API_KEY");
    where = absl::StrCat("http://", host, ":", port, http.endpoint.empty() ? (http.chat ? "/v1/chat/completions" : "/v1/completions")
                                                                             : http.endpoint);
    client = MakeHttpClient(http, send);
  }
  ASSIGN_OR_RETURN(const ServerInfo info, client->Probe());
  std::fprintf(stderr, "nsa-bench-serving: %s %s, model %s, max_model_len %lld\n", c.backend.c_str(), where.c_str(),
               info.model.c_str(), static_cast<long long>(info.max_model_len));
  if (info.vocab_size > 0 && dataset.empty()) {
    RETURN_IF_ERROR(Check(vocab_size <= info.vocab_size, absl::StrCat("--vocab-size ", vocab_size, " exceeds the server's vocabulary (",
                                                                      info.vocab_size, " tokens)")));
  }
  if (info.max_model_len > 0) {
    for (const std::vector<Prompt>* set : {&prompts, &warmups}) {
      for (const Prompt& p : *set) {
        RETURN_IF_ERROR(Check(p.input_len + p.output_len <= info.max_model_len,
                              absl::StrCat("a prompt of ", p.input_len, " tokens + ", p.output_len, " output tokens exceeds the server's max_model_len ",
                                           info.max_model_len, ": lower --input-len/--output-len or raise the server's --max-model-len")));
      }
    }
  }
  RETURN_IF_ERROR(client->Prepare(&prompts));
  RETURN_IF_ERROR(client->Prepare(&warmups));

  const std::string metrics_url = absl::GetFlag(FLAGS_metrics_url);
  MetricSums before;
  if (!metrics_url.empty()) {
    ASSIGN_OR_RETURN(before, ScrapeMetrics(metrics_url));
  }

  // ---- warm-up, then the benchmark ----
  RunResult warm;
  if (c.num_warmups > 0) {
    std::fprintf(stderr, "nsa-bench-serving: warming up with %lld requests\n", static_cast<long long>(c.num_warmups));
    warm = RunRequests(*client, warmups, std::vector<double>(warmups.size(), 0.0), c.max_concurrency);
    int64_t failed = 0;
    for (const RequestOutput& o : warm.outputs) failed += !o.success;
    if (failed == c.num_warmups) {
      return absl::UnavailableError(absl::StrCat("every warm-up request failed; the first: ", warm.outputs[0].error));
    }
  }
  const std::string cap = c.max_concurrency > 0 ? absl::StrCat(c.max_concurrency) : "none";
  std::fprintf(stderr, "nsa-bench-serving: %lld requests, rate %s, burstiness %s (%s), max concurrency %s\n",
               static_cast<long long>(c.num_prompts), absl::GetFlag(FLAGS_request_rate).c_str(),
               absl::GetFlag(FLAGS_burstiness).c_str(), c.burstiness == 1 ? "Poisson" : "gamma", cap.c_str());
  const std::vector<double> offsets = ArrivalOffsets(c.num_prompts, c.request_rate, c.burstiness, arrival_seed);
  const RunResult run = RunRequests(*client, prompts, offsets, c.max_concurrency);

  // ---- figures ----
  const BenchmarkMetrics m = CalculateMetrics(run.outputs, run.duration_s, c.percentiles, c.slos);
  json result;
  result["date"] = Now();
  result["backend"] = c.backend;
  result["label"] = c.label;
  result["base_url"] = where;
  result["model_id"] = info.model;
  result["num_prompts"] = c.num_prompts;
  result["request_rate"] = std::isinf(c.request_rate) ? json("inf") : json(c.request_rate);
  result["burstiness"] = std::isinf(c.burstiness) ? json("inf") : json(c.burstiness);
  result["max_concurrency"] = c.max_concurrency > 0 ? json(c.max_concurrency) : json(nullptr);
  result["input_len"] = c.input ? json(c.input->ToString()) : json(nullptr);
  result["output_len"] = c.output.ToString();
  result["range_ratio"] = range_ratio;
  result["dataset"] = dataset.empty() ? json(nullptr) : json(dataset);
  result["vocab_size"] = vocab_size;
  result["seed"] = seed;
  result["arrival_seed"] = arrival_seed;
  result["ignore_eos"] = send.ignore_eos;
  result["num_warmups"] = c.num_warmups;
  result["percentiles"] = c.percentiles;
  json slos = json::object();
  if (c.slos.ttft_ms) slos["ttft"] = *c.slos.ttft_ms;
  if (c.slos.tpot_ms) slos["tpot"] = *c.slos.tpot_ms;
  if (c.slos.e2el_ms) slos["e2el"] = *c.slos.e2el_ms;
  result["goodput_slos"] = slos;
  result.update(MetricsJson(m, run.outputs, run.duration_s));
  {
    const BenchmarkMetrics wm = CalculateMetrics(warm.outputs, std::max(warm.duration_s, 1e-9), {}, {});
    result["warmup"] = {{"requests", c.num_warmups}, {"completed", wm.completed}, {"failed", wm.failed},
                        {"input_tokens", wm.total_input}, {"output_tokens", wm.total_output}};
  }

  if (!metrics_url.empty()) {
    // The server counts a step's tokens just after it streams them: give the last step a moment.
    const std::vector<const std::vector<RequestOutput>*> runs = {&warm.outputs, &run.outputs};
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(5);
    json compared;
    while (true) {
      ASSIGN_OR_RETURN(const MetricSums after, ScrapeMetrics(metrics_url));
      compared = CompareServerCounters(metrics_url, before, after, runs);
      const bool caught_up = compared["server"]["generation_tokens"].get<double>() >= compared["client"]["generation_tokens"].get<double>() &&
                             compared["server"]["prompt_tokens"].get<double>() >= compared["client"]["prompt_tokens"].get<double>() &&
                             compared["server"]["requests_finished"].get<double>() >= compared["client"]["requests"].get<double>();
      if (caught_up || Clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    result["server_metrics"] = compared;
  }

  std::fputs(FormatTable(result).c_str(), stdout);
  std::fflush(stdout);
  if (const std::string path = absl::GetFlag(FLAGS_result_json); !path.empty()) {
    std::ofstream out(path);
    out << result.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write --result-json ", path));
  }
  if (const std::string path = absl::GetFlag(FLAGS_append_table); !path.empty()) {
    const bool fresh = !std::ifstream(path).good() || std::ifstream(path).peek() == std::ifstream::traits_type::eof();
    std::ofstream out(path, std::ios::app);
    const BenchmarkMetrics fixed = CalculateMetrics(run.outputs, run.duration_s, {90, 99}, c.slos);
    if (fresh) out << TableHeader();
    out << TableRow(c.label, c.request_rate, fixed, run.duration_s);
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write --append-table ", path));
  }
  if (m.completed == 0) return absl::UnavailableError("every request failed (see the errors above)");
  return absl::OkStatus();
}

}  // namespace
}  // namespace nsa::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "nsa-bench-serving --backend grpc|openai|openai-chat [--host H --port P] [--num-prompts N] "
      "[--request-rate R] [--input-len L] [--output-len L] ... (see --help; bench/serving/README.md)");
  const std::vector<char*> rest = nsa::ParseFlags(argc, argv);
  if (rest.size() > 1) {
    std::fprintf(stderr, "nsa-bench-serving: unexpected argument '%s' (flags start with --)\n", rest[1]);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  // A thousand streams need a thousand sockets: lift the soft descriptor limit to the hard one.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  const absl::Status status = nsa::bench::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "nsa-bench-serving: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
