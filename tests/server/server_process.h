// Starts the real nsa-server on loopback, port 0, and waits for its ready line; stops it with
// SIGTERM (checking the exit status) when destroyed. For black-box server tests.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

namespace nsa::testing {

class ServerProcess {
 public:
  // Returns false (and sets error) when the server does not come up.
  bool Start(const std::string& binary, const std::vector<std::string>& args, std::string* error) {
    int out[2];
    if (pipe(out) != 0) return *error = "pipe failed", false;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      std::vector<std::string> all = {binary, "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--http-port", "0"};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (std::string& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    stdout_ = fdopen(out[0], "r");
    char line[512];
    while (fgets(line, sizeof(line), stdout_)) {
      int grpc = 0, metrics = 0, http = 0;
      if (sscanf(line, "nsa-server: grpc 127.0.0.1:%d metrics 127.0.0.1:%d http 127.0.0.1:%d ready", &grpc, &metrics, &http) == 3) {
        grpc_port_ = grpc;
        metrics_port_ = metrics;
        http_port_ = http;
        return true;
      }
    }
    *error = "nsa-server exited before it was ready";
    return false;
  }

  // SIGTERM and wait; returns the exit status (or -1 if it died of a signal).
  int Stop() {
    if (pid_ <= 0) return exit_status_;
    kill(pid_, SIGTERM);
    return Wait();
  }
  void Terminate() {
    if (pid_ > 0) kill(pid_, SIGTERM);
  }
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    if (stdout_) fclose(stdout_), stdout_ = nullptr;
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return exit_status_;
  }
  ~ServerProcess() { Stop(); }

  std::string grpc_address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  int metrics_port() const { return metrics_port_; }
  int http_port() const { return http_port_; }

 private:
  pid_t pid_ = -1;
  FILE* stdout_ = nullptr;
  int grpc_port_ = 0, metrics_port_ = 0, http_port_ = 0;
  int exit_status_ = -1;
};

}  // namespace nsa::testing
