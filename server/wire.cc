#include "server/wire.h"

#include <chrono>

namespace nsa {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case absl::StatusCode::kResourceExhausted: code = grpc::StatusCode::RESOURCE_EXHAUSTED; break;
    case absl::StatusCode::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    case absl::StatusCode::kDeadlineExceeded: code = grpc::StatusCode::DEADLINE_EXCEEDED; break;
    case absl::StatusCode::kCancelled: code = grpc::StatusCode::CANCELLED; break;
    case absl::StatusCode::kAlreadyExists: code = grpc::StatusCode::ALREADY_EXISTS; break;
    case absl::StatusCode::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    default: break;
  }
  return grpc::Status(code, std::string(s.message()));
}

absl::Status FromProto(const v1::GenerateRequest& in, std::optional<Clock::time_point> deadline, Request* out) {
  Request r;
  r.request_id = in.request_id();
  switch (in.input_case()) {
    case v1::GenerateRequest::kText: r.text = in.text(); break;
    case v1::GenerateRequest::kTokens: r.tokens.assign(in.tokens().ids().begin(), in.tokens().ids().end()); break;
    default: return absl::InvalidArgumentError("the request has no input: set text or tokens");
  }
  if (in.has_add_special_tokens()) r.add_bos = in.add_special_tokens();
  const v1::SamplingParams& s = in.sampling();
  if (s.has_temperature()) r.sampling.temperature = s.temperature();
  if (s.has_top_p()) r.sampling.top_p = s.top_p();
  if (s.has_top_k()) r.sampling.top_k = s.top_k();
  if (s.has_min_p()) r.sampling.min_p = s.min_p();
  if (s.has_repetition_penalty()) r.sampling.repetition_penalty = s.repetition_penalty();
  if (s.has_presence_penalty()) r.sampling.presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) r.sampling.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) {
    r.sampling.seed = s.seed();
    r.has_seed = true;
  }
  for (const auto& [token, bias] : s.logit_bias()) r.sampling.logit_bias.emplace_back(token, bias);
  if (s.has_n()) r.n = s.n();
  const v1::StopParams& st = in.stop();
  if (st.has_max_tokens()) r.stop.max_tokens = st.max_tokens();
  if (st.has_min_tokens()) r.stop.min_tokens = st.min_tokens();
  r.stop.stop.assign(st.stop().begin(), st.stop().end());
  r.stop.stop_token_ids.assign(st.stop_token_ids().begin(), st.stop_token_ids().end());
  r.stop.ignore_eos = st.ignore_eos();
  r.stop.include_stop_in_output = st.include_stop_in_output();
  const v1::OutputOptions& o = in.output();
  if (o.has_logprobs()) r.logprobs = o.logprobs();
  if (o.has_prompt_logprobs()) {
    return absl::InvalidArgumentError("prompt_logprobs is not supported by this server yet");
  }
  if (o.has_skip_special_tokens()) r.skip_special_tokens = o.skip_special_tokens();
  r.priority = in.priority();
  r.deadline = deadline;
  *out = std::move(r);
  return absl::OkStatus();
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return v1::FINISH_REASON_EOS;
    case FinishReason::kStopSequence: return v1::FINISH_REASON_STOP_SEQUENCE;
    case FinishReason::kStopToken: return v1::FINISH_REASON_STOP_TOKEN;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kTimeLimit: return v1::FINISH_REASON_TIME_LIMIT;
    case FinishReason::kError: return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToProto(const Delta& d, v1::Delta* out) {
  out->set_index(d.index);
  for (int t : d.token_ids) out->add_token_ids(t);
  out->set_text(d.text);
  for (const TokenLogprobs& lp : d.logprobs) {
    v1::TokenLogprobs* p = out->add_logprobs();
    p->set_token_id(lp.token);
    p->set_logprob(lp.logprob);
    for (const Logprob& alt : lp.top) {
      v1::Logprob* a = p->add_top();
      a->set_token_id(alt.token);
      a->set_logprob(alt.logprob);
    }
  }
}

void ToProto(const Final& f, v1::Final* out) {
  auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  out->set_index(f.index);
  out->set_finish_reason(ToProto(f.reason));
  out->set_matched_stop(f.matched_stop);
  out->set_error(f.error);
  out->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(f.usage.prompt_tokens));
  out->mutable_usage()->set_completion_tokens(static_cast<uint32_t>(f.usage.completion_tokens));
  out->mutable_usage()->set_cached_tokens(static_cast<uint32_t>(f.usage.cached_tokens));
  const Timings& t = f.timings;
  if (t.scheduled_set) out->mutable_timings()->set_queue_seconds(seconds(t.scheduled - t.arrival));
  if (t.first_token_set) out->mutable_timings()->set_time_to_first_token_seconds(seconds(t.first_token - t.arrival));
  out->mutable_timings()->set_total_seconds(seconds(t.done - t.arrival));
}

