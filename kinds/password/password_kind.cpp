// The password kind's declaration: POST /v1/password/hash and /v1/password/verify over password.cpp.
#include "crypt_hash.hpp"
#include "password.hpp"
#include "pepper.hpp"

#include <crunch/kinds.hpp>
#include <crunch/wiping.hpp>

#include <array>
#include <atomic>
#include <barrier>
#include <mutex>
#include <cstdio>
#include <thread>

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
      {"password-max-bcrypt-cost", "N", "most a stored bcrypt hash to verify may ask for, log2 rounds (default 15)", 15,
       4, 31},
      {"password-max-crypt-rounds", "N", "most rounds a stored sha256-crypt or sha512-crypt hash may ask for (default 1000000)",
       1'000'000, 1000, 999'999'999},
      {.name = "password-pepper-file",
       .value = "PATH",
       .help = "pepper keys, one id:secret a line, the current one first, reread on SIGHUP; new hashes use the "
               "current key and record its id",
       .text = true},
      {.name = "calibrate-password",
       .value = "DURATION",
       .help = "print the Argon2id --password-m-cost and --password-t-cost that take about DURATION a hash with "
               "every worker hashing, and the hashes per second that gives; then exit",
       .text = true},
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

// The schemes of crypt_hash.hpp priced in Argon2's unit: a scheme's work (its own measure) times
// the ratio of its nanoseconds per work to Argon2's per KiB-pass. Argon2's is measured at start;
// a scheme's on the worker of its first job, just before it (a few small hashes, ~10 ms), so that
// a server whose users never bring a legacy hash pays nothing at start. Until then, the ratios
// measured so on a 2-core EPYC (AVX-512 Argon2) stand in.
class scheme_prices {
 public:
  double units(const crypt_hash& hash) const { return hash.work * ratio_[index(hash.scheme)].load(std::memory_order_relaxed); }
  void set_argon2_ns(double ns) { argon2_ns_.store(ns, std::memory_order_relaxed); }
  // Measures `scheme` once (thread-safe), when Argon2's rate is known; true when this call did.
  bool measure(crypt_scheme scheme) {
    bool now = false;
    std::call_once(measured_[index(scheme)], [&] {
      const double argon2 = argon2_ns_.load(std::memory_order_relaxed);
      if (argon2 > 0) ratio_[index(scheme)].store(ns_per_work(scheme) / argon2, std::memory_order_relaxed);
      now = true;
    });
    return now;
  }

 private:
  static std::size_t index(crypt_scheme scheme) { return static_cast<std::size_t>(scheme); }
  // The fastest of three small hashes of `scheme`, per unit of its work.
  static double ns_per_work(crypt_scheme scheme) {
    constexpr std::array<const char*, 5> settings{
        "$2b$06$At8YFuJQncw9MKculaw0me",     // bcrypt, cost 6
        "$5$f9PDSRRw6v7QtFSo",               // sha256-crypt, 5000 rounds
        "$6$aXAwFAdpikrzFYL9",               // sha512-crypt, 5000 rounds
        "$y$j75$j9TjI3Coqgnq8vHNrzy6n0",     // yescrypt, N = 2^10, r = 8: 1 MiB
        "$7$86..../....j9TjI3Coqgnq8vH",     // scrypt, likewise
    };
    constexpr std::string_view password = "calibration";
    const crypt_bounds generous{31, 999'999'999, 1ULL << 30, 1000};
    const auto sample = std::get<crypt_hash>(
        parse_crypt(crypt_hash_with(password, settings[index(scheme)]), generous, password.size()));
    return fastest_ns(3, [&] { (void)crypt_verify(sample, password); }) / sample.work;
  }

  std::atomic<double> argon2_ns_{0};
  std::array<std::atomic<double>, 5> ratio_{600.0, 1.6, 1.3, 16.0, 17.0};
  std::array<std::once_flag, 5> measured_;
};

// The pepper key a new hash uses, from a snapshot of the keys (none without a file).
std::optional<pepper_use> current_pepper(const std::shared_ptr<const pepper_keys>& keys) {
  if (!keys) return std::nullopt;
  return pepper_use{keys->current().id, keys->current().value.view()};
}

// What the kind is configured with, shared by its routes' jobs.
struct password_policy {
  std::shared_ptr<pepper_store> peppers;
  crypt_bounds legacy_bounds;
  std::shared_ptr<scheme_prices> prices = std::make_shared<scheme_prices>();
  std::uint64_t m_cost = 0, t_cost = 0;  // what a hash is made with
  std::uint64_t max_m = 0, max_t = 0;    // the most a stored hash may ask for
  argon2_params current() const { return {static_cast<std::uint32_t>(m_cost), static_cast<std::uint32_t>(t_cost), 1}; }
};

