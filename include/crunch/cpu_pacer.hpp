#pragma once
/// Keeping the workers inside a CPU quota, with room left for the I/O thread.
///
/// A CFS bandwidth quota (`docker run --cpus`, a Kubernetes CPU limit) stops every thread of the
/// cgroup once a period's quota is spent, the I/O thread too, until the next period. Busy workers
/// alone would spend it all, every period. The pacer keeps the whole process's CPU use under the
/// quota less a reserve: a thread of its own reads the process's CPU time every tick, and while the
/// process is ahead of its allowance, workers wait at their next checkpoint — between jobs, and
/// inside the jobs that have one (fib's recursion, libvips's evaluation) — until it is not. The
/// I/O thread never waits: the quota it needs is the part the workers leave.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stop_token>
#include <thread>

namespace crunch {

/// A token bucket over CPU time: pure arithmetic on the times it is given.
class cpu_allowance {
 public:
  /// `cpus`: CPU-seconds per second allowed; `burst`: CPU time that may be used ahead of that.
  cpu_allowance(double cpus, std::chrono::nanoseconds burst) : cpus_(cpus), burst_(static_cast<double>(burst.count())) {}

  /// Records the process's total CPU time `cpu` at the wall time `now` (both since any fixed
  /// origin; the first call only sets the origin): true while it has used more than allowed.
  bool over(std::chrono::nanoseconds now, std::chrono::nanoseconds cpu);

 private:
  double cpus_;
  double burst_;
  double tokens_ = 0;  // ns of CPU that may still be used; negative: ahead of the allowance
  bool started_ = false;
  std::chrono::nanoseconds last_now_{};
  std::chrono::nanoseconds last_cpu_{};
};

/// Pauses workers at their checkpoints while the process is over a CPU allowance. One per
/// process at a time (the checkpoints are process-wide).
class cpu_pacer {
 public:
  /// Starts the pacing thread: `cpus` CPU-seconds per second for the whole process.
  explicit cpu_pacer(double cpus, std::chrono::milliseconds tick = std::chrono::milliseconds(5));
  /// Releases any paused worker and joins the thread.
  ~cpu_pacer();

  cpu_pacer(const cpu_pacer&) = delete;
  cpu_pacer& operator=(const cpu_pacer&) = delete;

  /// Time the workers were told to wait, since the start.
  double paused_seconds() const noexcept {
    return static_cast<double>(paused_ticks_.load(std::memory_order_relaxed)) * std::chrono::duration<double>(tick_).count();
  }

 private:
  void run(std::stop_token stop);

  const double cpus_;
  const std::chrono::milliseconds tick_;
  std::atomic<std::uint64_t> paused_ticks_{0};
  std::jthread thread_;
};

/// A point where a running job may pause: waits while a cpu_pacer holds the workers back, then
/// says whether the job should stop. Costs one relaxed atomic load when nothing is paced.
bool job_checkpoint(const std::stop_token& stop);

}  // namespace crunch
