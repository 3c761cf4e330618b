// The password routes as the router reads them: a request becomes a job with its cost and memory,
// or a 400 that names the field, before any work.
#include "password.hpp"

#include <crunch/kinds.hpp>
#include "server/router.hpp"

#include <gtest/gtest.h>

namespace crunch {
namespace {

struct password_route : ::testing::Test {
  config cfg = [] {
    config c;
    c.memory_budget = 64ULL << 20;
    return c;
  }();
  router routes{build_jobs({builtin_kind("password")}, cfg),
                server_view{[] { return false; }, [] { return std::string(); }, {}, {}}, cfg};

  std::variant<reply, job_request> post(std::string_view target, std::string_view body) {
    const auto head = routes.route({"POST", target, "application/json", body.size()});
    if (auto* r = std::get_if<reply>(&head.next)) return *r;
    return routes.prepare(std::get<route_match>(head.next), body);
  }
  job_request job(std::string_view target, std::string_view body) {
    auto r = post(target, body);
    if (auto* refused = std::get_if<reply>(&r)) ADD_FAILURE() << target << ": " << refused->status << " " << refused->body;
    return std::holds_alternative<job_request>(r) ? std::move(std::get<job_request>(r)) : job_request{};
  }
  nlohmann::json error_of(std::string_view target, std::string_view body) {
    auto r = post(target, body);
    if (!std::holds_alternative<reply>(r)) return nullptr;
    return nlohmann::json::parse(std::get<reply>(r).body).at("error");
  }
};

TEST_F(password_route, a_hash_is_a_job_with_its_cost_and_memory) {
  const auto j = job("/v1/password/hash", R"({"password":"hunter2"})");
  EXPECT_EQ(j.kind, "password");
  EXPECT_EQ(j.route, "password_hash");
  EXPECT_EQ(j.cost_units, 19456.0 * 2);                    // m × t at the defaults
  EXPECT_EQ(j.memory_bytes, password_job_memory(19456));   // Argon2's blocks and a little
  EXPECT_EQ(job("/v1/password/hash", R"({"t_cost":3,"password":"hunter2","m_cost_kib":8192})").cost_units, 8192.0 * 3);
  EXPECT_EQ(error_of("/v1/password/hash", R"({"password":"x","t_cost":7})").at("message"),
            "t_cost must be an integer in 1..6");
}

TEST_F(password_route, verify_reads_the_hash_before_any_work) {
  // node-argon2's parameter order, m, p, t.
  const auto ok = job("/v1/password/verify",
                      R"({"password":"x","hash":"$argon2id$v=19$m=19456,p=1,t=2$YXUXL+k5GqhbV72azzUVhQ$AGdpnWrJcCC4PBttlvHAOOm/cnwARCXeC7tZAxHeDYg"})");
  EXPECT_EQ(ok.route, "password_verify");
  EXPECT_EQ(ok.memory_bytes, password_job_memory(19456));
  const auto malformed = error_of("/v1/password/verify", R"({"password":"x","hash":"$argon2id$nope"})");
  EXPECT_EQ(malformed.at("message").get<std::string>().rfind("hash is not an Argon2 PHC string", 0), 0u);
  const auto greedy = error_of("/v1/password/verify",
                               R"({"password":"x","hash":"$argon2id$v=19$m=4194304,t=2,p=1$YXUXL+k5GqhbV72azzUVhQ$AGdpnWrJcCC4PBttlvHAOOm/cnwARCXeC7tZAxHeDYg"})");
  EXPECT_EQ(greedy.at("message"), "hash asks for m=4194304 KiB, above this server's bound of 262144");
}

}  // namespace
}  // namespace crunch
