// The password kind over HTTP: the real server on 127.0.0.1 port 0.
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <random>

#include <unistd.h>

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

// The kind's flags and environment twins are what crunchd has always read; build_jobs fills in
// their defaults and runs the kind's checks.
TEST(password_kind, declares_its_flags_and_checks_them_against_each_other_and_the_budget) {
  std::vector<std::string> names;
  for (const auto& s : settings_of({builtin_kind("password")})) names.push_back("--" + s.name + " " + s.env());
  EXPECT_EQ(names, (std::vector<std::string>{
                       "--password-m-cost CRUNCH_PASSWORD_M_COST", "--password-t-cost CRUNCH_PASSWORD_T_COST",
                       "--password-max-m-cost CRUNCH_PASSWORD_MAX_M_COST",
                       "--password-max-t-cost CRUNCH_PASSWORD_MAX_T_COST",
                       "--password-max-bcrypt-cost CRUNCH_PASSWORD_MAX_BCRYPT_COST",
                       "--password-max-crypt-rounds CRUNCH_PASSWORD_MAX_CRYPT_ROUNDS",
                       "--password-pepper-file CRUNCH_PASSWORD_PEPPER_FILE",
                       "--calibrate-password CRUNCH_CALIBRATE_PASSWORD"}));
  const auto jobs = build_jobs({builtin_kind("password")}, config{});
  const auto& m = jobs.find("password")->routes.at(0).parameters.at(1);
  EXPECT_EQ(m.name, "m_cost_kib");
  EXPECT_EQ(m.default_value, 19'456u);  // --password-m-cost's default
  EXPECT_EQ(m.maximum, 262'144u);       // --password-max-m-cost's

  config over;
  over.settings["password-m-cost"] = 300'000;
  try {
    (void)build_jobs({builtin_kind("password")}, over);
    ADD_FAILURE() << "a default above its maximum was accepted";
  } catch (const config_error& e) {
    EXPECT_STREQ(e.what(), "crunchd: invalid --password-m-cost: above --password-max-m-cost");
  }
  config small;
  small.memory_budget = 8u << 20;  // less than one 19 MiB hash
  EXPECT_THROW((void)build_jobs({builtin_kind("password")}, small), config_error);
  small.settings["password-m-cost"] = 1024;
  EXPECT_NO_THROW((void)build_jobs({builtin_kind("password")}, small));
}

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

// The password "migrate me 2019" as other tools stored it (crypt_hash_test.cpp says which command made each).
TEST(password_kind, a_team_migrates_verify_then_rehash_then_verify_again) {
  running_server s(small_hashes());
  http_connection c(s.port());
  const std::string password = "migrate me 2019";
  for (const std::string stored : {
           "$2y$05$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqwa",  // htpasswd -B
           "$6$aXAwFAdpikrzFYL9$7Qbn4BSRXUfeHT61aMfVvjerNNFbAnI0/HCeC.qQOKXttHRXHiKEm2I8tJIR8rnGa1KHy.HNMxIxgCunln2Tf1",
           "$y$j9T$L5rsUNur89L3i5yOXRu/m.$62UJDY0dLl1Ta4wtKCWWUpcu2P8IhyoIrStpGoGuny4",
           "$7$CU..../..../fBCO6cU3Z6bc8tL7BQiO/$T7HJ.iPVg/Nlcu6OAkn.NwHvAkcQZkQ.JhkzQuxubmA",
           "$argon2i$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$oLZ1bykyJAq2wavPaA+I3frbec4jmDwMgos6pX8Q64c",
       }) {
    SCOPED_TRACE(stored);
    // The longest deadline: under ThreadSanitizer an scrypt verify is estimated at over 10 s.
    const std::string verify = "/v1/password/verify?timeout_ms=60000";
    const auto login = c.post(verify, "application/json", body({{"password", password}, {"hash", stored}}));
    ASSERT_EQ(login->status, 200u) << login->body;
    EXPECT_EQ(json_of(*login), (nlohmann::json{{"match", true}, {"needs_rehash", true}}));
    const auto wrong = c.post(verify, "application/json", body({{"password", "migrate me"}, {"hash", stored}}));
    ASSERT_EQ(wrong->status, 200u) << wrong->body;
    EXPECT_EQ(json_of(*wrong), (nlohmann::json{{"match", false}, {"needs_rehash", true}}));
    // The application hashes the password it just checked, stores that, and the next login is current.
    const auto again = c.post("/v1/password/hash", "application/json", body({{"password", password}}));
    ASSERT_EQ(again->status, 200u);
    const auto fresh = json_of(*again).at("hash").get<std::string>();
    const auto next = c.post("/v1/password/verify", "application/json", body({{"password", password}, {"hash", fresh}}));
    EXPECT_EQ(json_of(*next), (nlohmann::json{{"match", true}, {"needs_rehash", false}}));
  }
  // Each scheme ran as a job of its own, priced by its own model.
  EXPECT_GE(sample(c.get("/metrics")->body, "crunch_jobs_total{outcome=\"completed\"}"), 20);
}

TEST(password_kind, hostile_legacy_hashes_are_400_at_once_and_run_nothing) {
  running_server s(small_hashes());
  http_connection c(s.port());
  for (const std::string hostile : {
           "$2b$31$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqwa",
           "$6$rounds=999999999$kkFEmuLStLKvf6ZY$43b276jTMxyOKncdRSbK5Ph0MyLEG0UNXmE/P0KHTfaWrCUwhbUJs.916.8I2BZNPGPDV83rqvpwdufOzt1Ck/",
           "$7$c6..../....fBCO6cU3Z6bc8tL7BQiO/$T7HJ.iPVg/Nlcu6OAkn.NwHvAkcQZkQ.JhkzQuxubmA",  // N = 2^40
       }) {
    SCOPED_TRACE(hostile);
    const auto started = clock::now();
    const auto r = c.post("/v1/password/verify", "application/json", body({{"password", "x"}, {"hash", hostile}}));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400u) << r->body;
    EXPECT_LT(clock::now() - started, 2s);
    EXPECT_NE(json_of(*r).at("error").at("message").get<std::string>().find("above this server's bound"), std::string::npos);
  }
  const auto m = c.get("/metrics")->body;
  EXPECT_EQ(sample(m, "crunch_jobs_total{outcome=\"completed\"}"), 0);
  EXPECT_EQ(sample(m, "crunch_job_memory_bytes"), 0);
}

TEST(password_kind, a_legacy_hash_is_priced_by_its_own_model) {
  running_server s(small_hashes(1));
  http_connection busy(s.port(), 60s), c(s.port(), 60s), observer(s.port());
  // scrypt, N = 2^14, r = 32, p = 3: 64 MiB walked six times, about a second here. Its digest is
  // made up: it runs all the same, and does not match.
  busy.send_post("/v1/password/verify?timeout_ms=60000", "application/json",
                 body({{"password", "x"},
                       {"hash", "$7$CU....1....fBCO6cU3Z6bc8tL7BQiO/$T7HJ.iPVg/Nlcu6OAkn.NwHvAkcQZkQ.JhkzQuxubmA"}}));
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_workers_busy 1\n"));
  // A cheap bcrypt verify behind it cannot meet 300 ms: refused at once, as its price says.
  const auto bcrypt = body({{"password", "x"}, {"hash", "$2y$05$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqwa"}});
  const auto refused = c.post("/v1/password/verify?timeout_ms=300", "application/json", bcrypt);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503u) << refused->body;
  EXPECT_EQ(json_of(*refused).at("error").at("code"), "overloaded");
  // With time enough it waits its turn.
  EXPECT_EQ(c.post("/v1/password/verify?timeout_ms=60000", "application/json", bcrypt)->status, 200u);
  const auto first = busy.read();
  ASSERT_TRUE(first);
  EXPECT_EQ(json_of(*first), (nlohmann::json{{"match", false}, {"needs_rehash", true}}));
}

