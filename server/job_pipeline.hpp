#pragma once
/// The path every job takes, whatever its kind: admission (deadline, queue, memory), the worker
/// pool, the race of the job against its deadline and its client, and how it ended — counted in
/// the metrics and turned into a reply. It knows no sockets and no HTTP, so a unit test drives it
/// with an io_context alone; the session hands it the job and an awaitable that completes when
/// the client goes away.

#include "server/admission.hpp"
#include <crunch/config.hpp>
#include "server/flows.hpp"
#include <crunch/log.hpp>
#include "server/metrics.hpp"
#include "server/net.hpp"
#include "server/router.hpp"
#include "workers/worker_pool.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/list.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <tuple>
#include <variant>

namespace crunch {

/// A reply and where its time went: what a session writes.
struct answer {
  reply r = {};                           ///< status, body, headers
  std::optional<job_timing> timing = {};  ///< queue and compute time, for Server-Timing, when a job ran
  bool client_gone = false;               ///< nobody to answer: close without writing
  bool overloaded = false;                ///< refused for load: pause the connection before its next request
  /// What admission expected the job to take, when it ran on a worker and its kind has a cost
  /// model: the access line carries it at debug level, beside what it took.
  std::optional<admission::duration> estimate = {};
};

/// A job waited for, as the drain sees it. It lives in the frame of the run() that waits for it
/// and links itself into the pipeline's list: no allocation per job.
struct pending_job : boost::intrusive::list_base_hook<> {
  std::optional<admission::duration> cost;          ///< estimated run time, when the kind has a model
  std::chrono::steady_clock::time_point submitted;  ///< when it was handed to the pool
  std::uint64_t tag = 0;                            ///< its place in the pool's queue
  net::steady_timer* deadline = nullptr;            ///< cancelling it ends the wait (the job is dropped)
  bool cut_by_drain = false;                        ///< the drain, not the deadline, ended it: 503, not 504
};

/// Runs job requests for the sessions. Used on the I/O thread only.
class job_pipeline {
 public:
  /// `cfg.mode` says where jobs run; the others are the server's. `log`, when given, gets a line
  /// for each job whose helper process died.
  job_pipeline(const config& cfg, worker_pool& pool, admission& admit, flow_table& flows, metrics& stats,
               logger* log = nullptr);

  /// Admits `request` (received at `received`) into its flow's fair share or refuses it at once,
  /// runs it, and races it
  /// against its deadline and `client_gone`; the losers are cancelled, so a job nobody waits for
  /// leaves the queue or sees its stop token.
  net::awaitable<answer> run(job_request request, std::chrono::steady_clock::time_point received,
                             net::awaitable<void> client_gone);

  /// Takes `bytes` of the memory budget for a request body about to be read, or — when they are
  /// not free — an empty lease (counted as a job refused for memory): the request gets a 503.
  memory_lease lease_body(std::uint64_t bytes);

  /// For the drain: plays the queue forward, in its order, over the workers with the cost estimates and
  /// answers 503 now each queued job that would not finish within `drain_timeout`. The oldest
  /// `workers` jobs are taken to be running; they keep the whole timeout. Returns how many.
  std::size_t cut_jobs_that_cannot_finish(std::chrono::milliseconds drain_timeout);

  /// For a drain that ran out of time: every job still waited for is dropped or stopped and
  /// answered 503.
  void cut_all();

  /// Jobs waited for now.
  std::size_t pending() const { return pending_.size(); }

 private:
  /// What admission decided for a job it let in, and what the rest of its run needs of it.
  struct admitted {
    std::optional<admission::duration> cost;  ///< its estimate, when its kind has a model
    admission::duration time_left{};          ///< of its deadline, when it came
    bool runs_here = false;                   ///< tiny by its model: on the I/O thread, now
    flow_table::flow* flow = nullptr;         ///< its client's fair share
    std::uint64_t virtual_now = 0;            ///< the pool's virtual time it is booked at
    admission::decision decision = {};
    std::uint64_t pool_memory = 0;            ///< what the pool takes for it (0: it holds its own)
  };
  /// How a job's race ended: its answer, its deadline, or its client leaving.
  using race_result = std::variant<std::tuple<sys::error_code, job_result<std::optional<job_output>>>,
                                   std::tuple<sys::error_code>, std::monostate>;

  /// The steps of run(): a job no server state could ever fit is refused; admission lets it in
  /// or refuses it now; a job that keeps its body takes its memory now or is refused; then it
  /// races its deadline and its client on a worker, and how that ended becomes its answer.
  std::optional<answer> refuse_what_never_fits(const job_request& request) const;
  std::variant<answer, admitted> admit(const job_request& request, std::chrono::steady_clock::time_point received);
  std::optional<answer> hold_memory(job_request& request, admitted& job);
  net::awaitable<answer> race(job_request request, std::chrono::steady_clock::time_point received,
                              net::awaitable<void> client_gone, admitted& job);
  answer answer_of(sys::error_code ec, job_result<std::optional<job_output>> result, const job_request& request,
                   admitted& job, const flow_table::booking& booking);
  answer run_inline(job_request request);
  void log_helper_failure(const job_request& request, const job_result<std::optional<job_output>>& result);

  const config& cfg_;
  worker_pool& pool_;
  admission& admit_;
  flow_table& flows_;
  metrics& stats_;
  logger* log_;
  boost::intrusive::list<pending_job> pending_;  // in submission order
};

}  // namespace crunch
