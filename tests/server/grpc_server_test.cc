// nsa-server as a black box over gRPC (real process, loopback, port 0, the tiny model): streaming
// equals non-streaming, a seed gives the same tokens alone and among 50 concurrent requests,
// cancelling mid-stream frees the pages (GetLoad and /metrics), every malformed request gets its
// code and message, 200 concurrent streams finish, health and model info answer, and SIGTERM
// during streaming drains and exits 0.
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "nsa/v1/generate.grpc.pb.h"
#include "tests/server/server_process.h"

namespace nsa {
namespace {

using nsa::testing::ServerProcess;
const std::string kModel = std::string(NSA_TEST_MODELS) + "/tiny";

struct Server {
  explicit Server(std::vector<std::string> extra = {}) {
    extra.insert(extra.end(), {"--model", kModel, "--seed", "5"});
    std::string error;
    ok = process.Start(NSA_SERVER_BINARY, extra, &error);
    EXPECT_TRUE(ok) << error;
    channel = grpc::CreateChannel(process.grpc_address(), grpc::InsecureChannelCredentials());
    stub = v1::Generation::NewStub(channel);
  }
  ServerProcess process;
  bool ok = false;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Generation::Stub> stub;
};

struct Result {
  grpc::Status status;
  std::vector<int> tokens;
  std::string text;
  std::vector<v1::Final> finals;
  int deltas = 0;
};

v1::GenerateRequest Req(const std::string& text, int max_tokens, float temperature = 0.8f, uint64_t seed = 11) {
  v1::GenerateRequest r;
  r.set_text(text);
  r.mutable_sampling()->set_temperature(temperature);
  r.mutable_sampling()->set_seed(seed);
  r.mutable_stop()->set_max_tokens(max_tokens);
  r.mutable_stop()->set_ignore_eos(true);
  return r;
}

Result Generate(v1::Generation::Stub& stub, const v1::GenerateRequest& request, int cancel_after = -1,
                std::chrono::milliseconds deadline = std::chrono::milliseconds(0)) {
  grpc::ClientContext context;
  if (deadline.count() > 0) context.set_deadline(std::chrono::system_clock::now() + deadline);
  Result r;
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (response.has_delta()) {
      ++r.deltas;
      for (int t : response.delta().token_ids()) r.tokens.push_back(t);
      r.text += response.delta().text();
      if (r.deltas == cancel_after) context.TryCancel();
    } else {
      r.finals.push_back(response.final());
    }
  }
  r.status = reader->Finish();
  return r;
}

v1::Load GetLoad(v1::Generation::Stub& stub) {
  grpc::ClientContext context;
  v1::Load load;
  EXPECT_TRUE(stub.GetLoad(&context, v1::GetLoadRequest(), &load).ok());
  return load;
}

// GET /metrics over a plain socket.
std::string Metrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string body;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string get = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    (void)!write(fd, get.data(), get.size());
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) body.append(buf, n);
  }
  close(fd);
  return body;
}

// The value of the first sample line starting with `series`, or -1.
double Sample(const std::string& metrics, const std::string& series) {
  size_t pos = 0;
  while ((pos = metrics.find(series, pos)) != std::string::npos) {
    if (pos == 0 || metrics[pos - 1] == '\n') {
      const size_t space = metrics.find(' ', pos);
      return std::stod(metrics.substr(space + 1, metrics.find('\n', space) - space - 1));
    }
    ++pos;
  }
  return -1;
}

