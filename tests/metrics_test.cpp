#include "server/metrics.hpp"

#include <gtest/gtest.h>

#include <sstream>

namespace crunch {
namespace {

using namespace std::chrono_literals;

TEST(histogram, buckets_are_cumulative_and_inclusive) {
  histogram h({0.1, 0.5, 1});
  h.observe(0.05);
  h.observe(0.1);   // on the bound: counts in le="0.1"
  h.observe(0.3);
  h.observe(2.0);   // only in +Inf
  EXPECT_EQ(h.cumulative(0), 2u);
  EXPECT_EQ(h.cumulative(1), 3u);
  EXPECT_EQ(h.cumulative(2), 3u);
  EXPECT_EQ(h.count(), 4u);
  EXPECT_DOUBLE_EQ(h.sum(), 2.45);
}

TEST(exposition, histogram_lines_with_inf_sum_and_count) {
  histogram h({0.25, 1});
  h.observe(0.1);
  h.observe(3);
  std::ostringstream text;
  exposition out(text);
  out.header("x_seconds", "histogram", "A test.");
  out.histogram_samples("x_seconds", label("kind", "work"), h);
  EXPECT_EQ(text.str(),
            "# HELP x_seconds A test.\n"
            "# TYPE x_seconds histogram\n"
            "x_seconds_bucket{kind=\"work\",le=\"0.25\"} 1\n"
            "x_seconds_bucket{kind=\"work\",le=\"1\"} 1\n"
            "x_seconds_bucket{kind=\"work\",le=\"+Inf\"} 2\n"
            "x_seconds_sum{kind=\"work\"} 3.1\n"
            "x_seconds_count{kind=\"work\"} 2\n");
}

TEST(exposition, unlabelled_samples_and_numbers) {
  std::ostringstream text;
  exposition out(text);
  out.sample("a", "", 0);
  out.sample("b", "", 407156);
  out.sample("c", "", 0.000123);
  out.sample("d", "", 200);
  out.sample("e", "", 1e6);
  out.sample("f", "", 0.5);
  EXPECT_EQ(text.str(), "a 0\nb 407156\nc 0.000123\nd 200\ne 1000000\nf 0.5\n");
}

TEST(exposition, label_values_are_escaped) {
  EXPECT_EQ(label("route", "plain"), "route=\"plain\"");
  EXPECT_EQ(label("v", "a\\b\"c\nd"), "v=\"a\\\\b\\\"c\\nd\"");
}

TEST(metrics, render_has_every_family_once_with_help_and_type) {
  metrics m;
  m.count_request("work", 200, 3ms);
  m.count_request("work", 400, 10us);
  m.count_request("weird\"route", 404, 10us);
  m.observe_job("work", 1ms, 100ms);
  m.count_job(job_outcome::completed);
  m.observe_loop_lag(20us);
  metrics_gauges gauges{2, 1, 3, 16, 48 << 20, 19 << 20, 5, false, 0, {131, 119, 4'500'000'000}, 0.25};
  gauges.memory_kept = 6 << 20;
  const auto text = m.render(gauges, read_process_stats());
  for (const char* family : {"crunch_http_requests_total", "crunch_http_request_duration_seconds",
                             "crunch_job_queue_wait_seconds", "crunch_job_run_seconds", "crunch_jobs_total",
                             "crunch_event_loop_lag_seconds", "crunch_job_queue_depth", "crunch_workers_busy",
                             "crunch_build_info", "process_resident_memory_bytes", "process_cpu_seconds_total",
                             "process_open_fds", "process_start_time_seconds"}) {
    const std::string type = std::string("# TYPE ") + family + " ";
    const auto first = text.find(type);
    EXPECT_NE(first, std::string::npos) << family;
    EXPECT_EQ(text.find(type, first + 1), std::string::npos) << family << " declared twice";
  }
  EXPECT_NE(text.find("crunch_http_requests_total{route=\"work\",code=\"200\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_http_requests_total{route=\"weird\\\"route\",code=\"404\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_job_run_seconds_count{kind=\"work\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_jobs_total{outcome=\"completed\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_event_loop_lag_seconds_bucket{le=\"2.5e-05\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_job_queue_depth 3\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_memory_budget_bytes 50331648\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_job_memory_bytes 19922944\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_job_memory_kept_bytes 6291456\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_cpu_quota_periods_total 131\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_cpu_quota_throttled_periods_total 119\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_cpu_quota_throttled_seconds_total 4.5\n"), std::string::npos);
  EXPECT_NE(text.find("crunch_workers_paced_seconds_total 0.25\n"), std::string::npos);
}

TEST(process_stats, reads_this_process) {
  const auto p = read_process_stats();
  EXPECT_GT(p.resident_bytes, 1024 * 1024);
  EXPECT_GT(p.open_fds, 2);
  EXPECT_GT(p.max_fds, p.open_fds);
  EXPECT_GT(p.start_time_seconds, 1.6e9);  // after 2020
}

}  // namespace
}  // namespace crunch
