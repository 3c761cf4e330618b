// The password kind in a whole process: its command-line calibration, and its secrets (the
// passwords it hashes, its pepper) in no log line, no helper and no memory left behind.
#include "crunchd_process.hpp"

#include "argon2.hpp"
#include "password.hpp"

#include <sodium.h>

#include <random>

namespace crunch::testing {
namespace {

// A pepper never exists in a helper: after hashes with a pepper and jobs that started helpers (the
// tests' sandboxed kind), no helper's memory holds it, while crunchd's own memory does (the scan
// finds what it looks for).
TEST(password_crunchd, no_helper_holds_the_pepper) {
  std::random_device random;
  const auto dir = std::filesystem::temp_directory_path();
  const std::string pepper = "pepper-secret-" + std::to_string(random()) + "-" + std::to_string(random());
  const std::string password = "the-password-" + std::to_string(random()) + "-" + std::to_string(random());
  const auto pepper_file = dir / ("crunch-pepper-" + std::to_string(getpid()) + "-" + std::to_string(random()));
  std::ofstream(pepper_file) << "p1:" << pepper << "\n";
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "2", "--password-m-cost", "1024",
                     "--password-t-cost", "1", "--password-pepper-file", pepper_file.string(), "--default-timeout",
                     "60s"});  // slow under sanitizers, on a busy machine
  const auto port = started_port(p);
  std::filesystem::remove(pepper_file);
  for (int round = 0; round < 4; ++round) {
    http_connection c(port);
    ASSERT_EQ(c.post("/v1/password/hash", "application/json", nlohmann::json{{"password", password}}.dump())->status,
              200u);
    ASSERT_EQ(c.post("/sandboxed/echo", "application/octet-stream", "hello")->status, 200u);
  }
  const auto helpers = children_of(p.pid());
  ASSERT_GE(helpers.size(), 1u);
  for (const auto helper : helpers) EXPECT_FALSE(memory_holds(helper, pepper)) << "helper " << helper << " holds the pepper";
  EXPECT_TRUE(memory_holds(p.pid(), pepper)) << "the scan should find the pepper in crunchd itself";
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit(), 0);
}

TEST(password_crunchd, calibrate_password_prints_costs_that_take_about_the_time_asked) {
  crunchd_process p({"--calibrate-password", "40ms", "--workers", "1", "--password-max-m-cost", "65536"});
  std::string out;
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) out += line + "\n";
  EXPECT_EQ(p.wait_exit(), 0) << out;
  unsigned long long m = 0, t = 0, took = 0;
  const auto at = out.find("--password-m-cost");
  ASSERT_NE(at, std::string::npos) << out;
  ASSERT_EQ(std::sscanf(out.c_str() + at, "--password-m-cost %llu --password-t-cost %llu", &m, &t), 2) << out;
  ASSERT_EQ(std::sscanf(out.c_str() + out.find("measured"), "measured %llu ms", &took), 1) << out;
  EXPECT_GE(m, 1024u);
  EXPECT_LE(m, 65536u);  // within the bound it was given
  EXPECT_GE(t, 2u);      // never fewer passes than configured
  EXPECT_GT(took, 0u);
  crunchd_process bad({"--calibrate-password", "40"});
  EXPECT_NE(bad.all_stderr().find("invalid --calibrate-password"), std::string::npos);
  EXPECT_EQ(bad.wait_exit(), 2);
}

