#include <crunch/config.hpp>

#include <gtest/gtest.h>

#include <map>
#include <ostream>

namespace crunch {
namespace {

using args = std::vector<std::string>;

env_lookup fake_env(std::map<std::string, std::string> vars = {}) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

config parsed(const args& a, std::map<std::string, std::string> env = {}) {
  auto result = parse_config(a, fake_env(std::move(env)));
  if (auto* exit = std::get_if<config_exit>(&result)) {
    ADD_FAILURE() << "unexpected exit: " << exit->message;
    return {};
  }
  return std::get<config>(result);
}

config_exit refused(const args& a, std::map<std::string, std::string> env = {}) {
  auto result = parse_config(a, fake_env(std::move(env)));
  if (auto* exit = std::get_if<config_exit>(&result)) return *exit;
  ADD_FAILURE() << "accepted a bad configuration";
  return {};
}

TEST(config, defaults) {
  const auto c = parsed({});
  EXPECT_EQ(c.address, "0.0.0.0");
  EXPECT_EQ(c.port, 8080);
  EXPECT_EQ(c.mode, run_mode::offload);
  EXPECT_EQ(c.priority, worker_priority::batch);
  EXPECT_EQ(c.io_scheduling, io_priority::automatic);
  EXPECT_EQ(c.cpu_reserve_percent, 8u);
  EXPECT_EQ(parsed({"--cpu-reserve", "0"}).cpu_reserve_percent, 0u);
  EXPECT_EQ(parsed({"--cpu-reserve", "15"}).cpu_reserve_percent, 15u);
  const auto resolved = resolve_defaults(c);
  EXPECT_GE(resolved.workers, 1u);
  EXPECT_EQ(resolved.queue_limit, 8 * resolved.workers);
}

TEST(config, clients_flags) {
  const auto d = parsed({});
  EXPECT_EQ(d.fair_key_, fair_key::remote);
  EXPECT_EQ(d.max_flows, 1024u);
  EXPECT_TRUE(d.api_keys.empty());
  EXPECT_FALSE(d.protect_metrics);
  const auto h = parsed({"--fair-key", "header:X-Client-Id", "--max-flows", "64"});
  EXPECT_EQ(h.fair_key_, fair_key::header);
  EXPECT_EQ(h.fair_header, "X-Client-Id");
  EXPECT_EQ(h.max_flows, 64u);
  EXPECT_EQ(parsed({"--fair-key=none"}).fair_key_, fair_key::none);
  const auto k = parsed({"--fair-key", "key", "--protect-metrics", "true"}, {{"CRUNCH_API_KEYS", "/etc/crunch/keys"}});
  EXPECT_EQ(k.fair_key_, fair_key::key);
  EXPECT_EQ(k.api_keys, "/etc/crunch/keys");
  EXPECT_TRUE(k.protect_metrics);
  EXPECT_NE(refused({"--fair-key", "key"}).message.find("needs --api-keys"), std::string::npos);
  EXPECT_NE(refused({"--fair-key", "header:" + std::string(65, 'x')}).message.find("--fair-key"), std::string::npos);
  EXPECT_NE(refused({"--fair-key", "client"}).message.find("--fair-key"), std::string::npos);
  EXPECT_NE(refused({"--api-keys", ""}).message.find("--api-keys"), std::string::npos);
}

TEST(config, inline_ceiling) {
  EXPECT_EQ(parsed({}).inline_max, std::chrono::microseconds(2));
  EXPECT_EQ(parsed({"--inline-max-us", "0"}).inline_max, std::chrono::microseconds(0));
  EXPECT_EQ(parsed({}, {{"CRUNCH_INLINE_MAX_US", "20"}}).inline_max, std::chrono::microseconds(20));
  EXPECT_NE(refused({"--inline-max-us", "21"}).message.find("--inline-max-us"), std::string::npos);
  EXPECT_NE(refused({"--inline-max-us", "2us"}).message.find("--inline-max-us"), std::string::npos);
}

TEST(config, flags_in_both_spellings) {
  const auto c = parsed({"--port", "9000", "--workers=3", "--queue-limit", "7", "--mode", "inline",
                         "--worker-priority", "batch", "--address", "::1", "--drain-timeout", "250ms",
                         "--default-timeout", "2s", "--max-timeout", "5s", "--io-priority", "normal"});
  EXPECT_EQ(c.port, 9000);
  EXPECT_EQ(c.workers, 3u);
  EXPECT_EQ(c.queue_limit, 7u);
  EXPECT_EQ(c.mode, run_mode::inline_);
  EXPECT_EQ(c.priority, worker_priority::batch);
  EXPECT_EQ(c.address, "::1");
  EXPECT_EQ(c.drain_timeout, std::chrono::milliseconds(250));
  EXPECT_EQ(c.default_timeout, std::chrono::seconds(2));
  EXPECT_EQ(c.max_timeout, std::chrono::seconds(5));
  EXPECT_EQ(c.io_scheduling, io_priority::normal);
}

TEST(config, environment_twins_and_flag_precedence) {
  const auto c = parsed({"--port", "9001"}, {{"CRUNCH_PORT", "9000"}, {"CRUNCH_WORKERS", "5"}});
  EXPECT_EQ(c.port, 9001);
  EXPECT_EQ(c.workers, 5u);
}

TEST(config, connection_limits) {
  const auto c = parsed({"--max-headers", "20", "--max-pipelined=4", "--probe"}, {{"CRUNCH_MAX_CONNECTIONS", "50"}});
  EXPECT_EQ(c.max_headers, 20u);
  EXPECT_EQ(c.max_pipelined, 4u);
  EXPECT_EQ(c.max_connections, 50u);
  EXPECT_TRUE(c.probe);
  const auto d = parsed({});
  EXPECT_EQ(d.max_headers, 100u);
  EXPECT_EQ(d.max_pipelined, 100u);
  EXPECT_EQ(d.max_connections, 10'000u);
  EXPECT_FALSE(d.probe);
  // The open-files limit bounds the connections: each is a descriptor.
  EXPECT_LE(resolve_defaults(parsed({"--max-connections", "1000000"})).max_connections, open_files_for_connections());
}

TEST(config, memory_budget_takes_a_size_with_a_unit) {
  EXPECT_EQ(parsed({"--memory-budget", "48MiB"}).memory_budget, 48ULL << 20);
  EXPECT_EQ(parsed({"--memory-budget=2Gi"}).memory_budget, 2ULL << 30);
  EXPECT_EQ(parsed({}, {{"CRUNCH_MEMORY_BUDGET", "1048576B"}}).memory_budget, 1ULL << 20);
  EXPECT_EQ(parsed({}).memory_budget, 0u);  // decided from the cgroup at start
  EXPECT_GT(resolve_defaults(parsed({})).memory_budget, 0u);
  EXPECT_EQ(resolve_defaults(parsed({"--memory-budget", "64MiB"})).memory_budget, 64ULL << 20);
}

TEST(config, port_zero_means_any_free_port) { EXPECT_EQ(parsed({"--port", "0"}).port, 0); }

TEST(config, help_and_version_exit_zero) {
  const auto help = refused({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.message.find("--worker-priority"), std::string::npos);
  EXPECT_NE(help.message.find("CRUNCH_PORT"), std::string::npos);
  const auto v = refused({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.message, std::string("crunchd ") + version());
}

struct bad_case {
  args argv;
  std::string names;  // what the one-line error must name
};

void PrintTo(const bad_case& c, std::ostream* out) {
  for (const auto& a : c.argv) *out << a << ' ';
}

class config_rejects : public ::testing::TestWithParam<bad_case> {};

TEST_P(config_rejects, with_exit_2_and_one_line_naming_the_flag) {
  const auto exit = refused(GetParam().argv);
  EXPECT_EQ(exit.exit_code, 2);
  EXPECT_NE(exit.message.find(GetParam().names), std::string::npos) << exit.message;
  EXPECT_EQ(exit.message.find('\n'), std::string::npos) << exit.message;
}

INSTANTIATE_TEST_SUITE_P(
    values, config_rejects,
    ::testing::Values(bad_case{{"--workers", "0"}, "--workers"}, bad_case{{"--cpu-reserve", "51"}, "--cpu-reserve"},
                      bad_case{{"--cpu-reserve", "5%"}, "--cpu-reserve"}, bad_case{{"--workers", "-1"}, "--workers"},
                      bad_case{{"--workers", "two"}, "--workers"}, bad_case{{"--port", "70000"}, "--port"},
                      bad_case{{"--port", "abc"}, "--port"}, bad_case{{"--port", "-1"}, "--port"},
                      bad_case{{"--port", ""}, "--port"}, bad_case{{"--port", "80 80"}, "--port"},
                      bad_case{{"--port", "99999999999999999999999"}, "--port"},
                      bad_case{{"--queue-limit", "0"}, "--queue-limit"},
                      bad_case{{"--worker-priority", "realtime"}, "--worker-priority"},
                      bad_case{{"--mode", "fast"}, "--mode"}, bad_case{{"--address", "localhost:80"}, "--address"},
                      bad_case{{"--log-level", "loud"}, "--log-level"}, bad_case{{"--log-format", "xml"}, "--log-format"},
                      bad_case{{"--drain-timeout", "10"}, "--drain-timeout"},
                      bad_case{{"--drain-timeout", "-5s"}, "--drain-timeout"},
                      bad_case{{"--default-timeout", "0ms"}, "--default-timeout"},
                      bad_case{{"--default-timeout", "90s", "--max-timeout", "60s"}, "--default-timeout"},
                      bad_case{{"--max-header-bytes", "10"}, "--max-header-bytes"},
                      bad_case{{"--max-headers", "0"}, "--max-headers"},
                      bad_case{{"--max-connections", "0"}, "--max-connections"},
                      bad_case{{"--max-pipelined", "many"}, "--max-pipelined"},
                      bad_case{{"--memory-budget", "48"}, "--memory-budget"},
                      bad_case{{"--memory-budget", "512KiB"}, "--memory-budget"},
                      bad_case{{"--memory-budget", "48MB"}, "--memory-budget"},
                      bad_case{{"--memory-budget", "99999999999999999GiB"}, "--memory-budget"},
                      bad_case{{"--port"}, "--port"}, bad_case{{"--colour", "red"}, "--colour"},
                      bad_case{{"stray"}, "stray"}));

// A job kind's own settings, as a kind declares them (config knows no kind): flags with
// environment twins, bounded, listed in --help, kept by name.
const std::vector<kind_setting> sieve_settings{
    {"sieve-max-n", "N", "largest n a request may ask for (default 1000)", 1000, 1, 1'000'000},
    {"sieve-max-bytes", "SIZE", "an upload, at most (default 1MiB)", 1ULL << 20, 1024, 1ULL << 30, true}};

TEST(config, a_kinds_own_settings_are_flags_with_environment_twins_and_bounds) {
  auto result = parse_config({"--sieve-max-n", "5000", "--sieve-max-bytes=2MiB"}, fake_env(), sieve_settings);
  ASSERT_TRUE(std::holds_alternative<config>(result));
  EXPECT_EQ(std::get<config>(result).setting("sieve-max-n"), 5000u);
  EXPECT_EQ(std::get<config>(result).setting("sieve-max-bytes"), 2u << 20);

  EXPECT_EQ(sieve_settings[0].env(), "CRUNCH_SIEVE_MAX_N");
  result = parse_config({}, fake_env({{"CRUNCH_SIEVE_MAX_N", "7"}}), sieve_settings);
  EXPECT_EQ(std::get<config>(result).setting("sieve-max-n"), 7u);
  result = parse_config({"--sieve-max-n", "9"}, fake_env({{"CRUNCH_SIEVE_MAX_N", "7"}}), sieve_settings);
  EXPECT_EQ(std::get<config>(result).setting("sieve-max-n"), 9u);  // the flag wins
  // Not given: not there; the kinds' defaults are filled in when they are built (kinds.hpp).
  result = parse_config({}, fake_env(), sieve_settings);
  EXPECT_THROW((void)std::get<config>(result).setting("sieve-max-n"), std::out_of_range);

  for (const auto& [argv, names] : std::vector<std::pair<args, std::string>>{
           {{"--sieve-max-n", "0"}, "--sieve-max-n '0': must be an integer in 1..1000000"},
           {{"--sieve-max-n", "1000001"}, "--sieve-max-n"},
           {{"--sieve-max-bytes", "10"}, "--sieve-max-bytes '10': must be a size in 1KiB..1GiB"},
           {{"--sieve-max-bytes", "512B"}, "--sieve-max-bytes"}}) {
    result = parse_config(argv, fake_env(), sieve_settings);
    ASSERT_TRUE(std::holds_alternative<config_exit>(result)) << names;
    EXPECT_EQ(std::get<config_exit>(result).exit_code, 2);
    EXPECT_NE(std::get<config_exit>(result).message.find(names), std::string::npos) << std::get<config_exit>(result).message;
  }
  result = parse_config({}, fake_env({{"CRUNCH_SIEVE_MAX_N", "many"}}), sieve_settings);
  EXPECT_NE(std::get<config_exit>(result).message.find("CRUNCH_SIEVE_MAX_N"), std::string::npos);
  // Undeclared, the same flag is unknown.
  EXPECT_NE(refused({"--sieve-max-n", "5"}).message.find("unknown option '--sieve-max-n'"), std::string::npos);

  result = parse_config({"--help"}, fake_env(), sieve_settings);
  const auto help = std::get<config_exit>(result).message;
  EXPECT_NE(help.find("--sieve-max-bytes SIZE"), std::string::npos) << help;
  EXPECT_NE(help.find("[CRUNCH_SIEVE_MAX_BYTES]"), std::string::npos) << help;
}

TEST(config, bad_environment_value_names_the_variable) {
  const auto exit = refused({}, {{"CRUNCH_WORKERS", "0"}});
  EXPECT_EQ(exit.exit_code, 2);
  EXPECT_NE(exit.message.find("CRUNCH_WORKERS"), std::string::npos) << exit.message;
}

}  // namespace
}  // namespace crunch
