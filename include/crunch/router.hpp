#pragma once
/// Maps a request's method and target to an answer or to a CPU job. Does no I/O and knows no
/// Beast types, so that it is unit-tested without sockets.

#include <crunch/jobs.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace crunch {

/// A response, before it becomes HTTP.
struct reply {
  unsigned status = 200;                                     ///< HTTP status code
  std::string body;                                          ///< payload (JSON unless content_type says otherwise)
  std::string_view content_type = "application/json";       ///< Content-Type (a literal)
  std::vector<std::pair<std::string, std::string>> headers;  ///< extra headers (Allow, Retry-After, ...)
  std::string_view route = "unmatched";                      ///< metrics label: which route answered
};

/// The one error shape: {"error":{"code":...,"message":...}}.
reply error_reply(unsigned status, std::string_view code, std::string_view message);

/// A request that needs a worker: what to run, and by when it must be done.
struct job_request {
  std::string_view kind;              ///< job kind name, e.g. "fib" (owned by the router's registry)
  job_function job;                   ///< the prepared job
  double cost_units = 0;              ///< expected cost in the kind's units (0: no cost model)
  std::uint64_t memory_bytes = 0;     ///< memory the job will hold while it runs
  std::chrono::milliseconds timeout;  ///< deadline, from the request's arrival
};

/// What the router decided: answer now, or run a job.
using route_result = std::variant<reply, job_request>;

/// What the cheap routes read of the running server.
struct server_view {
  std::function<bool()> draining;            ///< true once shutdown began
  std::function<std::string()> metrics_text; ///< Prometheus exposition
};

/// The routing table: /healthz, /readyz, /metrics and GET /{job kind}/{parameter}.
class router {
 public:
  /// `default_timeout` applies when the request names none; a request may ask for at most `max_timeout`.
  router(job_registry jobs, server_view view, std::chrono::milliseconds default_timeout,
         std::chrono::milliseconds max_timeout);

  /// Routes one request. `method` is the request method as sent; `target` its request-target.
  route_result route(std::string_view method, std::string_view target) const;

 private:
  job_registry jobs_;
  server_view view_;
  std::chrono::milliseconds default_timeout_;
  std::chrono::milliseconds max_timeout_;
};

}  // namespace crunch
