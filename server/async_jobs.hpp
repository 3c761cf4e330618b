#pragma once
/// Jobs that outlive their request (RFC 7240 `Prefer: respond-async`), and idempotency keys
/// (draft-ietf-httpapi-idempotency-key-header) for every job request, held in memory.
///
/// An accepted job waits in the store's backlog, one FIFO per flow, taken round robin: a client
/// that queues ten thousand jobs does not stand in front of one that queues one. The backlog is
/// fed to the job pipeline only as workers can take it (at most one job per worker in flight), so
/// admission, fair shares and the memory budget decide for these jobs as for any other, and a
/// synchronous request never waits behind the whole backlog. A job the pipeline refuses for load
/// goes back to the head of its flow and is tried again; it is never dropped once accepted.
///
/// Everything the store keeps — a record per job, a queued job's body, a finished job's answer, an
/// idempotency record — counts against --jobs-store-bytes and is charged to the memory budget. A
/// job that does not fit is refused with 503 and Retry-After when it is submitted. What the store
/// holds is lost when the process ends: this store serves one replica.
///
/// Used on the I/O thread only.

#include "server/admission.hpp"
#include <crunch/config.hpp>
#include "server/job_pipeline.hpp"
#include "server/metrics.hpp"
#include "server/net.hpp"
#include "server/router.hpp"
#include "workers/worker_pool.hpp"

#include "server/callbacks.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

namespace crunch {

/// A new job id: 128 random bits, base64url (22 characters).
std::string new_job_id();

/// "2026-12-07T13:45:00.123Z": a status document's times.
std::string rfc3339(std::chrono::system_clock::time_point t);

/// Completes when `signal` (a timer set to never expire) is cancelled: how a job's stop is asked
/// for, raced against the job in job_pipeline::run.
net::awaitable<void> until_cancelled(std::shared_ptr<net::steady_timer> signal);

/// Where an asynchronous job is.
enum class job_status { queued, running, succeeded, failed, cancelled, expired };
/// Its name in the status document: "queued", "running", ...
const char* to_string(job_status status) noexcept;

/// What a request's Prefer header fields ask for (RFC 7240).
struct preferences {
  bool respond_async = false;                  ///< respond-async
  std::optional<std::chrono::seconds> wait;    ///< wait=N
};

/// Parses Prefer field values (one per header line; each a comma-separated list). Unknown
/// preferences and malformed ones are ignored, as RFC 7240 §2 asks.
preferences parse_prefer(const std::vector<std::string_view>& values);

/// An Idempotency-Key's value: a Structured Fields string ("...") or a bare token of printable
/// ASCII, 1..255 characters. nullopt: not a key a client can have meant.
std::optional<std::string> parse_idempotency_key(std::string_view value);

/// A request's fingerprint for its idempotency key: a keyed BLAKE2b of its method, target, media
/// type and body. The key is random per process, so the fingerprint of a password's request
/// tells nothing of the password.
class fingerprinter {
 public:
  fingerprinter();
  /// With a key shared by replicas (the shared job store's), so that they agree on fingerprints.
  explicit fingerprinter(const std::array<unsigned char, 32>& key);
  /// The fingerprint of a request whose body is `body`: computed in slices of 256 KiB, yielding
  /// to the loop between them, so a 25 MiB body does not hold the I/O thread for 25 ms.
  net::awaitable<std::string> fingerprint(std::string_view method, std::string_view target,
                                          std::string_view content_type, std::string_view body) const;

 private:
  std::array<unsigned char, 32> key_{};
};

/// The backlog, the signal to scale on: jobs waiting, their estimated seconds of work on one
/// worker, and how long the oldest has waited.
struct job_backlog {
  std::size_t jobs = 0;
  double seconds = 0;
  double oldest_seconds = 0;
};

/// The store's limits.
struct async_limits {
  std::chrono::milliseconds max_timeout{3'600'000};  ///< longest deadline of an asynchronous job, and its default
  std::chrono::milliseconds keep{3'600'000};         ///< how long an ended job and an idempotency record are kept
  std::uint64_t store_bytes = 64 << 20;              ///< what the store may hold
};

/// The memory store of asynchronous jobs and idempotency records.
class async_jobs {
 public:
  using steady = std::chrono::steady_clock;

  /// Bytes counted for a job's record (its id, owner, times, closure and bookkeeping) besides its
  /// body and its answer: measured as the growth of the process's resident memory with 10,000
  /// queued jobs (about 1,080 bytes a job; async_jobs_test), rounded up.
  static constexpr std::uint64_t record_bytes = 1536;

  async_jobs(net::any_io_executor io, async_limits limits, job_pipeline& pipeline, worker_pool& pool,
             const admission& admit, std::size_t workers);
  ~async_jobs();
  async_jobs(const async_jobs&) = delete;
  async_jobs& operator=(const async_jobs&) = delete;

  /// What submit() did.
  struct submitted {
    std::string id;  ///< the job's id, or empty when refused
    reply refused;   ///< the 503 when it was
  };

  /// Accepts `job` (prepared with the store's deadline bounds; received at `received`) for
  /// `owner` (the API key's name, empty without keys), or refuses it when the store is full.
  /// `callback`: where its status goes once it has ended (callbacks.hpp), checked already.
  submitted submit(job_request job, std::string owner, steady::time_point received,
                   std::optional<callback_url> callback = std::nullopt);