// The first 64 bytes of the last Argon2 block a hash of `password` at m KiB and t passes left in
// its memory, recomputed here from the salt of its PHC string `phc`: what a worker's kept memory
// would still hold after the hash had it not been wiped.
std::string last_block_of(const std::string& password, const std::string& phc, std::uint32_t m, std::uint32_t t) {
  const auto parsed = std::get<phc_hash>(parse_phc(phc));
  std::string salt(64, '\0');
  std::size_t salt_bytes = 0;
  EXPECT_EQ(sodium_base642bin(reinterpret_cast<unsigned char*>(salt.data()), salt.size(), parsed.salt.data(),
                              parsed.salt.size(), nullptr, &salt_bytes, nullptr, sodium_base64_VARIANT_ORIGINAL_NO_PADDING),
            0);
  salt.resize(salt_bytes);
  const auto bytes = argon2_memory_bytes(m, 1);
  std::unique_ptr<std::byte, decltype(&std::free)> memory(static_cast<std::byte*>(std::aligned_alloc(64, bytes)), &std::free);
  std::array<std::uint8_t, 32> tag{};
  argon2_compute({argon2_variant::id, m, t, 1, password, salt, {}, {}}, tag, {memory.get(), bytes});
  return std::string(reinterpret_cast<const char*>(memory.get()) + bytes - 1024, 64);
}

// A password goes through hash, verify and a refused request, at --log-level debug: afterwards it
// is in no log line, and nowhere in the server's memory — buffers that held it were wiped.
TEST(password_crunchd, a_password_is_never_logged_and_does_not_linger_in_memory) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--log-level", "debug",
                     "--password-m-cost", "1024", "--password-t-cost", "1"});
  const auto port = started_port(p);
  std::random_device random;
  const std::string password = "pw-" + std::to_string(random()) + "-" + std::to_string(random()) + "-secret";
  const std::string short_password = "s" + std::to_string(random() % 100000);  // fits a string's own buffer
  // Connections stay open while memory is read: their buffers are not freed yet, and the last
  // request on each is one that carried the password.
  std::vector<std::unique_ptr<http_connection>> open;
  std::string last_hash;  // of the short password, hashed last
  for (const auto& pw : {password, short_password}) {
    auto& c = *open.emplace_back(std::make_unique<http_connection>(port));
    const auto hashed = c.post("/v1/password/hash", "application/json", nlohmann::json{{"password", pw}}.dump());
    ASSERT_EQ(hashed->status, 200u) << hashed->body;
    const auto hash = nlohmann::json::parse(hashed->body).at("hash").get<std::string>();
    last_hash = hash;
    const auto verified = c.post("/v1/password/verify", "application/json",
                                 nlohmann::json{{"password", pw}, {"hash", hash}}.dump());
    EXPECT_EQ(nlohmann::json::parse(verified->body).at("match"), true);
    EXPECT_EQ(c.post("/v1/password/verify", "application/json",
                     nlohmann::json{{"password", pw + "x"}, {"hash", hash}}.dump())->status, 200u);
    EXPECT_EQ(c.post("/v1/password/hash", "application/json", nlohmann::json{{"password", pw}, {"colour", 1}}.dump())
                  ->status, 400u);
    auto& last = *open.emplace_back(std::make_unique<http_connection>(port));
    EXPECT_EQ(last.post("/v1/password/hash", "text/plain", nlohmann::json{{"password", pw}}.dump())->status, 415u);
    auto& verify_last = *open.emplace_back(std::make_unique<http_connection>(port));
    EXPECT_EQ(verify_last.post("/v1/password/verify", "application/json",
                               nlohmann::json{{"password", pw}, {"hash", hash}}.dump())->status, 200u);
  }
  std::size_t scanned = 0;
  EXPECT_FALSE(in_process_memory(p.pid(), password, scanned)) << "the long password is still in memory";
  EXPECT_GT(scanned, 1u << 20);
  EXPECT_FALSE(in_process_memory(p.pid(), short_password, scanned)) << "the short password is still in memory";
  // The worker keeps its Argon2 memory for the next hash: what the last hash left there was wiped.
  EXPECT_FALSE(in_process_memory(p.pid(), last_block_of(short_password, last_hash, 1024, 1), scanned))
      << "the last hash's blocks are still in the worker's kept memory";
  EXPECT_GT(scanned, 1u << 20);
  open.clear();
  p.signal(SIGTERM);
  std::string log;
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) log += line + "\n";
  EXPECT_NE(log.find("\"route\":\"password_verify\""), std::string::npos) << log;  // the log did see them
  EXPECT_EQ(log.find(password), std::string::npos) << log;
  EXPECT_EQ(log.find(short_password), std::string::npos) << log;
  EXPECT_EQ(p.wait_exit(), 0);
}