password_policy policy_of(const config& cfg) {
  password_policy policy;
  const auto& pepper_file = cfg.text("password-pepper-file");
  try {
    policy.peppers =
        pepper_file.empty() ? std::make_shared<pepper_store>() : std::make_shared<pepper_store>(pepper_file);
  } catch (const std::runtime_error& e) {
    throw config_error(std::string("crunchd: invalid --password-pepper-file: ") + e.what());
  }
  policy.legacy_bounds = {static_cast<std::uint32_t>(cfg.setting("password-max-bcrypt-cost")),
                          cfg.setting("password-max-crypt-rounds"), cfg.setting("password-max-m-cost"),
                          cfg.setting("password-max-t-cost")};
  policy.m_cost = cfg.setting("password-m-cost");
  policy.t_cost = cfg.setting("password-t-cost");
  policy.max_m = cfg.setting("password-max-m-cost");
  policy.max_t = cfg.setting("password-max-t-cost");
  return policy;
}

job_route hash_route(const password_policy& policy) {
  const auto max_m = policy.max_m, max_t = policy.max_t, m_cost = policy.m_cost, t_cost = policy.t_cost;
  auto hash = password_route(
      "password_hash", "/v1/password/hash", "hash a password with Argon2id; answers its PHC string",
      {password_parameter(),
       {"m_cost_kib", parameter_source::body, parameter_type::integer, 8, max_m, m_cost, "memory in KiB"},
       {"t_cost", parameter_source::body, parameter_type::integer, 1, max_t, t_cost,
        "passes over the memory"}});
  hash.description =
      "A fresh 16-byte salt from the OS, parallelism 1. With --password-pepper-file, the current pepper key is "
      "Argon2's secret input and its id is written as keyid=. The password is never logged or echoed, and the buffers "
      "that held it are wiped. At the deadline, or when the client leaves, the hash stops within a millisecond "
      "or two and its memory is wiped.";
  hash.answer = {"The PHC string, which any Argon2 library verifies.",
                 {{"type", "object"},
                  {"additionalProperties", false},
                  {"required", {"hash"}},
                  {"properties",
                   {{"hash",
                     {{"type", "string"},
                      {"pattern",
                       R"(^\$argon2id\$v=19\$m=[0-9]+,t=[0-9]+,p=1(,keyid=[A-Za-z0-9.-]{1,16})?\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$)"}}}}}}};
  hash.may_fail = true;  // its memory may not be had (the budget says yes, the address space no)
  hash.examples = {{"a password", "/v1/password/hash", R"({"password":"correct horse battery staple"})"},
                   {"256 MiB and six passes in 20 ms", "/v1/password/hash?timeout_ms=20",
                    R"({"password":"x","m_cost_kib":262144,"t_cost":6})", 1, {}, 504}};
  hash.prepare = [peppers = policy.peppers](const job_arguments& args, job_input&) -> std::variant<prepared_job, invalid_argument> {
    const auto m = static_cast<std::uint32_t>(args.integer("m_cost_kib"));
    const auto t = static_cast<std::uint32_t>(args.integer("t_cost"));
    auto run = [password = args.string("password"), m, t, keys = peppers->keys()](std::stop_token stop) -> std::optional<job_output> {
      auto phc = argon2id_hash(password.view(), m, t, current_pepper(keys), stop);
      wipe_stack_below();  // BLAKE2b's state held the password's last bytes
      if (stop.stop_requested()) return std::nullopt;
      return job_output::json({{"hash", std::move(phc)}});
    };
    return prepared_job{std::move(run), work(m, t), password_job_memory(m)};
  };

  return hash;
}

// A hash another scheme made: it verifies, and always asks to be made again as Argon2id.
std::variant<prepared_job, invalid_argument> verify_legacy(const password_policy& policy, const secret& password,
                                                           const secret& text) {
  const auto& prices = policy.prices;
  // A hash another scheme made: it verifies, and always asks to be made again as Argon2id.
  auto parsed = parse_crypt(text.view(), policy.legacy_bounds, password.size());
  if (auto* why = std::get_if<std::string>(&parsed)) return invalid_argument{*why};
  auto stored = std::get<crypt_hash>(std::move(parsed));
  const auto units = prices->units(stored);
  const auto memory = stored.memory_bytes;
  auto run = [password, stored = std::move(stored), prices](std::stop_token) -> std::optional<job_output> {
    const bool measured = prices->measure(stored.scheme);
    bool match = false;
    try {
      match = crypt_verify(stored, password.view());
    } catch (const std::runtime_error& e) {  // a string parse_crypt let through and libcrypt did not
      return job_output::refused("invalid_argument", std::string("hash: ") + e.what());
    }
    wipe_stack_below();
    auto out = job_output::json({{"match", match}, {"needs_rehash", true}});
    out.representative = !measured;  // its time includes the measurement: not one to learn from
    return out;
  };
  return prepared_job{std::move(run), units, memory};
}

