// Tests of the crunchd binary itself: exit codes, start-up errors, and the SIGTERM drain.
#include "crunchd_process.hpp"

#include "server/net.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace crunch::testing {
namespace {

using namespace std::chrono_literals;

struct refusal {
  std::vector<std::string> args;
  std::string names;
};

void PrintTo(const refusal& r, std::ostream* out) {
  for (const auto& a : r.args) *out << a << ' ';
}

class crunchd_refuses : public ::testing::TestWithParam<refusal> {};

TEST_P(crunchd_refuses, nonsense_at_start_with_exit_2_and_one_line) {
  crunchd_process p(GetParam().args);
  const auto err = p.all_stderr();
  EXPECT_EQ(p.wait_exit(), 2);
  EXPECT_NE(err.find(GetParam().names), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

INSTANTIATE_TEST_SUITE_P(flags, crunchd_refuses,
                         ::testing::Values(refusal{{"--workers", "0"}, "--workers"},
                                           refusal{{"--port", "70000"}, "--port"},
                                           refusal{{"--port", "abc"}, "--port"},
                                           refusal{{"--mode", "turbo"}, "--mode"},
                                           // More than all the memory the process may use: the
                                           // OOM killer, not a 503, would answer.
                                           refusal{{"--memory-budget", "100000GiB"}, "MiB this process may use"},
                                           refusal{{"--api-keys", "/nonexistent/crunch-keys"}, "--api-keys"},
                                           refusal{{"--fair-key", "key"}, "needs --api-keys"},
                                           refusal{{"--fair-key", "header:"}, "--fair-key"},
                                           refusal{{"--fair-key", "header:X Client"}, "--fair-key"},
                                           refusal{{"--protect-metrics", "true"}, "needs --api-keys"},
                                           refusal{{"--max-flows", "0"}, "--max-flows"},
                                           refusal{{"--io-priority", "fast"}, "--io-priority"},
                                           // A kind's own flags: bounds, and its check.
                                           refusal{{"--work-max-ms", "86400001"}, "--work-max-ms"},
                                           refusal{{"--work-max-ms", "0"}, "0 leaves no work"}));

// The I/O thread says how it is scheduled. As asked, or refused at start when real-time is
// required and the OS will not give it; `auto` takes it where allowed (as root, in CI).
TEST(crunchd, the_io_thread_is_real_time_where_allowed_and_says_so) {
  auto io_thread_of = [](std::vector<std::string> args, int& exit_code) {
    args.insert(args.end(), {"--address", "127.0.0.1", "--port", "0"});
    crunchd_process p(args);
    const auto line = p.stdout_line();
    if (line.empty()) {
      const auto err = p.all_stderr();
      exit_code = p.wait_exit();
      return "refused: " + err;
    }
    const auto event = nlohmann::json::parse(line);
    p.signal(SIGTERM);
    exit_code = p.wait_exit();
    return event.at("io_thread").get<std::string>();
  };
  int code = -1;
  EXPECT_EQ(io_thread_of({"--io-priority", "normal"}, code), "normal");
  EXPECT_EQ(code, 0);
  // Inline mode runs whole jobs on the I/O thread: never real-time.
  EXPECT_EQ(io_thread_of({"--mode", "inline"}, code), "normal");
  EXPECT_EQ(code, 0);
  const auto inline_realtime = io_thread_of({"--mode", "inline", "--io-priority", "realtime"}, code);
  EXPECT_NE(inline_realtime.find("--mode inline"), std::string::npos) << inline_realtime;
  EXPECT_EQ(code, 2);
  const auto automatic = io_thread_of({}, code);
  EXPECT_TRUE(automatic == "realtime" || automatic == "normal") << automatic;
  EXPECT_EQ(code, 0);
  const auto required = io_thread_of({"--io-priority", "realtime"}, code);
  if (automatic == "realtime") {
    EXPECT_EQ(required, "realtime");
    EXPECT_EQ(code, 0);
  } else {
    EXPECT_NE(required.find("--io-priority realtime"), std::string::npos) << required;
    EXPECT_EQ(code, 2);
  }
}

// No secret ever exists in a helper: after jobs that started helpers, under an API key, no
// helper's memory holds the key -- while crunchd's own memory holds the key file's name (the scan
// finds what it looks for; of the keys crunchd keeps only digests).
TEST(crunchd, no_helper_holds_an_api_key) {
  std::random_device random;
  const auto tag = std::to_string(getpid()) + "-" + std::to_string(random()) + "-" + std::to_string(random());
  const std::string key = "api-key-" + std::to_string(random()) + "-" + std::to_string(random());
  const auto key_file = std::filesystem::temp_directory_path() / ("crunch-keys-" + tag);
  std::ofstream(key_file) << "tester:" << key << "\n";
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "2", "--api-keys", key_file.string(),
                     "--default-timeout", "60s"});
  const auto port = started_port(p);
  std::filesystem::remove(key_file);
  const std::string auth = "Authorization: Bearer " + key + "\r\n";
  for (int round = 0; round < 4; ++round) {
    http_connection c(port);
    ASSERT_EQ(c.post("/sandboxed/echo", "application/octet-stream", "hello", auth)->status, 200u);
    ASSERT_EQ(c.get("/work/1", auth)->status, 200u);
  }
  const auto helpers = children_of(p.pid());
  ASSERT_GE(helpers.size(), 1u);
  for (const auto helper : helpers) EXPECT_FALSE(memory_holds(helper, key)) << "helper " << helper << " holds the API key";
  EXPECT_TRUE(memory_holds(p.pid(), "crunch-keys-" + tag)) << "the scan should find the key file's name in crunchd";
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit(), 0);
}

