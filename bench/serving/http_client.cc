// The OpenAI HTTP side: POST /v1/completions or /v1/chat/completions with stream = true and
// stream_options.include_usage, read as Server-Sent Events, the way vLLM's benchmark client
// reads them: every event with non-empty `choices` is a chunk (text may be empty), the usage
// chunk (`choices: []`) gives the token counts, `data: [DONE]` ends the stream. One connection
// per request (a thread per request, cpp-httplib's blocking client).
#include <httplib.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "bench/serving/api_client.h"

namespace nsa::bench {
namespace {

using nlohmann::json;

// The message of an OpenAI error envelope, else the body itself (shortened).
std::string ErrorMessage(const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (!j.is_discarded() && j.is_object()) {
    auto e = j.find("error");
    if (e != j.end() && e->is_object() && e->contains("message") && (*e)["message"].is_string()) {
      return (*e)["message"].get<std::string>();
    }
    if (e != j.end() && e->is_string()) return e->get<std::string>();
  }
  return body.size() > 200 ? body.substr(0, 200) + "..." : body;
}

class HttpClient : public ApiClient {
 public:
  HttpClient(const HttpClientOptions& http, const SendOptions& options) : http_(http), options_(options) {
    if (http_.endpoint.empty()) http_.endpoint = http_.chat ? "/v1/chat/completions" : "/v1/completions";
  }

  absl::StatusOr<ServerInfo> Probe() override {
    std::unique_ptr<httplib::Client> client = NewClient(10);
    httplib::Result res = client->Get("/v1/models", Headers());
    const std::string where = absl::StrCat("http://", http_.host, ":", http_.port, "/v1/models");
    if (!res) return absl::UnavailableError(absl::StrCat("cannot reach ", where, ": ", httplib::to_string(res.error())));
    if (res->status != 200) {
      return absl::UnavailableError(absl::StrCat(where, " answered ", res->status, ": ", ErrorMessage(res->body)));
    }
    const json j = json::parse(res->body, nullptr, false);
    ServerInfo info;
    if (!j.is_discarded() && j.contains("data") && j["data"].is_array() && !j["data"].empty()) {
      const json& m = j["data"][0];
      if (m.contains("id") && m["id"].is_string()) info.model = m["id"].get<std::string>();
      if (m.contains("max_model_len") && m["max_model_len"].is_number_integer()) info.max_model_len = m["max_model_len"].get<int64_t>();
    }
    if (http_.model.empty()) {
      if (info.model.empty()) return absl::UnavailableError(absl::StrCat(where, " lists no model: pass --model"));
      http_.model = info.model;
    }
    info.model = http_.model;
    return info;
  }

  // The chat API takes text: token-id prompts become the server's own rendering of the ids.
  absl::Status Prepare(std::vector<Prompt>* prompts) override {
    if (!http_.chat) return absl::OkStatus();
    std::unique_ptr<httplib::Client> client = NewClient(60);
    for (Prompt& p : *prompts) {
      if (p.has_text()) continue;
      httplib::Result res = client->Post("/detokenize", Headers(), json({{"tokens", p.token_ids}}).dump(), "application/json");
      if (!res || res->status != 200) {
        return absl::UnavailableError(absl::StrCat("openai-chat needs text prompts: POST /detokenize failed: ",
                                                   res ? ErrorMessage(res->body) : httplib::to_string(res.error())));
      }
      const json j = json::parse(res->body, nullptr, false);
      if (j.is_discarded() || !j.contains("prompt") || !j["prompt"].is_string()) {
        return absl::UnavailableError("POST /detokenize: no \"prompt\" in the answer");
      }
      p.text = j["prompt"].get<std::string>();
      if (p.text.empty()) p.text = " ";
      p.input_len = 0;  // the chat template adds tokens: only the server's usage can tell
    }
    return absl::OkStatus();
  }

