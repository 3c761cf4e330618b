#include <crunch/router.hpp>

#include <gtest/gtest.h>

namespace crunch {
namespace {

using namespace std::chrono_literals;

struct router_test : ::testing::Test {
  bool draining = false;
  router routes{default_jobs(), server_view{[this] { return draining; }, [] { return std::string("m 1\n"); }}, 10s,
                60s};

  reply answer(std::string_view method, std::string_view target) {
    auto r = routes.route(method, target);
    EXPECT_TRUE(std::holds_alternative<reply>(r)) << target;
    return std::holds_alternative<reply>(r) ? std::get<reply>(r) : reply{};
  }
  nlohmann::json error_of(const reply& r) { return nlohmann::json::parse(r.body).at("error"); }
};

TEST_F(router_test, healthz_and_readyz) {
  EXPECT_EQ(answer("GET", "/healthz").status, 200u);
  EXPECT_EQ(answer("HEAD", "/healthz").status, 200u);
  EXPECT_EQ(answer("GET", "/readyz").status, 200u);
  draining = true;
  const auto r = answer("GET", "/readyz");
  EXPECT_EQ(r.status, 503u);
  EXPECT_EQ(error_of(r).at("code"), "draining");
  EXPECT_EQ(answer("GET", "/healthz").status, 200u);  // alive while draining
}

TEST_F(router_test, metrics_is_prometheus_text) {
  const auto r = answer("GET", "/metrics");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, "m 1\n");
  EXPECT_EQ(r.content_type.rfind("text/plain", 0), 0u);
}

TEST_F(router_test, fib_becomes_a_job_with_the_default_deadline) {
  auto r = routes.route("GET", "/fib/20");
  ASSERT_TRUE(std::holds_alternative<job_request>(r));
  auto& job = std::get<job_request>(r);
  EXPECT_EQ(job.kind, "fib");
  EXPECT_EQ(job.timeout, 10s);
  const auto body = job.job(std::stop_token{});
  ASSERT_TRUE(body);
  EXPECT_EQ(body->at("result"), 6765);
  EXPECT_EQ(body->at("result_string"), "6765");
}

TEST_F(router_test, client_may_shorten_the_deadline_but_not_exceed_the_maximum) {
  auto r = routes.route("GET", "/fib/5?timeout_ms=250");
  ASSERT_TRUE(std::holds_alternative<job_request>(r));
  EXPECT_EQ(std::get<job_request>(r).timeout, 250ms);
  for (const char* target : {"/fib/5?timeout_ms=60001", "/fib/5?timeout_ms=0", "/fib/5?timeout_ms=-3",
                             "/fib/5?timeout_ms=abc", "/fib/5?timeout_ms=", "/fib/5?timeout_ms=+9"}) {
    const auto a = answer("GET", target);
    EXPECT_EQ(a.status, 400u) << target;
    EXPECT_EQ(error_of(a).at("code"), "invalid_argument") << target;
  }
}

TEST_F(router_test, bad_n_is_400_with_the_error_shape) {
  for (const char* target : {"/fib/-1", "/fib/93", "/fib/abc", "/fib/1e3", "/fib/+5", "/fib/%207", "/fib/ 7",
                             "/fib/", "/fib/4.0", "/fib/0x10", "/fib/99999999999999999999",
                             "/fib/18446744073709551656"}) {
    const auto r = answer("GET", target);
    EXPECT_EQ(r.status, 400u) << target;
    EXPECT_EQ(error_of(r).at("code"), "invalid_argument") << target;
    EXPECT_EQ(error_of(r).at("message"), "n must be an integer in 0..92") << target;
  }
  const auto huge = answer("GET", "/fib/" + std::string(400, '7'));
  EXPECT_EQ(huge.status, 400u);
}

TEST_F(router_test, bounds_of_n_are_accepted) {
  EXPECT_TRUE(std::holds_alternative<job_request>(routes.route("GET", "/fib/0")));
  EXPECT_TRUE(std::holds_alternative<job_request>(routes.route("GET", "/fib/92")));
}

TEST_F(router_test, unknown_routes_are_404) {
  for (const char* target : {"/", "/fib", "/fib/1/2", "/nope", "/nope/1", "/healthz/x", "/FIB/1"}) {
    const auto r = answer("GET", target);
    EXPECT_EQ(r.status, 404u) << target;
    EXPECT_EQ(error_of(r).at("code"), "not_found") << target;
  }
}

TEST_F(router_test, wrong_method_is_405_with_allow) {
  const auto post = answer("POST", "/fib/3");
  EXPECT_EQ(post.status, 405u);
  ASSERT_EQ(post.headers.size(), 1u);
  EXPECT_EQ(post.headers[0], (std::pair<std::string, std::string>{"Allow", "GET"}));
  const auto del = answer("DELETE", "/healthz");
  EXPECT_EQ(del.status, 405u);
  EXPECT_EQ(del.headers[0].second, "GET, HEAD");
  EXPECT_EQ(answer("HEAD", "/fib/3").status, 405u);
}

TEST_F(router_test, absolute_form_routes_on_its_path) {
  EXPECT_EQ(answer("GET", "http://example.com/healthz").status, 200u);
  EXPECT_EQ(answer("GET", "https://example.com:8443/readyz").status, 200u);
  EXPECT_TRUE(std::holds_alternative<job_request>(routes.route("GET", "http://x/fib/5?timeout_ms=9")));
  EXPECT_EQ(answer("GET", "http://example.com").status, 404u);  // the path "/" has no route
  EXPECT_EQ(answer("GET", "http://example.com?x").status, 400u);
}

TEST_F(router_test, target_must_be_a_path) {
  EXPECT_EQ(answer("GET", "*").status, 400u);
  EXPECT_EQ(answer("GET", "").status, 400u);
}

TEST(error_reply, escapes_hostile_text) {
  const auto r = error_reply(400, "x", std::string("quote\" and \xff byte"));
  const auto body = nlohmann::json::parse(r.body);
  EXPECT_EQ(body.at("error").at("code"), "x");
}

}  // namespace
}  // namespace crunch
