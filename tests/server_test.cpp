// Integration tests: the real server on 127.0.0.1 port 0, spoken to over TCP.
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <ctime>
#include <string>
#include <tuple>
#include <vector>

namespace crunch::testing {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

struct server_test : ::testing::Test {
  std::shared_ptr<job_probe> probe = std::make_shared<job_probe>();
};

TEST_F(server_test, a_job_answers_its_value_and_headers) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto r = c.get("/work/2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->header("content-type"), "application/json");
  EXPECT_EQ(json_of(*r), (nlohmann::json{{"ms", 2}}));
  const auto timing = r->header("server-timing");
  EXPECT_NE(timing.find("queue;dur="), std::string::npos) << timing;
  EXPECT_NE(timing.find("compute;dur="), std::string::npos) << timing;
  EXPECT_FALSE(r->header("x-request-id").empty());
  EXPECT_EQ(r->header("server").rfind("crunch/", 0), 0u);
}

TEST_F(server_test, every_response_carries_a_date_in_imf_fixdate_form) {
  running_server s(test_config());
  http_connection c(s.port());
  for (const auto* target : {"/healthz", "/work/1", "/no/such/route", "/metrics"}) {
    const auto before = std::chrono::system_clock::now();
    const auto r = c.get(target);
    const auto after = std::chrono::system_clock::now();
    ASSERT_TRUE(r) << target;
    const auto date = r->header("date");
    // RFC 9110 §5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT".
    std::tm t{};
    const char* end = ::strptime(date.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &t);
    ASSERT_TRUE(end != nullptr && *end == '\0' && date.size() == 29) << target << ": '" << date << "'";
    const auto when = std::chrono::system_clock::from_time_t(::timegm(&t));
    EXPECT_GE(when, std::chrono::floor<std::chrono::seconds>(before) - 1s) << date;
    EXPECT_LE(when, after + 1s) << date;
  }
}

TEST_F(server_test, a_tiny_job_runs_on_the_io_thread_and_a_larger_one_on_a_worker) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto tiny = c.get("/work/0");  // nothing by its cost model: under --inline-max-us
  ASSERT_TRUE(tiny);
  EXPECT_EQ(tiny->status, 200u);
  EXPECT_EQ(json_of(*tiny).at("ms"), 0);
  EXPECT_EQ(tiny->header("server-timing").rfind("queue;dur=0.000, compute;dur=", 0), 0u) << tiny->header("server-timing");
  EXPECT_EQ(c.get("/work/2")->status, 200u);  // 2 ms: a worker
  const auto metrics = c.get("/metrics")->body;
  EXPECT_NE(metrics.find("\ncrunch_jobs_inline_total 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\ncrunch_jobs_total{outcome=\"completed\"} 2\n"), std::string::npos) << metrics;

  auto off = test_config();
  off.inline_max = 0us;
  running_server without(off);
  http_connection d(without.port());
  EXPECT_EQ(d.get("/work/0")->status, 200u);
  EXPECT_NE(d.get("/metrics")->body.find("\ncrunch_jobs_inline_total 0\n"), std::string::npos);
}

TEST_F(server_test, request_id_is_echoed_when_safe_and_generated_otherwise) {
  running_server s(test_config());
  http_connection c(s.port());
  EXPECT_EQ(c.get("/healthz", "X-Request-Id: abc-123.x\r\n")->header("x-request-id"), "abc-123.x");
  const auto unsafe = c.get("/healthz", "X-Request-Id: <script>\r\n")->header("x-request-id");
  EXPECT_NE(unsafe, "<script>");
  EXPECT_FALSE(unsafe.empty());
  const auto a = c.get("/healthz")->header("x-request-id");
  const auto b = c.get("/healthz")->header("x-request-id");
  EXPECT_NE(a, b);
}