  RequestOutput Send(const Prompt& prompt, Clock::time_point epoch) override {
    json body = {{"model", http_.model}, {"stream", true}, {"stream_options", {{"include_usage", true}}}};
    if (http_.chat) {
      body["messages"] = json::array({{{"role", "user"}, {"content", prompt.text}}});
      body["max_completion_tokens"] = prompt.output_len;
    } else {
      if (prompt.has_text()) {
        body["prompt"] = prompt.text;
      } else {
        body["prompt"] = prompt.token_ids;
      }
      body["max_tokens"] = prompt.output_len;
    }
    if (options_.ignore_eos) body["ignore_eos"] = true;
    if (options_.temperature) body["temperature"] = *options_.temperature;

    RequestOutput out;
    out.prompt_len = prompt.input_len;
    int status = 0;
    std::string error_body, buffer;
    bool done = false, usage_seen = false;
    std::string in_band_error;

    httplib::Request req;
    req.method = "POST";
    req.path = http_.endpoint;
    req.headers = Headers();
    req.headers.emplace("Content-Type", "application/json");
    req.body = body.dump(-1, ' ', false, json::error_handler_t::replace);  // a dataset may hold invalid UTF-8
    req.response_handler = [&](const httplib::Response& r) {
      status = r.status;
      return true;
    };
    std::unique_ptr<httplib::Client> client = NewClient(options_.timeout_s);
    const Clock::time_point send = Clock::now();
    out.start_time = Seconds(send - epoch);
    ChunkTimer timer(out.start_time);
    auto on_event = [&](absl::string_view event) {
      for (absl::string_view line : absl::StrSplit(event, '\n')) {
        if (!absl::ConsumePrefix(&line, "data:")) continue;  // comments (": ping") and other fields
        line = absl::StripLeadingAsciiWhitespace(line);
        if (line == "[DONE]") {
          done = true;
          continue;
        }
        const double now = Seconds(Clock::now() - epoch);
        const json j = json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object()) {
          if (in_band_error.empty()) in_band_error = "malformed SSE event";
          continue;
        }
        if (j.contains("error")) {
          if (in_band_error.empty()) in_band_error = absl::StrCat("in-stream error: ", ErrorMessage(std::string(line)));
          continue;
        }
        auto choices = j.find("choices");
        if (choices != j.end() && choices->is_array() && !choices->empty()) {
          timer.OnChunk(now, &out);
        } else if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
          usage_seen = true;
          if (auto c = u->find("completion_tokens"); c != u->end() && c->is_number_integer()) out.output_tokens = c->get<int64_t>();
          if (auto c = u->find("prompt_tokens"); c != u->end() && c->is_number_integer()) out.prompt_len = c->get<int64_t>();
        }
      }
    };
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      if (status != 200) {
        if (error_body.size() < 4096) error_body.append(data, n);
        return true;
      }
      for (size_t i = 0; i < n; ++i) {
        if (data[i] != '\r') buffer.push_back(data[i]);
      }
      size_t end;
      while ((end = buffer.find("\n\n")) != std::string::npos) {
        on_event(absl::string_view(buffer).substr(0, end));
        buffer.erase(0, end + 2);
      }
      return true;
    };
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    const bool ok = client->send(req, res, error);
    if (!buffer.empty() && status == 200) on_event(buffer);  // a last event without its blank line
    timer.Finish(&out);
    if (!ok && status == 0) {
      out.error = absl::StrCat("HTTP connection: ", httplib::to_string(error));
    } else if (status != 200) {
      out.error = absl::StrCat("HTTP ", status, ": ", ErrorMessage(error_body));
    } else if (!ok) {
      out.error = absl::StrCat("HTTP stream broken: ", httplib::to_string(error));
    } else if (!in_band_error.empty()) {
      out.error = in_band_error;
    } else if (!timer.any()) {
      out.error = "no chunk with choices in the stream";
    } else if (!usage_seen) {
      out.error = "no usage chunk (stream_options.include_usage ignored?)";
    } else if (!done) {
      out.error = "the stream ended without data: [DONE]";
    } else {
      out.success = true;
    }
    return out;
  }

 private:
  httplib::Headers Headers() const {
    httplib::Headers h = {{"Accept-Encoding", "identity"}};
    if (!http_.api_key.empty()) h.emplace("Authorization", "Bearer " + http_.api_key);
    return h;
  }

  std::unique_ptr<httplib::Client> NewClient(double timeout_s) const {
    auto client = std::make_unique<httplib::Client>(http_.host, http_.port);
    const auto sec = static_cast<time_t>(std::ceil(timeout_s));
    client->set_connection_timeout(10);
    client->set_read_timeout(sec);
    client->set_write_timeout(sec);
    client->set_decompress(false);
    client->set_keep_alive(false);
    return client;
  }

  HttpClientOptions http_;
  SendOptions options_;
};

}  // namespace

std::unique_ptr<ApiClient> MakeHttpClient(const HttpClientOptions& http, const SendOptions& options) {
  return std::make_unique<HttpClient>(http, options);
}

}  // namespace nsa::bench
