#pragma once
/// A pool of worker threads that runs CPU-bound jobs off the I/O thread.
///
/// `async_submit` is an ordinary Asio asynchronous operation: any completion token works, the
/// completion is delivered through the handler's associated executor (for a session, the I/O
/// thread's io_context: the connection's implicit strand) and never inline. Per-operation
/// cancellation removes a job that is still queued; a running job gets its std::stop_token fired
/// and the operation completes at once with operation_aborted, so that whoever cancelled need not
/// wait for a job that cannot stop midway (an Argon2 hash): it finishes on its worker, which stays
/// busy — and its memory charged — until then, and its result is dropped.

#include "workers/completion_queue.hpp"
#include <crunch/scheduling.hpp>
#include <crunch/isolation.hpp>
#include <crunch/memory_lease.hpp>
#include "server/net.hpp"

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/system/error_code.hpp>

#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace crunch {

/// Gives the calling thread the workers' scheduling class. Threads it starts inherit it (but for
/// the shortened time slice, which the kernel resets in a new thread), and so do processes it
/// starts (a worker's helpers).
void apply_worker_priority(worker_priority priority);

/// The same, and remembers `priority` as the process's: for a helper process, whose libraries
/// start threads of their own (libvips evaluates on "libvips worker" threads).
void adopt_worker_priority(worker_priority priority);

/// Gives the calling thread the priority adopt_worker_priority() remembered, once per thread:
/// what a library's own thread calls when it first runs crunch's code (libvips's progress
/// callback), so that it yields to other threads as the workers do, its short time slice
/// included. Nothing when none was remembered.
void adopt_worker_priority_on_this_thread() noexcept;

/// Keeps the calling thread, and the threads it starts meanwhile, on the CPU it is running on,
/// until the object goes: for a library call that starts threads of its own that cannot be told
/// how many (libaom, through libheif and libvips, runs four), so that the job takes the one CPU
/// the pool gave its worker and no more. Threads already started keep their CPUs.
class confined_to_one_cpu {
 public:
  confined_to_one_cpu() noexcept;
  ~confined_to_one_cpu();
  confined_to_one_cpu(const confined_to_one_cpu&) = delete;
  confined_to_one_cpu& operator=(const confined_to_one_cpu&) = delete;

 private:
  cpu_set_t before_{};
  bool confined_ = false;
};

/// Gives the calling thread — the I/O thread — real-time scheduling, SCHED_FIFO at priority 1,
/// with SCHED_RESET_ON_FORK so that threads it starts get normal scheduling. A woken real-time
/// thread runs at once, ahead of every worker; under the fair scheduler it could wait for a
/// worker's whole run (measured: up to 5 ms behind libvips's threads, see README). Needs
/// CAP_SYS_NICE or an RLIMIT_RTPRIO of at least 1; returns false, changing nothing, when the OS
/// refuses.
bool make_io_thread_realtime() noexcept;

/// Why a submitted job produced no value (besides net::error::operation_aborted for cancellation).
enum class pool_errc {
  queue_full = 1,  ///< the bounded queue had no room: rejected at once
  shut_down,       ///< the pool stopped before the job could run
  job_failed,      ///< the job threw; job_result::failure holds what()
  too_large,       ///< the job declares more memory than the whole budget: rejected at once
  helper_failed,   ///< the helper process running it died (isolated_job_failed): failure, failure_code, failure_details
};

/// The error category of pool_errc.
const sys::error_category& pool_category() noexcept;

/// Makes pool_errc usable as a boost::system::error_code.
inline sys::error_code make_error_code(pool_errc e) noexcept {
  return {static_cast<int>(e), pool_category()};
}

}  // namespace crunch

template <>
struct boost::system::is_error_code_enum<crunch::pool_errc> : std::true_type {};

