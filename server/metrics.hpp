#pragma once
/// The server's metrics and their Prometheus text exposition (format 0.0.4).
///
/// Every update happens on the I/O thread — job completions, with their timings, are delivered
/// there — so counters and histograms are plain integers: no atomics, and no contention with the
/// workers, whose hot path touches no metric at all.

#include "server/api_keys.hpp"
#include "workers/cpu_budget.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace crunch {

/// How a CPU job ended, as counted by crunch_jobs_total{outcome}.
enum class job_outcome {
  completed,                     ///< ran to the end: 200
  rejected_queue_full,           ///< the queue had no room: 503 at once
  rejected_would_miss_deadline,  ///< the backlog ahead would make it late: 503 at once; or its own estimate alone: 504 at once
  deadline_exceeded,             ///< its deadline passed, queued or running: 504
  cancelled_client_gone,         ///< the client closed its connection: stopped, nothing sent
  failed,                        ///< the job threw: 500
  drained,                       ///< shutdown could not wait for it: 503
  rejected_memory,               ///< its body or its memory did not fit the memory budget: 503 at once
  helper_crashed,                ///< the helper process running it died, or ran out of memory: 502
};

/// Number of job_outcome values.
inline constexpr std::size_t job_outcome_count = 9;

/// The label value of an outcome, e.g. "rejected_queue_full".
const char* to_string(job_outcome outcome) noexcept;

/// A Prometheus histogram with fixed bucket upper bounds, in seconds.
class histogram {
 public:
  /// `bounds` ascending; +Inf is implied.
  explicit histogram(std::vector<double> bounds);
  /// Records one observation.
  void observe(double seconds);
  /// Records one observation.
  void observe(std::chrono::steady_clock::duration d) { observe(std::chrono::duration<double>(d).count()); }

  /// Upper bounds, without +Inf.
  const std::vector<double>& bounds() const { return bounds_; }
  /// Observations at or below bounds()[i]: cumulative, as exposed.
  std::uint64_t cumulative(std::size_t i) const;
  /// All observations.
  std::uint64_t count() const { return count_; }
  /// Sum of all observations.
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

/// Buckets for request and job durations: 100 µs to 60 s.
std::vector<double> duration_buckets();
/// Buckets for event-loop lag: 10 µs to 1 s.
std::vector<double> lag_buckets();

/// Writes exposition text: HELP/TYPE headers, samples with escaped labels.
class exposition {
 public:
  explicit exposition(std::ostream& out) : out_(out) {}
  /// "# HELP name help" and "# TYPE name type".
  void header(std::string_view name, std::string_view type, std::string_view help);
  /// A metric with one sample and no labels: its header, then its value.
  void single(std::string_view name, std::string_view type, std::string_view help, double value);
  /// One sample line; `labels` is the pre-rendered label set ("" or `a="b",c="d"`).
  void sample(std::string_view name, std::string_view labels, double value);
  /// The _bucket, _sum and _count lines of one histogram child.
  void histogram_samples(std::string_view name, std::string_view labels, const histogram& h);

 private:
  std::ostream& out_;
};

/// One label pair rendered as `name="value"`, with the value escaped (\\, \", \n).
std::string label(std::string_view name, std::string_view value);

/// Gauges read at scrape time from the parts that own them.
struct metrics_gauges {
  std::size_t workers = 0;
  std::size_t workers_busy = 0;
  std::size_t queue_depth = 0;
  std::size_t queue_limit = 0;
  std::uint64_t memory_budget = 0;  ///< bytes
  std::uint64_t memory_in_use = 0;  ///< bytes declared by running jobs, held by uploads, kept by workers
  std::size_t connections_open = 0;
  bool draining = false;
  std::uint64_t log_lines_dropped = 0;
  cpu_throttling cpu_quota = {};  ///< the binding cgroup's cpu.stat; zeros without a quota
  double workers_paced_seconds = 0;  ///< time the cpu_pacer held the workers back
  std::size_t event_streams_open = 0;  ///< live-view streams (/v1/events)
  std::size_t flows_active = 0;        ///< flows with jobs in flight (flows.hpp)
  std::size_t flows_tracked = 0;       ///< flows the table knows, idle ones included
  std::uint64_t flows_overflowed = 0;  ///< jobs whose new flow found the table full
  std::uint64_t memory_kept = 0;       ///< bytes idle workers keep for their next job (in memory_in_use)
  std::size_t backlog_jobs = 0;        ///< asynchronous jobs waiting in the job store's backlog
  double backlog_seconds = 0;          ///< their estimated work, in seconds of one worker
  /// Helper processes of the isolated kinds (isolation.hpp), by kind.
  struct helpers {
    std::string kind;
    std::uint64_t started = 0;  ///< since the start
    std::uint64_t alive = 0;    ///< now
    std::uint64_t crashed = 0;  ///< died by themselves: a signal, the sandbox, a limit
    std::uint64_t killed = 0;   ///< killed because their job would not stop
  };
  std::vector<helpers> helper_processes = {};
};


/// The process, read from /proc at scrape time.
struct process_stats {
  double cpu_seconds = 0;
  double resident_bytes = 0;
  double virtual_bytes = 0;
  double open_fds = 0;
  double max_fds = 0;
  double start_time_seconds = 0;  ///< since the Unix epoch
};

/// Reads /proc/self; fields it cannot read stay 0.
process_stats read_process_stats();

/// The server's counters and histograms.
class metrics {
 public:
  /// Makes a route's series exist before its first request, so that rate() sees them from the start.
  void add_route(std::string_view route);
  /// The same for a job kind's.
  void add_kind(std::string_view kind);

