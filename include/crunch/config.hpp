#pragma once
/// crunchd's configuration: command-line flags, each with a CRUNCH_* environment twin.

#include <crunch/log.hpp>
#include <crunch/scheduling.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace crunch {

/// Where CPU jobs run.
enum class run_mode {
  offload,  ///< on the worker pool (the product)
  inline_,  ///< on the I/O thread: the blocking anti-pattern, kept for side-by-side benchmarks
};

/// What names a job's flow, for fair queuing between clients (flows.hpp).
enum class fair_key {
  remote,  ///< the client's IP address
  key,     ///< the name of its API key (needs --api-keys)
  header,  ///< a request header's value (config::fair_header), else the client's address
  none,    ///< one flow for every job: a plain FIFO
};

/// Everything crunchd can be told at start.
struct config {
  std::string address = "0.0.0.0";                        ///< listen address
  std::uint16_t port = 8080;                              ///< listen port; 0 picks a free one
  std::size_t workers = 0;                                ///< worker threads; 0 = usable CPUs
  std::size_t queue_limit = 0;                            ///< queued jobs at most; 0 = 8 × workers
  worker_priority priority = worker_priority::batch;      ///< OS priority of the workers
  io_priority io_scheduling = io_priority::automatic;     ///< OS scheduling of the I/O thread
  std::size_t cpu_reserve_percent = 8;                    ///< of a CPU quota, kept from the workers for the I/O thread; 0 = off
  run_mode mode = run_mode::offload;                      ///< offload or inline
  std::chrono::milliseconds default_timeout{10'000};      ///< deadline of a job when the client names none
  std::chrono::milliseconds max_timeout{60'000};          ///< longest deadline a client may ask for
  std::chrono::milliseconds drain_timeout{10'000};        ///< how long shutdown waits for in-flight work
  /// Longest deadline of an asynchronous job (Prefer: respond-async), and the deadline of one
  /// whose client names none.
  std::chrono::milliseconds async_max_timeout{3'600'000};
  /// How long an ended asynchronous job, its result and an idempotency record are kept.
  std::chrono::milliseconds jobs_keep{3'600'000};
  /// What the job store may hold (records, queued bodies, results, idempotency records), charged to
  /// the memory budget too; 0 = a quarter of the memory budget, at most 64 MiB.
  std::uint64_t jobs_store_bytes = 0;
  /// Where asynchronous jobs live: "memory", or redis://host:port/db shared by replicas.
  std::string jobs_store = "memory";
  /// A job a replica took and has not kept claimed for this long is taken over by another.
  std::chrono::milliseconds jobs_claim_after{30'000};
  /// URL prefixes an asynchronous job's callback_url must start with; empty: no callbacks.
  std::vector<std::string> callback_allow;
  /// Callbacks may go to loopback, private and link-local addresses too.
  bool callback_allow_private = false;
  /// The Standard Webhooks secrets callbacks are signed with (whsec_..., one a line).
  std::string webhook_secret_file;
  /// Authorities an https:// callback receiver's certificate may chain to, besides the system's.
  std::string callback_ca_file;
  /// The crunch-callback program each callback attempt runs in. Empty: the one beside this
  /// program's executable, else the installed one (libexec/crunch/crunch-callback).
  std::string callback_helper;
  /// How long a callback is retried after its first attempt.
  std::chrono::milliseconds callback_retry_for{3'600'000};
  std::chrono::milliseconds read_timeout{10'000};         ///< to receive one whole request, and to send a response
  std::chrono::milliseconds idle_timeout{60'000};         ///< a kept-alive connection may wait this long for its next request
  std::size_t max_header_bytes = 8 * 1024;                ///< request line and headers
  std::size_t max_body_bytes = 64 * 1024;                 ///< request body
  std::size_t max_headers = 100;                          ///< header fields in one request
  std::size_t max_connections = 10'000;                   ///< open connections; beyond: 503 and close
  std::size_t max_pipelined = 100;                        ///< requests answered in a row without waiting for the client
  std::uint64_t memory_budget = 0;                        ///< bytes running jobs may declare together; 0 = from the cgroup limit
  bool ui = true;                                         ///< the live view: GET /, /v1/events, /v1/stats
  std::size_t max_event_streams = 32;                     ///< open /v1/events streams, at most; beyond: 503
  std::chrono::milliseconds event_interval{250};          ///< how often the live view takes a snapshot
  std::string api_keys;                                   ///< file of name:key lines; empty: no keys, jobs open to all
  bool protect_metrics = false;                           ///< with keys, /metrics and the live view's data need one too
  fair_key fair_key_ = fair_key::remote;                  ///< what names a job's flow
  std::string fair_header;                                ///< the header, for fair_key::header
  std::size_t max_flows = 1024;                           ///< flows tracked at most
  /// A job whose kind's cost model estimates it at most this runs on the I/O thread, skipping the
  /// trip to a worker, which costs more than the job; 0 turns it off. Kinds without a cost model
  /// never do.
  std::chrono::microseconds inline_max{2};
  log_format log_format_ = log_format::json;              ///< json or text lines on stdout
  log_level log_level_ = log_level::info;                 ///< info includes one access line per request
  bool probe = false;                                     ///< --probe: ask the running server's /readyz, then exit
  bool print_openapi = false;                             ///< --openapi: print the served OpenAPI document, then exit
  /// The job kinds' own settings (kind_setting), by name, as given; a kind reads its own with
  /// setting(), its defaults filled in when the kinds are built (build_jobs in kinds.hpp).
  std::map<std::string, std::uint64_t, std::less<>> settings;
  /// The job kinds' text settings (kind_setting::text), by name, as given: a path, a duration.
  std::map<std::string, std::string, std::less<>> texts;

  /// The setting `name`; throws std::out_of_range when no kind declared it.
  std::uint64_t setting(std::string_view name) const;
  /// The text setting `name`, empty when not given; throws std::out_of_range when no kind declared it.
  const std::string& text(std::string_view name) const;
};

/// A setting a job kind declares for itself (kind_declaration in kinds.hpp): crunchd reads it as
/// --NAME and from CRUNCH_NAME (upper case, '-' as '_'), lists it in --help, bounds it, and keeps
/// it in config::settings. config itself knows no kind.
struct kind_setting {
  std::string name;                   ///< the flag without "--", e.g. "sieve-max-n"
  std::string value;                  ///< --help's placeholder: "N", "KIB", "SIZE"
  std::string help;                   ///< one line, the default included
  std::uint64_t default_value = 0;
  std::uint64_t minimum = 0;
  std::uint64_t maximum = 0;
  bool size = false;                  ///< written with a unit (25MiB, as --memory-budget), else an integer
  /// Kept as written, in config::texts (a path, say), and not bounded: the kind reads and checks it.
  /// Its default is empty.
  bool text = false;

  /// Its environment twin: CRUNCH_SIEVE_MAX_N for sieve-max-n.
  std::string env() const;
};

/// A configuration that cannot work on this machine, found once the machine is known: crunchd
/// prints it and exits 2, as for a bad flag.
struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// What parse_config decided instead of a config: print `message` and exit with `exit_code`.
struct config_exit {
  int exit_code = 0;     ///< 0 for --help and --version, 2 for a bad value
  std::string message;   ///< usage, version, or one line naming the flag that was wrong
};

/// Looks up an environment variable; parse_config takes it as a parameter so that tests need not
/// touch the real environment.
using env_lookup = std::function<std::optional<std::string>(const std::string& name)>;

/// The real environment, through getenv.
env_lookup process_env();

/// Parses `args` (without the program name) over the CRUNCH_* environment; a flag wins over its
/// twin. `kind_settings`: the job kinds' own flags (settings_of(builtin_kinds()) for crunchd's).
std::variant<config, config_exit> parse_config(const std::vector<std::string>& args, const env_lookup& env,
                                               const std::vector<kind_setting>& kind_settings = {});

/// Raises the soft open-files limit to the hard one and says how many connections it leaves room
/// for (the limit less 128 descriptors kept for the rest of the process).
std::size_t open_files_for_connections();

/// Fills in what the config leaves to the machine: workers, queue limit and memory budget, and
/// max_connections capped by open_files_for_connections(). Throws config_error when the memory
/// budget is not below what the process may use. Resolving a resolved config changes nothing.
config resolve_defaults(config c);

/// A duration as flags take it: a whole number with a unit, 250ms or 10s, at most a day.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

/// The --help text, with the job kinds' own flags.
std::string usage(const std::vector<kind_setting>& kind_settings = {});

/// The crunch version, e.g. "0.1.0".
const char* version();

}  // namespace crunch
