#include "fib.hpp"
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <stop_token>

namespace crunch {
namespace {

TEST(fib, known_values) {
  EXPECT_EQ(fib(0), 0u);
  EXPECT_EQ(fib(1), 1u);
  EXPECT_EQ(fib(2), 1u);
  EXPECT_EQ(fib(10), 55u);
  EXPECT_EQ(fib(20), 6765u);
  EXPECT_EQ(fib(21), 10946u);  // first value above the polling threshold
  EXPECT_EQ(fib(30), 832040u);
}

TEST(fib, stops_when_asked) {
  std::stop_source stop;
  stop.request_stop();
  EXPECT_EQ(fib(fib_max_n, stop.get_token()), std::nullopt);  // would run for years otherwise
}

TEST(fib, small_n_ignores_a_stop_request) {
  std::stop_source stop;
  stop.request_stop();
  EXPECT_EQ(fib(15, stop.get_token()), 610u);
}

TEST(fib_calls, matches_the_recursion) {
  EXPECT_EQ(fib_calls(0), 1u);
  EXPECT_EQ(fib_calls(1), 1u);
  EXPECT_EQ(fib_calls(2), 3u);
  EXPECT_EQ(fib_calls(10), 177u);
  EXPECT_EQ(fib_calls(40), 2 * 165580141ull - 1);  // 2·F(41) − 1
}

TEST(fib_calls, fits_or_saturates_at_the_maximum) {
  // 2·F(93) − 1 is about 2.4e19, above 2^64 − 1.
  EXPECT_EQ(fib_calls(fib_max_n), std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(fib_calls(90), 2 * 4660046610375530309ull - 1);  // 2·F(91) − 1
}

// Every kind stops within 100 ms of its deadline, or of its client leaving (issue 31): fib polls
// its token every few thousand calls. Priced a millionth of its cost, a fib(80) is let in.
TEST(fib_kind, stops_within_100_ms_of_its_deadline_or_of_its_client_leaving) {
  const auto cfg = testing::test_config(1);
  testing::running_server s(cfg, testing::underpriced_jobs({builtin_kind("fib")}, cfg));
  testing::expect_stops_within_100_ms(
      s.port(), [](int timeout_ms) { return "GET /fib/80?timeout_ms=" + std::to_string(timeout_ms) + " HTTP/1.1\r\nHost: t\r\n\r\n"; },
      300);
}

TEST(fib_kind, answers_the_value_exactly_and_a_tiny_one_on_the_io_thread) {
  testing::running_server s(testing::test_config());
  testing::http_connection c(s.port());
  const auto r = c.get("/fib/20");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(testing::json_of(*r), (nlohmann::json{{"n", 20}, {"result", 6765}, {"result_string", "6765"}}));
  const auto before = testing::sample(c.get("/metrics")->body, "crunch_jobs_inline_total");
  EXPECT_EQ(testing::json_of(*c.get("/fib/1")).at("result"), 1);  // one call: on the I/O thread
  EXPECT_EQ(testing::sample(c.get("/metrics")->body, "crunch_jobs_inline_total"), before + 1);
}

TEST(fib_kind, every_bad_n_is_400_with_its_bounds) {
  testing::running_server s(testing::test_config());
  testing::http_connection c(s.port());
  for (const std::string n : {"-1", "93", "x", "18446744073709551656"}) {
    const auto r = c.get("/fib/" + n);
    ASSERT_TRUE(r) << n;
    EXPECT_EQ(r->status, 400u) << n;
    EXPECT_EQ(testing::json_of(*r).at("error").at("message"), "n must be an integer in 0..92");
  }
}

}  // namespace
}  // namespace crunch