TEST_F(server_test, every_bad_integer_is_400_with_the_json_error) {
  auto cfg = test_config();
  cfg.settings["work-max-ms"] = 92;
  running_server s(cfg);
  http_connection c(s.port());
  for (const std::string& ms : std::vector<std::string>{"-1", "93", "abc", "1e3", "+5", "%207", "", "4.5",
                                                      "18446744073709551656", std::string(400, '9')}) {
    const auto r = c.get("/work/" + ms);
    ASSERT_TRUE(r) << ms;
    EXPECT_EQ(r->status, 400u) << ms;
    EXPECT_EQ(error_code_of(*r), "invalid_argument") << ms;
    EXPECT_EQ(json_of(*r).at("error").at("message"), "ms must be an integer in 0..92");
  }
}

TEST_F(server_test, raw_space_in_the_target_is_a_malformed_request) {
  running_server s(test_config());
  http_connection c(s.port());
  c.send("GET /work/ 7 HTTP/1.1\r\nHost: x\r\n\r\n");
  const auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400u);
  EXPECT_EQ(error_code_of(*r), "bad_request");
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(server_test, unknown_route_404_and_wrong_method_405_with_allow) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto missing = c.get("/nope");
  EXPECT_EQ(missing->status, 404u);
  EXPECT_EQ(error_code_of(*missing), "not_found");
  c.send("POST /work/3 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  const auto post = c.read();
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405u);
  EXPECT_EQ(post->header("allow"), "GET");
  EXPECT_EQ(error_code_of(*post), "method_not_allowed");
  c.send("DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  const auto del = c.read();
  EXPECT_EQ(del->status, 405u);
  EXPECT_EQ(del->header("allow"), "GET, HEAD");
}

TEST_F(server_test, head_gets_headers_without_a_body) {
  running_server s(test_config());
  http_connection c(s.port());
  c.send("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  const auto head = c.read(true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200u);
  EXPECT_EQ(head->header("content-length"), "15");
  EXPECT_TRUE(head->body.empty());
  // The connection is still in sync: the next answer is the next request's.
  EXPECT_EQ(json_of(*c.get("/work/1")).at("ms"), 1);
}

TEST_F(server_test, several_requests_on_one_kept_alive_connection) {
  running_server s(test_config());
  http_connection c(s.port());
  for (int ms = 0; ms < 20; ++ms) {
    const auto r = c.get("/work/" + std::to_string(ms % 3));
    ASSERT_TRUE(r) << ms;
    EXPECT_TRUE(r->keep_alive);
    EXPECT_EQ(json_of(*r).at("ms"), ms % 3);
  }
  EXPECT_EQ(c.get("/healthz")->status, 200u);
}

TEST_F(server_test, pipelined_requests_are_answered_in_order) {
  running_server s(test_config(4), test_jobs(probe));
  http_connection c(s.port());
  // A slow job first: the faster requests behind it must still wait their turn.
  c.send("GET /work/150 HTTP/1.1\r\nHost: x\r\n\r\nGET /work/20 HTTP/1.1\r\nHost: x\r\n\r\n"
         "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /work/0 HTTP/1.1\r\nHost: x\r\n\r\n");
  const auto first = c.read();
  ASSERT_TRUE(first);
  EXPECT_EQ(json_of(*first).at("ms"), 150);
  const auto second = c.read();
  ASSERT_TRUE(second);
  EXPECT_EQ(json_of(*second).at("ms"), 20);
  const auto third = c.read();
  ASSERT_TRUE(third);
  EXPECT_EQ(json_of(*third).at("status"), "ok");
  const auto fourth = c.read();
  ASSERT_TRUE(fourth);
  EXPECT_EQ(json_of(*fourth).at("ms"), 0);
}

TEST_F(server_test, connection_close_is_honoured) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto r = c.get("/healthz", "Connection: close\r\n");
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->keep_alive);
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(server_test, oversized_headers_get_431_and_oversized_body_413) {
  auto cfg = test_config();
  cfg.max_header_bytes = 1024;
  cfg.max_body_bytes = 100;
  running_server s(cfg);
  {
    http_connection c(s.port());
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n");
    const auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 431u);
    EXPECT_EQ(error_code_of(*r), "header_too_large");
  }
  {
    http_connection c(s.port());
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + std::string(5000, 'b'));
    const auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413u);
    EXPECT_EQ(error_code_of(*r), "body_too_large");
  }
  http_connection c(s.port());
  EXPECT_EQ(c.get("/healthz")->status, 200u);
}

