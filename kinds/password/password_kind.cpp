// The password kind's declaration: POST /v1/password/hash and /v1/password/verify over password.cpp.
#include "password.hpp"

#include <crunch/kinds.hpp>
#include <crunch/wiping.hpp>

namespace crunch {

namespace {

// A password is hashed once into Argon2's first block, so its length costs almost nothing; the
// bound keeps bodies small. Escaped as \uXXXX by an ASCII-only encoder, 1024 bytes of UTF-8 take
// at most 3 KiB of JSON, which the 4 KiB body limit holds with the other fields.
constexpr std::size_t max_password_bytes = 1024;
constexpr std::size_t max_hash_bytes = 256;
constexpr std::size_t max_body_bytes = 4096;

// A password route: a POST with a small JSON body that holds a secret.
job_route password_route(std::string name, std::string path, std::string summary, std::vector<parameter> parameters) {
  job_route route;
  route.name = std::move(name);
  route.method = "POST";
  route.path = std::move(path);
  route.summary = std::move(summary);
  route.parameters = std::move(parameters);
  route.json_body = true;
  route.max_body_bytes = max_body_bytes;
  route.sensitive = true;
  return route;
}

// A stored hash's parameter above this server's bound, as a 400.
std::optional<invalid_argument> above(std::string_view what, std::uint64_t value, std::uint64_t bound,
                                      std::string_view unit = {}) {
  if (value <= bound) return std::nullopt;
  return invalid_argument{"hash asks for " + std::string(what) + "=" + std::to_string(value) + std::string(unit) +
                          ", above this server's bound of " + std::to_string(bound)};
}

parameter password_parameter() {
  return {"password", parameter_source::body, parameter_type::string, 1, max_password_bytes, std::nullopt,
          "the password, UTF-8; never logged, echoed or kept"};
}

// Argon2's work: m KiB written t times. The memory is the worker's own, kept from the last hash
// (worker_memory.hpp), so there is no first touch to pay for; the wipe after the hash costs about
// 4 % of a pass (0.27 ms for 19 MiB against ~6 ms a pass on 2 cores), within what completed jobs
// refine.
double work(std::uint64_t m_cost_kib, std::uint64_t t_cost) { return static_cast<double>(m_cost_kib * t_cost); }

// Argon2 allows 2^32 − 1 of each; these are already hours of work per hash.
constexpr std::uint64_t most_m_cost = 4ULL << 20;  // 4 GiB, in KiB
constexpr std::uint64_t most_t_cost = 1000;

std::vector<kind_setting> password_settings() {
  return {
      {"password-m-cost", "KIB", "Argon2id memory of a new password hash, in KiB (default 19456: OWASP's 19 MiB)",
       19'456, 8, most_m_cost},
      {"password-t-cost", "N", "Argon2id passes of a new password hash (default 2)", 2, 1, most_t_cost},
      {"password-max-m-cost", "KIB",
       "most memory a password hash to make or verify may ask for, in KiB (default 262144: 256 MiB)", 262'144, 8,
       most_m_cost},
      {"password-max-t-cost", "N", "most passes a password hash to make or verify may ask for (default 6)", 6, 1,
       most_t_cost},
  };
}

std::optional<std::string> check_password_settings(const config& cfg) {
  const auto m = cfg.setting("password-m-cost");
  if (m > cfg.setting("password-max-m-cost")) return "invalid --password-m-cost: above --password-max-m-cost";
  if (cfg.setting("password-t-cost") > cfg.setting("password-max-t-cost")) {
    return "invalid --password-t-cost: above --password-max-t-cost";
  }
  // A budget that cannot hold one hash at the defaults would refuse every hash (0: not resolved yet).
  if (cfg.memory_budget != 0 && password_job_memory(m) > cfg.memory_budget) {
    return "--memory-budget of " + std::to_string(cfg.memory_budget >> 20) +
           " MiB cannot hold one password hash at --password-m-cost " + std::to_string(m) + " KiB";
  }
  return std::nullopt;
}

job_kind build_password(const config& cfg) {
  init_sodium();
  const auto m_cost = cfg.setting("password-m-cost");
  const auto t_cost = cfg.setting("password-t-cost");
  const argon2_params current{static_cast<std::uint32_t>(m_cost), static_cast<std::uint32_t>(t_cost), 1};
  const auto max_m = cfg.setting("password-max-m-cost");
  const auto max_t = cfg.setting("password-max-t-cost");

  auto hash = password_route(
      "password_hash", "/v1/password/hash", "hash a password with Argon2id; answers its PHC string",
      {password_parameter(),
       {"m_cost_kib", parameter_source::body, parameter_type::integer, 8, max_m, m_cost, "memory in KiB"},
       {"t_cost", parameter_source::body, parameter_type::integer, 1, max_t, t_cost,
        "passes over the memory"}});
  hash.description =
      "A fresh 16-byte salt from the OS, parallelism 1. The password is never logged or echoed, and the buffers "
      "that held it are wiped. An Argon2 hash cannot stop midway: at the deadline, or when the client leaves, the "
      "answer goes out at once and the worker finishes the hash and drops it.";
  hash.answer = {"The PHC string, which any Argon2 library verifies.",
                 {{"type", "object"},
                  {"additionalProperties", false},
                  {"required", {"hash"}},
                  {"properties",
                   {{"hash",
                     {{"type", "string"},
                      {"pattern", R"(^\$argon2id\$v=19\$m=[0-9]+,t=[0-9]+,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$)"}}}}}}};
  hash.may_fail = true;  // its memory may not be had (the budget says yes, the address space no)
  hash.examples = {{"a password", "/v1/password/hash", R"({"password":"correct horse battery staple"})"},
                   {"256 MiB and six passes in 20 ms", "/v1/password/hash?timeout_ms=20",
                    R"({"password":"x","m_cost_kib":262144,"t_cost":6})", 1, {}, 504}};
  hash.prepare = [](const job_arguments& args, job_input&) -> std::variant<prepared_job, invalid_argument> {
    const auto m = static_cast<std::uint32_t>(args.integer("m_cost_kib"));
    const auto t = static_cast<std::uint32_t>(args.integer("t_cost"));
    auto run = [password = args.string("password"), m, t](std::stop_token) -> std::optional<job_output> {
      // Argon2 cannot stop midway: a job past its deadline finishes here, and its answer is dropped.
      auto phc = argon2id_hash(password.view(), m, t);
      wipe_stack_below();  // BLAKE2b's state held the password's last bytes
      return job_output::json({{"hash", std::move(phc)}});
    };
    return prepared_job{std::move(run), work(m, t), password_job_memory(m)};
  };

  auto verify = password_route(
      "password_verify", "/v1/password/verify",
      "check a password against a stored Argon2 hash (any parameter order); says if it needs a rehash",
      {password_parameter(),
       {"hash", parameter_source::body, parameter_type::string, 1, max_hash_bytes, std::nullopt,
        "the stored PHC string, $argon2id$v=19$m=..,t=..,p=..$salt$digest"}});
  verify.description =
      "Hashes from other implementations verify: the PHC string's parameters may come in any order (node-argon2 "
      "writes m, p, t); everything else is read strictly. A hash whose parameters exceed the server's bounds is a "
      "400 before any work. `needs_rehash` says the stored hash is weaker than the server's defaults (another "
      "variant, less memory or fewer passes, a salt under 16 bytes or a digest under 32): hash the password again "
      "at login.";
  verify.answer = {"Whether it matches, and whether to hash it again.",
                   {{"type", "object"},
                    {"additionalProperties", false},
                    {"required", {"match", "needs_rehash"}},
                    {"properties", {{"match", {{"type", "boolean"}}}, {"needs_rehash", {{"type", "boolean"}}}}}}};
  verify.examples = {
      {"a password and its hash", "/v1/password/verify",
       R"({"password":"correct horse battery staple","hash":"$argon2id$v=19$m=1024,t=1,p=1$tQPEqdyexj1I/9XdKpwcvg$DqTioH5rsumv3QGGUXcsB8iqF+DOP2PcE6n+3ioF5sU"})"},
      {"a hash of 256 MiB and six passes in 20 ms", "/v1/password/verify?timeout_ms=20",
       R"({"password":"x","hash":"$argon2id$v=19$m=262144,t=6,p=1$c29tZXNhbHRzb21lc2FsdA$Ui6aHLpJN5r4rvAhfKb3MlWOguzhHPbf40AQmuSvRYA"})",
       1, {}, 504}};
  verify.prepare = [current, max_m, max_t](const job_arguments& args, job_input&) -> std::variant<prepared_job, invalid_argument> {
    auto parsed = parse_phc(args.string("hash").view());
    if (auto* why = std::get_if<std::string>(&parsed)) return invalid_argument{*why};
    auto stored = std::get<phc_hash>(std::move(parsed));
    // Checked before any work: a stored hash names its own cost, and one from a caller could
    // otherwise ask for gigabytes.
    if (auto bad = above("m", stored.params.m_cost_kib, max_m, " KiB")) return *bad;
    if (auto bad = above("t", stored.params.t_cost, max_t)) return *bad;
    if (auto bad = above("p", stored.params.parallelism, phc_max_parallelism)) return *bad;
    const bool rehash = needs_rehash(stored, current);
    const auto m = stored.params.m_cost_kib;
    const auto t = stored.params.t_cost;
    auto run = [password = args.string("password"), stored = std::move(stored), rehash](
                   std::stop_token) -> std::optional<job_output> {
      const bool match = argon2_verify(stored, password.view());
      wipe_stack_below();
      return job_output::json({{"match", match}, {"needs_rehash", rehash}});
    };
    return prepared_job{std::move(run), work(m, t), password_job_memory(m)};
  };

  job_kind kind;
  kind.name = "password";
  kind.cost_unit = "KiB-passes";
  kind.cost_model = "m_cost_kib*t_cost";
  kind.calibrate = [] {
    // The fastest of three small hashes (~2 ms each): 4 MiB, one pass.
    constexpr std::uint32_t m = 4096;
    return fastest_ns(3, [] { (void)argon2id_hash("calibration", m, 1); }) / work(m, 1);
  };
  kind.routes = {std::move(hash), std::move(verify)};
  return kind;
}

}  // namespace

kind_declaration password_kind() { return {"password", password_settings(), check_password_settings, build_password}; }

}  // namespace crunch