void ToProto(const Request& r, v1::GenerateRequest* out) {
  out->set_request_id(r.request_id);
  if (r.text.has_value()) {
    out->set_text(*r.text);
  } else {
    for (int t : r.tokens) out->mutable_tokens()->add_ids(t);
  }
  out->set_add_special_tokens(r.add_bos);
  v1::SamplingParams* s = out->mutable_sampling();
  s->set_temperature(r.sampling.temperature);
  s->set_top_p(r.sampling.top_p);
  s->set_top_k(r.sampling.top_k);
  s->set_min_p(r.sampling.min_p);
  s->set_repetition_penalty(r.sampling.repetition_penalty);
  s->set_presence_penalty(r.sampling.presence_penalty);
  s->set_frequency_penalty(r.sampling.frequency_penalty);
  if (r.has_seed) s->set_seed(r.sampling.seed);
  for (const auto& [token, bias] : r.sampling.logit_bias) (*s->mutable_logit_bias())[token] = bias;
  s->set_n(r.n);
  v1::StopParams* st = out->mutable_stop();
  if (r.stop.max_tokens) st->set_max_tokens(*r.stop.max_tokens);
  st->set_min_tokens(r.stop.min_tokens);
  for (const std::string& stop : r.stop.stop) st->add_stop(stop);
  for (int t : r.stop.stop_token_ids) st->add_stop_token_ids(t);
  st->set_ignore_eos(r.stop.ignore_eos);
  st->set_include_stop_in_output(r.stop.include_stop_in_output);
  if (r.logprobs >= 0) out->mutable_output()->set_logprobs(r.logprobs);
  out->mutable_output()->set_skip_special_tokens(r.skip_special_tokens);
  out->set_priority(r.priority);
}

Event FromProto(const v1::GenerateResponse& response) {
  if (response.has_delta()) {
    const v1::Delta& d = response.delta();
    Delta out;
    out.index = static_cast<int>(d.index());
    out.token_ids.assign(d.token_ids().begin(), d.token_ids().end());
    out.text = d.text();
    for (const v1::TokenLogprobs& lp : d.logprobs()) {
      TokenLogprobs t{lp.token_id(), lp.logprob(), {}};
      for (const v1::Logprob& alt : lp.top()) t.top.push_back({alt.token_id(), alt.logprob()});
      out.logprobs.push_back(std::move(t));
    }
    return out;
  }
  const v1::Final& f = response.final();
  Final out;
  out.index = static_cast<int>(f.index());
  switch (f.finish_reason()) {
    case v1::FINISH_REASON_EOS: out.reason = FinishReason::kEos; break;
    case v1::FINISH_REASON_STOP_SEQUENCE: out.reason = FinishReason::kStopSequence; break;
    case v1::FINISH_REASON_STOP_TOKEN: out.reason = FinishReason::kStopToken; break;
    case v1::FINISH_REASON_CANCELLED: out.reason = FinishReason::kCancelled; break;
    case v1::FINISH_REASON_TIME_LIMIT: out.reason = FinishReason::kTimeLimit; break;
    case v1::FINISH_REASON_ERROR: out.reason = FinishReason::kError; break;
    default: out.reason = FinishReason::kLength; break;
  }
  out.matched_stop = f.matched_stop();
  out.error = f.error();
  out.usage.prompt_tokens = f.usage().prompt_tokens();
  out.usage.completion_tokens = f.usage().completion_tokens();
  out.usage.cached_tokens = f.usage().cached_tokens();
  return out;
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  absl::StatusCode code = absl::StatusCode::kInternal;
  switch (s.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT: code = absl::StatusCode::kInvalidArgument; break;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: code = absl::StatusCode::kResourceExhausted; break;
    case grpc::StatusCode::UNAVAILABLE: code = absl::StatusCode::kUnavailable; break;
    case grpc::StatusCode::DEADLINE_EXCEEDED: code = absl::StatusCode::kDeadlineExceeded; break;
    case grpc::StatusCode::CANCELLED: code = absl::StatusCode::kCancelled; break;
    case grpc::StatusCode::ALREADY_EXISTS: code = absl::StatusCode::kAlreadyExists; break;
    case grpc::StatusCode::NOT_FOUND: code = absl::StatusCode::kNotFound; break;
    default: break;
  }
  return absl::Status(code, s.error_message());
}

}  // namespace nsa
