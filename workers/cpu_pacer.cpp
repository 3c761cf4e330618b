#include <crunch/cpu_pacer.hpp>

#include "helpers.hpp"

#include <algorithm>
#include <ctime>

namespace crunch {

namespace {

// True while workers must wait; only a cpu_pacer's thread sets it.
std::atomic<bool> hold_workers{false};

// crunchd's CPU time and its helpers': the quota is the cgroup's, which holds them all.
std::chrono::nanoseconds process_cpu_time() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec) + helpers_cpu_time();
}

void release_workers() {
  hold_workers.store(false, std::memory_order_release);
  hold_workers.notify_all();
  hold_helpers(false);
}

}  // namespace

bool cpu_allowance::over(std::chrono::nanoseconds now, std::chrono::nanoseconds cpu) {
  if (!started_) {
    started_ = true;
  } else {
    tokens_ += static_cast<double>((now - last_now_).count()) * cpus_;
    tokens_ -= static_cast<double>((cpu - last_cpu_).count());
    tokens_ = std::min(tokens_, burst_);
  }
  last_now_ = now;
  last_cpu_ = cpu;
  return tokens_ < 0;
}

cpu_pacer::cpu_pacer(double cpus, std::chrono::milliseconds tick)
    : cpus_(cpus), tick_(tick), thread_([this](std::stop_token stop) { run(std::move(stop)); }) {}

cpu_pacer::~cpu_pacer() {
  thread_.request_stop();
  thread_.join();
  release_workers();
}

void cpu_pacer::run(std::stop_token stop) {
  // The burst: what the process may run ahead of its allowance between two looks, a few ticks'
  // worth. Measured against a 100 ms CFS period, allowance + burst + one tick of reaction stays
  // under the quota with the default reserve, 8 % (see README, "CPU quotas").
  cpu_allowance allowance(cpus_, std::chrono::duration_cast<std::chrono::nanoseconds>(tick_ * cpus_));
  auto next = std::chrono::steady_clock::now();
  while (!stop.stop_requested()) {
    const auto now = std::chrono::steady_clock::now();
    if (allowance.over(now.time_since_epoch(), process_cpu_time())) {
      paused_ticks_.fetch_add(1, std::memory_order_relaxed);
      hold_workers.store(true, std::memory_order_release);
      hold_helpers(true);  // their jobs cannot reach a checkpoint of crunchd's
    } else if (hold_workers.load(std::memory_order_relaxed)) {
      release_workers();
    }
    next += tick_;
    if (next < now) next = now + tick_;  // fell behind (suspended): no burst of catch-up ticks
    std::this_thread::sleep_until(next);
  }
}

bool job_checkpoint(const std::stop_token& stop) {
  if (hold_workers.load(std::memory_order_relaxed)) hold_workers.wait(true, std::memory_order_acquire);
  return stop.stop_requested();
}

}  // namespace crunch
