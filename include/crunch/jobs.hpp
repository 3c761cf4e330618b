#pragma once
/// Job kinds: how a path parameter becomes a CPU job, and how its value becomes JSON.

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace crunch {

/// A job ready to run on a worker: its inputs are captured by value. Returns the response body,
/// or nullopt when it stopped because its token asked it to.
using job_function = std::function<std::optional<nlohmann::json>(std::stop_token)>;

/// Why a parameter was refused: becomes a 400 with code "invalid_argument".
struct invalid_argument {
  std::string message;  ///< e.g. "n must be an integer in 0..92"
};

/// A job with its expected cost, in the kind's own units (fib: calls made).
struct prepared_job {
  job_function run;         ///< what the worker runs
  double cost_units = 0;    ///< 0 when the kind has no cost model
};

/// One kind of CPU job, served at GET /{name}/{parameter}.
struct job_kind {
  std::string name;  ///< path segment, e.g. "fib"
  /// Turns the path parameter into a job, or says why it cannot.
  std::function<std::variant<prepared_job, invalid_argument>(std::string_view parameter)> prepare;
  /// Measures nanoseconds per cost unit on this machine, once at start-up; empty when the kind
  /// has no cost model (then only the queue limit and the deadline bound it).
  std::function<double()> calibrate;
};

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

/// The fib kind: n is 1 to 20 ASCII digits with a value in 0..92; its cost is fib_calls(n).
job_kind fib_job();

/// What crunchd serves: fib.
job_registry default_jobs();

}  // namespace crunch
