#include <crunch/kinds.hpp>
#include "server/media_type.hpp"
#include "server/router.hpp"

#include "work_kind.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

namespace crunch {
namespace {

using namespace std::chrono_literals;

struct router_test : ::testing::Test {
  bool draining = false;
  config cfg = [] {
    config c;
    c.memory_budget = 64ULL << 20;
    return c;
  }();
  router routes{build_jobs({testing::work_kind()}, cfg),
                server_view{[this] { return draining; }, [] { return std::string("m 1\n"); },
                            [](std::string_view kind) { return kind == "work" ? std::optional<double>(0.9) : std::nullopt; },
                            [] { return std::string(R"({"snapshot":7})"); }},
                cfg};

  // Both steps, as a session takes them: the head, then the body.
  std::variant<reply, job_request> request(std::string_view method, std::string_view target,
                                           std::string_view content_type = {}, std::string_view body = {}) {
    const auto head = routes.route({method, target, content_type, body.size()});
    if (auto* r = std::get_if<reply>(&head.next)) return *r;
    return routes.prepare(std::get<route_match>(head.next), body);
  }
  reply answer(std::string_view method, std::string_view target, std::string_view content_type = {},
               std::string_view body = {}) {
    auto r = request(method, target, content_type, body);
    EXPECT_TRUE(std::holds_alternative<reply>(r)) << target;
    return std::holds_alternative<reply>(r) ? std::get<reply>(r) : reply{};
  }
  job_request job(std::string_view method, std::string_view target, std::string_view content_type = {},
                  std::string_view body = {}) {
    auto r = request(method, target, content_type, body);
    if (auto* refused = std::get_if<reply>(&r)) ADD_FAILURE() << target << ": " << refused->status << " " << refused->body;
    return std::holds_alternative<job_request>(r) ? std::move(std::get<job_request>(r)) : job_request{};
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

TEST_F(router_test, a_job_route_becomes_a_job_with_its_cost_memory_and_the_default_deadline) {
  auto j = job("GET", "/work/2?mib=3");
  EXPECT_EQ(j.kind, "work");
  EXPECT_EQ(j.route, "work");
  EXPECT_EQ(j.timeout, 10s);
  EXPECT_EQ(j.cost_units, 2.0);
  EXPECT_EQ(j.memory_bytes, 3u << 20);
  ASSERT_TRUE(j.job);
  const auto body = j.job(std::stop_token{});
  ASSERT_TRUE(body);
  EXPECT_EQ(body->content_type, "application/json");
  EXPECT_EQ(nlohmann::json::parse(body->body), (nlohmann::json{{"ms", 2}}));
}

TEST_F(router_test, client_may_shorten_the_deadline_but_not_exceed_the_maximum) {
  EXPECT_EQ(job("GET", "/work/5?timeout_ms=250").timeout, 250ms);
  for (const char* target : {"/work/5?timeout_ms=60001", "/work/5?timeout_ms=0", "/work/5?timeout_ms=-3",
                             "/work/5?timeout_ms=abc", "/work/5?timeout_ms=", "/work/5?timeout_ms=+9"}) {
    const auto a = answer("GET", target);
    EXPECT_EQ(a.status, 400u) << target;
    EXPECT_EQ(error_of(a).at("code"), "invalid_argument") << target;
  }
}

TEST_F(router_test, a_bad_path_integer_is_400_with_the_error_shape) {
  for (const char* target : {"/work/-1", "/work/3600001", "/work/abc", "/work/1e3", "/work/+5", "/work/%207",
                             "/work/ 7", "/work/", "/work/4.0", "/work/0x10", "/work/99999999999999999999",
                             "/work/18446744073709551656", "/work/1?mib=4097", "/work/1?held=2"}) {
    const auto r = answer("GET", target);
    EXPECT_EQ(r.status, 400u) << target;
    EXPECT_EQ(error_of(r).at("code"), "invalid_argument") << target;
  }
  EXPECT_EQ(error_of(answer("GET", "/work/-1")).at("message"), "ms must be an integer in 0..3600000");
  const auto huge = answer("GET", "/work/" + std::string(400, '7'));
  EXPECT_EQ(huge.status, 400u);
}

TEST_F(router_test, the_bounds_of_an_integer_are_accepted) {
  EXPECT_TRUE(job("GET", "/work/0").job);
  EXPECT_TRUE(job("GET", "/work/3600000").job);
  EXPECT_TRUE(job("GET", "/work/0040").job);  // leading zeros
}

TEST_F(router_test, unknown_routes_are_404) {
  for (const char* target : {"/index.html", "/ui/", "/ui/nope.js", "/v1/event", "/work", "/work/1/2", "/nope", "/nope/1", "/healthz/x", "/WORK/1"}) {
    const auto r = answer("GET", target);
    EXPECT_EQ(r.status, 404u) << target;
    EXPECT_EQ(error_of(r).at("code"), "not_found") << target;
  }
}

TEST_F(router_test, the_live_view_is_served_from_the_binary_and_may_load_nothing_from_elsewhere) {
  for (const char* target : {"/", "/ui/live.js", "/ui/live.css", "/ui/uPlot.iife.min.js", "/ui/uPlot.min.css"}) {
    SCOPED_TRACE(target);
    const auto r = answer("GET", target);
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.route, "ui");
    EXPECT_GT(r.body.size(), 500u);
    const auto csp = std::find_if(r.headers.begin(), r.headers.end(),
                                  [](const auto& h) { return h.first == "Content-Security-Policy"; });
    ASSERT_NE(csp, r.headers.end());
    EXPECT_EQ(csp->second.rfind("default-src 'self';", 0), 0u);
    EXPECT_EQ(answer("HEAD", target).status, 200u);
    EXPECT_EQ(answer("POST", target).status, 405u);
  }
  EXPECT_EQ(answer("GET", "/").content_type, "text/html; charset=utf-8");
  EXPECT_NE(answer("GET", "/").body.find("/v1/events"), std::string::npos);
  EXPECT_EQ(answer("GET", "/ui/live.js").content_type, "text/javascript; charset=utf-8");
}

TEST_F(router_test, stats_is_the_live_views_last_snapshot) {
  const auto r = answer("GET", "/v1/stats");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, R"({"snapshot":7})");
  EXPECT_EQ(r.route, "stats");
}

TEST_F(router_test, events_is_handed_to_the_session_as_a_stream) {
  const auto head = routes.route({"GET", "/v1/events", {}, std::nullopt});
  EXPECT_TRUE(head.event_stream);
  ASSERT_TRUE(std::holds_alternative<reply>(head.next));
  EXPECT_EQ(std::get<reply>(head.next).route, "events");
  EXPECT_FALSE(routes.route({"GET", "/healthz", {}, std::nullopt}).event_stream);
  const auto head_method = answer("HEAD", "/v1/events");
  EXPECT_EQ(head_method.status, 405u);
  EXPECT_EQ(head_method.headers[0].second, "GET");
  // A body over the limit is refused on the head, not streamed to.
  const auto big = routes.route({"GET", "/v1/events", {}, std::uint64_t{1} << 30});
  EXPECT_FALSE(big.event_stream);
  EXPECT_TRUE(big.refuse_body);
}

TEST_F(router_test, without_the_ui_its_routes_do_not_exist) {
  config off = cfg;
  off.ui = false;
  const router plain{build_jobs({testing::work_kind()}, off), server_view{[] { return false; }, [] { return std::string(); }, {}, {}}, off};
  for (const char* target : {"/", "/ui/live.js", "/v1/stats", "/v1/events"}) {
    const auto head = plain.route({"GET", target, {}, std::nullopt});
    ASSERT_TRUE(std::holds_alternative<reply>(head.next)) << target;
    EXPECT_EQ(std::get<reply>(head.next).status, 404u) << target;
    EXPECT_FALSE(head.event_stream);
  }
}

TEST_F(router_test, wrong_method_is_405_with_allow) {
  const auto post = answer("POST", "/work/3");
  EXPECT_EQ(post.status, 405u);
  EXPECT_EQ(post.route, "work");  // counted under its route, as before
  ASSERT_EQ(post.headers.size(), 1u);
  EXPECT_EQ(post.headers[0], (std::pair<std::string, std::string>{"Allow", "GET"}));
  const auto del = answer("DELETE", "/healthz");
  EXPECT_EQ(del.status, 405u);
  EXPECT_EQ(del.headers[0].second, "GET, HEAD");
  EXPECT_EQ(answer("HEAD", "/work/3").status, 405u);
}

TEST_F(router_test, absolute_form_routes_on_its_path) {
  EXPECT_EQ(answer("GET", "http://example.com/healthz").status, 200u);
  EXPECT_EQ(answer("GET", "https://example.com:8443/readyz").status, 200u);
  EXPECT_EQ(job("GET", "http://x/work/5?timeout_ms=9").timeout, 9ms);
  EXPECT_EQ(answer("GET", "http://example.com").route, "ui");  // the path "/": the live view
  EXPECT_EQ(answer("GET", "http://example.com/nope").status, 404u);
  EXPECT_EQ(answer("GET", "http://example.com?x").status, 400u);
}

TEST_F(router_test, target_must_be_a_path) {
  EXPECT_EQ(answer("GET", "*").status, 400u);
  EXPECT_EQ(answer("GET", "").status, 400u);
}

TEST_F(router_test, json_routes_want_application_json) {
  for (const char* type : {"", "text/plain", "application/x-www-form-urlencoded", "application/jsonx", "json"}) {
    const auto r = answer("POST", "/v1/work/note", type, R"({"note":"x"})");
    EXPECT_EQ(r.status, 415u) << type;
    EXPECT_EQ(error_of(r).at("code"), "unsupported_media_type") << type;
    EXPECT_EQ(r.route, "work_note");
  }
  EXPECT_TRUE(job("POST", "/v1/work/note", "Application/JSON ; charset=UTF-8", R"({"note":"x"})").job);
}

TEST_F(router_test, a_body_over_the_routes_limit_is_refused_on_its_head) {
  const auto head = routes.route({"POST", "/v1/work/note", "application/json", 4097});
  EXPECT_TRUE(head.refuse_body);
  EXPECT_EQ(std::get<reply>(head.next).status, 413u);
  EXPECT_EQ(head.body_limit, 4096u);
  const auto fits = routes.route({"POST", "/v1/work/note", "application/json", 4096});
  EXPECT_FALSE(fits.refuse_body);
  EXPECT_TRUE(std::holds_alternative<route_match>(fits.next));
  // Routes without a body of their own take up to --max-body-bytes, as before.
  EXPECT_TRUE(routes.route({"GET", "/healthz", "", 65537}).refuse_body);
  EXPECT_FALSE(routes.route({"GET", "/work/3", "", 65536}).refuse_body);
  EXPECT_FALSE(routes.route({"GET", "/work/3", "", std::nullopt}).refuse_body);  // chunked: bounded while read
  // /v1/work/echo takes a file of 1 MiB; only bodies that are not files are held in a buffer.
  EXPECT_EQ(routes.largest_body_limit(), 1u << 20);
  EXPECT_EQ(routes.largest_buffered_body(), 65536u);
}

TEST_F(router_test, a_file_route_checks_its_content_type_and_size_on_the_head) {
  const auto fits = routes.route({"POST", "/v1/work/echo?ms=1", "text/plain", 1000});
  EXPECT_TRUE(std::holds_alternative<route_match>(fits.next));
  EXPECT_TRUE(fits.file_body);
  EXPECT_FALSE(fits.sensitive);
  EXPECT_EQ(fits.body_limit, 1u << 20);
  EXPECT_TRUE(std::holds_alternative<route_match>(routes.route({"POST", "/v1/work/echo", "TEXT/PLAIN; q=1", 1}).next));
  for (const auto* type : {"", "text/html", "video/mp4", "text/plainx", "application/xml"}) {
    const auto refused = routes.route({"POST", "/v1/work/echo", type, 1000});
    ASSERT_TRUE(std::holds_alternative<reply>(refused.next)) << type;
    EXPECT_EQ(std::get<reply>(refused.next).status, 415u) << type;
    EXPECT_EQ(std::get<reply>(refused.next).route, "work_echo");
  }
  const auto too_large = routes.route({"POST", "/v1/work/echo", "text/plain", (1u << 20) + 1});
  EXPECT_TRUE(too_large.refuse_body);
  EXPECT_EQ(std::get<reply>(too_large.next).status, 413u);
}

TEST_F(router_test, a_post_route_takes_only_post) {
  const auto r = answer("GET", "/v1/work/note");
  EXPECT_EQ(r.status, 405u);
  EXPECT_EQ(r.headers.at(0), (std::pair<std::string, std::string>{"Allow", "POST"}));
  EXPECT_EQ(answer("POST", "/v1/work/note/x").status, 404u);
}

TEST_F(router_test, bad_bodies_are_400_naming_the_field_and_never_the_secret) {
  const std::string secret_text = "correct-horse-battery-staple";
  struct bad {
    std::string body;
    std::string message;
  };
  for (const auto& [body, message] : std::vector<bad>{
           {"", "the body is not valid JSON (at byte 1)"},
           {R"({"note":")" + secret_text, "the body is not valid JSON (at byte 38)"},
           {R"(["note"])", "the body must be a JSON object"},
           {R"("note")", "the body must be a JSON object"},
           {R"({"note":")" + secret_text + R"(","colour":"blue"})", "unknown field 'colour'"},
           {R"({"note":")" + secret_text + R"(","note":"x"})", "field 'note' is given twice"},
           {R"({"ms":1})", "note is missing: must be a string of 1..1024 bytes"},
           {R"({"note":42})", "note must be a string of 1..1024 bytes"},
           {R"({"note":""})", "note must be a string of 1..1024 bytes"},
           {R"({"note":")" + std::string(1025, 'x') + R"("})", "note must be a string of 1..1024 bytes"},
           {R"({"note":")" + secret_text + R"(","ms":"19456"})", "ms must be an integer in 0..3600000"},
           {R"({"note":")" + secret_text + R"(","ms":-1})", "ms must be an integer in 0..3600000"},
           {R"({"note":")" + secret_text + R"(","ms":1.5})", "ms must be an integer in 0..3600000"},
           {R"({"note":")" + secret_text + R"(","ms":3600001})", "ms must be an integer in 0..3600000"},
           {R"({"note":")" + secret_text + R"(","ms":[2]})", "ms must be an integer in 0..3600000"},
           {R"({"note":")" + secret_text + R"(","ms":null})", "ms must be an integer in 0..3600000"},
           {R"({"note":")" + secret_text + R"(","tag":"blue"})", "tag must be one of red, green"},
           {R"({"note":")" + secret_text + R"("} {})", "the body is not valid JSON (at byte 41)"},
       }) {
    const auto r = answer("POST", "/v1/work/note", "application/json", body);
    EXPECT_EQ(r.status, 400u) << body;
    EXPECT_EQ(error_of(r).at("code"), "invalid_argument") << body;
    EXPECT_EQ(error_of(r).at("message"), message) << body;
    EXPECT_EQ(r.body.find("horse"), std::string::npos) << r.body;
    EXPECT_EQ(r.route, "work_note");
  }
  EXPECT_TRUE(job("POST", "/v1/work/note", "application/json", R"({"note":"x","tag":"green","ms":2})").job);
}

TEST_F(router_test, kinds_lists_every_route_with_its_bounds_and_rate) {
  const auto r = answer("GET", "/v1/kinds");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.route, "kinds");
  const auto doc = nlohmann::json::parse(r.body);
  EXPECT_EQ(doc.at("memory_budget_bytes"), 64ULL << 20);
  std::map<std::string, nlohmann::json> kinds;
  for (const auto& k : doc.at("kinds")) kinds[k.at("name")] = k;
  ASSERT_EQ(kinds.size(), 1u);
  const auto& work = kinds["work"];
  EXPECT_EQ(work.at("cost").at("ns_per_unit"), 0.9);
  EXPECT_EQ(work.at("cost").at("unit"), "ms");
  const auto& burn = work.at("routes").at(0);
  EXPECT_EQ(burn.at("path"), "/work/{ms}");
  EXPECT_EQ(burn.at("parameters").at(0).at("maximum"), 3600000);
  EXPECT_EQ(burn.at("parameters").at(0).at("required"), true);
  EXPECT_EQ(burn.at("parameters").at(1).at("name"), "mib");
  EXPECT_EQ(burn.at("parameters").at(1).at("required"), false);
  EXPECT_EQ(burn.at("parameters").back().at("name"), "timeout_ms");
  EXPECT_EQ(burn.at("parameters").back().at("maximum"), 60000);
  const auto& echo = work.at("routes").at(1);
  EXPECT_EQ(echo.at("content_types"), (nlohmann::json{"text/plain", "application/octet-stream", "application/json"}));
  EXPECT_EQ(echo.at("max_body_bytes"), 1 << 20);
  const auto& note = work.at("routes").at(2);
  EXPECT_EQ(note.at("path"), "/v1/work/note");
  EXPECT_EQ(note.at("max_body_bytes"), 4096);
  EXPECT_EQ(note.at("sensitive"), true);  // the live view hides its text fields
  EXPECT_FALSE(burn.contains("sensitive"));
  EXPECT_FALSE(echo.contains("sensitive"));
  EXPECT_EQ(note.at("parameters").at(1).at("name"), "ms");
  EXPECT_EQ(note.at("parameters").at(1).at("default"), 0);
  EXPECT_EQ(note.at("parameters").at(2).at("enum"), (nlohmann::json{"red", "green"}));
  EXPECT_EQ(answer("POST", "/v1/kinds").status, 405u);
}

TEST(error_reply, escapes_hostile_text) {
  const auto r = error_reply(400, "x", std::string("quote\" and \xff byte"));
  const auto body = nlohmann::json::parse(r.body);
  EXPECT_EQ(body.at("error").at("code"), "x");
}

// The one reader of Content-Type values: parameters, blanks around and case ignored, nothing else.
TEST(media_type, names_the_type_whatever_the_parameters_and_case) {
  EXPECT_EQ(media_type_of(" text/PLAIN ; q=1"), "text/PLAIN");
  EXPECT_TRUE(names_media_type("Application/Json; charset=utf-8", "application/json"));
  EXPECT_TRUE(names_media_type("\ttext/csv", "text/csv"));
  EXPECT_FALSE(names_media_type("application/jsonx", "application/json"));
  EXPECT_FALSE(names_media_type("application/json-patch+json", "application/json"));
  EXPECT_FALSE(names_media_type("", "application/json"));
  EXPECT_FALSE(names_media_type("text/ csv", "text/csv"));
}

// Every "not now" answer: 503, the JSON error, and a Retry-After of at least a second.
TEST(unavailable, is_503_with_its_code_and_a_retry_after_of_at_least_a_second) {
  const auto r = unavailable("overloaded", "busy", std::chrono::seconds(0));
  EXPECT_EQ(r.status, 503u);
  EXPECT_EQ(nlohmann::json::parse(r.body).at("error").at("code"), "overloaded");
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0], (std::pair<std::string, std::string>{"Retry-After", "1"}));
  EXPECT_EQ(unavailable("draining", "bye", std::chrono::seconds(7)).headers[0].second, "7");
}

}  // namespace
}  // namespace crunch
