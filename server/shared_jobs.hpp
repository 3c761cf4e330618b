#pragma once
/// Asynchronous jobs on Redis, shared by replicas (--jobs-store redis://...): submit (with an
/// Idempotency-Key and a callback_url), the consumer loop (take what the workers can run, keep it
/// claimed, take over a dead replica's, stop what DELETE flagged), status, result, cancel, the
/// backlog for /metrics.
///
/// A job is stored as its request, so that any replica can prepare it again (router::match_job,
/// router::prepare); a password's body is never written here: those routes stay synchronous. Its
/// answer is stored as the synchronous form would have given it: status, media type, headers and
/// body. The replica that stores a job's end delivers its callback.

#include "server/async_jobs.hpp"
#include "server/redis_jobs.hpp"
#include "server/redis_link.hpp"

#include "server/job_pipeline.hpp"
#include <crunch/log.hpp>
#include "server/router.hpp"
#include "workers/worker_pool.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <utility>

namespace crunch {

class callback_sender;

class shared_jobs {
 public:
  using steady = std::chrono::steady_clock;

  /// What a replica needs of a request to prepare it again, and what the store needs to keep it.
  struct stored_request {
    std::string method;
    std::string target;
    std::string content_type;
    std::string accept;
    std::string body;
    std::string owner;
    std::string flow;
    std::chrono::milliseconds timeout{};
    std::string kind;
    std::string route;
    std::string callback;                        ///< callback_url, checked already; empty: none
    std::optional<std::string> idempotency_key;  ///< with its fingerprint (fingerprint())
    std::string fingerprint;
  };

  /// `pool`: the memory budget a job's body, read back from Redis, is charged to.
  shared_jobs(net::any_io_executor io, redis_address address, const router& routes, job_pipeline& pipeline,
              worker_pool& pool, std::size_t workers, std::chrono::milliseconds keep,
              std::chrono::milliseconds claim_after, logger& log);
  ~shared_jobs();

  /// Where ended jobs' callbacks go (the replica that stores the end delivers it).
  void set_callbacks(callback_sender* callbacks) { callbacks_ = callbacks; }

  /// Creates the group if needed (retrying until Redis answers) and starts taking jobs.
  void start();
  /// The drain: takes nothing more; what runs is stopped (another replica takes it over).
  void stop();

  /// A request's fingerprint for its idempotency key, with the key replicas share; nullopt until
  /// this replica has it from Redis.
  net::awaitable<std::optional<std::string>> fingerprint(std::string_view method, std::string_view target,
                                                         std::string_view content_type, std::string_view body) const;

  /// Stores and queues the job: 202 with its Location; with an idempotency key already taken, the
  /// job it names (202) or 422 for another request; 503 when Redis cannot take it. With `wait`
  /// (respond-async, wait=N), the job's result instead when it ends within that time.
  net::awaitable<reply> submit(stored_request request, std::chrono::milliseconds wait = {});
  /// GET /v1/jobs/{id}.
  net::awaitable<reply> status(std::string owner, std::string id);
  /// GET /v1/jobs/{id}/result: the synchronous form's answer once it succeeded; 409 before, or
  /// with the job's own error.
  net::awaitable<reply> result(std::string owner, std::string id);
  /// DELETE /v1/jobs/{id}: a queued job ends at once; a running one is stopped by its replica, and
  /// the answer comes once it has.
  net::awaitable<reply> cancel(std::string owner, std::string id);
  /// Completes when the job has ended, or after `how_long`; true when it has ended. Asks Redis
  /// every 50 ms.
  net::awaitable<bool> wait(std::string owner, std::string id, std::chrono::milliseconds how_long);

  /// The backlog, as last asked of Redis (every second): the same figures on every replica.
  const job_backlog& backlog() const noexcept { return backlog_; }
  /// The /metrics section of this replica's part.
  void write_metrics(std::ostream& out) const;

 private:
  struct running_job {
    std::string job;
    std::shared_ptr<net::steady_timer> stop;  // cancelled: the job stops
    bool cancel_requested = false;
  };

  /// submit's part without waiting: the answer, and the job's id when there is one.
  net::awaitable<std::pair<reply, std::string>> queue(stored_request request);
  net::awaitable<void> consume();
  net::awaitable<void> run(redis_entry entry);
  /// What running a stored job came to: its answer, and whether a DELETE stopped it.
  struct ran {
    reply answer;
    bool cancelled = false;
  };
  /// run()'s steps: the stored request routed, its body's memory taken, and run; nullopt when the
  /// drain stopped it (another replica takes it over). Then its end, as the store keeps it.
  net::awaitable<std::optional<ran>> run_stored(const redis_entry& e, redis_job_fields& f);
  redis_job_fields end_of(ran r, steady::duration took);
  net::awaitable<redis_job_fields> read(const std::string& id);
  net::awaitable<redis_job_fields> read(const std::string& id, std::vector<std::string> names);
  net::awaitable<void> refresh_backlog();
  net::awaitable<void> look_for_cancels();
  reply status_reply(const redis_job_fields& f, const std::string& id, unsigned code) const;
  void deliver_callback(const redis_job_fields& f, const std::string& id);

  net::any_io_executor io_;
  redis_link link_;
  std::string consumer_;
  redis_jobs jobs_;
  const router& routes_;
  job_pipeline& pipeline_;
  worker_pool& pool_;
  std::size_t workers_;
  std::chrono::milliseconds keep_;
  std::chrono::milliseconds claim_after_;
  logger& log_;
  callback_sender* callbacks_ = nullptr;
  std::optional<fingerprinter> fingerprints_;  // with the replicas' shared key, once read
  bool stopping_ = false;
  std::map<std::string, running_job> running_;  // by stream entry
  std::shared_ptr<net::steady_timer> tick_;

  // What /metrics says.
  job_backlog backlog_;
  std::int64_t pending_ = 0;      // delivered, not acknowledged (whole group)
  bool store_up_ = false;         // the last backlog query was answered
  double mean_run_seconds_ = 0;   // of the jobs run here: the backlog's estimate
  std::uint64_t accepted_ = 0;
  std::uint64_t replays_ = 0;
  std::uint64_t taken_over_ = 0;  // entries of dead replicas taken over here
  std::map<std::string, std::uint64_t, std::less<>> ended_;  // ends stored here, by status
  std::set<std::string, std::less<>> interned_types_;  // results' media types, kept for the replies that name them
};

}  // namespace crunch
