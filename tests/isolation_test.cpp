// Isolated jobs (include/crunch/isolation.hpp) through a real server, with the test kind
// "sandboxed" (sandboxed_kind.hpp), whose helper functions misbehave on purpose.
#include "sandboxed_kind.hpp"
#include "test_support.hpp"
#include "workers/helpers.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <csignal>

namespace crunch::testing {
namespace {

using clock = std::chrono::steady_clock;

constexpr int slack = sanitizer_slack;

// A server of the sandboxed kind alone, priced a millionth of its cost: admission lets in the
// jobs that are meant to outlast their deadline.
struct sandbox_server {
  explicit sandbox_server(std::size_t workers)
      : server(test_config(workers), underpriced_jobs({sandboxed_kind()}, test_config(workers))) {}
  running_server server;
};

std::optional<http_reply> run(http_connection& c, const std::string& function, const std::string& query = {},
                              const std::string& body = {}) {
  return c.post("/sandboxed/" + function + (query.empty() ? "" : "?" + query), "application/octet-stream", body);
}

std::string status_of(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A /proc/PID/status line's value, "" when absent.
std::string field(const std::string& status, const std::string& name) {
  const auto at = status.find("\n" + name + ":");
  if (at == std::string::npos) return {};
  auto value = status.substr(at + name.size() + 2, status.find('\n', at + 1) - at - name.size() - 2);
  value.erase(0, value.find_first_not_of(" \t"));
  return value;
}

// A helper counter of the sandboxed kind. They are the process's, which every test's server shares.
double helpers_metric(http_connection& c, const std::string& name) {
  return sample(c.get("/metrics")->body, "crunch_helpers_" + name + R"({kind="sandboxed"})");
}

TEST(isolation, a_job_runs_in_a_sandboxed_helper_and_its_bytes_go_through_shared_memory) {
  sandbox_server s(2);
  http_connection c(s.server.port());
  // 5 MiB in and out: past the first MiB of each memfd, so both grow.
  std::string body(5 << 20, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7919 % 251);
  const auto echoed = run(c, "echo", {}, body);
  ASSERT_TRUE(echoed);
  EXPECT_EQ(echoed->status, 200u);
  EXPECT_TRUE(echoed->body == body) << "the echo differs from what was sent";

  const auto pid = run(c, "pid");
  ASSERT_TRUE(pid && pid->status == 200);
  const int helper = std::stoi(pid->body);
  EXPECT_NE(helper, getpid());
  const auto status = status_of(helper);
  EXPECT_EQ(field(status, "Seccomp"), "2");
  EXPECT_EQ(field(status, "NoNewPrivs"), "1");
  EXPECT_EQ(field(status, "PPid"), std::to_string(getpid()));
  // Its descriptors: /dev/null, stderr, the socket and the two memfds — nothing of the server's.
  int open_fds = 0;
  for (int fd = 0; fd < 64; ++fd) {
    if (access(("/proc/" + std::to_string(helper) + "/fd/" + std::to_string(fd)).c_str(), F_OK) == 0) ++open_fds;
  }
  EXPECT_EQ(open_fds, 6);
}

// What the sandbox forbids kills the helper: its job gets the 502 of its own, the helper is
// replaced, and the next job runs.
TEST(isolation, a_helper_that_opens_a_file_makes_a_socket_or_forks_is_killed_and_replaced) {
  sandbox_server s(1);
  http_connection c(s.server.port());
  const auto crashed_before = helpers_metric(c, "crashed_total");
#if defined(__SANITIZE_THREAD__)
  // Under ThreadSanitizer a helper may open files to read: its runtime reads /proc/self/maps.
  const auto forbidden_calls = {"socket", "fork"};
#else
  const auto forbidden_calls = {"open", "socket", "fork"};
#endif
  for (const auto* forbidden : forbidden_calls) {
    const auto r = run(c, forbidden);
    ASSERT_TRUE(r) << forbidden;
    EXPECT_EQ(r->status, 502u) << forbidden << ": " << r->body;
    EXPECT_EQ(error_code_of(*r), "helper_crashed") << forbidden;
    EXPECT_NE(r->body.find("SIGSYS"), std::string::npos) << r->body;
    const auto after = run(c, "echo", {}, "still here");
    ASSERT_TRUE(after);
    EXPECT_EQ(after->body, "still here");
  }
  const auto m = c.get("/metrics");
  ASSERT_TRUE(m);
  const auto forbidden_count = static_cast<double>(forbidden_calls.size());
  EXPECT_EQ(sample(m->body, R"(crunch_helpers_crashed_total{kind="sandboxed"})"), crashed_before + forbidden_count);
  EXPECT_EQ(sample(m->body, R"(crunch_jobs_total{outcome="helper_crashed"})"), forbidden_count);
  EXPECT_EQ(sample(m->body, R"(crunch_helpers{kind="sandboxed"})"), 1);
}

TEST(isolation, a_helper_that_crashes_fails_its_job_alone_while_other_jobs_complete) {
  sandbox_server s(2);
  http_connection long_job(s.server.port());
  long_job.send_post("/sandboxed/sleep?ms=" + std::to_string(400 * slack), "application/octet-stream", {});
  http_connection c(s.server.port());
  const auto crashed = run(c, "crash");
  ASSERT_TRUE(crashed);
  EXPECT_EQ(crashed->status, 502u);
  EXPECT_EQ(error_code_of(*crashed), "helper_crashed");
  EXPECT_NE(crashed->body.find("SIGSEGV"), std::string::npos) << crashed->body;
  // The other helper's job, in flight meanwhile, is untouched.
  const auto slept = long_job.read();
  ASSERT_TRUE(slept);
  EXPECT_EQ(slept->status, 200u);
  EXPECT_EQ(slept->body, "slept");
  EXPECT_EQ(run(c, "echo", {}, "next")->body, "next");
}

// A job that does not stop when asked (an AVIF encode does not look at libvips's kill flag) is
// stopped by killing its helper: the worker is free soon after the deadline's 504.
TEST(isolation, a_job_that_ignores_its_stop_token_is_killed_within_100_ms_of_its_deadline) {
  sandbox_server s(1);
  http_connection c(s.server.port());
  http_connection observer(s.server.port());
  const auto killed_before = helpers_metric(observer, "killed_total");
  const auto started = clock::now();
  const auto r = run(c, "spin", "ms=30000&timeout_ms=300");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504u);
  const auto answered = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started);
  EXPECT_LT(answered.count(), 300 + 200 * slack) << "the 504 came late";
  const auto freed = workers_busy_within(observer, 0);
  ASSERT_TRUE(freed) << "the worker stayed busy";
  EXPECT_LT(freed->count(), 100 * slack) << "the worker was busy " << freed->count() << " ms after the 504";
  EXPECT_EQ(helpers_metric(observer, "killed_total"), killed_before + 1);
  EXPECT_EQ(run(c, "echo", {}, "again")->body, "again");
}

// One that stops when asked keeps its helper.
TEST(isolation, a_job_that_stops_when_asked_keeps_its_helper) {
  sandbox_server s(1);
  http_connection c(s.server.port());
  http_connection observer(s.server.port());
  const auto killed_before = helpers_metric(observer, "killed_total");
  const auto before = std::stoi(run(c, "pid")->body);
  const auto r = run(c, "sleep", "ms=30000&timeout_ms=200");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504u);
  ASSERT_TRUE(workers_busy_within(observer, 0));
  EXPECT_EQ(std::stoi(run(c, "pid")->body), before);
  EXPECT_EQ(helpers_metric(observer, "killed_total"), killed_before);
}