TEST_F(server_test, deadline_gives_504_and_frees_the_worker) {
  running_server s(test_config(1), test_jobs(probe));
  http_connection c(s.port());
  const auto start = clock::now();
  // No cost model, so admission cannot know it will be late: it runs until its deadline stops it.
  const auto r = c.get("/opaque/30000?timeout_ms=200");
  const auto took = clock::now() - start;
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504u);
  EXPECT_EQ(error_code_of(*r), "deadline_exceeded");
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 5s);
  EXPECT_TRUE(probe->wait_stopped(1));  // the job saw its stop token
  // The only worker is free again: a short job completes at once.
  const auto next = c.get("/work/1");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200u);
}

TEST_F(server_test, full_queue_gives_503_with_retry_after_at_once) {
  auto cfg = test_config(1);
  cfg.queue_limit = 1;
  cfg.drain_timeout = 100ms;  // the spinning job is left to the drain to cancel
  running_server s(cfg, test_jobs(probe));
  // Jobs without a cost model, so that only the queue limit can refuse them.
  http_connection running(s.port());
  running.send_get("/opaque/20000");
  ASSERT_TRUE(probe->wait_started(1));
  http_connection queued(s.port());
  queued.send_get("/opaque/1");
  http_connection observer(s.port());
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_job_queue_depth 1\n"));
  const auto start = clock::now();
  const auto refused = observer.get("/opaque/1");
  ASSERT_TRUE(refused);
  EXPECT_LT(clock::now() - start, 1s);
  EXPECT_EQ(refused->status, 503u);
  EXPECT_EQ(error_code_of(*refused), "overloaded");
  EXPECT_FALSE(refused->header("retry-after").empty());
  EXPECT_NE(observer.get("/metrics")->body.find("crunch_jobs_total{outcome=\"rejected_queue_full\"} 1\n"),
            std::string::npos);
}

TEST_F(server_test, job_that_would_miss_its_deadline_behind_the_backlog_is_refused_at_once) {
  auto cfg = test_config(1);
  cfg.drain_timeout = 100ms;
  running_server s(cfg, test_jobs(probe));
  http_connection running(s.port());
  running.send_get("/work/10000?timeout_ms=60000");  // the cost model says: the only worker is taken for 10 s
  ASSERT_TRUE(probe->wait_started(1));
  http_connection c(s.port());
  const auto start = clock::now();
  const auto refused = c.get("/work/100?timeout_ms=2000");
  ASSERT_TRUE(refused);
  EXPECT_LT(clock::now() - start, 1s);  // at once, not after waiting for 2 s
  EXPECT_EQ(refused->status, 503u);
  EXPECT_EQ(error_code_of(*refused), "overloaded");
  // About 10 s of booked work ahead, 2 s of deadline: retry in about 8 s.
  const int retry_after = std::stoi(refused->header("retry-after"));
  EXPECT_GE(retry_after, 7);
  EXPECT_LE(retry_after, 9);
  EXPECT_EQ(probe->started(), 1);  // never started
  // A job that fits alone but not behind the backlog is refused; the cheap routes still answer.
  EXPECT_EQ(c.get("/healthz")->status, 200u);
  EXPECT_NE(c.get("/metrics")->body.find("crunch_jobs_total{outcome=\"rejected_would_miss_deadline\"} 1\n"),
            std::string::npos);
}

TEST_F(server_test, job_whose_deadline_passes_in_the_queue_is_never_started) {
  auto cfg = test_config(1);
  running_server s(cfg, test_jobs(probe));
  http_connection running(s.port());
  running.send_get("/opaque/1000");
  ASSERT_TRUE(probe->wait_started(1));
  http_connection waiting(s.port());
  const auto r = waiting.get("/opaque/10?timeout_ms=200");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504u);
  EXPECT_EQ(json_of(*running.read()).at("ms"), 1000);
  EXPECT_EQ(probe->started(), 1);  // the expired job was dropped from the queue, not run
}

