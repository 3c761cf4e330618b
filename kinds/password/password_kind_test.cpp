// The password kind over HTTP: the real server on 127.0.0.1 port 0.
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace crunch::testing {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

// Small hashes, so that the suite stays quick under the sanitizers too.
config small_hashes(std::size_t workers = 2) {
  auto cfg = test_config(workers);
  cfg.settings["password-m-cost"] = 1024;
  cfg.settings["password-t-cost"] = 1;
  return cfg;
}

std::string body(const nlohmann::json& j) { return j.dump(); }

TEST(password_kind, hash_then_verify_over_http) {
  running_server s(small_hashes());
  http_connection c(s.port());
  const auto hashed = c.post("/v1/password/hash", "application/json", body({{"password", "correct horse"}}));
  ASSERT_TRUE(hashed);
  ASSERT_EQ(hashed->status, 200u) << hashed->body;
  const auto hash = json_of(*hashed).at("hash").get<std::string>();
  EXPECT_EQ(hash.rfind("$argon2id$v=19$m=1024,t=1,p=1$", 0), 0u) << hash;
  EXPECT_NE(hashed->header("server-timing").find("compute;dur="), std::string::npos);

  const auto right = c.post("/v1/password/verify", "application/json", body({{"password", "correct horse"}, {"hash", hash}}));
  ASSERT_EQ(right->status, 200u) << right->body;
  EXPECT_EQ(json_of(*right), (nlohmann::json{{"match", true}, {"needs_rehash", false}}));
  const auto wrong = c.post("/v1/password/verify", "application/json", body({{"password", "correct horsE"}, {"hash", hash}}));
  ASSERT_EQ(wrong->status, 200u);
  EXPECT_EQ(json_of(*wrong).at("match"), false);

  const auto custom = c.post("/v1/password/hash", "application/json",
                             body({{"password", "x"}, {"m_cost_kib", 2048}, {"t_cost", 3}}));
  ASSERT_EQ(custom->status, 200u);
  EXPECT_EQ(json_of(*custom).at("hash").get<std::string>().rfind("$argon2id$v=19$m=2048,t=3,p=1$", 0), 0u);

  // The workers keep the hashes' memory for the next one, in whole 2 MiB, charged to the budget.
  const auto m = c.get("/metrics")->body;
  const auto kept = sample(m, "crunch_job_memory_kept_bytes");
  EXPECT_GE(kept, 2 << 20);
  EXPECT_EQ(static_cast<std::uint64_t>(kept) % (2 << 20), 0u);
  EXPECT_EQ(sample(m, "crunch_job_memory_bytes"), kept);
}

TEST(password_kind, hashes_from_elsewhere_verify_and_weaker_ones_ask_for_a_rehash) {
  auto cfg = test_config();  // the server's defaults: OWASP's 19 MiB, 2 passes
  running_server s(cfg);
  http_connection c(s.port());
  // node-argon2, parameters written m, p, t; as strong as the defaults.
  const auto node = c.post("/v1/password/verify", "application/json",
                           body({{"password", "password"},
                                 {"hash", "$argon2id$v=19$m=19456,p=1,t=2$eeKq/CB8C7ijcK5LlCuoNw$"
                                          "6wfbkkWpFcov5lZV07I4IcLyofJQvlatEHbFudMILIo"}}));
  ASSERT_EQ(node->status, 200u) << node->body;
  EXPECT_EQ(json_of(*node), (nlohmann::json{{"match", true}, {"needs_rehash", false}}));
  // The Argon2 reference tool, with an 8-byte salt: right password, but weaker than today's.
  const auto reference = c.post("/v1/password/verify", "application/json",
                                body({{"password", "password"},
                                      {"hash", "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$"
                                               "CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"}}));
  ASSERT_EQ(reference->status, 200u) << reference->body;
  EXPECT_EQ(json_of(*reference), (nlohmann::json{{"match", true}, {"needs_rehash", true}}));
}

TEST(password_kind, a_wrong_content_type_is_415_and_the_connection_goes_on) {
  running_server s(small_hashes());
  http_connection c(s.port());
  const auto r = c.post("/v1/password/hash", "text/plain", R"({"password":"x"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415u);
  EXPECT_EQ(error_code_of(*r), "unsupported_media_type");
  EXPECT_EQ(c.get("/healthz")->status, 200u);  // its body was read and set aside
}

TEST(password_kind, a_body_over_the_limit_is_413_before_it_is_sent) {
  running_server s(small_hashes());
  http_connection c(s.port());
  // Only the head, asking to be told before the body goes.
  c.send("POST /v1/password/hash HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         "Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n");
  const auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->interim.empty());  // no 100 Continue
  EXPECT_EQ(r->status, 413u);
  EXPECT_EQ(error_code_of(*r), "body_too_large");
  EXPECT_TRUE(c.closed_by_peer());
}

TEST(password_kind, a_chunked_body_over_the_limit_is_413) {
  running_server s(small_hashes());
  http_connection c(s.port());
  c.send("POST /v1/password/hash HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         "Transfer-Encoding: chunked\r\n\r\n1001\r\n" + std::string(4097, ' ') + "\r\n0\r\n\r\n");
  const auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413u);
}

TEST(password_kind, a_job_larger_than_the_memory_budget_is_400_and_runs_nothing) {
  auto cfg = small_hashes();
  cfg.memory_budget = 4ULL << 20;
  running_server s(cfg);
  http_connection c(s.port());
  const auto r = c.post("/v1/password/hash", "application/json", body({{"password", "x"}, {"m_cost_kib", 8192}}));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400u);
  EXPECT_EQ(json_of(*r).at("error").at("message"),
            "this job needs 9 MiB of memory, more than the server's budget of 4 MiB");
  EXPECT_NE(c.get("/metrics")->body.find("\ncrunch_jobs_total{outcome=\"completed\"} 0\n"), std::string::npos);
  // One that fits still runs.
  EXPECT_EQ(c.post("/v1/password/hash", "application/json", body({{"password", "x"}, {"m_cost_kib", 2048}}))->status,
            200u);
}

// Argon2 cannot stop midway: at its deadline the answer goes out at once, and the worker finishes
// the hash and drops it.
TEST(password_kind, a_deadline_answers_at_once_though_the_hash_runs_on) {
  running_server s(small_hashes(1));
  http_connection c(s.port());
  const auto start = clock::now();
  const auto r = c.post("/v1/password/hash?timeout_ms=20", "application/json",
                        body({{"password", "x"}, {"m_cost_kib", 262144}, {"t_cost", 6}}));
  const auto took = clock::now() - start;
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504u);
  EXPECT_LT(took, 400ms);  // the hash alone, 256 MiB six times over, takes ~0.3 s here (10 s and more under TSan)
  // The worker is busy until the hash ends; then the next job runs. Its deadline is the longest a
  // client may ask for: under TSan, whose instrumentation slows crunch's Argon2 core about 40-fold,
  // the first hash can outlast the default 10 s.
  EXPECT_EQ(c.post("/v1/password/hash?timeout_ms=60000", "application/json", body({{"password", "x"}}))->status, 200u);
  EXPECT_NE(c.get("/metrics")->body.find("crunch_jobs_total{outcome=\"deadline_exceeded\"} 1\n"), std::string::npos);
}

TEST(password_kind, kinds_lists_the_password_routes_with_the_configured_bounds) {
  auto cfg = small_hashes();
  cfg.settings["password-max-m-cost"] = 65536;
  running_server s(cfg);
  http_connection c(s.port());
  const auto r = c.get("/v1/kinds");
  ASSERT_EQ(r->status, 200u);
  const auto doc = json_of(*r);
  for (const auto& kind : doc.at("kinds")) {
    if (kind.at("name") != "password") continue;
    EXPECT_GT(kind.at("cost").at("ns_per_unit").get<double>(), 0);  // calibrated at start
    const auto& m = kind.at("routes").at(0).at("parameters").at(1);
    EXPECT_EQ(m.at("name"), "m_cost_kib");
    EXPECT_EQ(m.at("default"), 1024);
    EXPECT_EQ(m.at("maximum"), 65536);
  }
}

}  // namespace
}  // namespace crunch::testing
