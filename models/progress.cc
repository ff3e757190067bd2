#include "models/progress.h"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cstdio>

#include "absl/strings/str_format.h"

namespace nsa {
namespace {

std::atomic<bool> g_enabled{true};

std::string Amount(int64_t v, Progress::Unit unit) {
  if (unit == Progress::Unit::kItems) return absl::StrFormat("%d", v);
  const char* names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double x = static_cast<double>(v);
  int i = 0;
  while (x >= 1024 && i < 4) {
    x /= 1024;
    ++i;
  }
  return absl::StrFormat("%.1f %s", x, names[i]);
}

}  // namespace

void Progress::SetEnabled(bool enabled) { g_enabled = enabled; }

Progress::Progress(std::string label, int64_t total, Unit unit)
    : label_(std::move(label)), total_(total), unit_(unit), tty_(isatty(STDERR_FILENO) != 0) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { Finish(); }

void Progress::Add(int64_t amount) { Set(done_ + amount); }

void Progress::Set(int64_t done) {
  done_ = done;
  if (!g_enabled || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_draw_ >= std::chrono::milliseconds(100)) Draw(false);
    return;
  }
  // Plain lines only for work long enough to wait on: after 2 s, at each 10% or every 5 s.
  if (now - start_ < std::chrono::seconds(2)) return;
  const int decile = total_ > 0 ? static_cast<int>(10 * done_ / total_) : -1;
  if (decile != last_decile_ || now - last_draw_ >= std::chrono::seconds(5)) {
    last_decile_ = decile;
    Draw(false);
  }
}

void Progress::Finish() {
  if (finished_) return;
  if (g_enabled) Draw(true);
  finished_ = true;
}

void Progress::Draw(bool final) {
  last_draw_ = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(last_draw_ - start_).count();
  const double rate = secs > 0 ? done_ / secs : 0;
  std::string rate_text = Amount(static_cast<int64_t>(rate), unit_) + (unit_ == Unit::kBytes ? "/s" : "/s");
  std::string line;
  if (total_ > 0) {
    const double frac = std::min(1.0, static_cast<double>(done_) / total_);
    if (tty_) {
      const int width = 30;
      const int filled = static_cast<int>(frac * width);
      line = absl::StrFormat("%s [%s%s] %3.0f%% %s/%s %s %.1fs", label_, std::string(filled, '#'),
                             std::string(width - filled, '.'), 100 * frac, Amount(done_, unit_), Amount(total_, unit_),
                             rate_text, secs);
    } else {
      line = absl::StrFormat("%s: %3.0f%% %s/%s %s %.1fs", label_, 100 * frac, Amount(done_, unit_),
                             Amount(total_, unit_), rate_text, secs);
    }
  } else {
    line = absl::StrFormat("%s: %s %s %.1fs", label_, Amount(done_, unit_), rate_text, secs);
  }
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s%s\n", line.c_str(), final ? " done" : "");
  }
  std::fflush(stderr);
}

struct Heartbeat::State {
  std::string label;
  bool tty = isatty(STDERR_FILENO) != 0;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread thread;

  void Draw(bool final) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (tty) {
      static const char kSpin[] = "|/-\\";
      std::fprintf(stderr, "\r\033[K%s %c %.1fs%s", label.c_str(), final ? ' ' : kSpin[static_cast<int>(secs * 5) % 4],
                   secs, final ? " done\n" : "");
    } else {
      std::fprintf(stderr, "%s: %.0fs%s\n", label.c_str(), secs, final ? " done" : "");
    }
    std::fflush(stderr);
  }
};

Heartbeat::Heartbeat(std::string label) : state_(std::make_unique<State>()) {
  state_->label = std::move(label);
  if (!g_enabled) return;
  state_->thread = std::thread([s = state_.get()] {
    std::unique_lock<std::mutex> lock(s->mu);
    const auto period = s->tty ? std::chrono::milliseconds(200) : std::chrono::milliseconds(5000);
    while (!s->cv.wait_for(lock, period, [s] { return s->done; })) s->Draw(false);
  });
}

Heartbeat::~Heartbeat() {
  if (!state_->thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->done = true;
  }
  state_->cv.notify_all();
  state_->thread.join();
  state_->Draw(true);
}

}  // namespace nsa