  /// Why `url` may not be a callback here; "no callbacks" without a sender.
  std::optional<std::string> callback_policy_refuses(const callback_url& url) const {
    if (callbacks_ == nullptr) return "this server takes no callbacks";
    return callbacks_->policy().refuse(url);
  }

  /// Sends ended jobs' callbacks through `sender` (null: none).
  void set_callbacks(callback_sender* sender) { callbacks_ = sender; }

  /// Completes once `owner`'s job `id` has ended, or after `wait`, whichever is first. True: it
  /// has ended.
  net::awaitable<bool> wait(std::string owner, std::string id, std::chrono::milliseconds wait);

  /// The 202 for job `id`: its status document, Location, Preference-Applied, Retry-After.
  reply accepted(std::string_view id) const;
  /// GET /v1/jobs/{id}: the status document; 404 for an unknown id or another owner's job.
  reply status(std::string_view owner, std::string_view id) const;
  /// GET /v1/jobs/{id}/result: the answer the synchronous request would have had, once the job
  /// has succeeded; 409 before, or with the job's own error when it did not succeed.
  reply result(std::string_view owner, std::string_view id) const;
  /// DELETE /v1/jobs/{id}: a queued job leaves the backlog, a running one is stopped as a deadline
  /// stops it; completes once it has ended, with its status document.
  net::awaitable<reply> cancel(std::string owner, std::string id);

  /// What an Idempotency-Key says of a request, before it runs.
  struct replay {
    std::optional<reply> answer;  ///< answer this and run nothing (a replay, a 409, a 422)
    std::string job;              ///< the key names this asynchronous job: answer as for it
  };
  /// Looks `key` up for `owner`. Nothing found: the key is taken for this request (`fingerprint`),
  /// to be bound to its job (bind_key) or its answer (settle_key), or released (release_key).
  replay claim_key(const std::string& owner, const std::string& key, const std::string& fingerprint);
  /// The claimed key now names asynchronous job `id`.
  void bind_key(const std::string& owner, const std::string& key, const std::string& id);
  /// The synchronous request of a claimed key was answered `answer`: kept for replays when it is a
  /// final answer (2xx, 4xx); released otherwise (a 5xx, a request nobody waited for), so that a
  /// retry runs again.
  void settle_key(const std::string& owner, const std::string& key, const reply& answer);
  /// The claimed key's request came to nothing: the key is free again.
  void release_key(const std::string& owner, const std::string& key);

  /// The drain: nothing more starts, jobs running are stopped; the store's jobs are lost with the
  /// process.
  void stop();

  /// The /metrics section of the store.
  /// `shared`: the backlog of the shared store (Redis), which replaces this store's.
  void write_metrics(std::ostream& out, const job_backlog* shared = nullptr) const;

  /// Jobs queued, for the live view and the metrics.
  std::size_t backlog() const noexcept { return backlog_size_; }
  /// The backlog's figures.
  job_backlog backlog_figures() const;
  /// Estimated seconds of work in the backlog (jobs of kinds with a cost model).
  double backlog_seconds() const noexcept { return std::max(0.0, backlog_seconds_); }
  /// Bytes the store holds.
  std::uint64_t bytes() const noexcept { return bytes_; }

 private:
  struct job;
  struct idempotency_record;
  using job_map = std::unordered_map<std::string, std::unique_ptr<job>>;

  job* find(std::string_view owner, std::string_view id) const;
  void pump();
  net::awaitable<void> run(job& j, memory_lease working);
  void retry_later();
  void in_backlog(const job& j, int change);
  void finish(job& j, job_status status, reply answer);
  void notify(job& j);
  void schedule_sweep(steady::time_point at);
  void sweep();
  void forget(job& j);
  bool take(std::uint64_t bytes, memory_lease& lease);
  std::string status_document(const job& j) const;

  net::any_io_executor io_;
  async_limits limits_;
  job_pipeline& pipeline_;
  worker_pool& pool_;
  const admission& admit_;
  std::size_t workers_;
  bool stopping_ = false;
  callback_sender* callbacks_ = nullptr;

  job_map jobs_;
  // The backlog: a FIFO of job ids per flow, and the flows with jobs waiting, in turn.
  std::map<std::string, std::deque<job*>, std::less<>> backlog_by_flow_;
  std::deque<std::string> turns_;
  std::size_t backlog_size_ = 0;
  double backlog_seconds_ = 0;  // estimated work of the queued jobs
  std::size_t running_ = 0;
  std::unique_ptr<net::steady_timer> retry_timer_;  // after the pipeline refused a job for load
  bool retry_armed_ = false;

  std::map<std::string, idempotency_record, std::less<>> keys_;  // owner '\n' key
  std::multimap<steady::time_point, std::string> expiries_;       // job ids and "k:" key records
  std::unique_ptr<net::steady_timer> sweep_timer_;
  steady::time_point sweep_at_ = steady::time_point::max();

  std::uint64_t bytes_ = 0;
  std::uint64_t accepted_ = 0;
  std::uint64_t refused_ = 0;
  std::uint64_t retried_ = 0;
  std::uint64_t replays_ = 0;
  std::array<std::uint64_t, 6> ended_{};
};

}  // namespace crunch
