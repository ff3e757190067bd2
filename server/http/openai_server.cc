#include "server/http/openai_server.h"

#include <httplib.h>

#include <chrono>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/http/chat_template.h"

namespace nsa {
namespace {

using nlohmann::json;

// ---- errors in the OpenAI envelope --------------------------------------------------------

struct HttpError {
  int status;
  std::string message;
  std::string type;
  std::string param;
  std::string code;
};

json ErrorBody(const HttpError& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", e.param.empty() ? json(nullptr) : json(e.param)},
            {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
}

void SendError(httplib::Response& res, const HttpError& e) {
  res.status = e.status;
  if (e.status == 429) res.set_header("Retry-After", "1");
  if (e.status == 503) res.set_header("x-should-retry", "false");
  res.set_content(ErrorBody(e).dump(), "application/json");
}

HttpError BadRequest(std::string message, std::string param = "") {
  return {400, std::move(message), "invalid_request_error", std::move(param), ""};
}

HttpError FromStatus(const absl::Status& s) {
  const std::string message(s.message());
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
      if (message.rfind("This model's maximum context length", 0) == 0) {
        return {400, message, "invalid_request_error", "messages", "context_length_exceeded"};
      }
      return BadRequest(message);
    case absl::StatusCode::kResourceExhausted: return {429, message, "rate_limit_error", "", "rate_limit_exceeded"};
    case absl::StatusCode::kUnavailable: return {503, message, "service_unavailable_error", "", ""};
    case absl::StatusCode::kNotFound: return {404, message, "NotFoundError", "", ""};
    case absl::StatusCode::kAlreadyExists: return {409, message, "invalid_request_error", "", ""};
    default: return {500, message, "internal_error", "", ""};
  }
}

// ---- typed reading of request fields (unknown fields are ignored, wrong types rejected) ----

class Fields {
 public:
  explicit Fields(const json& body) : body_(body) {}
  const std::optional<HttpError>& error() const { return error_; }

  template <typename T>
  std::optional<T> Number(const char* key, double lo, double hi) {
    auto it = body_.find(key);
    if (it == body_.end() || it->is_null()) return std::nullopt;
    const bool integral = std::is_integral_v<T>;
    if (!it->is_number() || (integral && !it->is_number_integer())) {
      Fail(absl::StrCat("'", key, "' must be ", integral ? "an integer" : "a number"), key);
      return std::nullopt;
    }
    const double v = it->get<double>();
    if (v < lo || v > hi) {
      Fail(absl::StrCat("'", key, "' must be in [", lo, ", ", hi, "], got ", it->dump()), key);
      return std::nullopt;
    }
    return static_cast<T>(integral ? static_cast<double>(it->get<int64_t>()) : v);
  }
  std::optional<bool> Bool(const char* key) {
    auto it = body_.find(key);
    if (it == body_.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) {
      Fail(absl::StrCat("'", key, "' must be true or false"), key);
      return std::nullopt;
    }
    return it->get<bool>();
  }
  std::optional<std::string> String(const char* key) {
    auto it = body_.find(key);
    if (it == body_.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) {
      Fail(absl::StrCat("'", key, "' must be a string"), key);
      return std::nullopt;
    }
    return it->get<std::string>();
  }
  void Fail(std::string message, const char* param) {
    if (!error_) error_ = BadRequest(std::move(message), param);
  }
  const json& body() const { return body_; }