// A fatal signal in crunchd leaves one log line, written with async-signal-safe calls only: the
// signal, the thread, a symbolised stack and the requests in flight; then the process dies of it,
// for its supervisor to restart. The test kind "crashing" writes to a page mapped without access
// on a worker (crunch_test_service: crunchd with the test kinds).
TEST(crunchd, a_fatal_signal_logs_the_signal_the_thread_the_stack_and_the_requests_in_flight) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "2"}, {}, CRUNCH_TEST_SERVICE_PATH);
  const auto port = started_port(p);
  http_connection waiting(port);
  // Five seconds of its flow's booked work: the next job of the same client fits behind it (10 s).
  waiting.send_post("/sandboxed/sleep?ms=5000&timeout_ms=60000", "application/octet-stream", {},
                    "X-Request-Id: waiting-elsewhere\r\n");
  http_connection observer(port);
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_workers_busy 1\n"));
  http_connection c(port);
  c.send_get("/crashing/worker", "X-Request-Id: the-one-that-crashes\r\n");
  nlohmann::json report;
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) {
    if (line.find("fatal_signal") == std::string::npos) continue;
    report = nlohmann::json::parse(line);
    break;
  }
  ASSERT_TRUE(report.is_object()) << "no fatal_signal line";
  EXPECT_EQ(report.at("level"), "fatal");
  EXPECT_EQ(report.at("signal"), "SIGSEGV");
  EXPECT_TRUE(report.at("address").get<std::string>().starts_with("0x")) << report;
  EXPECT_TRUE(report.at("thread").get<std::string>().starts_with("worker ")) << report;
  EXPECT_EQ(report.at("request_id"), "the-one-that-crashes");
  const auto in_flight = report.at("requests_in_flight");
  EXPECT_NE(std::find(in_flight.begin(), in_flight.end(), "the-one-that-crashes"), in_flight.end()) << in_flight;
  EXPECT_NE(std::find(in_flight.begin(), in_flight.end(), "waiting-elsewhere"), in_flight.end()) << in_flight;
  const auto stack = report.at("stack").dump();
  EXPECT_NE(stack.find("crunch_test_service+0x"), std::string::npos) << stack;
  EXPECT_NE(stack.find("worker_pool11worker_main"), std::string::npos) << stack;  // symbols, not only offsets
  const int status = p.wait_status();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) << status;
}

