// nsa-gateway: the OpenAI-compatible HTTP API in front of one or more nsa-server processes,
// forwarding over gRPC to the least-loaded healthy one (the path to many GPUs and machines).
//
//   nsa-gateway --backends 10.0.0.5:50051,10.0.0.6:50051 [--host 0.0.0.0] [--http-port 8000]
//               [--api-key K1,K2] [--max-connections N] [--chat-template NAME|FILE]
//
// Prints `nsa-gateway: http HOST:PORT ready` once listening; SIGTERM/SIGINT stop it.
#include <signal.h>

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "kernels/common/status.h"
#include "models/flags.h"
#include "server/http/chat_template.h"
#include "server/http/openai_server.h"
#include "server/http/remote_backend.h"

ABSL_FLAG(std::vector<std::string>, backends, {}, "engine servers (host:port of their gRPC), comma-separated");
ABSL_FLAG(std::string, host, "0.0.0.0", "address to listen on");
ABSL_FLAG(int, http_port, 8000, "HTTP port (0: pick a free one)");
ABSL_FLAG(std::vector<std::string>, api_key, {}, "API keys, comma-separated (empty: no authentication)");
ABSL_FLAG(int64_t, max_body_kib, 8192, "largest request body, KiB");
ABSL_FLAG(int, max_connections, 2048, "worker threads: connections served at once (SSE streams included)");
ABSL_FLAG(std::string, chat_template, "", "chat template: a built-in (chatml, llama2, plain) or a file; default: the model's");
ABSL_FLAG(std::string, model_name, "", "served model name (default: the engine servers')");

namespace nsa {
namespace {

absl::Status Run() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::vector<std::string> backends = absl::GetFlag(FLAGS_backends);
  if (backends.empty()) return absl::InvalidArgumentError("--backends is required (host:port of nsa-server gRPC)");
  const int port = absl::GetFlag(FLAGS_http_port);
  if (port < 0 || port > 65535) return absl::InvalidArgumentError("--http-port must be in [0, 65535]");
  if (absl::GetFlag(FLAGS_max_body_kib) <= 0 || absl::GetFlag(FLAGS_max_connections) <= 0) {
    return absl::InvalidArgumentError("--max-body-kib and --max-connections must be positive");
  }
  OpenAIServerOptions options;
  options.served_model_name = absl::GetFlag(FLAGS_model_name);
  options.api_keys = absl::GetFlag(FLAGS_api_key);
  options.max_body_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_max_body_kib)) << 10;
  options.max_connections = absl::GetFlag(FLAGS_max_connections);
  ASSIGN_OR_RETURN(options.chat_template, ChatTemplateFromFlag(absl::GetFlag(FLAGS_chat_template)));

  RemoteBackend backend(backends);
  OpenAIServer http(&backend, options);
  ASSIGN_OR_RETURN(int bound, http.Start(absl::GetFlag(FLAGS_host), port));
  std::printf("nsa-gateway: http %s:%d ready\n", absl::GetFlag(FLAGS_host).c_str(), bound);
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  http.Stop();
  return absl::OkStatus();
}

}  // namespace
}  // namespace nsa

int main(int argc, char** argv) {
  // Debian's Abseil checks every absl::Mutex acquisition for lock-order cycles (a global graph
  // behind one lock): gRPC's internals take absl::Mutex per call, and with 1,000 streams the
  // server spent most of its time contending on that graph (perf: futex waits, GraphCycles).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage("nsa-gateway --backends HOST:PORT[,HOST:PORT...] [--http-port P] ... (see --help)");
  nsa::ParseFlags(argc, argv);
  const absl::Status status = nsa::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "nsa-gateway: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
