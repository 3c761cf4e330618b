#pragma once
/// Admission control by cost: refuses a job at once when the work queued ahead of it would make
/// it miss a deadline it could otherwise meet, instead of letting it wait and die.
///
/// Job kinds that declare a cost (fib: the number of calls) get a run-time estimate from a rate
/// per kind — calibrated at start-up, then learnt from completed jobs. Used only on the I/O
/// thread, where jobs are submitted and completions arrive, so it needs no locks.

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace crunch {

/// The estimated-backlog book and its admission rule.
class admission {
 public:
  using duration = std::chrono::nanoseconds;

  /// What decide() says.
  struct decision {
    bool admit = true;                       ///< false: answer 503 now
    std::chrono::seconds retry_after{0};     ///< when refused: when the backlog should allow it
    duration expected_wait{0};               ///< estimated queue wait ahead of the job
  };

  /// `workers` share the backlog.
  explicit admission(std::size_t workers);

  /// Sets the rate of a kind (nanoseconds per cost unit); a kind without one has no estimate.
  void set_rate(const std::string& kind, double ns_per_unit);
  /// The current rate of a kind, if it has one.
  std::optional<double> rate(std::string_view kind) const;

  /// Estimated run time of `units` of `kind` work; nullopt when the kind has no cost model.
  std::optional<duration> estimate(std::string_view kind, double units) const;

  /// Admits unless the backlog alone outlasts `time_left`, or the backlog plus a `cost` that
  /// would fit on its own does. A job too long even alone is admitted: it runs and is stopped
  /// at its deadline (estimates can be wrong; the deadline cannot).
  decision decide(std::optional<duration> cost, duration time_left) const;

  /// Books an admitted job's expected load; returns what to pass to release() when it ends.
  duration book(std::optional<duration> cost, duration time_left);
  /// Removes a job's load from the backlog when it ends, however it ends.
  void release(duration booked);

  /// Refines the kind's rate from a job that ran to completion.
  void learn(std::string_view kind, double units, duration computing);

  /// Estimated work queued or running, in total.
  duration backlog() const { return backlog_; }

 private:
  std::size_t workers_;
  duration backlog_{0};
  std::map<std::string, double, std::less<>> ns_per_unit_;
};

}  // namespace crunch
