#pragma once
/// Counters and gauges of a running server, exposed in the Prometheus text format.
///
/// Every update happens on the I/O thread (job completions are delivered there), so the counters
/// are plain integers: no atomics, no contention with the workers.

#include <array>
#include <cstdint>
#include <map>
#include <string>

namespace crunch {

/// How a CPU job ended, as counted by crunch_jobs_total{outcome}.
enum class job_outcome {
  completed,                  ///< ran to the end: 200
  rejected_queue_full,        ///< the queue had no room: 503 at once
  rejected_would_miss_deadline,  ///< the backlog ahead would make it late: 503 at once
  deadline_exceeded,          ///< its deadline passed, queued or running: 504
  cancelled_client_gone,      ///< the client closed its connection: stopped, nothing sent
  failed,                     ///< the job threw: 500
  drained,                    ///< shutdown could not wait for it: 503
};

/// Number of job_outcome values.
inline constexpr std::size_t job_outcome_count = 7;

/// The label value of an outcome, e.g. "rejected_queue_full".
const char* to_string(job_outcome outcome) noexcept;

/// Gauges read at scrape time from the parts that own them.
struct metrics_gauges {
  std::size_t workers = 0;
  std::size_t workers_busy = 0;
  std::size_t queue_depth = 0;
  std::size_t queue_limit = 0;
  std::size_t connections_open = 0;
  bool draining = false;
};

/// The server's counters.
class metrics {
 public:
  /// Counts a response by its status code.
  void count_response(unsigned status) { ++responses_[status]; }
  /// Counts how a job ended.
  void count_job(job_outcome outcome) { ++jobs_[static_cast<std::size_t>(outcome)]; }
  /// Counts an accepted connection.
  void count_connection() { ++connections_; }

  /// Times a job ended this way.
  std::uint64_t jobs(job_outcome outcome) const { return jobs_[static_cast<std::size_t>(outcome)]; }

  /// The Prometheus text exposition of the counters and `gauges`.
  std::string render(const metrics_gauges& gauges) const;

 private:
  std::map<unsigned, std::uint64_t> responses_;
  std::array<std::uint64_t, job_outcome_count> jobs_{};
  std::uint64_t connections_ = 0;
};

}  // namespace crunch