TEST(isolation, a_client_that_leaves_stops_its_job_in_the_helper) {
  sandbox_server s(1);
  http_connection observer(s.server.port());
  {
    http_connection c(s.server.port());
    c.send_post("/sandboxed/spin?ms=30000", "application/octet-stream", {});
    ASSERT_TRUE(workers_busy_within(observer, 1));
  }  // gone
  const auto freed = workers_busy_within(observer, 0);
  ASSERT_TRUE(freed);
  EXPECT_LT(freed->count(), 500 * slack);
  EXPECT_EQ(sample(observer.get("/metrics")->body, R"(crunch_jobs_total{outcome="cancelled_client_gone"})"), 1);
}

// Past its memory limit (what it holds, twice the job's model, and 64 MiB), a helper's
// allocations fail: the job gets a 502 of its own and the helper is replaced.
TEST(isolation, a_job_over_its_memory_limit_fails_alone_and_its_helper_is_replaced) {
  if (sanitizer_slack > 1) GTEST_SKIP() << "a sanitizer's shadow memory leaves no room for RLIMIT_DATA: no limit is set";
  sandbox_server s(1);
  http_connection c(s.server.port());
  const int before = std::stoi(run(c, "pid")->body);
  EXPECT_EQ(run(c, "allocate", "mib=1&take=32")->status, 200u);    // within 2 + 64 MiB
  EXPECT_EQ(run(c, "allocate", "mib=200&take=300")->status, 200u);  // within 400 + 64 MiB
  const auto greedy = run(c, "allocate", "mib=1&take=300");        // far past 2 + 64 MiB
  ASSERT_TRUE(greedy);
  EXPECT_EQ(greedy->status, 502u) << greedy->body;
  EXPECT_EQ(error_code_of(*greedy), "helper_out_of_memory");
  EXPECT_NE(std::stoi(run(c, "pid")->body), before);
  EXPECT_EQ(run(c, "echo", {}, "fine")->body, "fine");
}