// An hour of work by its exact model cannot meet 200 ms even alone: a 504 at once, and no worker
// spends the 200 ms on it. (A job that is let in and then outlasts its deadline is stopped at it:
// each kind's stops_within_100_ms_of_its_deadline_or_of_its_client_leaving.)
TEST_F(server_test, a_job_longer_than_its_deadline_is_refused_at_once) {
  running_server s(test_config(1));
  http_connection c(s.port());
  const auto start = clock::now();
  const auto r = c.get("/work/3600000?timeout_ms=200");
  const auto took = clock::now() - start;
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504u);
  EXPECT_LT(took, 200ms);
  EXPECT_EQ(sample(c.get("/metrics")->body, R"(crunch_jobs_total{outcome="rejected_would_miss_deadline"})"), 1);
  const auto quick_start = clock::now();
  const auto quick = c.get("/work/1");
  ASSERT_TRUE(quick);
  EXPECT_EQ(quick->status, 200u);
  EXPECT_LT(clock::now() - quick_start, 2s);  // the only worker was free at once
}

TEST_F(server_test, client_that_disconnects_mid_job_stops_it) {
  running_server s(test_config(1), test_jobs(probe));
  {
    http_connection c(s.port());
    c.send_get("/opaque/30000");  // no cost model: let in whatever its deadline
    ASSERT_TRUE(probe->wait_started(1));
  }  // the client goes away
  const auto gone = clock::now();
  ASSERT_TRUE(probe->wait_stopped(1, 10s));
  EXPECT_LT(clock::now() - gone, 2s);
  http_connection c(s.port());
  const auto r = c.get("/work/1");  // the worker is free again
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_NE(c.get("/metrics")->body.find("crunch_jobs_total{outcome=\"cancelled_client_gone\"} 1\n"),
            std::string::npos);
}

TEST_F(server_test, client_that_disconnects_while_queued_drops_its_job) {
  running_server s(test_config(1), test_jobs(probe));
  http_connection running(s.port());
  running.send_get("/opaque/500");
  ASSERT_TRUE(probe->wait_started(1));
  {
    http_connection queued(s.port());
    queued.send_get("/opaque/10");
    http_connection observer(s.port());
    ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_job_queue_depth 1\n"));
  }
  EXPECT_EQ(json_of(*running.read()).at("ms"), 500);
  http_connection c(s.port());
  EXPECT_EQ(c.get("/healthz")->status, 200u);
  EXPECT_EQ(probe->started(), 1);  // the abandoned job never ran
}

TEST_F(server_test, pipelined_bytes_that_arrive_during_a_job_are_kept) {
  running_server s(test_config(1), test_jobs(probe));
  http_connection c(s.port());
  c.send_get("/work/200");
  ASSERT_TRUE(probe->wait_started(1));
  c.send_get("/work/7");  // read by the disconnect watcher while the job runs
  const auto first = c.read();
  ASSERT_TRUE(first);
  EXPECT_EQ(json_of(*first).at("ms"), 200);
  const auto second = c.read();
  ASSERT_TRUE(second);
  EXPECT_EQ(json_of(*second).at("ms"), 7);
}

TEST_F(server_test, a_job_that_throws_gives_500_and_the_server_goes_on) {
  running_server s(test_config(1), test_jobs(probe));
  http_connection c(s.port());
  const auto r = c.get("/throw/kaput");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500u);
  EXPECT_EQ(error_code_of(*r), "job_failed");
  EXPECT_EQ(json_of(*r).at("error").at("message"), "kaput");
  EXPECT_EQ(c.get("/work/1")->status, 200u);
}

