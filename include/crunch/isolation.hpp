#pragma once
/// Isolated jobs: work that parses strangers' bytes with a C library (a decoder, a decompressor)
/// runs in a sandboxed helper process, never in crunchd, which holds the secrets (API keys, the
/// pepper, passwords in flight). A helper is started from a clean exec of crunchd's own
/// executable, loads what its kind needs, then closes its sandbox (seccomp allow-list,
/// no_new_privs): no file can be opened, no socket made, no process started. Bytes go in and
/// out through shared memory. A helper that crashes fails its own job with a 502 and is
/// replaced; one that will not stop at its job's deadline is killed. docs/architecture.md has the
/// picture; docs/job-kinds.md shows a kind that uses it.
///
/// A kind says which functions its helpers run (kind_isolation, in its kind_declaration), and
/// its jobs, on crunchd's workers, call them with run_isolated().

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>

namespace crunch {

/// What a function run in a helper answers.
struct isolated_output {
  /// 200: `body` is the answer. 400: `body` is an error body (error_body()) for input that only
  /// the job could find bad (a damaged image), answered to the client as it is.
  unsigned status = 200;
  std::string body;
};

/// A function a helper runs: `params` as the kind encoded them in crunchd, `body` the bytes (a
/// view of shared memory, valid while it runs), and a token that fires when crunchd asks it to
/// stop. Returns nullopt when it stopped. Throws for a failure (a 500, what() in the message);
/// std::bad_alloc means the job went over its helper's memory limit (a 502).
using isolated_function =
    std::function<std::optional<isolated_output>(std::string_view params, std::string_view body, std::stop_token stop)>;

/// What a kind runs in its helpers.
struct kind_isolation {
  /// Runs once in each new helper, before its sandbox closes: loads the libraries the functions
  /// need and opens whatever files they read. May be empty.
  std::function<void()> start;
  /// The functions, by name.
  std::map<std::string, isolated_function, std::less<>> functions;
};

/// What a call into a helper may use.
struct isolated_limits {
  /// The job's memory model, in bytes: the helper's memory limit for the call is what it holds
  /// already, plus twice this, plus 64 MiB. Past it, allocations fail (std::bad_alloc: a 502).
  std::uint64_t memory_bytes = 0;
};

/// A helper died with the job it ran, or could not be started: the job fails with a 502 whose
/// code is code(); what() says why (the signal, the sandbox's verdict), and details() what the
/// helper's own crash report said (its stack), for the log only.
class isolated_job_failed : public std::runtime_error {
 public:
  isolated_job_failed(std::string code, const std::string& message, std::string details = {})
      : std::runtime_error(message), code_(std::move(code)), details_(std::move(details)) {}
  /// "helper_crashed" or "helper_out_of_memory".
  const std::string& code() const noexcept { return code_; }
  /// The helper's crash report (signal, thread, stack), empty when it sent none.
  const std::string& details() const noexcept { return details_; }

 private:
  std::string code_;
  std::string details_;
};

/// Runs `function` of `kind`'s isolation with `params` and `body` in a helper of the calling
/// thread's — started now if it has none, or none alive (a worker keeps one per kind between
/// jobs, until it gives back its memory after a while idle). Returns the function's output, or
/// nullopt when `stop` fired: the helper is asked to stop, and killed if it has not within 50
/// ms. Throws isolated_job_failed when the helper dies with the job, std::runtime_error when it
/// answers with a failure or cannot start.
std::optional<isolated_output> run_isolated(std::string_view kind, std::string_view function, std::string_view params,
                                            std::string_view body, const isolated_limits& limits, std::stop_token stop);

}  // namespace crunch
