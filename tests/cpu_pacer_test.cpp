#include <crunch/cpu_pacer.hpp>

#include "work_kind.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <thread>

namespace crunch {
namespace {

using namespace std::chrono_literals;

TEST(cpu_allowance, holds_back_what_runs_ahead_of_the_rate_and_lets_go_when_it_has_caught_up) {
  cpu_allowance a(0.5, 4ms);  // half a CPU, 4 ms ahead at most
  EXPECT_FALSE(a.over(0ms, 0ms));
  EXPECT_FALSE(a.over(10ms, 5ms));    // exactly at the rate
  EXPECT_TRUE(a.over(20ms, 15ms));    // 10 ms of CPU in 10 ms of wall time: 5 ms ahead
  EXPECT_TRUE(a.over(26ms, 15ms));    // 3 ms of the 5 caught up
  EXPECT_FALSE(a.over(30ms, 15ms));   // all of it
  EXPECT_FALSE(a.over(1030ms, 15ms)); // idle for a second: saves at most the burst...
  EXPECT_FALSE(a.over(1030ms, 19ms)); // ...which may be spent at once
  EXPECT_TRUE(a.over(1030ms, 20ms));  // but no more
}

TEST(cpu_allowance, two_cpus_busy_against_a_quota_of_one_and_a_half) {
  cpu_allowance a(1.5, 6ms);
  a.over(0ms, 0ms);
  bool held = false;
  std::chrono::nanoseconds cpu{};
  for (auto now = 2ms; now <= 1000ms; now += 2ms) {
    if (!held) cpu += 4ms;  // two busy workers, each tick they are not held
    held = a.over(now, cpu);
  }
  EXPECT_LE(cpu, 1500ms + 6ms + 4ms);  // the allowance, its burst and one tick of reaction
  EXPECT_GE(cpu, 1400ms);
}

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// A busy job under a pacer of a third of a CPU gets about that: it pauses at its checkpoints.
// Without the pacer the same thread gets nearly all of a CPU (the second half of the test).
TEST(cpu_pacer, a_busy_job_gets_the_rate_it_is_paced_to) {
  const auto share_of_a_cpu = [] {
    const auto wall_start = std::chrono::steady_clock::now();
    const double cpu_start = thread_cpu_seconds();
    const auto probe = std::make_shared<testing::job_probe>();
    while (std::chrono::steady_clock::now() - wall_start < 600ms) EXPECT_TRUE(testing::burning(probe, 5)({}));
    return (thread_cpu_seconds() - cpu_start) /
           std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  };
  double paced = 0;
  {
    cpu_pacer pacer(0.33);
    paced = share_of_a_cpu();
    EXPECT_LT(paced, 0.55) << "paced to 0.33 CPU";
    EXPECT_GT(pacer.paused_seconds(), 0.0);
  }
  // Unpaced: whatever this machine gives one busy thread, which must be clearly more than the
  // paced share. A loaded machine or a sanitizer may give less than a whole CPU (a full suite
  // beside a container build gave 0.50), so the bound is relative to the paced run, not absolute.
  const double unpaced = share_of_a_cpu();
  EXPECT_GT(unpaced, paced * 1.3) << "paced " << paced;
}

TEST(cpu_pacer, a_checkpoint_without_a_pacer_only_reports_the_stop) {
  std::stop_source source;
  EXPECT_FALSE(job_checkpoint(source.get_token()));
  source.request_stop();
  EXPECT_TRUE(job_checkpoint(source.get_token()));
}

}  // namespace
}  // namespace crunch