TEST(crunchd, help_and_version) {
  {
    crunchd_process p({"--help"});
    const auto first = p.stdout_line();
    EXPECT_NE(first.find("usage: crunchd"), std::string::npos) << first;
    EXPECT_EQ(p.wait_exit(), 0);
  }
  crunchd_process p({"--version"});
  EXPECT_EQ(p.stdout_line().rfind("crunchd ", 0), 0u);
  EXPECT_EQ(p.wait_exit(), 0);
}

TEST(crunchd, probe_reports_readiness_as_its_exit_code) {
  crunchd_process server({"--address", "127.0.0.1", "--port", "0", "--workers", "1"});
  const auto port = started_port(server);
  {
    crunchd_process probe({"--probe", "--address", "127.0.0.1", "--port", std::to_string(port)});
    EXPECT_NE(probe.stdout_line().find("200 OK"), std::string::npos);
    EXPECT_EQ(probe.wait_exit(), 0);
  }
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait_exit(), 0);
  // Nothing listens there now: the probe fails, quickly and with a reason.
  crunchd_process probe({"--probe", "--address", "127.0.0.1", "--port", std::to_string(port)});
  const auto err = probe.all_stderr();
  EXPECT_EQ(probe.wait_exit(), 1);
  EXPECT_NE(err.find("connect"), std::string::npos) << err;
}

TEST(crunchd, probe_fails_on_a_server_that_is_not_ready) {
  // A listener that answers 503, as a draining crunchd's /readyz does.
  net::io_context io;
  net::ip::tcp::acceptor acceptor(io, {net::ip::make_address("127.0.0.1"), 0});
  std::thread answer([&] {
    auto socket = acceptor.accept();
    std::array<char, 1024> request;
    socket.read_some(net::buffer(request));
    const std::string reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    net::write(socket, net::buffer(reply));
  });
  crunchd_process probe({"--probe", "--address", "127.0.0.1", "--port", std::to_string(acceptor.local_endpoint().port())});
  const auto err = probe.all_stderr();
  EXPECT_EQ(probe.wait_exit(), 1);
  EXPECT_NE(err.find("503"), std::string::npos) << err;
  answer.join();
}

TEST(crunchd, port_in_use_is_a_clear_error) {
  running_server taken(test_config(1));
  crunchd_process p({"--address", "127.0.0.1", "--port", std::to_string(taken.port())});
  const auto err = p.all_stderr();
  EXPECT_EQ(p.wait_exit(), 1);
  EXPECT_NE(err.find("cannot listen"), std::string::npos) << err;
}

TEST(crunchd, sigterm_drains_in_flight_work_and_exits_0) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--drain-timeout", "20s"});
  const auto port = started_port(p);
  http_connection job(port, 30s);
  job.send_get("/work/1000");  // a second: the observer sees it running
  // Wait (bounded) until the job occupies the worker, then ask the server to stop.
  http_connection observer(port);
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_workers_busy 1\n"));
  p.signal(SIGTERM);
  const auto r = job.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(nlohmann::json::parse(r->body).at("ms"), 1000);
  EXPECT_FALSE(r->keep_alive);
  EXPECT_EQ(p.wait_exit(), 0);
}

