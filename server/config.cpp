#include <crunch/config.hpp>

#include "workers/cpu_budget.hpp"
#include "server/decimal.hpp"
#include "workers/memory_budget.hpp"
#include "server/net.hpp"

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <sstream>

#include <sys/resource.h>
#include <unistd.h>

namespace crunch {

namespace {

/// A flag's value parser: returns an error phrase ("must be ...") or nothing.
using setter = std::function<std::optional<std::string>(config&, const std::string&)>;

struct option {
  const char* flag;       // without the leading "--"
  const char* env;        // the environment twin
  const char* value;      // placeholder for --help
  const char* help;
  setter set;
};

std::optional<std::uint64_t> parse_unsigned(const std::string& text) {
  return parse_decimal(text, 0, std::numeric_limits<std::uint64_t>::max());
}

// Sizes need a unit too: 64MiB, 2GiB (or Kubernetes' 64Mi, 2Gi), 512KiB, 1048576B.
std::optional<std::uint64_t> parse_size(const std::string& text) {
  static const std::pair<const char*, std::uint64_t> units[] = {
      {"KiB", 1ULL << 10}, {"MiB", 1ULL << 20}, {"GiB", 1ULL << 30}, {"TiB", 1ULL << 40},
      {"Ki", 1ULL << 10},  {"Mi", 1ULL << 20},  {"Gi", 1ULL << 30},  {"Ti", 1ULL << 40}, {"B", 1}};
  for (const auto& [unit, scale] : units) {
    const std::string_view suffix(unit);
    if (text.size() <= suffix.size() || !text.ends_with(suffix)) continue;
    const auto value = parse_unsigned(text.substr(0, text.size() - suffix.size()));
    if (!value || *value > std::numeric_limits<std::uint64_t>::max() / scale) return std::nullopt;
    return *value * scale;
  }
  return std::nullopt;
}

setter size(std::uint64_t config::*member, std::uint64_t min) {
  return [=](config& c, const std::string& text) -> std::optional<std::string> {
    const auto value = parse_size(text);
    if (!value || *value < min) {
      return "must be a size of at least " + std::to_string(min >> 20) + "MiB, such as 48MiB or 2GiB";
    }
    c.*member = *value;
    return std::nullopt;
  };
}

setter count(std::size_t config::*member, std::uint64_t min, std::uint64_t max) {
  return [=](config& c, const std::string& text) -> std::optional<std::string> {
    const auto value = parse_unsigned(text);
    if (!value || *value < min || *value > max) {
      return "must be an integer in " + std::to_string(min) + ".." + std::to_string(max);
    }
    c.*member = static_cast<std::size_t>(*value);
    return std::nullopt;
  };
}

setter duration(std::chrono::milliseconds config::*member, std::chrono::milliseconds min) {
  return [=](config& c, const std::string& text) -> std::optional<std::string> {
    const auto value = parse_duration(text);
    if (!value || *value < min) {
      return "must be a duration of at least " + std::to_string(min.count()) + "ms, such as 500ms or 10s";
    }
    c.*member = *value;
    return std::nullopt;
  };
}

// A flag that takes one of a few names, e.g. --mode offload|inline.
template <typename T>
setter one_of(T config::*member, std::vector<std::pair<std::string, T>> choices) {
  return [=](config& c, const std::string& text) -> std::optional<std::string> {
    std::string names;
    for (const auto& [name, value] : choices) {
      if (text == name) {
        c.*member = value;
        return std::nullopt;
      }
      names += (names.empty() ? "" : ", ") + name;
    }
    return "must be one of " + names;
  };
}

setter boolean(bool config::*member) {
  return [=](config& c, const std::string& text) -> std::optional<std::string> {
    if (text == "true" || text == "1" || text == "on") {
      c.*member = true;
    } else if (text == "false" || text == "0" || text == "off") {
      c.*member = false;
    } else {
      return "must be true or false";
    }
    return std::nullopt;
  };
}

const std::vector<option>& options() {
  static const std::vector<option> table = {
      {"address", "CRUNCH_ADDRESS", "IP", "listen address (default 0.0.0.0)",
       [](config& c, const std::string& text) -> std::optional<std::string> {
         sys::error_code ec;
         net::ip::make_address(text, ec);
         if (ec) return "must be an IPv4 or IPv6 address";
         c.address = text;
         return std::nullopt;
       }},
      {"port", "CRUNCH_PORT", "N", "listen port, 0 for any free one (default 8080)",
       [](config& c, const std::string& text) -> std::optional<std::string> {
         const auto value = parse_unsigned(text);
         if (!value || *value > 65535) return "must be an integer in 0..65535";
         c.port = static_cast<std::uint16_t>(*value);
         return std::nullopt;
       }},
      {"workers", "CRUNCH_WORKERS", "N", "worker threads (default: CPUs this process may use)",
       count(&config::workers, 1, 1024)},
      {"queue-limit", "CRUNCH_QUEUE_LIMIT", "N", "jobs waiting for a worker, at most (default 8 x workers)",
       count(&config::queue_limit, 1, 1'000'000)},
      {"worker-priority", "CRUNCH_WORKER_PRIORITY", "normal|batch|idle",
       "OS scheduling of the workers (default batch)",
       one_of(&config::priority, {{"normal", worker_priority::normal},
                                  {"batch", worker_priority::batch},
                                  {"idle", worker_priority::idle}})},
      {"io-priority", "CRUNCH_IO_PRIORITY", "auto|realtime|normal",
       "OS scheduling of the I/O thread: real-time (SCHED_FIFO 1) where allowed (default auto), required, or normal",
       one_of(&config::io_scheduling, {{"auto", io_priority::automatic},
                                       {"realtime", io_priority::realtime},
                                       {"normal", io_priority::normal}})},
      {"cpu-reserve", "CRUNCH_CPU_RESERVE", "PERCENT",
       "under a CPU quota, the share kept from the workers so the quota never runs out under the I/O thread (default 8, 0 = off)",
       count(&config::cpu_reserve_percent, 0, 50)},
      {"mode", "CRUNCH_MODE", "offload|inline",
       "run jobs on the worker pool, or on the I/O thread for comparison (default offload)",
       one_of(&config::mode, {{"offload", run_mode::offload}, {"inline", run_mode::inline_}})},
      {"default-timeout", "CRUNCH_DEFAULT_TIMEOUT", "DURATION",
       "deadline of a job when the client names none (default 10s)",
       duration(&config::default_timeout, std::chrono::milliseconds(1))},
      {"max-timeout", "CRUNCH_MAX_TIMEOUT", "DURATION", "longest deadline a client may ask for (default 60s)",
       duration(&config::max_timeout, std::chrono::milliseconds(1))},
      {"async-max-timeout", "CRUNCH_ASYNC_MAX_TIMEOUT", "DURATION",
       "longest deadline of an asynchronous job (Prefer: respond-async), and its default (default 1h)",
       duration(&config::async_max_timeout, std::chrono::milliseconds(1))},
      {"jobs-keep", "CRUNCH_JOBS_KEEP", "DURATION",
       "how long an ended asynchronous job, its result and an idempotency key are kept (default 1h)",
       duration(&config::jobs_keep, std::chrono::milliseconds(1000))},
      {"jobs-store-bytes", "CRUNCH_JOBS_STORE_BYTES", "SIZE",
       "what the job store may hold: jobs, queued bodies, results, idempotency keys; held in memory and lost when "
       "crunchd stops (default: a quarter of the memory budget, at most 64MiB)",
       size(&config::jobs_store_bytes, 1ULL << 20)},
      {"jobs-store", "CRUNCH_JOBS_STORE", "memory|redis://HOST:PORT/DB",
       "where asynchronous jobs live: memory (this replica's alone, lost when it stops), or a Redis 7 that replicas "
       "share (default memory)",
       [](config& c, const std::string& text) -> std::optional<std::string> {
         if (text != "memory" && !text.starts_with("redis://")) return "must be memory or redis://host:port/db";
         c.jobs_store = text;
         return std::nullopt;
       }},
      {"jobs-claim-after", "CRUNCH_JOBS_CLAIM_AFTER", "DURATION",
       "with a Redis store: a job whose replica has not kept it claimed this long (it died) is taken over by "
       "another (default 30s)",
       duration(&config::jobs_claim_after, std::chrono::milliseconds(300))},
      {"callback-allow", "CRUNCH_CALLBACK_ALLOW", "PREFIX,...",
       "URL prefixes an asynchronous job's callback_url must start with, e.g. https://hooks.example.com/ "
       "(default: none, no callbacks)",
       [](config& c, const std::string& text) -> std::optional<std::string> {
         c.callback_allow.clear();
         std::string_view rest = text;
         while (!rest.empty()) {
           const auto comma = rest.find(',');
           const auto prefix = rest.substr(0, comma);
           if (!(prefix.starts_with("http://") || prefix.starts_with("https://")) || prefix.size() <= 8 ||
               prefix.find_first_of(" \t") != std::string_view::npos) {
             return "must be http:// or https:// URL prefixes with a host, separated by commas";
           }
           c.callback_allow.emplace_back(prefix);
           rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
         }
         if (c.callback_allow.empty()) return "must name at least one prefix";
         return std::nullopt;
       }},
      {"callback-allow-private", "CRUNCH_CALLBACK_ALLOW_PRIVATE", "true|false",
       "callbacks may go to loopback, private and link-local addresses too (default false)",
       boolean(&config::callback_allow_private)},
      {"webhook-secret-file", "CRUNCH_WEBHOOK_SECRET_FILE", "FILE",
       "Standard Webhooks secrets callbacks are signed with, whsec_<base64> one a line, current first, each "
       "signing; reread on SIGHUP (needed with --callback-allow)",
       [](config& c, const std::string& text) -> std::optional<std::string> {
         if (text.empty()) return "must name a file";
         c.webhook_secret_file = text;
         return std::nullopt;
       }},
      {"callback-ca-file", "CRUNCH_CALLBACK_CA_FILE", "FILE",
       "PEM certificates of authorities an https:// callback receiver may present a certificate from, besides the "
       "system's (default: the system's alone)",
       [](config& c, const std::string& text) -> std::optional<std::string> {
         if (text.empty()) return "must name a file";
         c.callback_ca_file = text;
         return std::nullopt;
       }},
      {"callback-helper", "CRUNCH_CALLBACK_HELPER", "FILE",
       "the crunch-callback program each callback attempt runs in, holding no secret (default: beside this "
       "program, else " CRUNCH_INSTALLED_CALLBACK_HELPER ")",
       [](config& c, const std::string& text) -> std::optional<std::string> {
         if (text.empty()) return "must name a file";
         c.callback_helper = text;
         return std::nullopt;
       }},
      {"callback-retry-for", "CRUNCH_CALLBACK_RETRY_FOR", "DURATION",
       "how long a callback is retried, with exponential backoff from 1s, after its first attempt (default 1h)",
       duration(&config::callback_retry_for, std::chrono::milliseconds(0))},
      {"drain-timeout", "CRUNCH_DRAIN_TIMEOUT", "DURATION",
       "on SIGTERM, how long in-flight requests may take to finish (default 10s)",
       duration(&config::drain_timeout, std::chrono::milliseconds(0))},
      {"read-timeout", "CRUNCH_READ_TIMEOUT", "DURATION",
       "to receive a whole request or send a response (default 10s)",
       duration(&config::read_timeout, std::chrono::milliseconds(1))},
      {"idle-timeout", "CRUNCH_IDLE_TIMEOUT", "DURATION",
       "how long a kept-alive connection may wait for its next request (default 60s)",
       duration(&config::idle_timeout, std::chrono::milliseconds(1))},
      {"max-header-bytes", "CRUNCH_MAX_HEADER_BYTES", "N",
       "request line and headers, at most; beyond: 431 (default 8192)",
       count(&config::max_header_bytes, 256, 1024 * 1024)},
      {"max-body-bytes", "CRUNCH_MAX_BODY_BYTES", "N", "request body, at most; beyond: 413 (default 65536)",
       count(&config::max_body_bytes, 0, 64 * 1024 * 1024)},
      {"max-headers", "CRUNCH_MAX_HEADERS", "N", "header fields in a request, at most; beyond: 431 (default 100)",
       count(&config::max_headers, 1, 10'000)},
      {"max-connections", "CRUNCH_MAX_CONNECTIONS", "N",
       "open connections, at most; beyond: 503 and close (default 10000, or what the open-files limit allows)",
       count(&config::max_connections, 1, 1'000'000)},
      {"max-pipelined", "CRUNCH_MAX_PIPELINED", "N",
       "requests answered in a row from bytes already received; then the connection closes (default 100)",
       count(&config::max_pipelined, 1, 1'000'000)},
      {"memory-budget", "CRUNCH_MEMORY_BUDGET", "SIZE",
       "memory that running jobs may declare together (default: the cgroup memory limit, else physical memory, "
       "less max(16MiB, 1/4) of it)",
       size(&config::memory_budget, 1ULL << 20)},
      {"ui", "CRUNCH_UI", "true|false",
       "the live view: the page at /, its stream /v1/events and /v1/stats; false answers them 404 (default true)",
       boolean(&config::ui)},
      {"max-event-streams", "CRUNCH_MAX_EVENT_STREAMS", "N",
       "open /v1/events streams, at most; beyond: 503 (default 32)", count(&config::max_event_streams, 1, 10'000)},
      {"event-interval", "CRUNCH_EVENT_INTERVAL", "DURATION",
       "how often the live view takes a snapshot and sends it to every stream (default 250ms)",
       duration(&config::event_interval, std::chrono::milliseconds(10))},
      {"api-keys", "CRUNCH_API_KEYS", "FILE",
       "API keys, one name:key a line, reread on SIGHUP; with keys, job routes need 'Authorization: Bearer KEY' "
       "(default: none, jobs open to all)",
       [](config& c, const std::string& text) -> std::optional<std::string> {
         if (text.empty()) return "must name a file";
         c.api_keys = text;
         return std::nullopt;
       }},
      {"protect-metrics", "CRUNCH_PROTECT_METRICS", "true|false",
       "with --api-keys, /metrics, /v1/stats and /v1/events need a key too (default false: open for scrapers)",
       boolean(&config::protect_metrics)},
      {"fair-key", "CRUNCH_FAIR_KEY", "remote|key|header:NAME|none",
       "what names a client's flow for fair shares of the workers: its address, its API key's name, a header "
       "(e.g. header:X-Client-Id behind a proxy), or none for one FIFO (default remote)",
       [](config& c, const std::string& text) -> std::optional<std::string> {
         if (text == "remote") {
           c.fair_key_ = fair_key::remote;
         } else if (text == "key") {
           c.fair_key_ = fair_key::key;
         } else if (text == "none") {
           c.fair_key_ = fair_key::none;
         } else if (text.starts_with("header:") && text.size() > 7 && text.size() <= 7 + 64 &&
                    std::all_of(text.begin() + 7, text.end(), [](unsigned char ch) {
                      return std::isalnum(ch) || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(ch)) !=
                                                     std::string_view::npos;
                    })) {
           c.fair_key_ = fair_key::header;
           c.fair_header = text.substr(7);
         } else {
           return "must be remote, key, none or header:NAME (a header name of at most 64 characters)";
         }
         return std::nullopt;
       }},
      {"max-flows", "CRUNCH_MAX_FLOWS", "N",
       "clients (flows) tracked for fair shares, at most; idle ones are forgotten first, then new ones share one "
       "(default 1024)",
       count(&config::max_flows, 1, 1'000'000)},
      {"inline-max-us", "CRUNCH_INLINE_MAX_US", "N",
       "a job its kind's cost model estimates at N microseconds or less runs on the I/O thread, not a worker "
       "(the trip costs more than the job), for the kinds of pure computation that allow it; 0 = off (default 2, at most 20)",
       [](config& c, const std::string& text) -> std::optional<std::string> {
         const auto value = parse_unsigned(text);
         if (!value || *value > 20) return "must be an integer in 0..20 (microseconds)";
         c.inline_max = std::chrono::microseconds(*value);
         return std::nullopt;
       }},
      {"log-format", "CRUNCH_LOG_FORMAT", "json|text", "log lines on stdout as JSON or as text (default json)",
       one_of(&config::log_format_, {{"json", log_format::json}, {"text", log_format::text}})},
      {"log-level", "CRUNCH_LOG_LEVEL", "LEVEL",
       "debug, info (adds one access line per request), warn or error (default info)",
       one_of(&config::log_level_, {{"debug", log_level::debug},
                                    {"info", log_level::info},
                                    {"warn", log_level::warn},
                                    {"error", log_level::error}})},
  };
  return table;
}

config_exit bad_value(const std::string& flag, const std::string& env, const std::string& value, const std::string& why,
                      bool from_env) {
  std::ostringstream out;
  out << "crunchd: invalid " << (from_env ? env : "--" + flag) << " '" << value << "': " << why;
  return {2, out.str()};
}

// "48MiB", "1KiB", "1000B": a size as a flag would be written.
std::string size_text(std::uint64_t bytes) {
  for (const auto& [unit, shift] : {std::pair{"TiB", 40}, std::pair{"GiB", 30}, std::pair{"MiB", 20}, std::pair{"KiB", 10}}) {
    if (bytes != 0 && bytes % (1ULL << shift) == 0) return std::to_string(bytes >> shift) + unit;
  }
  return std::to_string(bytes) + "B";
}

// A kind's setting from its text, within its bounds: the error phrase, or nothing.
std::optional<std::string> set_kind_setting(config& c, const kind_setting& k, const std::string& text) {
  if (k.text) {
    if (text.empty()) return "must not be empty";
    c.texts.insert_or_assign(k.name, text);
    return std::nullopt;
  }
  const auto value = k.size ? parse_size(text) : parse_unsigned(text);
  if (!value || *value < k.minimum || *value > k.maximum) {
    if (k.size) return "must be a size in " + size_text(k.minimum) + ".." + size_text(k.maximum) + ", such as 25MiB";
    return "must be an integer in " + std::to_string(k.minimum) + ".." + std::to_string(k.maximum);
  }
  c.settings.insert_or_assign(k.name, *value);
  return std::nullopt;
}

}  // namespace

// Durations need a unit, so that "10" is never silently read as milliseconds or seconds.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view given) {
  const std::string text(given);
  std::string digits = text;
  std::uint64_t scale = 0;
  if (text.size() > 2 && text.ends_with("ms")) {
    digits = text.substr(0, text.size() - 2);
    scale = 1;
  } else if (text.size() > 1 && text.ends_with("s")) {
    digits = text.substr(0, text.size() - 1);
    scale = 1000;
  } else {
    return std::nullopt;
  }
  const auto value = parse_unsigned(digits);
  constexpr std::uint64_t limit = 24ULL * 3600 * 1000;  // a day: anything longer is a typo
  if (!value || *value > limit / scale) return std::nullopt;
  return std::chrono::milliseconds(*value * scale);
}

env_lookup process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    if (const char* value = std::getenv(name.c_str())) return std::string(value);
    return std::nullopt;
  };
}

std::string kind_setting::env() const {
  std::string out = "CRUNCH_";
  for (const char ch : name) out += ch == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return out;
}

std::uint64_t config::setting(std::string_view name) const {
  const auto it = settings.find(name);
  if (it == settings.end()) throw std::out_of_range("no job kind declared the setting " + std::string(name));
  return it->second;
}

const std::string& config::text(std::string_view name) const {
  const auto it = texts.find(name);
  if (it == texts.end()) throw std::out_of_range("no job kind declared the text setting " + std::string(name));
  return it->second;
}

std::string usage(const std::vector<kind_setting>& kind_settings) {
  std::ostringstream out;
  out << "usage: crunchd [options]\n\n"
         "crunch: an HTTP service that runs CPU-heavy jobs on a worker pool while its I/O loop stays fast.\n\n"
         "options (each also read from the environment variable shown; a flag wins):\n";
  std::vector<std::pair<std::string, std::string>> rows;
  for (const auto& o : options()) {
    rows.emplace_back("--" + std::string(o.flag) + " " + o.value, std::string(o.help) + "  [" + o.env + "]");
  }
  for (const auto& k : kind_settings) rows.emplace_back("--" + k.name + " " + k.value, k.help + "  [" + k.env() + "]");
  rows.emplace_back("--probe", "health check: ask the crunchd on --address/--port for /readyz; exit 0 if 200, else 1");
  rows.emplace_back("--openapi", "print the OpenAPI document this configuration serves at /openapi.json and exit");
  rows.emplace_back("--help", "print this and exit");
  rows.emplace_back("--version", "print the version and exit");
  std::size_t width = 0;
  for (const auto& row : rows) width = std::max(width, row.first.size());
  for (const auto& [left, right] : rows) out << "  " << left << std::string(width + 2 - left.size(), ' ') << right << '\n';
  out << "\n"
         "DURATION is a whole number with a unit: 250ms, 10s. SIZE likewise: 512KiB, 48MiB, 2GiB.\n";
  return out.str();
}

const char* version() { return CRUNCH_VERSION; }

std::variant<config, config_exit> parse_config(const std::vector<std::string>& args, const env_lookup& env,
                                               const std::vector<kind_setting>& kind_settings) {
  config c;
  for (const auto& o : options()) {
    if (const auto value = env(o.env)) {
      if (auto why = o.set(c, *value)) return bad_value(o.flag, o.env, *value, *why, true);
    }
  }
  for (const auto& k : kind_settings) {
    if (const auto value = env(k.env())) {
      if (auto why = set_kind_setting(c, k, *value)) return bad_value(k.name, k.env(), *value, *why, true);
    }
  }
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") return config_exit{0, usage(kind_settings)};
    if (arg == "--version") return config_exit{0, std::string("crunchd ") + version()};
    if (arg == "--probe") {
      c.probe = true;
      continue;
    }
    if (arg == "--openapi") {
      c.print_openapi = true;
      continue;
    }
    if (!arg.starts_with("--")) return config_exit{2, "crunchd: unexpected argument '" + arg + "' (see --help)"};

    // Both "--flag value" and "--flag=value".
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const auto o = std::find_if(options().begin(), options().end(), [&](const option& x) { return name == x.flag; });
    const auto k = std::find_if(kind_settings.begin(), kind_settings.end(),
                                [&](const kind_setting& x) { return name == x.name; });
    if (o == options().end() && k == kind_settings.end()) {
      return config_exit{2, "crunchd: unknown option '--" + name + "' (see --help)"};
    }
    if (!value) {
      if (i + 1 == args.size()) return config_exit{2, "crunchd: --" + name + " needs a value"};
      value = args[++i];
    }
    if (o != options().end()) {
      if (auto why = o->set(c, *value)) return bad_value(o->flag, o->env, *value, *why, false);
    } else if (auto why = set_kind_setting(c, *k, *value)) {
      return bad_value(k->name, k->env(), *value, *why, false);
    }
  }
  // Each snapshot is also the stream's heartbeat: proxies drop connections idle for 60 s (nginx).
  if (c.event_interval > std::chrono::seconds(10)) {
    return config_exit{2, "crunchd: invalid --event-interval: at most 10s, since each snapshot is also the heartbeat"};
  }
  if (c.fair_key_ == fair_key::key && c.api_keys.empty()) {
    return config_exit{2, "crunchd: invalid --fair-key 'key': needs --api-keys"};
  }
  if (c.protect_metrics && c.api_keys.empty()) {
    return config_exit{2, "crunchd: invalid --protect-metrics: needs --api-keys"};
  }
  if (!c.callback_allow.empty() && c.webhook_secret_file.empty()) {
    return config_exit{2, "crunchd: invalid --callback-allow: needs --webhook-secret-file, to sign the callbacks"};
  }
  if (c.default_timeout > c.max_timeout) {
    return config_exit{2, "crunchd: invalid --default-timeout: longer than --max-timeout"};
  }
  return c;
}