std::variant<prepared_job, invalid_argument> verify_argon2(const password_policy& policy, const secret& password,
                                                           const secret& text) {
  auto parsed = parse_phc(text.view());
  if (auto* why = std::get_if<std::string>(&parsed)) return invalid_argument{*why};
  auto stored = std::get<phc_hash>(std::move(parsed));
  // Checked before any work: a stored hash names its own cost, and one from a caller could
  // otherwise ask for gigabytes.
  if (auto bad = above("m", stored.params.m_cost_kib, policy.max_m, " KiB")) return *bad;
  if (auto bad = above("t", stored.params.t_cost, policy.max_t)) return *bad;
  if (auto bad = above("p", stored.params.parallelism, phc_max_parallelism)) return *bad;
  auto keys = policy.peppers->keys();
  if (!stored.keyid.empty() && (!keys || !keys->find(stored.keyid))) {
    return invalid_argument{"hash was made with pepper key " + stored.keyid +
                            ", which this server's --password-pepper-file does not hold"};
  }
  const bool rehash = needs_rehash(stored, policy.current(), keys ? std::string_view(keys->current().id) : std::string_view{});
  const auto m = stored.params.m_cost_kib;
  const auto t = stored.params.t_cost;
  auto run = [password, stored = std::move(stored), rehash, keys = std::move(keys)](
                 std::stop_token stop) -> std::optional<job_output> {
    const auto secret = stored.keyid.empty() ? std::string_view{} : keys->find(stored.keyid)->value.view();
    const bool match = argon2_verify(stored, password.view(), secret, stop);
    wipe_stack_below();
    if (stop.stop_requested()) return std::nullopt;
    return job_output::json({{"match", match}, {"needs_rehash", rehash}});
  };
  return prepared_job{std::move(run), work(m, t), password_job_memory(m)};
}

job_route verify_route(const password_policy& policy) {
  auto verify = password_route(
      "password_verify", "/v1/password/verify",
      "check a password against a stored hash (Argon2, bcrypt, sha-crypt, yescrypt, scrypt); says if it needs a rehash",
      {password_parameter(),
       {"hash", parameter_source::body, parameter_type::string, 1, max_hash_bytes, std::nullopt,
        "the stored hash: a PHC string $argon2id$ (or $argon2i$, $argon2d$), or crypt(3)'s $2a$, $2b$, $2y$, $5$, "
        "$6$, $y$ or $7$"}});
  verify.description =
      "Argon2 hashes from other implementations verify: the PHC string's parameters may come in any order "
      "(node-argon2 writes m, p, t); everything else is read strictly. The hashes a team already stores verify "
      "too, through libxcrypt: bcrypt ($2a$, $2b$, $2y$), sha256-crypt ($5$), sha512-crypt ($6$), yescrypt ($y$) "
      "and scrypt ($7$). A hash whose cost exceeds the server's bounds (Argon2's m and t, bcrypt's cost, the crypt "
      "rounds, yescrypt's and scrypt's 128·r·N and passes) is a 400 before any work, and each scheme is priced "
      "by its own model. `needs_rehash` says the stored hash is weaker than what the server makes now (not "
      "Argon2id, less memory or fewer passes, a salt under 16 bytes or a digest under 32, or another pepper key "
      "than the current one): hash the password again at login. A hash made with a pepper key the server no "
      "longer holds is a 400.";
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
       1, {}, 504},
      {"a bcrypt hash from htpasswd -B, to be made again", "/v1/password/verify",
       R"({"password":"migrate me 2019","hash":"$2y$05$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqwa"})"},
      {"a bcrypt cost of 31, refused before any work", "/v1/password/verify",
       R"({"password":"x","hash":"$2b$31$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqwa"})", 1, {}, 400}};
  verify.prepare = [policy](const job_arguments& args, job_input&) -> std::variant<prepared_job, invalid_argument> {
    const auto text = args.string("hash");
    const auto password = args.string("password");
    return text.view().starts_with("$argon2") ? verify_argon2(policy, password, text)
                                              : verify_legacy(policy, password, text);
  };
  return verify;
}

