// The gRPC side: nsa.v1.Generation/Generate, streaming. Each Delta is a chunk and so is the Final
// (the message that ends a completion, as the finish chunk ends an SSE stream), so the gRPC and
// HTTP figures of one server compare one for one. Output and prompt tokens come from the
// Final's usage, the server's own count.
#include <grpcpp/grpcpp.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "bench/serving/api_client.h"
#include "nsa/v1/generate.grpc.pb.h"

namespace nsa::bench {
namespace {

// Separate connections, so a thousand streams do not queue behind one HTTP/2 connection's
// stream limit.
constexpr int kNumChannels = 8;

std::string StatusText(const grpc::Status& s) {
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                       "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int code = static_cast<int>(s.error_code());
  const char* name = code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
  return absl::StrCat("gRPC ", name, ": ", s.error_message());
}

class GrpcClient : public ApiClient {
 public:
  GrpcClient(const std::string& target, const SendOptions& options) : target_(target), options_(options) {
    for (int i = 0; i < kNumChannels; ++i) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // its own connection
      args.SetInt("nsa.bench.channel", i);
      args.SetMaxReceiveMessageSize(-1);
      args.SetMaxSendMessageSize(-1);
      stubs_.push_back(v1::Generation::NewStub(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args)));
    }
  }

  absl::StatusOr<ServerInfo> Probe() override {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ModelInfo info;
    const grpc::Status s = stubs_[0]->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
    if (!s.ok()) {
      return absl::UnavailableError(absl::StrCat("cannot reach the gRPC server at ", target_, " (GetModelInfo): ", StatusText(s)));
    }
    return ServerInfo{info.model_name(), info.max_model_len(), info.vocab_size()};
  }

  RequestOutput Send(const Prompt& prompt, Clock::time_point epoch) override {
    v1::GenerateRequest request;
    if (prompt.has_text()) {
      request.set_text(prompt.text);
    } else {
      request.mutable_tokens()->mutable_ids()->Add(prompt.token_ids.begin(), prompt.token_ids.end());
    }
    request.mutable_stop()->set_max_tokens(static_cast<int32_t>(prompt.output_len));
    if (options_.ignore_eos) request.mutable_stop()->set_ignore_eos(true);
    if (options_.temperature) request.mutable_sampling()->set_temperature(static_cast<float>(*options_.temperature));
    v1::Generation::Stub& stub = *stubs_[next_.fetch_add(1) % stubs_.size()];

    RequestOutput out;
    out.prompt_len = prompt.input_len;
    grpc::ClientContext context;
    const Clock::time_point send = Clock::now();
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                                std::chrono::duration<double>(options_.timeout_s)));
    out.start_time = Seconds(send - epoch);
    ChunkTimer timer(out.start_time);
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub.Generate(&context, request);
    v1::GenerateResponse response;
    bool got_final = false;
    std::string in_band_error;
    while (reader->Read(&response)) {
      const double now = Seconds(Clock::now() - epoch);
      if (response.has_delta()) {
        timer.OnChunk(now, &out);
      } else if (response.has_final()) {
        timer.OnChunk(now, &out);
        const v1::Final& f = response.final();
        got_final = true;
        out.prompt_len = f.usage().prompt_tokens();
        out.output_tokens = f.usage().completion_tokens();
        if (f.finish_reason() == v1::FINISH_REASON_ERROR) in_band_error = absl::StrCat("Final ERROR: ", f.error());
        if (f.finish_reason() == v1::FINISH_REASON_CANCELLED) in_band_error = "Final CANCELLED";
        if (f.finish_reason() == v1::FINISH_REASON_TIME_LIMIT) in_band_error = "Final TIME_LIMIT";
      }
    }
    const grpc::Status status = reader->Finish();
    timer.Finish(&out);
    if (!status.ok()) {
      out.error = StatusText(status);
    } else if (!in_band_error.empty()) {
      out.error = in_band_error;
    } else if (!got_final) {
      out.error = "the stream ended without a Final";
    } else {
      out.success = true;
    }
    return out;
  }

 private:
  std::string target_;
  SendOptions options_;
  std::vector<std::unique_ptr<v1::Generation::Stub>> stubs_;
  std::atomic<uint64_t> next_{0};
};

}  // namespace

std::unique_ptr<ApiClient> MakeGrpcClient(const std::string& target, const SendOptions& options) {
  return std::make_unique<GrpcClient>(target, options);
}

}  // namespace nsa::bench