 private:
  const json& body_;
  std::optional<HttpError> error_;
};

// The sampling, stop and output fields both endpoints share.
void ReadCommon(Fields& f, Request& r, bool chat, int* top_logprobs) {
  if (auto v = f.Number<float>("temperature", 0, 100)) r.sampling.temperature = *v;
  if (auto v = f.Number<float>("top_p", 0, 1)) r.sampling.top_p = *v;
  if (auto v = f.Number<int>("top_k", -1, 1 << 30)) r.sampling.top_k = *v < 0 ? 0 : *v;
  if (auto v = f.Number<float>("min_p", 0, 1)) r.sampling.min_p = *v;
  if (auto v = f.Number<float>("presence_penalty", -2, 2)) r.sampling.presence_penalty = *v;
  if (auto v = f.Number<float>("frequency_penalty", -2, 2)) r.sampling.frequency_penalty = *v;
  if (auto v = f.Number<float>("repetition_penalty", 0, 100)) r.sampling.repetition_penalty = *v;
  if (auto v = f.Number<int64_t>("seed", -9.2e18, 9.2e18)) {
    r.sampling.seed = static_cast<uint64_t>(*v);
    r.has_seed = true;
  }
  if (auto v = f.Number<int>("n", 1, 128)) r.n = *v;
  if (auto v = f.Number<int>("max_tokens", 1, 1 << 30)) r.stop.max_tokens = *v;
  if (chat) {
    if (auto v = f.Number<int>("max_completion_tokens", 1, 1 << 30)) r.stop.max_tokens = *v;
  }
  if (auto v = f.Number<int>("min_tokens", 0, 1 << 30)) r.stop.min_tokens = *v;
  if (auto v = f.Bool("ignore_eos")) r.stop.ignore_eos = *v;
  if (auto v = f.Bool("include_stop_str_in_output")) r.stop.include_stop_in_output = *v;
  if (auto v = f.Bool("skip_special_tokens")) r.skip_special_tokens = *v;
  f.String("user");
  const json& body = f.body();
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      r.stop.stop.push_back(it->get<std::string>());
    } else if (it->is_array() && std::all_of(it->begin(), it->end(), [](const json& s) { return s.is_string(); })) {
      for (const json& s : *it) r.stop.stop.push_back(s.get<std::string>());
    } else {
      f.Fail("'stop' must be a string or a list of strings", "stop");
    }
  }
  if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
    if (!it->is_array() || !std::all_of(it->begin(), it->end(), [](const json& s) { return s.is_number_integer(); })) {
      f.Fail("'stop_token_ids' must be a list of integers", "stop_token_ids");
    } else {
      for (const json& s : *it) r.stop.stop_token_ids.push_back(s.get<int>());
    }
  }
  if (auto it = body.find("logit_bias"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) {
      f.Fail("'logit_bias' must be an object of token id -> bias", "logit_bias");
    } else {
      for (auto b = it->begin(); b != it->end(); ++b) {
        char* end = nullptr;
        const long id = std::strtol(b.key().c_str(), &end, 10);
        if (*end != '\0' || b.key().empty() || !b.value().is_number()) {
          f.Fail("'logit_bias' keys must be token ids and values numbers", "logit_bias");
          break;
        }
        r.sampling.logit_bias.emplace_back(static_cast<int>(id), b.value().get<float>());
      }
    }
  }
  // Logprobs: chat has a boolean and top_logprobs; completions an integer.
  if (chat) {
    const bool want = f.Bool("logprobs").value_or(false);
    const int top = f.Number<int>("top_logprobs", 0, 20).value_or(0);
    if (want) r.logprobs = top;
    *top_logprobs = top;
  } else if (auto v = f.Number<int>("logprobs", 0, 20)) {
    r.logprobs = *v;
    *top_logprobs = *v;
  }
}

std::string RandomId(const char* prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
  return std::string(prefix) + buf;
}

const char* OpenAIFinishReason(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
    case FinishReason::kTimeLimit: return "length";
    case FinishReason::kCancelled: return "abort";
    default: return "stop";
  }
}

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  // Compares every byte of the longer string whatever the contents: the time says nothing.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0, y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

// One generation as the HTTP layer runs it.
struct Job {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;
  bool echo = false;
  int top_logprobs = -1;
  std::string echo_text;
  std::string id, model;
  int64_t created = 0;
  int n = 1;
  std::unique_ptr<GenerationStream> stream_handle;
};

}  // namespace

OpenAIServer::OpenAIServer(GenerationBackend* backend, OpenAIServerOptions options)
    : backend_(backend), options_(std::move(options)), http_(std::make_unique<httplib::Server>()) {
  const int workers = options_.max_connections;
  http_->new_task_queue = [workers] { return new httplib::ThreadPool(static_cast<size_t>(workers)); };
  http_->set_payload_max_length(options_.max_body_bytes);
  http_->set_read_timeout(60, 0);
  http_->set_write_timeout(60, 0);
  http_->set_keep_alive_max_count(1000);
  Routes();
}

OpenAIServer::~OpenAIServer() { Stop(); }

