#pragma once
/// Admission control by cost: refuses a job at once when the work queued ahead of it — its flow's
/// fair share of it (flows.hpp) — would make it miss a deadline it could otherwise meet, instead
/// of letting it wait and die.
///
/// Job kinds that declare a cost (fib: the number of calls) get a run-time estimate from a rate
/// per kind — calibrated at start-up, then learnt from completed jobs. Used only on the I/O
/// thread, where jobs are submitted and completions arrive, so it needs no locks.

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace crunch {

/// The kinds' cost rates and the admission rule.
class admission {
 public:
  using duration = std::chrono::nanoseconds;

  /// What decide() says.
  struct decision {
    bool admit = true;                       ///< false: answer 503 now
    /// Its own estimate is longer than its time left: it cannot finish in time even on an idle
    /// worker, so no retry would help (a 504 now). Implies !admit.
    bool hopeless = false;
    std::chrono::seconds retry_after{0};     ///< when refused: when the backlog should allow it
    duration expected_wait{0};               ///< estimated queue wait ahead of the job
  };

  admission() = default;

  /// Sets the rate of a kind (nanoseconds per cost unit); a kind without one has no estimate.
  void set_rate(const std::string& kind, double ns_per_unit);
  /// Declares that `kind` has a cost model: while it has no rate (its calibration failed, or is
  /// to come with its first job), its first completed job gives it one.
  void expect_rate(const std::string& kind);
  /// The current rate of a kind, if it has one.
  std::optional<double> rate(std::string_view kind) const;

  /// Estimated run time of `units` of `kind` work; nullopt when the kind has no cost model.
  std::optional<duration> estimate(std::string_view kind, double units) const;

  /// Admits unless the `expected_wait` for a worker (flow_table::expected_wait) plus its `cost`
  /// outlasts `time_left` (a 503, retry after the backlog has drained). A job whose cost alone
  /// outlasts its time left is hopeless: refused too, rather than run until its deadline stops it
  /// (an AVIF encode of seconds given one was let in and held a worker for nothing). An estimate
  /// that errs low is still stopped at the deadline; one that errs high is corrected by the jobs
  /// that complete (learn()).
  decision decide(std::optional<duration> cost, duration time_left, duration expected_wait) const;

  /// Refines the kind's rate from a job that ran to completion.
  void learn(std::string_view kind, double units, duration computing);

 private:
  std::map<std::string, double, std::less<>> ns_per_unit_;
  std::set<std::string, std::less<>> priced_;
};

}  // namespace crunch