namespace crunch {

/// Where a job's time went.
struct job_timing {
  std::chrono::steady_clock::duration queued{};     ///< from submission to a worker picking it up
  std::chrono::steady_clock::duration computing{};  ///< running on the worker
};

/// What a job produced, delivered with the completion.
template <typename T>
struct job_result {
  T value{};            ///< the job's return value (value-initialised when there is none)
  job_timing timing;    ///< queue and run time
  std::string failure;  ///< what() of the exception when the error is pool_errc::job_failed or helper_failed
  std::string failure_code;     ///< for helper_failed: the error code the client gets
  std::string failure_details;  ///< for helper_failed: the helper's crash report, for the log
};

/// Sizing and scheduling of a worker_pool.
struct worker_pool_options {
  std::size_t workers = 1;                            ///< worker threads, at least 1
  std::size_t queue_limit = 64;                       ///< jobs waiting for a worker, at most
  worker_priority priority = worker_priority::normal; ///< OS priority of the workers
  std::uint64_t memory_budget = 0;                    ///< bytes that running jobs may declare together; 0: no limit
  /// Where completions for handlers on its io_context go (completion_queue.hpp); others, and all
  /// when null, are posted to the handler's executor.
  completion_queue* completions = nullptr;
  /// How long a worker keeps its working memory (worker_memory.hpp) while it has no job.
  std::chrono::milliseconds keep_memory_idle{10'000};
};

/// Where a submitted job goes in the queue, and what it needs.
struct job_ticket {
  std::uint64_t memory = 0;  ///< bytes it declares (see async_submit)
  /// Its place: the queue is kept in order of tag, and in arrival order among equal tags. The
  /// fair queuing of flows (flows.hpp) gives each job its start tag; 0 for all is a plain FIFO.
  std::uint64_t tag = 0;
  /// Its request's place in the table of requests in flight (fatal_signals.hpp), which a fatal
  /// signal's report on its worker names; -1: none.
  int request_slot = -1;
  /// When it must be done: a helper running it gets the CPU time left until then.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

/// N worker threads behind one bounded queue, in order of the jobs' tags (FIFO when they are
/// equal). When the queue is full, a job whose tag is lower than the last queued one's takes its
/// place, and the last one is refused (pool_errc::queue_full): with fair queuing, the last job
/// is the newest of the flow furthest over its share. A job may declare the memory it will use; the
/// jobs running at once and the leases never hold more than the memory budget together. A job
/// whose memory is not free waits at the head of the queue as it would wait for a worker; jobs
/// behind it that need no memory go past it, and no lease is granted while it waits — so the
/// memory it waits for can only come back to it.
class worker_pool {
 public:
  /// Starts the worker threads.
  explicit worker_pool(worker_pool_options options);
  /// Calls shutdown() and joins every worker.
  ~worker_pool();

  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  /// Queues `job` — callable as `T job(std::stop_token)` — and completes with
  /// `void(sys::error_code, job_result<T>)`: success, pool_errc::queue_full (at once when the
  /// queue is full), pool_errc::job_failed, pool_errc::shut_down or net::error::operation_aborted.
  template <typename Job, typename CompletionToken>
  auto async_submit(Job job, CompletionToken&& token) {
    return async_submit(std::move(job), job_ticket{}, std::forward<CompletionToken>(token));
  }

  /// The same for a job that declares `memory` bytes.
  template <typename Job, typename CompletionToken>
  auto async_submit(Job job, std::uint64_t memory, CompletionToken&& token) {
    return async_submit(std::move(job), job_ticket{memory, 0}, std::forward<CompletionToken>(token));
  }

  /// The same with a ticket: the job starts only when its memory is free within the budget (more
  /// than the whole budget completes with pool_errc::too_large at once), and it is queued by its
  /// tag.
  template <typename Job, typename CompletionToken>
  auto async_submit(Job job, job_ticket ticket, CompletionToken&& token);

  /// Stops taking jobs, completes the queued ones with pool_errc::shut_down and asks the running
  /// ones to stop. Idempotent; threads are joined by the destructor.
  void shutdown();

  /// Number of worker threads.
  std::size_t workers() const noexcept { return threads_.size(); }
  /// Capacity of the queue.
  std::size_t queue_limit() const noexcept { return queue_limit_; }
  /// Jobs waiting for a worker now.
  std::size_t queued() const;
  /// Whether a job with `tag` would be queued now: the queue has room, or its last job has a
  /// higher tag and would give up its place.
  bool has_room(std::uint64_t tag) const;
  /// The highest tag of a job that has started: the fair queue's virtual time.
  std::uint64_t virtual_time() const noexcept { return virtual_time_.load(std::memory_order_relaxed); }
  /// Workers running a job now.
  std::size_t busy() const;
  /// The memory budget in bytes (0: no limit).
  std::uint64_t memory_budget() const noexcept { return memory_budget_; }
  /// Bytes declared by the jobs running now, held by leases, and kept by the workers.
  std::uint64_t memory_in_use() const;
  /// Bytes of working memory the workers keep between jobs (part of memory_in_use()).
  std::uint64_t memory_kept() const;