absl::StatusOr<int> OpenAIServer::Start(const std::string& host, int port) {
  // Debian's cpp-httplib is compiled with a listen backlog of 5: a burst of connections (1,000
  // clients opening streams at once) overflows it and the kernel resets them. Keep the socket
  // the library creates and widen its backlog after the bind (listen() may be called again).
  int listen_fd = -1;
  http_->set_socket_options([&listen_fd](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const char*>(&yes), sizeof(yes));
    listen_fd = sock;
  });
  const int bound = port == 0 ? http_->bind_to_any_port(host) : (http_->bind_to_port(host, port) ? port : -1);
  if (bound < 0) return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ", host, ":", port));
  if (listen_fd >= 0) ::listen(listen_fd, 4096);
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  return bound;
}

void OpenAIServer::Stop() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

void OpenAIServer::Routes() {
  httplib::Server& s = *http_;
  auto authorized = [this](const httplib::Request& req, httplib::Response& res) {
    if (options_.api_keys.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    const std::string key = header.rfind(prefix, 0) == 0 ? header.substr(prefix.size()) : "";
    bool ok = false;
    for (const std::string& k : options_.api_keys) ok |= ConstantTimeEquals(key, k);  // no early exit
    if (!ok) SendError(res, {401, "Incorrect API key provided.", "authentication_error", "", "invalid_api_key"});
    return ok;
  };
  auto model_name = [this]() -> std::string {
    if (!options_.served_model_name.empty()) return options_.served_model_name;
    absl::StatusOr<BackendModelInfo> info = backend_->ModelInfo();
    return info.ok() ? info->model_name : "";
  };
  auto parse = [](const httplib::Request& req, httplib::Response& res, json* body) {
    *body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (body->is_discarded() || !body->is_object()) {
      SendError(res, BadRequest("the request body must be a JSON object"));
      return false;
    }
    return true;
  };

  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.status = backend_->Live() ? 200 : 503;
    res.set_content(res.status == 200 ? "{}" : R"({"status":"stalled"})", "application/json");
  });
  s.Get("/ready", [this](const httplib::Request&, httplib::Response& res) {
    const bool ready = backend_->Ready();
    res.status = ready ? 200 : 503;
    res.set_content(ready ? R"({"status":"ready"})" : R"({"status":"not ready"})", "application/json");
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(backend_->MetricsText(), "text/plain; version=0.0.4");
  });
  s.Get("/v1/models", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    absl::StatusOr<BackendModelInfo> info = backend_->ModelInfo();
    if (!info.ok()) return SendError(res, FromStatus(info.status()));
    const std::string name = model_name();
    json model = {{"id", name},       {"object", "model"}, {"created", static_cast<int64_t>(time(nullptr))},
                  {"owned_by", "nsa-engine"}, {"root", name},       {"parent", nullptr},
                  {"max_model_len", info->max_model_len}};
    res.set_content(json({{"object", "list"}, {"data", json::array({model})}}).dump(), "application/json");
  });
  s.Post("/tokenize", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    json body;
    if (!parse(req, res, &body)) return;
    Fields f(body);
    const std::optional<std::string> prompt = f.String("prompt");
    const bool add = f.Bool("add_special_tokens").value_or(true);
    if (f.error()) return SendError(res, *f.error());
    if (!prompt) return SendError(res, BadRequest("'prompt' is required", "prompt"));
    absl::StatusOr<std::vector<int>> ids = backend_->Tokenize(*prompt, add);
    if (!ids.ok()) return SendError(res, FromStatus(ids.status()));
    absl::StatusOr<BackendModelInfo> info = backend_->ModelInfo();
    res.set_content(json({{"tokens", *ids}, {"count", ids->size()}, {"max_model_len", info.ok() ? info->max_model_len : 0}}).dump(),
                    "application/json");
  });
  s.Post("/detokenize", [=, this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req, res)) return;
    json body;
    if (!parse(req, res, &body)) return;
    auto it = body.find("tokens");
    if (it == body.end() || !it->is_array() || !std::all_of(it->begin(), it->end(), [](const json& t) { return t.is_number_integer(); })) {
      return SendError(res, BadRequest("'tokens' must be a list of token ids", "tokens"));
    }
    absl::StatusOr<std::string> text = backend_->Detokenize(it->get<std::vector<int>>(), nullptr);
    if (!text.ok()) return SendError(res, FromStatus(text.status()));
    res.set_content(json({{"prompt", *text}}).dump(), "application/json");
  });

  auto generate = [=, this](const httplib::Request& req, httplib::Response& res, bool chat) {
    if (!authorized(req, res)) return;
    json body;
    if (!parse(req, res, &body)) return;
    Fields f(body);
    auto job = std::make_shared<Job>();
    job->chat = chat;
    job->model = model_name();
    if (auto m = f.String("model"); m && *m != job->model) {
      return SendError(res, {404, absl::StrCat("The model `", *m, "` does not exist."), "NotFoundError", "model", "model_not_found"});
    }
    Request r;
    ReadCommon(f, r, chat, &job->top_logprobs);
    job->stream = f.Bool("stream").value_or(false);
    if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
      if (!it->is_object()) return SendError(res, BadRequest("'stream_options' must be an object", "stream_options"));
      Fields so(*it);
      job->include_usage = so.Bool("include_usage").value_or(false);
      if (so.error()) return SendError(res, *so.error());
    }
    if (chat) {
      auto it = body.find("messages");
      if (it == body.end() || !it->is_array() || it->empty()) {
        return SendError(res, BadRequest("'messages' must be a non-empty list", "messages"));
      }
      json messages = json::array();
      for (const json& m : *it) {
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
          return SendError(res, BadRequest("each message needs a string 'role'", "messages"));
        }
        json content = m.value("content", json(""));
        if (content.is_array()) {  // [{"type": "text", "text": ...}, ...]
          std::string text;
          for (const json& part : content) {
            if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
              return SendError(res, BadRequest("only text content parts are supported", "messages"));
            }
            text += part["text"].get<std::string>();
          }
          content = text;
        } else if (!content.is_string() && !content.is_null()) {
          return SendError(res, BadRequest("message 'content' must be a string or a list of text parts", "messages"));
        }
        messages.push_back({{"role", m["role"]}, {"content", content.is_null() ? json("") : content}});
      }
      absl::StatusOr<BackendModelInfo> info = backend_->ModelInfo();
      if (!info.ok()) return SendError(res, FromStatus(info.status()));
      std::string source = info->chat_template;
      if (!options_.chat_template.empty()) {
        const char* builtin = BuiltinChatTemplate(options_.chat_template);
        source = builtin ? builtin : options_.chat_template;
      }
      if (source.empty()) {
        return SendError(res, BadRequest("this model has no chat template; start the server with --chat-template "
                                         "(chatml, llama2, plain or a template file)"));
      }
      json context = {{"messages", messages},
                      {"add_generation_prompt", f.Bool("add_generation_prompt").value_or(true)},
                      {"bos_token", info->bos_token},
                      {"eos_token", info->eos_token}};
      absl::StatusOr<std::string> prompt = RenderChatTemplate(source, context);
      if (!prompt.ok()) return SendError(res, BadRequest(std::string(prompt.status().message()), "messages"));
      // The template writes the BOS itself when it wants one: no second BOS.
      r.text = *prompt;
      r.add_bos = false;
    } else {
      job->echo = f.Bool("echo").value_or(false);
      if (auto it = body.find("suffix"); it != body.end() && !it->is_null()) {
        return SendError(res, BadRequest("'suffix' is not supported", "suffix"));
      }
      auto it = body.find("prompt");
      if (it == body.end() || it->is_null()) return SendError(res, BadRequest("'prompt' is required", "prompt"));
      json prompt = *it;
      if (prompt.is_array() && prompt.size() == 1 && (prompt[0].is_string() || prompt[0].is_array())) prompt = prompt[0];
      if (prompt.is_string()) {
        r.text = prompt.get<std::string>();
        job->echo_text = *r.text;
      } else if (prompt.is_array() && std::all_of(prompt.begin(), prompt.end(), [](const json& t) { return t.is_number_integer(); })) {
        r.tokens = prompt.get<std::vector<int>>();
        if (job->echo) {
          absl::StatusOr<std::string> text = backend_->Detokenize(r.tokens, nullptr);
          if (text.ok()) job->echo_text = *text;
        }
      } else {
        return SendError(res, BadRequest("'prompt' must be a string or a list of token ids (one prompt per request)", "prompt"));
      }
    }
    if (f.error()) return SendError(res, *f.error());
    if (auto bo = f.Number<int>("best_of", 1, 128); bo && *bo != r.n) {
      return SendError(res, BadRequest("'best_of' other than n is not supported", "best_of"));
    }
    job->n = r.n;
    job->id = RandomId(chat ? "chatcmpl-" : "cmpl-");
    job->created = static_cast<int64_t>(time(nullptr));
    absl::StatusOr<std::unique_ptr<GenerationStream>> stream = backend_->Generate(std::move(r));
    if (!stream.ok()) return SendError(res, FromStatus(stream.status()));
    job->stream_handle = std::move(*stream);

    // Per-token texts for logprobs.
    auto token_texts = [this](const std::vector<int>& ids) {
      std::vector<std::string> texts;
      if (!backend_->Detokenize(ids, &texts).ok()) texts.assign(ids.size(), "");
      return texts;
    };
    auto logprobs_json = [job, token_texts](const Delta& d, size_t* offset) -> json {
      if (job->top_logprobs < 0 || d.logprobs.empty()) return nullptr;
      std::vector<int> ids;
      for (const TokenLogprobs& lp : d.logprobs) {
        ids.push_back(lp.token);
        for (const Logprob& alt : lp.top) ids.push_back(alt.token);
      }
      const std::vector<std::string> texts = token_texts(ids);
      size_t k = 0;
      if (job->chat) {
        json content = json::array();
        for (const TokenLogprobs& lp : d.logprobs) {
          const std::string& text = texts[k++];
          json top = json::array();
          for (const Logprob& alt : lp.top) {
            const std::string& t = texts[k++];
            top.push_back({{"token", t}, {"logprob", alt.logprob}, {"bytes", std::vector<unsigned char>(t.begin(), t.end())}});
          }
          content.push_back({{"token", text}, {"logprob", lp.logprob}, {"bytes", std::vector<unsigned char>(text.begin(), text.end())},
                             {"top_logprobs", top}});
        }
        return {{"content", content}};
      }
      json out = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
                  {"text_offset", json::array()}};
      for (const TokenLogprobs& lp : d.logprobs) {
        const std::string& text = texts[k++];
        out["tokens"].push_back(text);
        out["token_logprobs"].push_back(lp.logprob);
        json top = json::object();
        for (const Logprob& alt : lp.top) top[texts[k++]] = alt.logprob;
        out["top_logprobs"].push_back(top);
        out["text_offset"].push_back(*offset);
        *offset += text.size();
      }
      return out;
    };
    auto usage_json = [](int64_t prompt, int64_t completion) {
      return json{{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
    };

    if (!job->stream) {
      std::map<int, std::string> text;
      std::map<int, json> logprobs;
      std::map<int, size_t> offsets;
      std::map<int, Final> finals;
      std::optional<Event> event;
      while (job->stream_handle->Next(std::chrono::hours(24), &event) && event) {
        if (const Delta* d = std::get_if<Delta>(&*event)) {
          text[d->index] += d->text;
          json lp = logprobs_json(*d, &offsets[d->index]);
          if (!lp.is_null()) {
            json& acc = logprobs[d->index];
            if (acc.is_null()) {
              acc = lp;
            } else {
              for (auto it = lp.begin(); it != lp.end(); ++it) {
                for (const json& x : it.value()) acc[it.key()].push_back(x);
              }
            }
          }
        } else {
          const Final& fin = std::get<Final>(*event);
          finals[fin.index] = fin;
        }
      }
      json choices = json::array();
      int64_t prompt_tokens = 0, completion_tokens = 0;
      for (auto& [index, fin] : finals) {
        if (fin.reason == FinishReason::kError) {
          return SendError(res, {500, fin.error, "internal_error", "", ""});
        }
        prompt_tokens = fin.usage.prompt_tokens;
        completion_tokens += fin.usage.completion_tokens;
        json choice = {{"index", index}, {"finish_reason", OpenAIFinishReason(fin.reason)},
                       {"logprobs", logprobs.count(index) ? logprobs[index] : json(nullptr)}};
        if (job->chat) {
          choice["message"] = {{"role", "assistant"}, {"content", text[index]}};
        } else {
          choice["text"] = (job->echo ? job->echo_text : "") + text[index];
        }
        choices.push_back(choice);
      }
      json out = {{"id", job->id}, {"object", job->chat ? "chat.completion" : "text_completion"}, {"created", job->created},
                  {"model", job->model}, {"choices", choices}, {"usage", usage_json(prompt_tokens, completion_tokens)}};
      res.set_content(out.dump(), "application/json");
      return;
    }

    // Streaming: Server-Sent Events, one chunk per engine delta, [DONE] last.
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream", [job, logprobs_json, usage_json](size_t, httplib::DataSink& sink) {
          auto send = [&](const json& chunk) {
            const std::string event = "data: " + chunk.dump() + "\n\n";
            return sink.is_writable() && sink.write(event.data(), event.size());
          };
          auto chunk = [&](json choices) {
            json c = {{"id", job->id}, {"object", job->chat ? "chat.completion.chunk" : "text_completion"},
                      {"created", job->created}, {"model", job->model}, {"choices", std::move(choices)}};
            if (job->include_usage) c["usage"] = nullptr;
            return c;
          };
          auto choice = [&](int index, const std::string& text, json logprobs, json finish, bool first) {
            json c = {{"index", index}, {"logprobs", std::move(logprobs)}, {"finish_reason", std::move(finish)}};
            if (job->chat) {
              json delta = json::object();
              if (first) delta["role"] = "assistant";
              if (!text.empty() || first) delta["content"] = text;
              c["delta"] = delta;
            } else {
              c["text"] = text;
            }
            return c;
          };
          std::map<int, bool> started;
          std::map<int, size_t> offsets;
          int64_t prompt_tokens = 0, completion_tokens = 0;
          std::optional<Event> event;
          while (true) {
            if (!sink.is_writable()) {  // the client went away: free the request's pages
              job->stream_handle->Abort();
              return false;
            }
            // Events wake this loop at once; the timeout only bounds how long a request that has
            // produced nothing yet (queued, or in a long prefill) keeps a vanished client's pages.
            if (!job->stream_handle->Next(std::chrono::milliseconds(250), &event)) continue;
            if (!event) break;
            if (const Delta* d = std::get_if<Delta>(&*event)) {
              const bool first = !started[d->index];
              started[d->index] = true;
              std::string text = d->text;
              if (first && job->echo) text = job->echo_text + text;
              json logprobs = logprobs_json(*d, &offsets[d->index]);
              // Tokens whose text is still held back (a partial character or stop string) make
              // no chunk; the first one still opens the choice with its role.
              if (text.empty() && logprobs.is_null() && !first) continue;
              if (!send(chunk(json::array({choice(d->index, text, std::move(logprobs), nullptr, first)})))) {
                job->stream_handle->Abort();
                return false;
              }
            } else {
              const Final& fin = std::get<Final>(*event);
              if (fin.reason == FinishReason::kError) {
                send(ErrorBody({500, fin.error, "internal_error", "", ""}));
                continue;
              }
              prompt_tokens = fin.usage.prompt_tokens;
              completion_tokens += fin.usage.completion_tokens;
              const bool first = !started[fin.index];
              started[fin.index] = true;
              std::string text = first && job->echo ? job->echo_text : "";
              if (!send(chunk(json::array({choice(fin.index, text, nullptr, OpenAIFinishReason(fin.reason), first)})))) {
                job->stream_handle->Abort();
                return false;
              }
            }
          }
          if (job->include_usage) {
            json c = chunk(json::array());
            c["usage"] = usage_json(prompt_tokens, completion_tokens);
            send(c);
          }
          const std::string done = "data: [DONE]\n\n";
          sink.write(done.data(), done.size());
          sink.done();
          return true;
        });
  };
  s.Post("/v1/completions", [generate](const httplib::Request& req, httplib::Response& res) { generate(req, res, false); });
  s.Post("/v1/chat/completions", [generate](const httplib::Request& req, httplib::Response& res) { generate(req, res, true); });

  // Bodies over the limit never reach a handler: answer 413 in the envelope.
  s.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 413) {
      res.set_content(ErrorBody({413, "the request body is too large", "invalid_request_error", "", ""}).dump(), "application/json");
    } else if (res.status == 404) {
      res.set_content(ErrorBody({404, "no such endpoint", "NotFoundError", "", ""}).dump(), "application/json");
    }
  });
}

}  // namespace nsa
