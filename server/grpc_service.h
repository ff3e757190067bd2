// The nsa.v1.Generation service over an Engine (synchronous gRPC API: one server thread per
// call). Generate polls its handle and the call's cancellation every 20 ms, so a client that
// cancels or disconnects aborts its request within a step or two and frees its pages.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "engine/engine.h"
#include "nsa/v1/generate.grpc.pb.h"
#include "server/http/generation_backend.h"

namespace nsa {

// Aborts the requests whose clients cancelled or went away, so that stream handlers can sleep
// until their next event: one thread asks every call 20 times a second. (Handlers that woke every
// 20 ms to ask for themselves spent a 1,000-stream server's CPU in futex wake-ups: 177-222 s for a
// burst that HTTP served in 20 s.)
class CancelWatcher {
 public:
  CancelWatcher();
  ~CancelWatcher();
  void Add(grpc::ServerContext* context, RequestHandle* handle);
  void Remove(grpc::ServerContext* context);

 private:
  void Run();
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::unordered_map<grpc::ServerContext*, RequestHandle*> calls_;
  std::thread thread_;
};

class GenerationService final : public v1::Generation::Service {
 public:
  // `info` carries what the engine does not know: the served name and the tokenizer_config.json
  // chat template and special tokens (GetModelInfo passes them on to gateways).
  GenerationService(Engine* engine, BackendModelInfo info) : engine_(engine), info_(std::move(info)) {}

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* context, const v1::DetokenizeRequest* request,
                          v1::DetokenizeResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;
  grpc::Status GetLoad(grpc::ServerContext* context, const v1::GetLoadRequest* request, v1::Load* response) override;
  grpc::Status Abort(grpc::ServerContext* context, const v1::AbortRequest* request, v1::AbortResponse* response) override;

 private:
  Engine* engine_;
  BackendModelInfo info_;
  CancelWatcher watcher_;
};

}  // namespace nsa