// A pepper file of its own for each test, removed after.
struct pepper_file {
  std::filesystem::path path = std::filesystem::temp_directory_path() /
                               ("crunch-pepper-" + std::to_string(getpid()) + "-" + std::to_string(std::random_device{}()));
  explicit pepper_file(const std::string& text) { write(text); }
  ~pepper_file() { std::filesystem::remove(path); }
  void write(const std::string& text) const { std::ofstream(path) << text; }
};

config peppered(const pepper_file& file) {
  auto cfg = small_hashes();
  cfg.texts["password-pepper-file"] = file.path.string();
  return cfg;
}

std::string hash_of(http_connection& c, const std::string& password) {
  const auto r = c.post("/v1/password/hash", "application/json", body({{"password", password}}));
  EXPECT_EQ(r->status, 200u) << r->body;
  return json_of(*r).at("hash").get<std::string>();
}

nlohmann::json verify(http_connection& c, const std::string& password, const std::string& hash, unsigned status = 200) {
  const auto r = c.post("/v1/password/verify", "application/json", body({{"password", password}, {"hash", hash}}));
  EXPECT_EQ(r->status, status) << r->body;
  return json_of(*r);
}

TEST(password_kind, a_pepper_key_is_recorded_and_an_older_one_asks_for_a_rehash) {
  const std::string a = "a:0123456789abcdef-first-secret\n";
  const std::string b = "b:fedcba9876543210-second-secret\n";
  pepper_file only_a(a), b_then_a(b + a), only_b(b);

  std::string under_a, without;
  {
    running_server s(peppered(only_a));
    http_connection c(s.port());
    under_a = hash_of(c, "pw");
    EXPECT_NE(under_a.find(",p=1,keyid=a$"), std::string::npos) << under_a;
    EXPECT_EQ(verify(c, "pw", under_a), (nlohmann::json{{"match", true}, {"needs_rehash", false}}));
    EXPECT_EQ(verify(c, "pW", under_a).at("match"), false);
  }
  {
    running_server s(small_hashes());
    http_connection c(s.port());
    without = hash_of(c, "pw");
    // Without the key the hash cannot be checked: a 400 that names the key, not a false "no match".
    const auto refused = verify(c, "pw", under_a, 400);
    EXPECT_EQ(refused.at("error").at("message"),
              "hash was made with pepper key a, which this server's --password-pepper-file does not hold");
  }
  {
    running_server s(peppered(b_then_a));
    http_connection c(s.port());
    EXPECT_EQ(verify(c, "pw", under_a), (nlohmann::json{{"match", true}, {"needs_rehash", true}}));
    EXPECT_EQ(verify(c, "pw", without), (nlohmann::json{{"match", true}, {"needs_rehash", true}}));
    EXPECT_NE(hash_of(c, "pw").find(",keyid=b$"), std::string::npos);
    // The key is really in the hash: the same string without its keyid does not match.
    auto stripped = under_a;
    stripped.erase(stripped.find(",keyid=a"), 8);
    EXPECT_EQ(verify(c, "pw", stripped).at("match"), false);
  }
  {
    running_server s(peppered(only_b));
    http_connection c(s.port());
    EXPECT_EQ(verify(c, "pw", under_a, 400).at("error").at("code"), "invalid_argument");
  }
}