// The promise: with every worker busy, the I/O thread still answers cheap requests at once.
// The inline half shows that the test can fail: there the job blocks the loop.
std::chrono::nanoseconds healthz_latency_with_workers_busy(run_mode mode, job_probe& probe, job_registry jobs) {
  constexpr std::size_t workers = 2;
  auto cfg = test_config(workers);
  cfg.mode = mode;
  running_server s(cfg, std::move(jobs));
  std::vector<std::unique_ptr<http_connection>> busy;
  const int jobs_to_start = mode == run_mode::offload ? static_cast<int>(workers) : 1;
  for (int i = 0; i < jobs_to_start; ++i) {
    busy.push_back(std::make_unique<http_connection>(s.port()));
    busy.back()->send_get("/work/1500");
  }
  EXPECT_TRUE(probe.wait_started(jobs_to_start));
  http_connection c(s.port());
  std::chrono::nanoseconds worst{0};
  for (int i = 0; i < 5; ++i) {
    const auto start = clock::now();
    const auto r = c.get("/healthz");
    worst = std::max(worst, std::chrono::nanoseconds(clock::now() - start));
    EXPECT_TRUE(r);
  }
  for (auto& b : busy) EXPECT_EQ(b->read()->status, 200u);
  return worst;
}

TEST_F(server_test, healthz_stays_fast_while_every_worker_is_busy) {
  const auto worst = healthz_latency_with_workers_busy(run_mode::offload, *probe, test_jobs(probe));
  EXPECT_LT(worst, 50ms) << "worst /healthz latency " << std::chrono::duration<double, std::milli>(worst).count()
                          << " ms";
}

TEST_F(server_test, healthz_is_blocked_in_inline_mode) {
  const auto worst = healthz_latency_with_workers_busy(run_mode::inline_, *probe, test_jobs(probe));
  EXPECT_GT(worst, 200ms) << "inline mode should block the loop; worst /healthz latency "
                          << std::chrono::duration<double, std::milli>(worst).count() << " ms";
}

// From a scrape: how many loop-lag observations there are, and how many were later than `le`.
std::pair<long, long> loop_lag(const std::string& scrape, const std::string& le) {
  auto value_after = [&](const std::string& prefix) {
    const auto at = scrape.find(prefix);
    return at == std::string::npos ? -1L : std::stol(scrape.substr(at + prefix.size()));
  };
  const long count = value_after("\ncrunch_event_loop_lag_seconds_count ");
  const long within = value_after("\ncrunch_event_loop_lag_seconds_bucket{le=\"" + le + "\"} ");
  return {count, count - within};
}

TEST_F(server_test, loop_lag_stays_low_while_workers_are_saturated) {
  running_server s(test_config(2), test_jobs(probe));
  http_connection a(s.port()), b(s.port()), observer(s.port());
  a.send_get("/work/1500");
  b.send_get("/work/1500");
  ASSERT_TRUE(probe->wait_started(2));
  const auto [before, late_before] = loop_lag(observer.get("/metrics")->body, "0.05");
  long count = before;
  long late = late_before;
  for (int attempt = 0; attempt < 100000 && count < before + 50; ++attempt) {  // 50 samples: ~0.5 s
    std::tie(count, late) = loop_lag(observer.get("/metrics")->body, "0.05");
  }
  EXPECT_GE(count, before + 50);
  EXPECT_EQ(late, late_before) << "the loop was held for over 50 ms while only the workers were busy";
  EXPECT_EQ(a.read()->status, 200u);
  EXPECT_EQ(b.read()->status, 200u);
}

TEST_F(server_test, loop_lag_shows_an_inline_job_holding_the_loop) {
  auto cfg = test_config(1);
  cfg.mode = run_mode::inline_;
  running_server s(cfg, test_jobs(probe));
  http_connection c(s.port());
  EXPECT_EQ(loop_lag(c.get("/metrics")->body, "0.25").second, 0);
  EXPECT_EQ(c.get("/work/600")->status, 200u);  // 600 ms on the I/O thread
  EXPECT_GE(loop_lag(c.get("/metrics")->body, "0.25").second, 1);
}