// Killed with SIGSEGV, then SIGKILL, in the middle of a job: that job gets a 502 within a second,
// the next one a new helper.
void kill_helpers_mid_job() {
  sandbox_server s(1);
  http_connection c(s.server.port());
  const int helper = std::stoi(run(c, "pid")->body);
  for (const int sig : {SIGSEGV, SIGKILL}) {
    const int pid = std::stoi(run(c, "pid")->body);
    c.send_post("/sandboxed/sleep?ms=" + std::to_string(20'000), "application/octet-stream", {});
    http_connection observer(s.server.port());
    ASSERT_TRUE(workers_busy_within(observer, 1));
    const auto sent = clock::now();
    ASSERT_EQ(::kill(pid, sig), 0);
    const auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 502u) << r->body;
    EXPECT_EQ(error_code_of(*r), "helper_crashed");
    EXPECT_LT(clock::now() - sent, std::chrono::seconds(1));
    EXPECT_EQ(run(c, "echo", {}, "after")->body, "after");
  }
  EXPECT_NE(std::stoi(run(c, "pid")->body), helper);
}

TEST(isolation, a_helper_killed_from_outside_fails_its_job_with_502_and_the_next_succeeds) { kill_helpers_mid_job(); }

// The same where the system has no pidfds (kernels before 5.3, valgrind, a container profile that
// refuses pidfd_open): the helper's socket says it died, and it is killed by its pid.
TEST(isolation, without_pidfds_a_helper_killed_from_outside_still_fails_its_job_alone) {
  use_pidfds(false);
  struct restore {
    ~restore() { use_pidfds(true); }
  } restored;
  kill_helpers_mid_job();
  sandbox_server s(1);
  http_connection c(s.server.port());
  const auto r = run(c, "spin", "ms=30000&timeout_ms=300");  // killed 50 ms after its stop
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504u);
  EXPECT_EQ(run(c, "echo", {}, "again")->body, "again");
  const auto crashed = run(c, "crash");
  ASSERT_TRUE(crashed);
  EXPECT_EQ(crashed->status, 502u) << crashed->body;
}

}  // namespace
}  // namespace crunch::testing
