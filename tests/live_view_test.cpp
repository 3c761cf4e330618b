#include "server/live_view.hpp"

#include "test_support.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>

#include <optional>

namespace crunch {
namespace {

using namespace std::chrono_literals;
using testing::http_connection;
using testing::next_event;
using testing::running_server;

// Parameters by value, no captures: the coroutine outlives the call that starts it.
net::awaitable<void> wait_for_snapshot(live_view* live, std::uint64_t seen, std::optional<bool>* result) {
  *result = co_await live->next_snapshot(seen);
}

struct live_view_unit : ::testing::Test {
  net::io_context io;
  metrics stats;
  metrics_gauges gauges{2, 1, 3, 16, 64 << 20, 5 << 20, 7, false, 0, {}, 0, 0};
  live_view live{io.get_executor(), stats, [this] { return gauges; }, 160ms};

  nlohmann::json latest() { return nlohmann::json::parse(live.latest()); }
};

TEST_F(live_view_unit, a_snapshot_has_the_intervals_lag_quantiles_and_the_gauges) {
  const auto start = live_view::clock::now();
  live.take_snapshot(start);
  for (int us = 1; us <= 100; ++us) live.observe_lag(std::chrono::microseconds(us));
  live.take_snapshot(start + 1s);
  const auto s = latest();
  EXPECT_EQ(s.at("loop_lag_ms").at("samples"), 100);
  EXPECT_DOUBLE_EQ(s.at("loop_lag_ms").at("p50").get<double>(), 0.050);
  EXPECT_DOUBLE_EQ(s.at("loop_lag_ms").at("p99").get<double>(), 0.099);
  EXPECT_DOUBLE_EQ(s.at("loop_lag_ms").at("max").get<double>(), 0.100);
  EXPECT_DOUBLE_EQ(s.at("interval_ms").get<double>(), 1000);
  EXPECT_EQ(s.at("workers"), (nlohmann::json{{"busy", 1}, {"total", 2}}));
  EXPECT_EQ(s.at("queue"), (nlohmann::json{{"depth", 3}, {"limit", 16}}));
  EXPECT_EQ(s.at("memory").at("in_use_bytes"), 5 << 20);
  EXPECT_EQ(s.at("connections"), 7);
  EXPECT_EQ(s.at("draining"), false);

  // The samples belong to the interval they were taken in.
  live.take_snapshot(start + 2s);
  EXPECT_EQ(latest().at("loop_lag_ms").at("samples"), 0);
  EXPECT_TRUE(latest().at("loop_lag_ms").at("p99").is_null());
}

TEST_F(live_view_unit, rates_are_the_counts_of_the_interval_over_its_length) {
  stats.add_kind("work");
  stats.count_job(job_outcome::completed);  // before the interval: in the total only
  const auto start = live_view::clock::now();
  live.take_snapshot(start);
  for (int i = 0; i < 10; ++i) {
    stats.count_job(job_outcome::completed);
    stats.observe_job("work", 1ms, 2ms);
    stats.count_request("work", 200, 3ms);
  }
  for (int i = 0; i < 3; ++i) stats.count_job(job_outcome::rejected_queue_full);
  live.take_snapshot(start + 500ms);
  const auto s = latest();
  EXPECT_DOUBLE_EQ(s.at("jobs_per_s").at("completed").get<double>(), 20);
  EXPECT_DOUBLE_EQ(s.at("jobs_per_s").at("rejected_queue_full").get<double>(), 6);
  EXPECT_DOUBLE_EQ(s.at("jobs_per_s").at("failed").get<double>(), 0);
  EXPECT_DOUBLE_EQ(s.at("jobs_run_per_s").at("work").get<double>(), 20);
  EXPECT_DOUBLE_EQ(s.at("requests_per_s").get<double>(), 20);
  EXPECT_EQ(s.at("jobs_total").at("completed"), 11);
  EXPECT_EQ(s.at("jobs_total").at("rejected_queue_full"), 3);
}

TEST_F(live_view_unit, streams_wait_for_the_next_snapshot_and_end_when_it_stops) {
  std::optional<bool> first;
  std::optional<bool> second;
  const auto seen = live.sequence();
  net::co_spawn(io, wait_for_snapshot(&live, seen, &first), net::detached);
  io.poll();
  EXPECT_FALSE(first);  // nothing newer yet
  live.take_snapshot(live_view::clock::now());
  io.poll();
  ASSERT_TRUE(first);
  EXPECT_TRUE(*first);
  EXPECT_EQ(live.sequence(), seen + 1);

  io.restart();
  net::co_spawn(io, wait_for_snapshot(&live, seen + 1, &second), net::detached);
  io.poll();
  EXPECT_FALSE(second);
  live.stop();
  io.poll();
  ASSERT_TRUE(second);
  EXPECT_FALSE(*second);
}

TEST_F(live_view_unit, streams_are_counted_up_to_the_limit_and_spread_over_the_interval) {
  EXPECT_EQ(live.open_stream(2), 0ms);
  EXPECT_EQ(live.open_stream(2), 10ms);  // 160 ms in 16 slots
  EXPECT_FALSE(live.open_stream(2));
  EXPECT_EQ(live.streams(), 2u);
  live.close_stream();
  EXPECT_EQ(live.open_stream(2), 20ms);
  for (int i = 0; i < 13; ++i) {
    live.close_stream();
    EXPECT_TRUE(live.open_stream(2));
  }
  live.close_stream();
  EXPECT_EQ(live.open_stream(2), 0ms);  // the slots wrap around
}

// --- over HTTP ------------------------------------------------------------------------------------

config live_config() {
  auto cfg = testing::test_config();
  cfg.event_interval = 20ms;
  return cfg;
}

// Opens /v1/events on `c` and checks the head of the answer.
void open_stream(http_connection& c) {
  c.send_get("/v1/events");
  const auto head = c.read_until("\r\n\r\n");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << *head;
  EXPECT_NE(head->find("Content-Type: text/event-stream\r\n"), std::string::npos);
  EXPECT_NE(head->find("Cache-Control: no-store\r\n"), std::string::npos);
  EXPECT_NE(head->find("Server-Timing: total;dur="), std::string::npos);
  EXPECT_NE(head->find("Connection: close\r\n"), std::string::npos);
  EXPECT_EQ(head->find("Content-Length"), std::string::npos);
}

TEST(live_view, events_stream_snapshots_past_the_idle_and_read_timeouts) {
  auto cfg = live_config();
  cfg.idle_timeout = 100ms;
  cfg.read_timeout = 100ms;
  running_server server(cfg);
  http_connection c(server.port());
  open_stream(c);
  // 25 snapshots at 20 ms: half a second, five idle timeouts.
  const auto started = std::chrono::steady_clock::now();
  std::int64_t last_time = 0;
  for (int i = 0; i < 25; ++i) {
    const auto event = next_event(c);
    ASSERT_TRUE(event) << "stream ended after " << i << " events";
    EXPECT_GE(event->at("time_ms").get<std::int64_t>(), last_time);
    last_time = event->at("time_ms").get<std::int64_t>();
    EXPECT_EQ(event->at("workers").at("total"), 2);
    // The first is the snapshot taken before the stream opened.
    if (i > 0) {
      EXPECT_EQ(event->at("event_streams"), 1);
    }
  }
  EXPECT_GT(std::chrono::steady_clock::now() - started, 2 * cfg.idle_timeout);
}

TEST(live_view, stats_shows_the_jobs_that_ran) {
  running_server server(live_config());
  http_connection c(server.port());
  ASSERT_EQ(c.get("/work/1")->status, 200u);
  // The next snapshot counts it.
  for (int i = 0; i < 1000; ++i) {
    const auto stats = c.get("/v1/stats");
    ASSERT_TRUE(stats);
    ASSERT_EQ(stats->status, 200u);
    if (testing::json_of(*stats).at("jobs_total").at("completed") == 1) return;
  }
  FAIL() << "no snapshot counted the job";
}

TEST(live_view, streams_beyond_the_limit_get_503_and_a_closed_one_frees_its_place) {
  auto cfg = live_config();
  cfg.max_event_streams = 2;
  running_server server(cfg);
  std::optional<http_connection> a(std::in_place, server.port());
  http_connection b(server.port());
  open_stream(*a);
  open_stream(b);
  ASSERT_TRUE(next_event(*a));
  ASSERT_TRUE(next_event(b));
  {
    http_connection third(server.port());
    const auto refused = third.get("/v1/events");
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 503u);
    EXPECT_EQ(testing::error_code_of(*refused), "too_many_streams");
    EXPECT_FALSE(refused->header("retry-after").empty());
  }
  a.reset();  // the client leaves: the server notices at its next write
  http_connection observer(server.port());
  ASSERT_TRUE(testing::wait_for_metric(observer, "\ncrunch_event_streams_open 1\n", 100'000));
  http_connection again(server.port());
  open_stream(again);
  EXPECT_TRUE(next_event(again));
}

TEST(live_view, a_drain_ends_every_stream_at_once) {
  auto cfg = live_config();
  cfg.drain_timeout = 30s;
  running_server server(cfg);
  http_connection c(server.port());
  open_stream(c);
  ASSERT_TRUE(next_event(c));
  const auto started = std::chrono::steady_clock::now();
  server.stop();
  EXPECT_TRUE(c.drain_until_closed());
  EXPECT_TRUE(server.wait_stopped(10s));
  // Not the drain timeout: the stream is not in-flight work to wait for.
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
}

TEST(live_view, a_reader_that_stops_reading_is_dropped_not_buffered_for) {
  auto cfg = live_config();
  cfg.event_interval = 10ms;
  running_server server(cfg);
  http_connection slow(server.port());
  slow.shrink_receive_buffer();
  open_stream(slow);
  // ... and reads no more. Its socket buffers fill, its next write times out, and it is closed.
  http_connection observer(server.port());
  ASSERT_TRUE(testing::wait_for_metric(observer, "\ncrunch_event_streams_slow_total 1\n", 1'000'000));
  EXPECT_TRUE(testing::wait_for_metric(observer, "\ncrunch_event_streams_open 0\n", 100'000));
  EXPECT_TRUE(slow.drain_until_closed());
}

TEST(live_view, off_with_ui_false) {
  auto cfg = live_config();
  cfg.ui = false;
  running_server server(cfg);
  http_connection c(server.port());
  for (const char* target : {"/", "/v1/stats", "/v1/events", "/ui/live.js"}) {
    const auto r = c.get(target);
    ASSERT_TRUE(r) << target;
    EXPECT_EQ(r->status, 404u) << target;
  }
  const auto metrics = c.get("/metrics");
  EXPECT_NE(metrics->body.find("\ncrunch_event_streams_open 0\n"), std::string::npos);
}

}  // namespace
}  // namespace crunch
