#include "server/grpc_service.h"

#include <chrono>
#include <map>

#include "server/wire.h"

namespace nsa {
namespace {

// The engine's deadline sits a little before the call's, so a request that runs out of time
// during decode still gets its Final (TIME_LIMIT, partial output) before the transport gives up.
std::optional<Clock::time_point> EngineDeadline(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return std::nullopt;
  const auto left = deadline - std::chrono::system_clock::now();
  const auto margin = std::min<std::chrono::system_clock::duration>(left / 10, std::chrono::milliseconds(100));
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(left - margin);
}

}  // namespace

CancelWatcher::CancelWatcher() : thread_([this] { Run(); }) {}

CancelWatcher::~CancelWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void CancelWatcher::Add(grpc::ServerContext* context, RequestHandle* handle) {
  std::lock_guard<std::mutex> lock(mu_);
  calls_[context] = handle;
}

void CancelWatcher::Remove(grpc::ServerContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.erase(context);
}

void CancelWatcher::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::milliseconds(50), [this] { return stop_; })) {
    // Under the lock: a handle stays alive while it is registered (its handler removes it
    // before the handle goes away). Abort takes only the request's own lock.
    for (auto& [context, handle] : calls_) {
      if (context->IsCancelled()) handle->Abort();
    }
  }
}

grpc::Status GenerationService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer) {
  Request r;
  if (absl::Status s = FromProto(*request, EngineDeadline(*context), &r); !s.ok()) {
    engine_->ReportRejected("invalid");
    return ToGrpc(s);
  }
  const bool stream = !request->has_stream() || request->stream();
  absl::StatusOr<std::unique_ptr<RequestHandle>> handle = engine_->Submit(std::move(r));
  if (!handle.ok()) return ToGrpc(handle.status());
  RequestHandle& h = **handle;
  watcher_.Add(context, &h);
  struct Unwatch {
    CancelWatcher& watcher;
    grpc::ServerContext* context;
    ~Unwatch() { watcher.Remove(context); }
  } unwatch{watcher_, context};

  std::map<uint32_t, v1::Delta> gathered;  // stream = false: everything per completion
  std::string error;
  bool wrote = false;
  int expired_before_start = 0;
  while (true) {
    // The watcher aborts the request when the client cancels or goes away (its pages are freed at
    // the next step); the request's Finals then end this loop.
    std::optional<Event> event;
    if (!h.NextFor(std::chrono::seconds(1), &event)) continue;
    if (!event) break;
    if (const Final* f = std::get_if<Final>(&*event); f && f->reason == FinishReason::kCancelled && context->IsCancelled()) {
      h.Abort();
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the request");
    }
    v1::GenerateResponse out;
    out.set_request_id(h.request_id());
    if (const Delta* d = std::get_if<Delta>(&*event)) {
      if (!stream) {
        v1::Delta& acc = gathered[d->index];
        v1::Delta part;
        ToProto(*d, &part);
        acc.set_index(d->index);
        acc.mutable_token_ids()->MergeFrom(part.token_ids());
        acc.mutable_text()->append(part.text());
        acc.mutable_logprobs()->MergeFrom(part.logprobs());
        continue;
      }
      ToProto(*d, out.mutable_delta());
    } else {
      const Final& f = std::get<Final>(*event);
      if (f.reason == FinishReason::kTimeLimit && f.before_start) ++expired_before_start;
      if (f.reason == FinishReason::kError && error.empty()) error = f.error;
      if (!stream) {
        if (auto it = gathered.find(f.index); it != gathered.end()) {
          v1::GenerateResponse whole;
          whole.set_request_id(h.request_id());
          *whole.mutable_delta() = std::move(it->second);
          gathered.erase(it);
          if (!writer->Write(whole)) return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
          wrote = true;
        }
      }
      ToProto(f, out.mutable_final());
    }
    if (!wrote && expired_before_start > 0) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed before the request was scheduled");
    }
    if (!writer->Write(out)) {
      h.Abort();
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    wrote = true;
  }
  if (!error.empty()) return grpc::Status(grpc::StatusCode::INTERNAL, error);
  return grpc::Status::OK;
}

