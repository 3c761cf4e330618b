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

/// One kind of CPU job, served at GET /{name}/{parameter}.
struct job_kind {
  std::string name;  ///< path segment, e.g. "fib"
  std::function<std::variant<job_function, invalid_argument>(std::string_view parameter)> prepare;
};

/// The job kinds a server offers, by name.
class job_registry {
 public:
  /// Adds (or replaces) a kind.
  void add(job_kind kind);
  /// The kind called `name`, or nullptr.
  const job_kind* find(std::string_view name) const;

 private:
  std::map<std::string, job_kind, std::less<>> kinds_;
};

/// The fib kind: n is 1 to 20 ASCII digits with a value in 0..92.
job_kind fib_job();

/// What crunchd serves: fib.
job_registry default_jobs();

}  // namespace crunch