TEST(crunchd, sigterm_with_queued_jobs_answers_what_cannot_finish_with_503_and_exits_0) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--drain-timeout", "10s"});
  const auto port = started_port(p);
  http_connection running(port, 60s);
  // Two seconds of work: still running when the signal comes, done well within the drain.
  running.send_get("/work/2000");
  http_connection observer(port);
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_workers_busy 1\n"));
  http_connection fits(port, 60s);
  fits.send_get("/work/200");  // queued; a tenth as long: done long before the drain timeout
  http_connection hopeless(port, 60s);
  // Queued; 15 s: within its own deadline (admission lets it in), but it cannot finish within the
  // 10 s drain.
  hopeless.send_get("/work/15000?timeout_ms=60000");
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_job_queue_depth 2\n"));
  p.signal(SIGTERM);
  const auto cut = hopeless.read();
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->status, 503u);
  EXPECT_EQ(nlohmann::json::parse(cut->body).at("error").at("code"), "draining");
  const auto first = running.read();
  ASSERT_TRUE(first);
  EXPECT_EQ(nlohmann::json::parse(first->body).at("ms"), 2000);
  const auto second = fits.read();
  ASSERT_TRUE(second);
  EXPECT_EQ(nlohmann::json::parse(second->body).at("ms"), 200);
  EXPECT_EQ(p.wait_exit(), 0);
}

TEST(crunchd, the_access_log_leaves_a_callback_url_out) {
  // Receivers often carry their token in the URL (a Slack-style path, a ?token=).
  temp_file secrets("crunch-whsec-", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--callback-allow", "http://127.0.0.1:",
                     "--callback-allow-private", "true", "--webhook-secret-file", secrets.path(),
                     "--callback-retry-for", "0s", "--callback-helper", CRUNCH_CALLBACK_PATH});
  const auto port = started_port(p);
  http_connection c(port);
  EXPECT_EQ(c.get("/work/1?callback_url=http://127.0.0.1:9/hooks/T000/s3cr3t-token&timeout_ms=5000",
                  "Prefer: respond-async\r\n")
                ->status,
            202u);
  p.signal(SIGTERM);
  bool found = false;
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) {
    EXPECT_EQ(line.find("s3cr3t-token"), std::string::npos) << line;
    const auto event = nlohmann::json::parse(line);
    if (event.at("event") != "access") continue;
    found = true;
    EXPECT_EQ(event.at("target"), "/work/1?callback_url=(redacted)&timeout_ms=5000");
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(p.wait_exit(), 0);
}

TEST(crunchd, access_log_line_carries_the_request_id) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1"});
  const auto port = started_port(p);
  http_connection c(port);
  EXPECT_EQ(c.get("/work/1", "X-Request-Id: trace-42\r\n")->status, 200u);
  p.signal(SIGTERM);
  bool found = false;
  for (auto line = p.stdout_line(); !line.empty() && !found; line = p.stdout_line()) {
    const auto event = nlohmann::json::parse(line);
    if (event.at("event") != "access") continue;
    found = true;
    EXPECT_EQ(event.at("request_id"), "trace-42");
    EXPECT_EQ(event.at("target"), "/work/1");
    EXPECT_EQ(event.at("route"), "work");
    EXPECT_EQ(event.at("status"), 200);
    EXPECT_TRUE(event.contains("run_ms"));
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(p.wait_exit(), 0);
}

// A log collector that stops reading (a stuck logging driver, a full `docker logs` pipe): crunchd
// goes on serving, and SIGTERM still ends it within the drain timeout and the log's short flush
// (1 s), exit 0, every thread joined, saying on stderr how many lines it could not write.
TEST(crunchd, a_stdout_nobody_reads_does_not_hold_up_shutdown) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--drain-timeout", "1s"});
  const auto port = started_port(p);
  ASSERT_GT(fcntl(p.stdout_fd(), F_SETPIPE_SZ, 4096), 0);  // the smallest pipe: full in a few lines
  {
    http_connection c(port);
    for (int i = 0; i < 300; ++i) ASSERT_EQ(c.get("/work/0")->status, 200u);  // ~75 KB of access lines
  }
  const auto start = std::chrono::steady_clock::now();
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit_unread(20s), 0) << "still not gone 20 s after SIGTERM";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 6s);  // 1 s drain + 1 s flush, and room
  EXPECT_NE(p.all_stderr().find("log lines dropped"), std::string::npos);
}

