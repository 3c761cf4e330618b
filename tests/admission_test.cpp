#include "server/admission.hpp"

#include <gtest/gtest.h>

namespace crunch {
namespace {

using namespace std::chrono_literals;

TEST(admission, kinds_without_a_rate_have_no_estimate) {
  admission a;
  EXPECT_EQ(a.estimate("work", 1000), std::nullopt);
  a.set_rate("work", 0.5);
  EXPECT_EQ(a.estimate("work", 1000), 500ns);
}

TEST(admission, estimates_saturate_instead_of_overflowing) {
  admission a;
  a.set_rate("work", 0.3);
  const auto years = a.estimate("work", 1.8e19);
  ASSERT_TRUE(years);
  EXPECT_GT(*years, std::chrono::hours(24 * 365));
}

TEST(admission, admits_when_the_wait_leaves_time) {
  const admission a;
  const auto d = a.decide(1s, 5s, 1s);
  EXPECT_TRUE(d.admit);
  EXPECT_EQ(d.expected_wait, 1s);
}

TEST(admission, refuses_a_job_the_backlog_would_make_late_and_says_when_to_retry) {
  const admission a;
  const auto d = a.decide(1s, 3s, 8s);  // would finish at about 9 s, 6 s late
  EXPECT_FALSE(d.admit);
  EXPECT_EQ(d.retry_after, 6s);
}

TEST(admission, refuses_when_the_wait_alone_outlasts_the_deadline_even_without_a_cost) {
  const admission a;
  EXPECT_FALSE(a.decide(std::nullopt, 2s, 5s).admit);
  EXPECT_TRUE(a.decide(std::nullopt, 6s, 5s).admit);
}

TEST(admission, refuses_a_job_too_long_even_alone_as_hopeless_and_not_as_a_backlog) {
  const admission a;
  const auto alone = a.decide(std::chrono::hours(1), 200ms, 0s);
  EXPECT_FALSE(alone.admit);
  EXPECT_TRUE(alone.hopeless);
  const auto just = a.decide(200ms, 200ms, 0s);
  EXPECT_TRUE(just.admit);
  const auto behind = a.decide(150ms, 200ms, 100ms);  // fits alone, not behind the backlog
  EXPECT_FALSE(behind.admit);
  EXPECT_FALSE(behind.hopeless);
  EXPECT_EQ(behind.retry_after, 1s);
}

TEST(admission, learns_the_rate_from_completed_jobs) {
  admission a;
  a.set_rate("work", 1.0);
  for (int i = 0; i < 50; ++i) a.learn("work", 1e6, 2ms);  // really 2 ns per unit
  EXPECT_NEAR(*a.rate("work"), 2.0, 0.01);
  a.learn("work", 10, 1us);  // too short to learn from
  EXPECT_NEAR(*a.rate("work"), 2.0, 0.01);
  a.learn("opaque", 1e6, 2ms);  // no model: stays without one
  EXPECT_EQ(a.rate("opaque"), std::nullopt);
}

TEST(admission, one_job_the_model_does_not_explain_moves_the_rate_by_at_most_1_6_times) {
  admission a;
  a.set_rate("upload", 20.0);
  a.learn("upload", 16, 10ms);  // 625,000 ns a unit: start-up, not pixels
  EXPECT_NEAR(*a.rate("upload"), 32.0, 1e-9);
  a.learn("upload", 1e9, 1ms);  // and as little the other way
  EXPECT_NEAR(*a.rate("upload"), 32.0 * 0.85, 1e-9);
  for (int i = 0; i < 30; ++i) a.learn("upload", 1e6, 100ms);  // a real change is followed
  EXPECT_NEAR(*a.rate("upload"), 100.0, 0.5);  // 100 ns a unit
}

TEST(admission, a_kind_expecting_a_rate_takes_its_first_completed_job_as_one) {
  admission a;
  a.expect_rate("upload");
  EXPECT_EQ(a.rate("upload"), std::nullopt);
  a.learn("upload", 1e6, 3ms);  // 3 ns per unit: the first observation is the rate
  ASSERT_TRUE(a.rate("upload"));
  EXPECT_NEAR(*a.rate("upload"), 3.0, 1e-9);
  a.learn("upload", 1e6, 1ms);  // then it moves as any rate does, not jumps
  EXPECT_GT(*a.rate("upload"), 2.0);
  a.learn("opaque", 1e6, 2ms);  // a kind never declared priced stays without a rate
  EXPECT_EQ(a.rate("opaque"), std::nullopt);
}

}  // namespace
}  // namespace crunch
