#include "server/http/remote_backend.h"

#include <algorithm>
#include <condition_variable>
#include <deque>

#include "absl/strings/str_cat.h"
#include "server/wire.h"

namespace nsa {
namespace {

// One forwarded Generate call: a reader thread turns responses into events.
class RemoteStream : public GenerationStream {
 public:
  RemoteStream(RemoteBackend::Target* target, const v1::GenerateRequest& request) : target_(target) {
    ++target_->in_flight;
    reader_ = target_->stub->Generate(&context_, request);
    thread_ = std::thread([this] { Read(); });
  }
  ~RemoteStream() override {
    context_.TryCancel();
    thread_.join();
    --target_->in_flight;
  }

  // Blocks until the first response or the end of the call: admission errors come back here,
  // before the HTTP status line. `unavailable` tells the caller to try another server.
  absl::Status WaitFirst(bool* unavailable) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !events_.empty() || finished_; });
    *unavailable = false;
    if (events_.empty() && !status_.ok()) {
      *unavailable = status_.error_code() == grpc::StatusCode::UNAVAILABLE;
      return FromGrpc(status_);
    }
    return absl::OkStatus();
  }

  bool Next(Clock::duration timeout, std::optional<Event>* event) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty() || finished_; })) return false;
    if (events_.empty()) {
      // Ended without the Finals (the server died mid-stream): close every completion with an error.
      if (!status_.ok() && finals_ < expected_finals_) {
        Final f;
        f.index = finals_++;
        f.reason = FinishReason::kError;
        f.error = absl::StrCat("the engine server ", target_->address, " failed: ", status_.error_message());
        *event = f;
        return true;
      }
      *event = std::nullopt;
      return true;
    }
    *event = std::move(events_.front());
    events_.pop_front();
    if (std::holds_alternative<Final>(**event)) ++finals_;
    return true;
  }

  void Abort() override { context_.TryCancel(); }
  void set_expected_finals(int n) { expected_finals_ = n; }

 private:
  void Read() {
    v1::GenerateResponse response;
    while (reader_->Read(&response)) {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(FromProto(response));
      cv_.notify_all();
    }
    grpc::Status status = reader_->Finish();
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) target_->healthy = false;
    finished_ = true;
    cv_.notify_all();
  }

  RemoteBackend::Target* target_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  bool finished_ = false;
  grpc::Status status_;
  int finals_ = 0;
  int expected_finals_ = 1;
};

}  // namespace

RemoteBackend::RemoteBackend(const std::vector<std::string>& targets) {
  for (const std::string& address : targets) {
    auto t = std::make_unique<Target>();
    t->address = address;
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    // Reconnect quickly after a server comes back.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    t->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    t->stub = v1::Generation::NewStub(t->channel);
    targets_.push_back(std::move(t));
  }
  Poll();
  poller_ = std::thread([this] {
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      Poll();
    }
  });
}

RemoteBackend::~RemoteBackend() {
  stop_ = true;
  poller_.join();
}

void RemoteBackend::Poll() {
  for (auto& t : targets_) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    v1::Load load;
    const grpc::Status s = t->stub->GetLoad(&context, v1::GetLoadRequest(), &load);
    t->healthy = s.ok() && !load.draining();
    if (s.ok()) t->load = static_cast<int64_t>(load.running()) + load.waiting();
  }
}

std::vector<RemoteBackend::Target*> RemoteBackend::Ranked() {
  std::vector<Target*> ranked;
  for (auto& t : targets_) {
    if (t->healthy) ranked.push_back(t.get());
  }
  std::stable_sort(ranked.begin(), ranked.end(), [](Target* a, Target* b) {
    return a->load + a->in_flight < b->load + b->in_flight;
  });
  return ranked;
}

absl::StatusOr<std::unique_ptr<GenerationStream>> RemoteBackend::Generate(Request request) {
  v1::GenerateRequest proto;
  ToProto(request, &proto);
  absl::Status last = absl::UnavailableError("no engine server is available");
  for (Target* t : Ranked()) {
    auto stream = std::make_unique<RemoteStream>(t, proto);
    stream->set_expected_finals(request.n);
    bool unavailable = false;
    absl::Status s = stream->WaitFirst(&unavailable);
    if (s.ok()) {
      ++t->requests;
      return std::unique_ptr<GenerationStream>(std::move(stream));
    }
    last = s;
    if (!unavailable) return s;  // the request itself was refused: no point asking another server
    t->healthy = false;
  }
  return last;
}

absl::StatusOr<std::vector<int>> RemoteBackend::Tokenize(const std::string& text, bool add_special_tokens) {
  for (Target* t : Ranked()) {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_text(text);
    request.set_add_special_tokens(add_special_tokens);
    v1::TokenizeResponse response;
    const grpc::Status s = t->stub->Tokenize(&context, request, &response);
    if (s.ok()) return std::vector<int>(response.token_ids().begin(), response.token_ids().end());
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return FromGrpc(s);
  }
  return absl::UnavailableError("no engine server is available");
}

absl::StatusOr<std::string> RemoteBackend::Detokenize(const std::vector<int>& ids, std::vector<std::string>* per_token) {
  for (Target* t : Ranked()) {
    grpc::ClientContext context;
    v1::DetokenizeRequest request;
    for (int id : ids) request.add_token_ids(id);
    request.set_per_token(per_token != nullptr);
    v1::DetokenizeResponse response;
    const grpc::Status s = t->stub->Detokenize(&context, request, &response);
    if (s.ok()) {
      if (per_token) per_token->assign(response.token_texts().begin(), response.token_texts().end());
      return response.text();
    }
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return FromGrpc(s);
  }
  return absl::UnavailableError("no engine server is available");
}

absl::StatusOr<BackendModelInfo> RemoteBackend::ModelInfo() {
  {
    std::lock_guard<std::mutex> lock(info_mu_);
    if (info_) return *info_;
  }
  for (Target* t : Ranked()) {
    grpc::ClientContext context;
    v1::ModelInfo m;
    if (!t->stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &m).ok()) continue;
    BackendModelInfo info;
    info.model_name = m.model_name();
    info.max_model_len = static_cast<int>(m.max_model_len());
    info.vocab_size = static_cast<int>(m.vocab_size());
    info.chat_template = m.chat_template();
    info.bos_token = m.bos_token();
    info.eos_token = m.eos_token();
    std::lock_guard<std::mutex> lock(info_mu_);
    info_ = info;
    return info;
  }
  return absl::UnavailableError("no engine server is available");
}

bool RemoteBackend::Ready() { return !Ranked().empty(); }

std::string RemoteBackend::MetricsText() {
  std::string out =
      "# HELP nsa_gateway_backend_up Engine server in rotation (1) or not (0).\n# TYPE nsa_gateway_backend_up gauge\n";
  for (auto& t : targets_) absl::StrAppend(&out, "nsa_gateway_backend_up{backend=\"", t->address, "\"} ", t->healthy ? 1 : 0, "\n");
  absl::StrAppend(&out, "# HELP nsa_gateway_requests_total Requests routed to each engine server.\n",
                  "# TYPE nsa_gateway_requests_total counter\n");
  for (auto& t : targets_) absl::StrAppend(&out, "nsa_gateway_requests_total{backend=\"", t->address, "\"} ", t->requests.load(), "\n");
  return out;
}

}  // namespace nsa
