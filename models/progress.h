// Progress of long work (loading, writing weights, training the tokenizer) on stderr: a redrawn
// bar with the rate on a terminal, plain lines (every 10% or 5 s) otherwise. Single-threaded use.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace nsa {

class Progress {
 public:
  enum class Unit { kBytes, kItems };
  // total <= 0 means unknown: only the count and the rate are shown.
  Progress(std::string label, int64_t total, Unit unit);
  ~Progress();  // calls Finish()
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void Add(int64_t amount);
  void Set(int64_t done);
  void Finish();
  // Silences every Progress in the process (tests, --quiet).
  static void SetEnabled(bool enabled);

 private:
  void Draw(bool final);
  std::string label_;
  int64_t total_;
  Unit unit_;
  int64_t done_ = 0;
  bool tty_;
  bool finished_ = false;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// For work that reports no progress of its own (sentencepiece training): a line that shows the
// elapsed time while `work` runs on the calling thread, redrawn by a helper thread.
class Heartbeat {
 public:
  explicit Heartbeat(std::string label);
  ~Heartbeat();  // stops the helper thread and prints the final line
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace nsa
