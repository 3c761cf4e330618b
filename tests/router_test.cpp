#include <crunch/kinds.hpp>
#include <crunch/media_type.hpp>
#include <password/password.hpp>
#include <crunch/router.hpp>

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
  router routes{default_jobs(cfg),
                server_view{[this] { return draining; }, [] { return std::string("m 1\n"); },
                            [](std::string_view kind) { return kind == "fib" ? std::optional<double>(0.9) : std::nullopt; },
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

TEST_F(router_test, fib_becomes_a_job_with_the_default_deadline) {
  auto j = job("GET", "/fib/20");
  EXPECT_EQ(j.kind, "fib");
  EXPECT_EQ(j.route, "fib");
  EXPECT_EQ(j.timeout, 10s);
  ASSERT_TRUE(j.job);
  const auto body = j.job(std::stop_token{});
  ASSERT_TRUE(body);
  EXPECT_EQ(body->content_type, "application/json");
  const auto value = nlohmann::json::parse(body->body);
  EXPECT_EQ(value.at("result"), 6765);
  EXPECT_EQ(value.at("result_string"), "6765");
}

TEST_F(router_test, client_may_shorten_the_deadline_but_not_exceed_the_maximum) {
  EXPECT_EQ(job("GET", "/fib/5?timeout_ms=250").timeout, 250ms);
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
  EXPECT_TRUE(job("GET", "/fib/0").job);
  EXPECT_TRUE(job("GET", "/fib/92").job);
  EXPECT_TRUE(job("GET", "/fib/0040").job);  // leading zeros
}

TEST_F(router_test, unknown_routes_are_404) {
  for (const char* target : {"/index.html", "/ui/", "/ui/nope.js", "/v1/event", "/fib", "/fib/1/2", "/nope", "/nope/1", "/healthz/x", "/FIB/1"}) {
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
  const router plain{default_jobs(off), server_view{[] { return false; }, [] { return std::string(); }, {}, {}}, off};
  for (const char* target : {"/", "/ui/live.js", "/v1/stats", "/v1/events"}) {
    const auto head = plain.route({"GET", target, {}, std::nullopt});
    ASSERT_TRUE(std::holds_alternative<reply>(head.next)) << target;
    EXPECT_EQ(std::get<reply>(head.next).status, 404u) << target;
    EXPECT_FALSE(head.event_stream);
  }
}

TEST_F(router_test, wrong_method_is_405_with_allow) {
  const auto post = answer("POST", "/fib/3");
  EXPECT_EQ(post.status, 405u);
  EXPECT_EQ(post.route, "fib");  // counted under its route, as before
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
  EXPECT_EQ(job("GET", "http://x/fib/5?timeout_ms=9").timeout, 9ms);
  EXPECT_EQ(answer("GET", "http://example.com").route, "ui");  // the path "/": the live view
  EXPECT_EQ(answer("GET", "http://example.com/nope").status, 404u);
  EXPECT_EQ(answer("GET", "http://example.com?x").status, 400u);
}

TEST_F(router_test, target_must_be_a_path) {
  EXPECT_EQ(answer("GET", "*").status, 400u);
  EXPECT_EQ(answer("GET", "").status, 400u);
}

TEST_F(router_test, a_password_hash_is_a_job_with_its_cost_and_memory) {
  const auto j = job("POST", "/v1/password/hash", "application/json", R"({"password":"hunter2"})");
  EXPECT_EQ(j.kind, "password");
  EXPECT_EQ(j.route, "password_hash");
  EXPECT_EQ(j.cost_units, 19456.0 * 2);               // m × t at the defaults
  EXPECT_EQ(j.memory_bytes, password_job_memory(19456));   // Argon2's blocks and a little
  const auto custom = job("POST", "/v1/password/hash", "application/json; charset=utf-8",
                          R"({"t_cost":3,"password":"hunter2","m_cost_kib":8192})");
  EXPECT_EQ(custom.cost_units, 8192.0 * 3);
}

TEST_F(router_test, json_routes_want_application_json) {
  for (const char* type : {"", "text/plain", "application/x-www-form-urlencoded", "application/jsonx", "json"}) {
    const auto r = answer("POST", "/v1/password/hash", type, R"({"password":"x"})");
    EXPECT_EQ(r.status, 415u) << type;
    EXPECT_EQ(error_of(r).at("code"), "unsupported_media_type") << type;
    EXPECT_EQ(r.route, "password_hash");
  }
  EXPECT_TRUE(job("POST", "/v1/password/hash", "Application/JSON ; charset=UTF-8", R"({"password":"x"})").job);
}

TEST_F(router_test, a_body_over_the_routes_limit_is_refused_on_its_head) {
  const auto head = routes.route({"POST", "/v1/password/verify", "application/json", 4097});
  EXPECT_TRUE(head.refuse_body);
  EXPECT_EQ(std::get<reply>(head.next).status, 413u);
  EXPECT_EQ(head.body_limit, 4096u);
  const auto fits = routes.route({"POST", "/v1/password/verify", "application/json", 4096});
  EXPECT_FALSE(fits.refuse_body);
  EXPECT_TRUE(std::holds_alternative<route_match>(fits.next));
  // Routes without a body of their own take up to --max-body-bytes, as before.
  EXPECT_TRUE(routes.route({"GET", "/healthz", "", 65537}).refuse_body);
  EXPECT_FALSE(routes.route({"GET", "/fib/3", "", 65536}).refuse_body);
  EXPECT_FALSE(routes.route({"GET", "/fib/3", "", std::nullopt}).refuse_body);  // chunked: bounded while read
  // An image takes --max-image-bytes; only bodies that are not files are held in a buffer.
  EXPECT_EQ(routes.largest_body_limit(), 25u << 20);
  EXPECT_EQ(routes.largest_buffered_body(), 65536u);
}

TEST_F(router_test, an_image_route_checks_its_content_type_and_size_on_the_head) {
  const auto fits = routes.route({"POST", "/v1/image/thumbnail?width=10", "image/jpeg", 1000});
  EXPECT_TRUE(std::holds_alternative<route_match>(fits.next));
  EXPECT_TRUE(fits.file_body);
  EXPECT_FALSE(fits.sensitive);
  EXPECT_EQ(fits.body_limit, 25u << 20);
  EXPECT_TRUE(std::holds_alternative<route_match>(routes.route({"POST", "/v1/image/thumbnail", "IMAGE/PNG; q=1", 1}).next));
  for (const auto* type : {"", "text/plain", "image/tiff", "image/svg+xml", "application/json"}) {
    const auto refused = routes.route({"POST", "/v1/image/thumbnail", type, 1000});
    ASSERT_TRUE(std::holds_alternative<reply>(refused.next)) << type;
    EXPECT_EQ(std::get<reply>(refused.next).status, 415u) << type;
    EXPECT_EQ(std::get<reply>(refused.next).route, "image_thumbnail");
  }
  const auto too_large = routes.route({"POST", "/v1/image/thumbnail", "image/jpeg", (25u << 20) + 1});
  EXPECT_TRUE(too_large.refuse_body);
  EXPECT_EQ(std::get<reply>(too_large.next).status, 413u);
}

TEST_F(router_test, password_routes_take_only_post) {
  const auto r = answer("GET", "/v1/password/hash");
  EXPECT_EQ(r.status, 405u);
  EXPECT_EQ(r.headers.at(0), (std::pair<std::string, std::string>{"Allow", "POST"}));
  EXPECT_EQ(answer("POST", "/v1/password").status, 404u);
  EXPECT_EQ(answer("POST", "/v1/password/hash/x").status, 404u);
}

TEST_F(router_test, bad_bodies_are_400_naming_the_field_and_never_the_password) {
  const std::string secret_text = "correct-horse-battery-staple";
  struct bad {
    std::string body;
    std::string message;
  };
  for (const auto& [body, message] : std::vector<bad>{
           {"", "the body is not valid JSON (at byte 1)"},
           {R"({"password":")" + secret_text, "the body is not valid JSON (at byte 42)"},
           {R"(["password"])", "the body must be a JSON object"},
           {R"("password")", "the body must be a JSON object"},
           {R"({"password":")" + secret_text + R"(","colour":"blue"})", "unknown field 'colour'"},
           {R"({"password":")" + secret_text + R"(","password":"x"})", "field 'password' is given twice"},
           {R"({"m_cost_kib":19456})", "password is missing: must be a string of 1..1024 bytes"},
           {R"({"password":42})", "password must be a string of 1..1024 bytes"},
           {R"({"password":""})", "password must be a string of 1..1024 bytes"},
           {R"({"password":")" + std::string(1025, 'x') + R"("})", "password must be a string of 1..1024 bytes"},
           {R"({"password":")" + secret_text + R"(","m_cost_kib":"19456"})", "m_cost_kib must be an integer in 8..262144"},
           {R"({"password":")" + secret_text + R"(","m_cost_kib":-1})", "m_cost_kib must be an integer in 8..262144"},
           {R"({"password":")" + secret_text + R"(","m_cost_kib":19456.5})", "m_cost_kib must be an integer in 8..262144"},
           {R"({"password":")" + secret_text + R"(","m_cost_kib":262145})", "m_cost_kib must be an integer in 8..262144"},
           {R"({"password":")" + secret_text + R"(","t_cost":0})", "t_cost must be an integer in 1..6"},
           {R"({"password":")" + secret_text + R"(","t_cost":[2]})", "t_cost must be an integer in 1..6"},
           {R"({"password":")" + secret_text + R"(","t_cost":null})", "t_cost must be an integer in 1..6"},
           {R"({"password":")" + secret_text + R"("} {})", "the body is not valid JSON (at byte 45)"},
       }) {
    const auto r = answer("POST", "/v1/password/hash", "application/json", body);
    EXPECT_EQ(r.status, 400u) << body;
    EXPECT_EQ(error_of(r).at("code"), "invalid_argument") << body;
    EXPECT_EQ(error_of(r).at("message"), message) << body;
    EXPECT_EQ(r.body.find("horse"), std::string::npos) << r.body;
    EXPECT_EQ(r.route, "password_hash");
  }
}

TEST_F(router_test, verify_reads_the_hash_before_any_work) {
  // node-argon2's parameter order, m, p, t.
  const auto ok = job("POST", "/v1/password/verify", "application/json",
                      R"({"password":"x","hash":"$argon2id$v=19$m=19456,p=1,t=2$YXUXL+k5GqhbV72azzUVhQ$AGdpnWrJcCC4PBttlvHAOOm/cnwARCXeC7tZAxHeDYg"})");
  EXPECT_EQ(ok.route, "password_verify");
  EXPECT_EQ(ok.memory_bytes, password_job_memory(19456));
  const auto malformed = answer("POST", "/v1/password/verify", "application/json", R"({"password":"x","hash":"$argon2id$nope"})");
  EXPECT_EQ(malformed.status, 400u);
  EXPECT_EQ(error_of(malformed).at("message").get<std::string>().rfind("hash is not an Argon2 PHC string", 0), 0u);
  const auto greedy = answer("POST", "/v1/password/verify", "application/json",
                             R"({"password":"x","hash":"$argon2id$v=19$m=4194304,t=2,p=1$YXUXL+k5GqhbV72azzUVhQ$AGdpnWrJcCC4PBttlvHAOOm/cnwARCXeC7tZAxHeDYg"})");
  EXPECT_EQ(greedy.status, 400u);
  EXPECT_EQ(error_of(greedy).at("message"), "hash asks for m=4194304 KiB, above this server's bound of 262144");
}

TEST_F(router_test, kinds_lists_every_route_with_its_bounds_and_rate) {
  const auto r = answer("GET", "/v1/kinds");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.route, "kinds");
  const auto doc = nlohmann::json::parse(r.body);
  EXPECT_EQ(doc.at("memory_budget_bytes"), 64ULL << 20);
  std::map<std::string, nlohmann::json> kinds;
  for (const auto& k : doc.at("kinds")) kinds[k.at("name")] = k;
  for (const auto* name : {"fib", "image", "password"}) ASSERT_TRUE(kinds.count(name)) << name;
  const auto& thumbnail = kinds["image"].at("routes").at(0);
  EXPECT_EQ(thumbnail.at("path"), "/v1/image/thumbnail");
  EXPECT_EQ(thumbnail.at("content_types"), (nlohmann::json{"image/jpeg", "image/png", "image/webp", "image/gif"}));
  EXPECT_EQ(thumbnail.at("max_body_bytes"), 25 << 20);
  EXPECT_EQ(thumbnail.at("parameters").at(2).at("enum"), (nlohmann::json{"inside", "cover", "fill", "outside"}));
  EXPECT_EQ(thumbnail.at("parameters").at(0).at("required"), false);
  EXPECT_EQ(kinds["fib"].at("cost").at("ns_per_unit"), 0.9);
  EXPECT_TRUE(kinds["password"].at("cost").at("ns_per_unit").is_null());
  const auto& fib_route = kinds["fib"].at("routes").at(0);
  EXPECT_EQ(fib_route.at("path"), "/fib/{n}");
  EXPECT_EQ(fib_route.at("parameters").at(0).at("maximum"), 92);
  EXPECT_EQ(fib_route.at("parameters").at(1).at("name"), "timeout_ms");
  EXPECT_EQ(fib_route.at("parameters").at(1).at("maximum"), 60000);
  const auto& hash_route = kinds["password"].at("routes").at(0);
  EXPECT_EQ(hash_route.at("path"), "/v1/password/hash");
  EXPECT_EQ(hash_route.at("max_body_bytes"), 4096);
  EXPECT_EQ(hash_route.at("parameters").at(1).at("name"), "m_cost_kib");
  EXPECT_EQ(hash_route.at("parameters").at(1).at("default"), 19456);
  EXPECT_EQ(hash_route.at("parameters").at(1).at("maximum"), 262144);
  EXPECT_EQ(answer("POST", "/v1/kinds").status, 405u);
}

TEST(error_reply, escapes_hostile_text) {
  const auto r = error_reply(400, "x", std::string("quote\" and \xff byte"));
  const auto body = nlohmann::json::parse(r.body);
  EXPECT_EQ(body.at("error").at("code"), "x");
}

// The one reader of Content-Type values: parameters, blanks around and case ignored, nothing else.
TEST(media_type, names_the_type_whatever_the_parameters_and_case) {
  EXPECT_EQ(media_type_of(" image/JPEG ; q=1"), "image/JPEG");
  EXPECT_TRUE(names_media_type("Application/Json; charset=utf-8", "application/json"));
  EXPECT_TRUE(names_media_type("\timage/webp", "image/webp"));
  EXPECT_FALSE(names_media_type("application/jsonx", "application/json"));
  EXPECT_FALSE(names_media_type("application/json-patch+json", "application/json"));
  EXPECT_FALSE(names_media_type("", "application/json"));
  EXPECT_FALSE(names_media_type("image/ jpeg", "image/jpeg"));
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