// The reader of stdout is gone (EPIPE): crunchd is not killed by SIGPIPE, goes on serving, and
// exits 0 on SIGTERM, counting the lines it could not write.
TEST(crunchd, a_stdout_whose_reader_is_gone_costs_log_lines_only) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1"});
  const auto port = started_port(p);
  p.close_stdout();
  {
    http_connection c(port);
    for (int i = 0; i < 100; ++i) ASSERT_EQ(c.get("/work/0")->status, 200u);
    // Lines are dropped once the writer has met the broken pipe (within its 20 ms flush interval).
    std::optional<http_reply> metrics;
    for (int i = 0; i < 1000; ++i) {
      metrics = c.get("/metrics");
      ASSERT_TRUE(metrics);
      if (metrics->body.find("crunch_log_lines_dropped_total 0\n") == std::string::npos) break;
      ASSERT_EQ(c.get("/work/0")->status, 200u);
    }
    EXPECT_EQ(metrics->body.find("crunch_log_lines_dropped_total 0\n"), std::string::npos);
  }
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit_unread(20s), 0);
  EXPECT_NE(p.all_stderr().find("log lines dropped"), std::string::npos);
}

TEST(crunchd, api_keys_are_reread_on_sighup_without_dropping_connections_and_never_logged) {
  std::random_device random;
  const auto path = std::filesystem::temp_directory_path() /
                    ("crunch-keys-" + std::to_string(getpid()) + "-" + std::to_string(random()));
  const std::string first = "first-" + std::to_string(random()) + "-" + std::to_string(random());
  const std::string second = "second-" + std::to_string(random()) + "-" + std::to_string(random());
  std::ofstream(path) << "alice:" << first << "\n";
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--api-keys", path.string()});
  const auto port = started_port(p);
  const auto with = [](const std::string& key) { return "Authorization: Bearer " + key + "\r\n"; };
  EXPECT_EQ(http_connection(port).get("/work/1")->status, 401u);
  EXPECT_EQ(http_connection(port).get("/work/1", with(second))->status, 401u);
  http_connection kept(port);
  EXPECT_EQ(kept.get("/work/1", with(first))->status, 200u);

  std::ofstream(path) << "# alice's key was rotated\nbob:" << second << "\n";
  p.signal(SIGHUP);
  std::string log;
  ASSERT_TRUE(read_log_until(p, "api_keys_reloaded", log)) << log;
  EXPECT_EQ(http_connection(port).get("/work/1", with(first))->status, 401u);
  EXPECT_EQ(kept.get("/work/1", with(second))->status, 200u) << "the kept-alive connection was dropped";

  // A file that cannot be used keeps the keys there were.
  std::ofstream(path) << "carol " << first << "\n";
  p.signal(SIGHUP);
  ASSERT_TRUE(read_log_until(p, "api_keys_reload_failed", log)) << log;
  EXPECT_EQ(kept.get("/work/1", with(second))->status, 200u);

  p.signal(SIGTERM);
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) log += line + "\n";
  EXPECT_EQ(p.wait_exit(), 0);
  std::filesystem::remove(path);
  EXPECT_NE(log.find("\"client\":\"alice\""), std::string::npos) << log;  // names are logged
  EXPECT_NE(log.find("\"client\":\"bob\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"status\":401"), std::string::npos) << log;
  EXPECT_EQ(log.find(first), std::string::npos) << log;  // keys are not
  EXPECT_EQ(log.find(second), std::string::npos) << log;
}

TEST(crunchd, sigint_on_an_idle_server_exits_0) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1"});
  const auto port = started_port(p);
  http_connection c(port);
  EXPECT_EQ(c.get("/healthz")->status, 200u);
  p.signal(SIGINT);
  EXPECT_EQ(p.wait_exit(), 0);
  EXPECT_TRUE(c.closed_by_peer());
}

}  // namespace
}  // namespace crunch::testing