  /// Takes `bytes` from the memory budget now, for as long as the lease lives — or, when they
  /// are not free or a queued job waits for memory, an empty lease.
  memory_lease try_lease(std::uint64_t bytes);

 private:
  friend class memory_lease;  // wakes the workers when it gives memory back

  /// A queued job with its handler, type-erased so that the queue is one container.
  class task {
   public:
    virtual ~task() = default;
    /// Runs the job on the calling worker thread and keeps its result; the job and what it
    /// holds (a request body, its memory lease) are gone when it returns.
    virtual void run(std::stop_token stop) = 0;
    /// Sends the kept result: called once the worker has given back its slot and memory, so a
    /// client that has its answer finds the pool already free of its job.
    virtual void finish() = 0;
    /// Posts a completion with `ec` and no value, unless one was posted already. Without running
    /// the job, or — when cancelled — while it still runs.
    virtual void abandon(sys::error_code ec) = 0;

    std::uint64_t id_ = 0;                              ///< never reused, unlike an address
    std::stop_source stop_;                             ///< fired by cancellation or shutdown
    std::chrono::steady_clock::time_point enqueued_{};  ///< for job_timing::queued
    std::uint64_t memory_ = 0;                          ///< bytes it declares
    std::uint64_t tag_ = 0;                             ///< its place in the queue
    int request_slot_ = -1;                             ///< job_ticket::request_slot
    std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  };

  template <typename Job, typename Handler>
  class task_for;
  template <typename Handler, typename Value, typename Executor>
  class delivery;

  /// What a cancellation slot holds: it names the task by id, never by pointer.
  struct cancel_handler {
    // A constructor, not aggregate initialisation: slot.emplace() constructs with parentheses,
    // which clang before 16 does not accept for aggregates.
    cancel_handler(worker_pool* p, std::uint64_t i) : pool(p), id(i) {}
    worker_pool* pool;
    std::uint64_t id;
    void operator()(net::cancellation_type type) const;
  };

  /// Queues the task or, when full or shut down, abandons it (posting its completion).
  void enqueue(std::unique_ptr<task> t);
  /// Removes the task from the queue if it is still there; if it runs, fires its stop token and
  /// completes it now. A task that has finished is left alone.
  void cancel(std::uint64_t id);
  void worker_main(std::size_t index);
  /// The first queued job that worker `index` may start now: the head if its memory is free
  /// (what the worker keeps counts as free for it), else the first that needs none. end() if
  /// none. Called with mutex_ held.
  std::deque<std::unique_ptr<task>>::iterator next_startable(std::size_t index);
  /// Whether a job declaring `memory` fits beside what is in use, on a worker that keeps `kept`.
  bool fits(std::uint64_t memory, std::uint64_t kept) const;
  /// Whether the head of the queue waits for memory: no idle worker could start it. Called with
  /// mutex_ held.
  bool head_waits_for_memory() const;
  /// Wakes the workers after memory came back from a lease.
  void memory_freed();

  const std::size_t queue_limit_;
  const worker_priority priority_;
  completion_queue* const completions_;
  const std::uint64_t memory_budget_;
  const std::chrono::milliseconds keep_memory_idle_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::unique_ptr<task>> queue_;      // guarded by mutex_
  std::vector<task*> running_;                   // per worker, null when idle; guarded by mutex_
  // Per worker: bytes charged for it beyond leases — its kept memory when idle, the larger of
  // that and its job's memory while it runs. Guarded by mutex_.
  std::vector<std::uint64_t> charged_;
  std::size_t busy_ = 0;                         // guarded by mutex_
  std::shared_ptr<memory_lease::shared_state> memory_;  // in use: changed under mutex_ but by leases
  std::uint64_t next_id_ = 1;                    // guarded by mutex_
  std::atomic<std::uint64_t> virtual_time_{0};   // written under mutex_
  bool stopping_ = false;                        // guarded by mutex_
  std::vector<std::thread> threads_;
};

namespace detail {

/// Runs a completion handler on its own thread. The cancellation slot belongs to that thread, so
/// it is cleared there, just before the handler runs.
template <typename Handler, typename Value>
void call_handler(Handler handler, sys::error_code ec, job_result<Value> result) {
  auto slot = net::get_associated_cancellation_slot(handler);
  if (slot.is_connected()) slot.clear();
  std::move(handler)(ec, std::move(result));
}

}  // namespace detail

template <typename Job, typename Handler>
class worker_pool::task_for final : public worker_pool::task {
 public:
  using value_type = std::invoke_result_t<Job&, std::stop_token>;
  using executor_type = net::associated_executor_t<Handler, net::system_executor>;