job_kind build_password(const config& cfg) {
  init_sodium();
  const auto policy = policy_of(cfg);
  const auto& prices = policy.prices;
  const auto& peppers = policy.peppers;
  const auto& pepper_file = cfg.text("password-pepper-file");
  auto hash = hash_route(policy);
  auto verify = verify_route(policy);

  job_kind kind;
  kind.name = "password";
  kind.cost_unit = "KiB-passes";
  kind.cost_model = "m_cost_kib*t_cost";
  kind.calibrate = [prices] {
    // The fastest of three small hashes (~2 ms each): 4 MiB, one pass.
    constexpr std::uint32_t m = 4096;
    const double argon2 = fastest_ns(3, [] { (void)argon2id_hash("calibration", m, 1); }) / work(m, 1);
    prices->set_argon2_ns(argon2);
    return argon2;
  };
  kind.routes = {std::move(hash), std::move(verify)};
  if (!pepper_file.empty()) kind.reload = [peppers] { return peppers->reload(); };
  return kind;
}

// --calibrate-password DURATION: the Argon2id m and t that take about DURATION a hash while every
// worker hashes at once (they share the memory bus, as in service), found by scaling m at the
// configured t (at most fourfold a step) until the time is within 5 %; t grows only when m
// reaches its bound.
int calibrate_password(const config& cfg) {
  const auto target = parse_duration(cfg.text("calibrate-password"));
  if (!target || target->count() < 10) {
    std::fprintf(stderr, "crunchd: invalid --calibrate-password: a duration of at least 10ms, such as 250ms\n");
    return 2;
  }
  init_sodium();
  const auto workers = std::max<std::size_t>(cfg.workers, 1);
  const std::uint64_t by_budget = cfg.memory_budget / workers / 1024;  // KiB a hash may have with all running
  const std::uint64_t most_m = std::min(cfg.setting("password-max-m-cost"), by_budget);
  auto t = cfg.setting("password-t-cost");
  // Seconds one hash takes at (m, t) while `workers` hash at once: the slowest of them.
  auto measure = [&](std::uint64_t m, std::uint64_t passes) {
    std::vector<double> seconds(workers);
    std::barrier warmed(static_cast<std::ptrdiff_t>(workers));
    std::vector<std::jthread> threads;
    for (std::size_t i = 0; i < workers; ++i) {
      threads.emplace_back([&, i] {
        // The first hash puts the thread's kept memory in place, as a worker's is after its
        // first job; the second, started by all at once, is timed.
        (void)argon2id_hash("calibration", static_cast<std::uint32_t>(m), 1);
        warmed.arrive_and_wait();
        const auto start = std::chrono::steady_clock::now();
        (void)argon2id_hash("calibration", static_cast<std::uint32_t>(m), static_cast<std::uint32_t>(passes));
        seconds[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      });
    }
    threads.clear();  // joins
    return *std::max_element(seconds.begin(), seconds.end());
  };
  const double goal = std::chrono::duration<double>(*target).count();
  auto whole_mib = [](double kib) { return std::max<std::uint64_t>(1024, static_cast<std::uint64_t>(kib / 1024) * 1024); };
  std::uint64_t m = std::min<std::uint64_t>(8192, most_m);
  double took = measure(m, t);
  for (int round = 0; round < 8; ++round) {
    const double wanted = static_cast<double>(m) * goal / took;
    const auto next = std::min(whole_mib(std::min(wanted, 4.0 * static_cast<double>(m))), most_m);
    if (next == m) break;
    m = next;
    took = measure(m, t);
    if (std::abs(took - goal) < 0.05 * goal) break;
  }
  if (m == most_m && took < 0.9 * goal) {
    // The memory is at its bound: more passes instead.
    t = std::min(cfg.setting("password-max-t-cost"), std::max<std::uint64_t>(t, static_cast<std::uint64_t>(static_cast<double>(t) * goal / took)));
    took = measure(m, t);
  }
  std::printf("Argon2id at about %lld ms a hash with %zu worker(s) hashing at once, on this machine:\n"
              "  --password-m-cost %llu --password-t-cost %llu\n"
              "  measured %.0f ms a hash: %.1f hashes per second in all\n",
              static_cast<long long>(target->count()), workers, static_cast<unsigned long long>(m),
              static_cast<unsigned long long>(t), took * 1000, static_cast<double>(workers) / took);
  if (m == most_m) {
    std::printf("  (m is at its bound: --password-max-m-cost, or --memory-budget shared by the workers)\n");
  }
  if (t == cfg.setting("password-max-t-cost") && took < 0.9 * goal) std::printf("  (t is at --password-max-t-cost)\n");
  return 0;
}

}  // namespace

kind_declaration password_kind() {
  return {.name = "password",
          .settings = password_settings(),
          .check = check_password_settings,
          .build = build_password,
          .commands = {{"calibrate-password", calibrate_password}}};
}

}  // namespace crunch
