#include "bench/serving/request_runner.h"

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace nsa::bench {
namespace {

// Runs each job on an idle thread, or on a new one when none is idle: as many threads as jobs
// were ever in flight at once. The destructor waits for every job.
class ThreadPerJob {
 public:
  ~ThreadPerJob() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  void Submit(std::function<void()> job) {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
    if (idle_ >= jobs_.size()) {
      cv_.notify_one();
    } else {
      threads_.emplace_back([this] { Work(); });
    }
  }

 private:
  void Work() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      while (jobs_.empty() && !stop_) {
        ++idle_;
        cv_.wait(lock);
        --idle_;
      }
      if (jobs_.empty()) return;  // stopping, nothing left
      std::function<void()> job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  size_t idle_ = 0;                         // guarded by mu_
  bool stop_ = false;                       // guarded by mu_
  std::vector<std::thread> threads_;        // touched by the submitting thread only
};

// A counting semaphore that hands slots out in arrival order (one acquirer: the dispatcher).
class Slots {
 public:
  explicit Slots(int n) : free_(n) {}
  void Acquire() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return free_ > 0; });
    --free_;
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++free_;
    }
    cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int free_;  // guarded by mu_
};

}  // namespace

RunResult RunRequests(ApiClient& client, const std::vector<Prompt>& prompts, const std::vector<double>& offsets,
                      int max_concurrency) {
  RunResult result;
  result.outputs.resize(prompts.size());
  Slots slots(max_concurrency);
  const Clock::time_point epoch = Clock::now();
  {
    ThreadPerJob pool;
    for (size_t i = 0; i < prompts.size(); ++i) {
      std::this_thread::sleep_until(epoch + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(offsets[i])));
      const double arrival = Seconds(Clock::now() - epoch);
      if (max_concurrency > 0) slots.Acquire();
      pool.Submit([&, i, arrival] {
        RequestOutput out = client.Send(prompts[i], epoch);
        out.queue_time = out.start_time - arrival;
        result.outputs[i] = std::move(out);
        if (max_concurrency > 0) slots.Release();
      });
    }
  }
  result.duration_s = Seconds(Clock::now() - epoch);
  return result;
}

}  // namespace nsa::bench