  task_for(Job job, Handler handler, completion_queue* completions)
      : job_(std::in_place, std::move(job)),
        handler_(std::move(handler)),
        work_(net::get_associated_executor(handler_, net::system_executor())),
        completions_(completions) {}

  Handler& handler() noexcept { return handler_; }

  void run(std::stop_token stop) override {
    const auto started = std::chrono::steady_clock::now();
    result_.timing.queued = started - enqueued_;
    try {
      result_.value = (*job_)(std::move(stop));
    } catch (const isolated_job_failed& e) {
      ec_ = pool_errc::helper_failed;
      result_.failure = e.what();
      result_.failure_code = e.code();
      result_.failure_details = e.details();
    } catch (const std::exception& e) {
      ec_ = pool_errc::job_failed;
      result_.failure = e.what();
    } catch (...) {
      ec_ = pool_errc::job_failed;
      result_.failure = "unknown exception";
    }
    result_.timing.computing = std::chrono::steady_clock::now() - started;
    job_.reset();
  }

  void finish() override { complete(ec_, std::move(result_)); }

  void abandon(sys::error_code ec) override {
    job_result<value_type> result;
    result.timing.queued = std::chrono::steady_clock::now() - enqueued_;
    complete(ec, std::move(result));
  }

 private:
  // Runs on a worker, on the submitting thread for an immediate rejection, or on the cancelling
  // thread for a running job: post, never invoke, so the handler runs on its own executor. The
  // first call wins; a job that ends after its operation was cancelled has nowhere to go.
  void complete(sys::error_code ec, job_result<value_type> result) {
    if (completed_.exchange(true, std::memory_order_acq_rel)) return;
    auto executor = work_.get_executor();
    if (completions_ != nullptr && on_context(executor, completions_->context())) {
      // The work guard goes with it: the io_context has work until the handler has run.
      completions_->push(std::make_unique<delivery<Handler, value_type, executor_type>>(
          std::move(handler_), ec, std::move(result), std::move(work_)));
      return;
    }
    net::post(executor, [handler = std::move(handler_), ec, result = std::move(result)]() mutable {
      detail::call_handler(std::move(handler), ec, std::move(result));
    });
    work_.reset();
  }

  template <typename Executor>
  static bool on_context(const Executor& executor, const net::io_context& io) {
    if constexpr (std::is_same_v<Executor, net::system_executor>) {
      return false;
    } else {
      return &net::query(executor, net::execution::context) == &io;
    }
  }

  std::optional<Job> job_;  // reset once run
  job_result<value_type> result_;
  sys::error_code ec_;
  Handler handler_;
  net::executor_work_guard<executor_type> work_;
  completion_queue* const completions_;
  std::atomic<bool> completed_{false};
};

/// A completion on its way through the completion queue.
template <typename Handler, typename Value, typename Executor>
class worker_pool::delivery final : public completion_queue::item {
 public:
  delivery(Handler handler, sys::error_code ec, job_result<Value> result, net::executor_work_guard<Executor> work)
      : handler_(std::move(handler)), ec_(ec), result_(std::move(result)), work_(std::move(work)) {}

  void deliver() override {
    detail::call_handler(std::move(handler_), ec_, std::move(result_));
    work_.reset();
  }

 private:
  Handler handler_;
  sys::error_code ec_;
  job_result<Value> result_;
  net::executor_work_guard<Executor> work_;
};

template <typename Job, typename CompletionToken>
auto worker_pool::async_submit(Job job, job_ticket ticket, CompletionToken&& token) {
  using value_type = std::invoke_result_t<Job&, std::stop_token>;
  using signature = void(sys::error_code, job_result<value_type>);
  return net::async_initiate<CompletionToken, signature>(
      [this, ticket](auto handler, Job queued_job) {
        using handler_type = decltype(handler);
        auto t = std::make_unique<task_for<Job, handler_type>>(std::move(queued_job), std::move(handler), completions_);
        t->memory_ = ticket.memory;
        t->tag_ = ticket.tag;
        t->request_slot_ = ticket.request_slot;
        t->deadline_ = ticket.deadline;
        {
          std::lock_guard lock(mutex_);
          t->id_ = next_id_++;
        }
        auto slot = net::get_associated_cancellation_slot(t->handler());
        if (slot.is_connected()) slot.template emplace<cancel_handler>(this, t->id_);
        enqueue(std::move(t));
      },
      token, std::move(job));
}

}  // namespace crunch