std::size_t open_files_for_connections() {
  // Like nginx's worker_rlimit_nofile and Go's runtime: take the hard limit, since every
  // connection is a descriptor. Some are kept for everything else and for refusing politely.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  constexpr rlim_t reserved = 128;
  return limit.rlim_cur > reserved + 1 ? static_cast<std::size_t>(std::min<rlim_t>(limit.rlim_cur - reserved, 1u << 30)) : 1;
}

namespace {

// The crunch-callback program: `given`, else the one beside this program's executable (a build
// tree, the container image), else the installed one. Throws config_error when it cannot be run.
std::string find_callback_helper(const std::string& given) {
  std::vector<std::string> candidates;
  if (!given.empty()) {
    candidates.push_back(given);
  } else {
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back((self.parent_path() / "crunch-callback").string());
    candidates.emplace_back(CRUNCH_INSTALLED_CALLBACK_HELPER);
  }
  for (const auto& path : candidates) {
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  std::string tried;
  for (const auto& path : candidates) tried += (tried.empty() ? "" : " or ") + path;
  throw config_error("crunchd: --callback-allow needs the crunch-callback program, which each callback attempt runs "
                     "in; it is not at " + tried + " (--callback-helper)");
}

}  // namespace

config resolve_defaults(config c) {
  if (c.workers == 0) c.workers = usable_cpus();
  if (c.queue_limit == 0) c.queue_limit = 8 * c.workers;
  if (c.memory_budget == 0) {
    c.memory_budget = default_memory_budget();
  } else if (const auto usable = usable_memory(); usable != 0 && c.memory_budget >= usable) {
    // The budget is what jobs may hold besides crunchd itself: one as large as everything the
    // process may use would let the kernel's OOM killer, not a 503, say no.
    throw config_error("crunchd: --memory-budget of " + std::to_string(c.memory_budget >> 20) +
                       " MiB is not less than the " + std::to_string(usable >> 20) +
                       " MiB this process may use (its cgroup memory limit, or physical memory): jobs would be "
                       "OOM-killed before the budget refused them");
  }
  if (c.jobs_store_bytes == 0) {
    c.jobs_store_bytes = std::min<std::uint64_t>(std::uint64_t{64} << 20, c.memory_budget / 4);
  } else if (c.jobs_store_bytes > c.memory_budget / 2) {
    // What the store holds is charged to the budget: more than half would leave jobs waiting for
    // memory that queued bodies and kept results hold.
    throw config_error("crunchd: --jobs-store-bytes of " + std::to_string(c.jobs_store_bytes >> 20) +
                       " MiB is more than half the memory budget (" + std::to_string(c.memory_budget >> 20) + " MiB)");
  }
  c.max_connections = std::min(c.max_connections, open_files_for_connections());
  if (!c.callback_allow.empty()) c.callback_helper = find_callback_helper(c.callback_helper);
  return c;
}

}  // namespace crunch
