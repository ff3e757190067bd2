// The gateway's backend when it runs alone (nsa-gateway): forwards over gRPC to one or more
// nsa-server processes. A poller asks each for GetLoad every 200 ms; a request goes to the
// least-loaded healthy one (running + waiting + what this gateway has in flight there). A server
// that fails a call or a poll, or is draining, leaves the rotation until a poll succeeds again;
// a request refused as UNAVAILABLE before its first response is retried on the next server, so
// new requests see no error while one server dies.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "nsa/v1/generate.grpc.pb.h"
#include "server/http/generation_backend.h"

namespace nsa {

class RemoteBackend : public GenerationBackend {
 public:
  explicit RemoteBackend(const std::vector<std::string>& targets);
  ~RemoteBackend() override;

  absl::StatusOr<std::unique_ptr<GenerationStream>> Generate(Request request) override;
  absl::StatusOr<std::vector<int>> Tokenize(const std::string& text, bool add_special_tokens) override;
  absl::StatusOr<std::string> Detokenize(const std::vector<int>& ids, std::vector<std::string>* per_token) override;
  absl::StatusOr<BackendModelInfo> ModelInfo() override;
  bool Ready() override;
  bool Live() override { return true; }
  std::string MetricsText() override;

  struct Target {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Generation::Stub> stub;
    std::atomic<bool> healthy{false};
    std::atomic<int64_t> load{0};  // running + waiting, from the last poll
    std::atomic<int64_t> in_flight{0};  // this gateway's streams on it
    std::atomic<int64_t> requests{0};  // routed here in total
  };

 private:
  void Poll();
  // Healthy targets, least loaded first.
  std::vector<Target*> Ranked();

  std::vector<std::unique_ptr<Target>> targets_;
  std::mutex info_mu_;
  std::optional<BackendModelInfo> info_;
  std::atomic<bool> stop_{false};
  std::thread poller_;
};

}  // namespace nsa