grpc::Status GenerationService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                                         v1::TokenizeResponse* response) {
  const bool add_bos = !request->has_add_special_tokens() || request->add_special_tokens();
  for (int id : engine_->tokenizer().Encode(request->text(), add_bos)) {
    response->add_token_ids(id);
    response->add_pieces(engine_->tokenizer().IdToPiece(id));
  }
  return grpc::Status::OK;
}

grpc::Status GenerationService::Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* request,
                                           v1::DetokenizeResponse* response) {
  const Tokenizer& tok = engine_->tokenizer();
  std::vector<int> ids(request->token_ids().begin(), request->token_ids().end());
  for (int id : ids) {
    if (id < 0 || id >= tok.vocab_size()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "token id " + std::to_string(id) + " is outside the vocabulary");
    }
    if (request->per_token()) response->add_token_texts(tok.Decode({id}));
  }
  response->set_text(tok.Decode(ids));
  return grpc::Status::OK;
}

grpc::Status GenerationService::GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*, v1::ModelInfo* out) {
  const ModelConfig& c = engine_->config();
  out->set_model_name(info_.model_name);
  out->set_chat_template(info_.chat_template);
  out->set_bos_token(info_.bos_token);
  out->set_eos_token(info_.eos_token);
  out->set_max_model_len(engine_->max_model_len());
  out->set_vocab_size(c.vocab_size);
  out->add_eos_token_ids(c.eos_token_id);
  out->set_bos_token_id(c.bos_token_id);
  out->set_num_layers(c.num_layers);
  out->set_hidden_size(c.hidden_size);
  out->set_num_heads(c.num_heads);
  out->set_num_kv_heads(c.num_kv_heads);
  out->set_head_dim(c.head_dim);
  out->set_v_head_dim(c.v_head_dim);
  v1::NsaConfig* n = out->mutable_nsa();
  n->set_compress_block_size(c.nsa.compress_block);
  n->set_compress_stride(c.nsa.compress_stride);
  n->set_block_size(c.nsa.select_block);
  n->set_block_counts(c.nsa.num_selected);
  n->set_window_size(c.nsa.window);
  n->set_init_blocks(c.nsa.init_blocks);
  n->set_local_blocks(c.nsa.local_blocks);
  n->set_compress_fn(c.nsa.compress_fn == CompressFn::kLinear ? "linear" : "mean");
  n->set_score_map(c.nsa.score_map == ScoreMap::kGeometric ? "geometric" : "identity");
  n->set_kv_sharing(c.nsa.kv_sharing == KvSharing::kPerBranch ? "per_branch" : "shared");
  out->set_backend(engine_->DescribeBackend());
  out->set_kv_cache_pages(static_cast<uint64_t>(engine_->num_kv_pages()));
  return grpc::Status::OK;
}

grpc::Status GenerationService::GetLoad(grpc::ServerContext*, const v1::GetLoadRequest*, v1::Load* out) {
  const Load l = engine_->GetLoad();
  out->set_running(static_cast<uint32_t>(l.running));
  out->set_waiting(static_cast<uint32_t>(l.waiting));
  out->set_queued_prompt_tokens(static_cast<uint64_t>(l.queued_prompt_tokens));
  out->set_kv_cache_usage(l.kv_cache_usage);
  out->set_draining(engine_->draining());
  return grpc::Status::OK;
}

grpc::Status GenerationService::Abort(grpc::ServerContext*, const v1::AbortRequest* request, v1::AbortResponse* response) {
  if (request->request_id().empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "request_id is empty");
  response->set_found(engine_->Abort(request->request_id()));
  return grpc::Status::OK;
}

}  // namespace nsa