TEST(password_crunchd, pepper_keys_are_reread_on_sighup_and_never_logged_even_at_debug) {
  std::random_device random;
  const auto path = std::filesystem::temp_directory_path() /
                    ("crunch-pepper-" + std::to_string(getpid()) + "-" + std::to_string(random()));
  const std::string secret_a = "pepper-a-" + std::to_string(random()) + "-" + std::to_string(random());
  const std::string secret_b = "pepper-b-" + std::to_string(random()) + "-" + std::to_string(random());
  const std::string password = "hunter2-" + std::to_string(random());
  std::ofstream(path) << "a:" << secret_a << "\n";
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--log-level", "debug",
                     "--password-m-cost", "1024", "--password-t-cost", "1", "--password-pepper-file", path.string()});
  const auto port = started_port(p);
  http_connection c(port);
  auto call = [&](const std::string& target, const nlohmann::json& body) {
    const auto r = c.post(target, "application/json", body.dump());
    EXPECT_TRUE(r);
    return r ? std::make_pair(r->status, nlohmann::json::parse(r->body)) : std::make_pair(0u, nlohmann::json());
  };
  const auto [status, made] = call("/v1/password/hash", {{"password", password}});
  ASSERT_EQ(status, 200u);
  const auto under_a = made.at("hash").get<std::string>();
  EXPECT_NE(under_a.find(",keyid=a$"), std::string::npos) << under_a;

  // Key b becomes current; a stays listed, so its hashes verify and ask to be made again.
  std::ofstream(path) << "b:" << secret_b << "\na:" << secret_a << "\n";
  p.signal(SIGHUP);
  std::string log;
  ASSERT_TRUE(read_log_until(p, "kind_reloaded", log)) << log;
  EXPECT_EQ(call("/v1/password/verify", {{"password", password}, {"hash", under_a}}).second,
            (nlohmann::json{{"match", true}, {"needs_rehash", true}}));
  EXPECT_NE(call("/v1/password/hash", {{"password", password}}).second.at("hash").get<std::string>().find(",keyid=b$"),
            std::string::npos);

  // A file that cannot be used keeps the keys there were.
  std::ofstream(path) << "b:short\n";
  p.signal(SIGHUP);
  ASSERT_TRUE(read_log_until(p, "kind_reload_failed", log)) << log;
  EXPECT_EQ(call("/v1/password/verify", {{"password", password}, {"hash", under_a}}).first, 200u);

  // Key a retired: its hashes are a clear 400.
  std::ofstream(path) << "b:" << secret_b << "\n";
  p.signal(SIGHUP);
  ASSERT_TRUE(read_log_until(p, "kind_reloaded", log)) << log;
  const auto [refused, why] = call("/v1/password/verify", {{"password", password}, {"hash", under_a}});
  EXPECT_EQ(refused, 400u);
  EXPECT_EQ(why.at("error").at("message"),
            "hash was made with pepper key a, which this server's --password-pepper-file does not hold");

  p.signal(SIGTERM);
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) log += line + "\n";
  EXPECT_EQ(p.wait_exit(), 0);
  std::filesystem::remove(path);
  EXPECT_NE(log.find("\"estimate_ms\":"), std::string::npos) << "the debug fields are missing: " << log;
  EXPECT_NE(log.find("\"summary\":\"2 pepper keys, current b\""), std::string::npos) << log;
  EXPECT_EQ(log.find(secret_a), std::string::npos) << log;
  EXPECT_EQ(log.find(secret_b), std::string::npos) << log;
  EXPECT_EQ(log.find("short"), std::string::npos) << log;
  EXPECT_EQ(log.find(password), std::string::npos) << log;
}

}  // namespace
}  // namespace crunch::testing