  /// Counts a response and its duration, by route ("fib", "healthz", ...) and status code.
  void count_request(std::string_view route, unsigned status, std::chrono::steady_clock::duration took);
  /// Counts how a job ended.
  void count_job(job_outcome outcome) { ++jobs_[static_cast<std::size_t>(outcome)]; }
  /// Records where a job's time went, by kind.
  void observe_job(std::string_view kind, std::chrono::steady_clock::duration queued,
                   std::chrono::steady_clock::duration computing);
  /// Counts an accepted connection.
  void count_connection() { ++connections_; }
  /// A connection refused because max_connections were open.
  void count_refused_connection() { ++refused_connections_; }
  /// A live-view stream dropped because its reader fell behind.
  void count_slow_stream() { ++slow_streams_; }
  /// Counts a job run on the I/O thread because its estimate was below --inline-max-us.
  void count_inline_job() { ++inline_jobs_; }
  std::uint64_t inline_jobs() const { return inline_jobs_; }
  /// Counts a queued job that gave its place to a job of a flow under its fair share.
  void count_pushed_out() { ++pushed_out_; }
  /// Counts a request refused for want of a valid API key.
  void count_auth_failure(auth_failure why) { ++auth_failures_[static_cast<std::size_t>(why)]; }
  std::uint64_t auth_failures(auth_failure why) const { return auth_failures_[static_cast<std::size_t>(why)]; }
  std::uint64_t pushed_out() const { return pushed_out_; }
  /// Records how late the loop-lag timer fired.
  void observe_loop_lag(std::chrono::steady_clock::duration lateness) { loop_lag_.observe(lateness); }

  /// Times a job ended this way.
  std::uint64_t jobs(job_outcome outcome) const { return jobs_[static_cast<std::size_t>(outcome)]; }
  /// The event-loop lag histogram.
  const histogram& loop_lag() const { return loop_lag_; }
  /// Jobs that ran on a worker, by kind.
  std::vector<std::pair<std::string_view, std::uint64_t>> jobs_run_by_kind() const;
  /// Requests answered, every route and status.
  std::uint64_t requests() const;

  /// The whole exposition: these metrics, `gauges`, `process` and build info.
  std::string render(const metrics_gauges& gauges, const process_stats& process) const;

 private:
  // render()'s parts, in the order of the exposition: requests and jobs by route and kind, the
  // server's state now, and the rest (authentication, drain, log, CPU quota, build).
  void render_traffic(exposition& out) const;
  void render_state(exposition& out, const metrics_gauges& gauges) const;
  void render_rest(exposition& out, const metrics_gauges& gauges) const;
  struct route_metrics {
    std::map<unsigned, std::uint64_t> by_code;
    histogram duration{duration_buckets()};
  };
  struct kind_metrics {
    histogram queued{duration_buckets()};
    histogram computing{duration_buckets()};
  };
  std::map<std::string, route_metrics, std::less<>> routes_;
  std::map<std::string, kind_metrics, std::less<>> kinds_;
  std::array<std::uint64_t, job_outcome_count> jobs_{};
  std::uint64_t connections_ = 0;
  std::uint64_t refused_connections_ = 0;
  std::uint64_t slow_streams_ = 0;
  std::uint64_t pushed_out_ = 0;
  std::uint64_t inline_jobs_ = 0;
  std::array<std::uint64_t, 2> auth_failures_{};
  histogram loop_lag_{lag_buckets()};
};

}  // namespace crunch
