#pragma once
/// Job kinds: the one list of what crunch computes. A kind is a pure function in workers/ plus its
/// registration — its routes, their parameters with bounds, how arguments become a job, and the
/// cost and memory model admission uses. The router, /v1/kinds and the metrics follow this list;
/// docs/job-kinds.md walks through adding one.

#include <crunch/arguments.hpp>
#include <crunch/memory_lease.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace crunch {

/// The one error shape, {"error":{"code":...,"message":...}}, as JSON text; invalid UTF-8 in the
/// message (which may quote hostile input) is replaced, never thrown on.
std::string error_body(std::string_view code, std::string_view message);

/// What a job answers: a body and its media type.
struct job_output {
  std::string body;                                     ///< the response body
  std::string_view content_type = "application/json";  ///< a literal
  unsigned status = 200;                                ///< 400 when the input turned out to be bad
  /// Headers of its own (Vary: Accept for an answer whose format followed the Accept header).
  std::vector<std::pair<std::string, std::string>> headers = {};

  /// Set by the server, not by kinds (job_kind::calibrate_on_first_job): the rate, in
  /// nanoseconds per cost unit, that this job's worker measured for its kind just before it ran.
  std::optional<double> calibrated_ns_per_unit{};
  /// Also the server's: false when the job's time includes its kind's first-use setup, so that
  /// admission learns nothing from it.
  bool representative = true;

  /// A JSON answer, serialised on the worker rather than on the I/O thread.
  static job_output json(const nlohmann::json& value) { return {value.dump(), "application/json"}; }
  /// A 400 that only the job could find (a truncated image, a corrupt frame), in the error shape
  /// every answer has: {"error":{"code":...,"message":...}}. The message may quote hostile bytes.
  static job_output refused(std::string_view code, std::string_view message);
};

/// A job ready to run on a worker: its inputs are captured by value. Returns its answer, or
/// nullopt when it stopped because its token asked it to.
using job_function = std::function<std::optional<job_output>(std::stop_token)>;

/// What a route whose body is a file (not JSON) hands its kind besides the arguments.
struct job_input {
  std::string body;               ///< the body, for the job to keep: moved, never copied
  std::string_view content_type;  ///< as the request sent it (one of the route's media_types)
  std::string_view accept;        ///< the request's Accept header, empty when it sent none
  memory_lease body_memory;       ///< the body's share of the memory budget: it goes with the body
};

/// A job with what admission needs to know of it.
struct prepared_job {
  job_function run;               ///< what the worker runs
  double cost_units = 0;          ///< expected work in the kind's cost unit; 0 when the kind has no cost model
  std::uint64_t memory_bytes = 0; ///< memory it holds while it runs, charged against the memory budget
};

/// What a route answers when its job succeeds: the 200 of its OpenAPI operation.
struct route_answer {
  std::string description;              ///< a sentence or two
  nlohmann::json schema = nullptr;      ///< a JSON answer's JSON Schema (null for a file answer)
  std::vector<std::string> media_types = {};  ///< a file answer's media types; empty: application/json
  /// Headers of its own it may carry (job_output::headers), by name, with what they say.
  std::vector<std::pair<std::string, std::string>> headers = {};
};

/// A request a route answers as `status` says. Each is in the OpenAPI document (the operation's
/// x-crunch-examples), sent by CI's contract test, and a seed of the request fuzzer.
struct route_example {
  std::string name;               ///< what it shows, e.g. "F(30)"
  std::string target;             ///< path and query, e.g. "/fib/30"
  std::string body = {};          ///< the body's bytes (a JSON route's JSON text), sent `repeat` times
  std::size_t repeat = 1;         ///< how many times `body` is sent, back to back
  std::string content_type = {};  ///< a file body's media type (a JSON route's is application/json)
  unsigned status = 200;          ///< 200, or 504 for one too slow for the timeout_ms its target sets
};