TEST(password_kind, a_pepper_file_that_cannot_be_used_stops_the_start_and_names_no_secret) {
  for (const std::string text : {"", "# only a comment\n", "a:short\n", "a b:0123456789abcdef0123\n",
                                 "a:0123456789abcdef0123\na:0123456789abcdef9999\n"}) {
    pepper_file file(text);
    try {
      running_server s(peppered(file));
      ADD_FAILURE() << "started with " << text;
    } catch (const config_error& e) {
      const std::string why = e.what();
      EXPECT_NE(why.find("--password-pepper-file"), std::string::npos) << why;
      EXPECT_EQ(why.find("0123456789abcdef"), std::string::npos) << why;
      EXPECT_EQ(why.find("short"), std::string::npos) << why;
    }
  }
}

// Argon2 cannot stop midway: at its deadline the answer goes out at once, and the worker finishes
// the hash and drops it.
// A hash its model says cannot meet its deadline even alone is refused at once with a 504: no
// worker burns a second on it (256 MiB six times over is ~0.3 s here, 10 s and more under TSan).
TEST(password_kind, a_hash_that_cannot_meet_its_deadline_is_refused_at_once_and_runs_nothing) {
  running_server s(small_hashes(1));
  http_connection c(s.port());
  const auto start = clock::now();
  const auto r = c.post("/v1/password/hash?timeout_ms=20", "application/json",
                        body({{"password", "x"}, {"m_cost_kib", 262144}, {"t_cost", 6}}));
  const auto took = clock::now() - start;
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504u);
  EXPECT_EQ(error_code_of(*r), "deadline_exceeded");
  EXPECT_NE(r->body.find("give it a longer timeout_ms"), std::string::npos) << r->body;
  EXPECT_LT(took, 400ms);
  const auto m = c.get("/metrics")->body;
  EXPECT_EQ(sample(m, R"(crunch_jobs_total{outcome="rejected_would_miss_deadline"})"), 1);
  EXPECT_EQ(sample(m, "crunch_job_memory_bytes"), 0);  // no worker took its 256 MiB
  // The longest deadline a client may ask for: under TSan, whose instrumentation slows crunch's
  // Argon2 core about 40-fold, a first hash can outlast the default 10 s.
  EXPECT_EQ(c.post("/v1/password/hash?timeout_ms=60000", "application/json", body({{"password", "x"}}))->status, 200u);
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

// Every kind stops within 100 ms of its deadline, or of its client leaving (issue 31): crunch's
// Argon2 core looks at its token every 4 MiB of blocks. Priced a millionth of its cost, a hash of
// 256 MiB and six passes (a second or two) is let in with 300 ms. (A crypt(3) verify cannot stop
// midway; it holds a password, so it cannot be killed in a helper either: its bounds keep it short.)
TEST(password_kind, an_argon2_hash_stops_within_100_ms_of_its_deadline_or_of_its_client_leaving) {
  const auto cfg = test_config(1);
  running_server s(cfg, underpriced_jobs({builtin_kind("password")}, cfg));
  const std::string body = R"({"password":"x","m_cost_kib":262144,"t_cost":6})";
  auto request = [&](int timeout_ms) {
    return "POST /v1/password/hash?timeout_ms=" + std::to_string(timeout_ms) +
           " HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body;
  };
  expect_stops_within_100_ms(s.port(), request, 300);
}

}  // namespace
}  // namespace crunch::testing