TEST(GrpcServerTest, StreamingEqualsNonStreamingAndFinalIsLast) {
  Server s;
  ASSERT_TRUE(s.ok);
  Result streamed = Generate(*s.stub, Req("The license", 30));
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  v1::GenerateRequest whole = Req("The license", 30);
  whole.set_stream(false);
  Result once = Generate(*s.stub, whole);
  ASSERT_TRUE(once.status.ok());
  EXPECT_GT(streamed.deltas, 5);
  EXPECT_EQ(once.deltas, 1);
  EXPECT_EQ(streamed.tokens, once.tokens);
  EXPECT_EQ(streamed.text, once.text);
  ASSERT_EQ(streamed.finals.size(), 1u);
  EXPECT_EQ(streamed.finals[0].finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(streamed.finals[0].usage().completion_tokens(), 30u);
  EXPECT_GT(streamed.finals[0].timings().time_to_first_token_seconds(), 0.0);
}

TEST(GrpcServerTest, SeedGivesTheSameTokensAmongFiftyConcurrentRequests) {
  Server s;
  ASSERT_TRUE(s.ok);
  const v1::GenerateRequest target = Req("Copyright holders", 24, 1.0f, 4242);
  const Result alone = Generate(*s.stub, target);
  ASSERT_TRUE(alone.status.ok());
  std::vector<Result> results(50);
  std::vector<std::thread> threads;
  for (int i = 0; i < 50; ++i) {
    threads.emplace_back([&, i] {
      results[i] = Generate(*s.stub, i % 10 == 0 ? target : Req(std::string(1 + i, 'x'), 10 + i % 7, 0.9f, 100 + i));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 50; i += 10) {
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    EXPECT_EQ(results[i].tokens, alone.tokens) << "request " << i;
  }
}

TEST(GrpcServerTest, CancellingMidStreamFreesThePages) {
  Server s;
  ASSERT_TRUE(s.ok);
  Result r = Generate(*s.stub, Req("a long story", 3000), /*cancel_after=*/3);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::CANCELLED);
  // The engine notices within a step; poll (bounded) until the pages are back.
  v1::Load load;
  for (int i = 0; i < 200; ++i) {
    load = GetLoad(*s.stub);
    if (load.running() == 0 && load.kv_cache_usage() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_EQ(load.running(), 0u);
  EXPECT_EQ(load.kv_cache_usage(), 0.0);
  const std::string metrics = Metrics(s.process.metrics_port());
  EXPECT_EQ(Sample(metrics, "vllm:kv_cache_usage_perc{model_name=\"tiny\"}"), 0.0) << metrics.substr(0, 500);
  EXPECT_GE(Sample(metrics, "vllm:request_success_total{finished_reason=\"abort\",model_name=\"tiny\"}"), 1.0);
}

TEST(GrpcServerTest, MalformedRequestsGetTheirCodes) {
  Server s({"--max-queued-prompt-tokens", "200"});
  ASSERT_TRUE(s.ok);
  auto expect = [&](v1::GenerateRequest r, grpc::StatusCode code, const std::string& message) {
    Result result = Generate(*s.stub, r);
    EXPECT_EQ(result.status.error_code(), code) << message << ": " << result.status.error_message();
    EXPECT_NE(result.status.error_message().find(message), std::string::npos) << result.status.error_message();
    EXPECT_TRUE(result.finals.empty());
  };
  v1::GenerateRequest no_input;
  expect(no_input, grpc::StatusCode::INVALID_ARGUMENT, "no input");
  v1::GenerateRequest empty = Req("", 5);
  empty.set_add_special_tokens(false);
  expect(empty, grpc::StatusCode::INVALID_ARGUMENT, "prompt is empty");
  v1::GenerateRequest top_p = Req("x", 5);
  top_p.mutable_sampling()->set_top_p(1.5f);
  expect(top_p, grpc::StatusCode::INVALID_ARGUMENT, "top_p must be in (0, 1]");
  expect(Req("x", 9000), grpc::StatusCode::INVALID_ARGUMENT, "This model's maximum context length is 4096 tokens");
  v1::GenerateRequest bad_token;
  bad_token.mutable_tokens()->add_ids(1 << 20);
  expect(bad_token, grpc::StatusCode::INVALID_ARGUMENT, "outside the vocabulary");
  v1::GenerateRequest prompt_logprobs = Req("x", 5);
  prompt_logprobs.mutable_output()->set_prompt_logprobs(1);
  expect(prompt_logprobs, grpc::StatusCode::INVALID_ARGUMENT, "prompt_logprobs");
  v1::GenerateRequest n = Req("x", 5);
  n.mutable_sampling()->set_n(1000);
  expect(n, grpc::StatusCode::INVALID_ARGUMENT, "n must be in");
  v1::GenerateRequest backlog;
  for (int i = 0; i < 250; ++i) backlog.mutable_tokens()->add_ids(5);
  backlog.mutable_stop()->set_max_tokens(1);
  expect(backlog, grpc::StatusCode::RESOURCE_EXHAUSTED, "queued prompt tokens");
  Result late = Generate(*s.stub, Req("x", 5), -1, std::chrono::milliseconds(1));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  grpc::ClientContext context;
  v1::AbortResponse abort;
  EXPECT_EQ(s.stub->Abort(&context, v1::AbortRequest(), &abort).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Rejections are counted by reason.
  const std::string metrics = Metrics(s.process.metrics_port());
  EXPECT_GE(Sample(metrics, "nsa:requests_rejected_total{model_name=\"tiny\",reason=\"invalid\"}"), 5.0);
  EXPECT_GE(Sample(metrics, "nsa:requests_rejected_total{model_name=\"tiny\",reason=\"token_backlog\"}"), 1.0);
}

TEST(GrpcServerTest, TwoHundredConcurrentStreamsFinish) {
  Server s;
  ASSERT_TRUE(s.ok);
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 200; ++i) {
    threads.emplace_back([&, i] {
      Result r = Generate(*s.stub, Req("stream " + std::to_string(i), 8, 0.9f, i + 1));
      if (r.status.ok() && r.finals.size() == 1 && r.tokens.size() == 8) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 200);
  EXPECT_EQ(GetLoad(*s.stub).running(), 0u);
}

TEST(GrpcServerTest, HealthModelInfoAndTokenize) {
  Server s;
  ASSERT_TRUE(s.ok);
  for (const char* service : {"", "nsa.v1.Generation", "liveness"}) {
    grpc::ClientContext context;
    grpc::ByteBuffer request, response;
    // grpc.health.v1.HealthCheckRequest{service}: field 1, length-delimited.
    std::string wire = std::string("\x0a", 1) + static_cast<char>(std::strlen(service)) + service;
    grpc::Slice slice(wire);
    request = grpc::ByteBuffer(&slice, 1);
    grpc::GenericStub generic(s.channel);
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                      [&](grpc::Status st) {
                        std::lock_guard<std::mutex> lock(mu);
                        status = st;
                        done = true;
                        cv.notify_all();
                      });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    ASSERT_TRUE(status.ok()) << service << ": " << status.error_message();
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(response.Dump(&slices).ok());
    std::string bytes;
    for (auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    EXPECT_EQ(bytes, std::string("\x08\x01", 2)) << "service \"" << service << "\" is not SERVING";
  }
  grpc::ClientContext c1;
  v1::ModelInfo info;
  ASSERT_TRUE(s.stub->GetModelInfo(&c1, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.model_name(), "tiny");
  EXPECT_EQ(info.max_model_len(), 4096u);
  EXPECT_EQ(info.nsa().block_size(), 16);
  EXPECT_EQ(info.eos_token_ids(0), 2);
  grpc::ClientContext c2;
  v1::TokenizeRequest tr;
  tr.set_text("Permission is hereby granted");
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(s.stub->Tokenize(&c2, tr, &tokens).ok());
  EXPECT_EQ(tokens.token_ids(0), 1);  // BOS
  EXPECT_EQ(tokens.token_ids_size(), tokens.pieces_size());
}

TEST(GrpcServerTest, SigtermDuringStreamingDrains) {
  Server s;
  ASSERT_TRUE(s.ok);
  Result during;
  std::atomic<bool> first_delta{false};
  std::thread client([&] {
    grpc::ClientContext context;
    auto reader = s.stub->Generate(&context, Req("drain me", 150));
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (response.has_delta()) {
        for (int t : response.delta().token_ids()) during.tokens.push_back(t);
        first_delta = true;
      } else {
        during.finals.push_back(response.final());
      }
    }
    during.status = reader->Finish();
  });
  while (!first_delta) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  s.process.Terminate();
  // New work is refused while the stream finishes.
  Result refused;
  for (int i = 0; i < 100; ++i) {
    refused = Generate(*s.stub, Req("new", 5));
    if (refused.status.error_code() == grpc::StatusCode::UNAVAILABLE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  client.join();
  EXPECT_TRUE(during.status.ok()) << during.status.error_message();
  ASSERT_EQ(during.finals.size(), 1u);
  EXPECT_EQ(during.finals[0].finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(during.tokens.size(), 150u);
  EXPECT_EQ(s.process.Wait(), 0);
}

}  // namespace
}  // namespace nsa