/// One HTTP route of a kind.
struct job_route {
  std::string name;                 ///< metrics label and operation id, e.g. "password_hash"
  std::string method;               ///< "GET" or "POST"
  std::string path;                 ///< "/v1/password/hash", or with one parameter last: "/fib/{n}"
  std::string summary;              ///< one line, for /v1/kinds and the OpenAPI document
  std::string description = {};     ///< more, for the OpenAPI document: what it promises
  std::vector<parameter> parameters;  ///< path, query and body parameters
  /// Request headers the job reads (job_input::accept), by name, with what they do: for the
  /// OpenAPI document.
  std::vector<std::pair<std::string, std::string>> request_headers = {};
  bool json_body = false;           ///< body parameters come as a JSON object (Content-Type: application/json)
  /// The body is a file of one of these types (415 for any other); the kind gets it in job_input.
  std::vector<std::string> media_types;
  /// For a file body: the memory a typical job of this route needs beyond its body, taken from
  /// the budget with the body at its head — else uploads could fill the budget with bodies that
  /// can never become jobs.
  std::uint64_t working_memory_hint = 0;
  std::size_t max_body_bytes = 0;   ///< body limit; 0: the server's --max-body-bytes
  bool sensitive = false;           ///< the body holds a secret: its buffers are wiped once it is read
  route_answer answer = {};         ///< what a job that succeeds answers
  /// Codes of its own that its 400s carry besides invalid_argument (invalid_argument::code, or a
  /// job_output's error body), each with what it means: the OpenAPI document lists them.
  std::vector<std::pair<std::string, std::string>> error_codes = {};
  /// A job may fail on the server's side (a 500: memory the system would not give), which the
  /// OpenAPI document then lists, and the contract test must produce.
  bool may_fail = false;
  std::vector<route_example> examples = {};  ///< requests it answers (at least one that succeeds)
  /// Turns checked arguments (and a file body) into a job, or says why they cannot make one.
  std::function<std::variant<prepared_job, invalid_argument>(const job_arguments&, job_input&)> prepare;

  /// Whether the body is a file rather than JSON.
  bool file_body() const noexcept { return !media_types.empty(); }
};

/// A kind of CPU work, with one cost model shared by its routes.
struct job_kind {
  std::string name;                   ///< e.g. "fib"; the label of its job metrics and cost rate
  std::string cost_unit;              ///< what prepared_job::cost_units counts, e.g. "calls"
  std::string cost_model;             ///< how the cost follows from the arguments, for /v1/kinds
  /// Measures nanoseconds per cost unit on this machine, once at start-up; empty when the kind
  /// has no cost model (then only the queue limit and the deadline bound it).
  std::function<double()> calibrate;
  /// calibrate() would load what an idle server should not hold (the image kind: libvips and
  /// its libraries, 30 MB): it runs instead on the worker of the kind's first job, just before
  /// that job, and until that job completes the kind's jobs have no estimate (admitted on the
  /// queue and their deadline alone, as a kind whose calibration failed).
  bool calibrate_on_first_job = false;
  std::vector<job_route> routes;      ///< at least one
  /// Its jobs are pure computation — no blocking, no memory to speak of, nothing to stop midway —
  /// so one its cost model puts under --inline-max-us may run on the I/O thread (fib: yes;
  /// hashes and images never).
  bool tiny_jobs_run_inline = false;
  /// Its jobs run in sandboxed helper processes (kind_declaration::isolation): set by build_jobs.
  bool isolated = false;
  /// Rereads what the kind keeps from files (the password kind's pepper keys) on SIGHUP, on the
  /// I/O thread; returns a line for the log, which names no secret. Throws std::runtime_error when
  /// the file cannot be used, and the kind keeps what it had. Empty: nothing to reread.
  std::function<std::string()> reload;
};

/// The fastest of `runs` runs of `work`, in nanoseconds: what a kind's calibrate() measures, the
/// machine's speed with the least interference, divided by the cost units of `work`.
double fastest_ns(int runs, const std::function<void()>& work);

/// `kind` with each route's jobs wrapped so that the first of them to run calls the kind's
/// calibrate() on its worker before it starts, once, and hands the rate back in its job_output
/// (a calibration that throws is left to the job, which meets the same failure and says so).
job_kind calibrating_on_first_job(job_kind kind);

/// The job kinds a server offers, by name.
class job_registry {
 public:
  /// Adds (or replaces) a kind.
  void add(job_kind kind);
  /// The kind called `name`, or nullptr.
  const job_kind* find(std::string_view name) const;
  /// Every kind, by name.
  const std::map<std::string, job_kind, std::less<>>& kinds() const { return kinds_; }

 private:
  std::map<std::string, job_kind, std::less<>> kinds_;
};

}  // namespace crunch