TEST_F(server_test, metrics_count_requests_by_route_and_job_times_by_kind) {
  running_server s(test_config(1));
  http_connection c(s.port());
  EXPECT_EQ(c.get("/work/1")->status, 200u);
  EXPECT_EQ(c.get("/work/x")->status, 400u);
  EXPECT_EQ(c.get("/nope")->status, 404u);
  const auto scrape = c.get("/metrics");
  ASSERT_TRUE(scrape);
  EXPECT_EQ(scrape->header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const auto& text = scrape->body;
  EXPECT_NE(text.find("crunch_http_requests_total{route=\"work\",code=\"200\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_http_requests_total{route=\"work\",code=\"400\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_http_requests_total{route=\"unmatched\",code=\"404\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_job_run_seconds_count{kind=\"work\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_job_queue_wait_seconds_count{kind=\"work\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_http_request_duration_seconds_count{route=\"work\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("\nprocess_resident_memory_bytes "), std::string::npos);
  EXPECT_NE(text.find("crunch_build_info{version=\""), std::string::npos);
}

TEST_F(server_test, drain_finishes_in_flight_closes_idle_and_turns_readyz_503) {
  running_server s(test_config(2), test_jobs(probe));
  http_connection idle(s.port());
  EXPECT_EQ(idle.get("/healthz")->status, 200u);  // now idle, kept alive
  http_connection busy(s.port());
  // A job in flight, with a readiness probe pipelined behind it.
  busy.send("GET /work/300 HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(probe->wait_started(1));
  s.stop();
  EXPECT_TRUE(idle.closed_by_peer());
  const auto job = busy.read();
  ASSERT_TRUE(job);
  EXPECT_EQ(job->status, 200u);  // finished, not cut off
  const auto ready = busy.read();
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503u);
  EXPECT_EQ(error_code_of(*ready), "draining");
  EXPECT_FALSE(ready->keep_alive);
  EXPECT_TRUE(busy.closed_by_peer());
  EXPECT_TRUE(s.wait_stopped(10s));
}

TEST_F(server_test, drain_timeout_stops_running_jobs_with_503) {
  auto cfg = test_config(1);
  cfg.drain_timeout = 200ms;
  running_server s(cfg, test_jobs(probe));
  http_connection busy(s.port());
  busy.send_get("/opaque/60000");
  ASSERT_TRUE(probe->wait_started(1));
  const auto start = clock::now();
  s.stop();
  const auto r = busy.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503u);
  EXPECT_EQ(error_code_of(*r), "draining");
  EXPECT_FALSE(r->keep_alive);
  EXPECT_TRUE(s.wait_stopped(10s));
  EXPECT_LT(clock::now() - start, 2s);
  EXPECT_TRUE(probe->wait_stopped(1));  // the running job was told to stop
}

TEST_F(server_test, drain_answers_queued_jobs_that_cannot_finish_with_503_at_once) {
  auto cfg = test_config(1);
  cfg.drain_timeout = 3s;
  running_server s(cfg, test_jobs(probe));
  http_connection running(s.port());
  running.send_get("/work/1000");
  ASSERT_TRUE(probe->wait_started(1));
  http_connection fits(s.port());
  fits.send_get("/work/300");      // 1.0 s + 0.3 s: done well within 3 s
  http_connection too_long(s.port());
  too_long.send_get("/work/5000");  // would end at about 6.3 s
  http_connection observer(s.port());
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_job_queue_depth 2\n"));
  const auto start = clock::now();
  s.stop();
  const auto cut = too_long.read();
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->status, 503u);
  EXPECT_EQ(error_code_of(*cut), "draining");
  EXPECT_LT(clock::now() - start, 900ms);  // at once, before the running job is done
  EXPECT_EQ(json_of(*running.read()).at("ms"), 1000);
  EXPECT_EQ(json_of(*fits.read()).at("ms"), 300);
  EXPECT_TRUE(s.wait_stopped(10s));
  EXPECT_LT(clock::now() - start, 3s);  // within the drain timeout
  EXPECT_EQ(probe->started(), 2);       // the cut job never ran
}

}  // namespace
}  // namespace crunch::testing
