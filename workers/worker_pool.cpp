#include "workers/worker_pool.hpp"

#include <crunch/cpu_pacer.hpp>
#include <crunch/worker_memory.hpp>

#include "fatal_signals.hpp"
#include "helpers.hpp"

#include <boost/asio/error.hpp>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <cstdint>
#include <stdexcept>
#include <utility>

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace crunch {

namespace {

class pool_category_impl final : public sys::error_category {
 public:
  const char* name() const noexcept override { return "crunch.pool"; }
  std::string message(int ev) const override {
    switch (static_cast<pool_errc>(ev)) {
      case pool_errc::queue_full: return "job queue is full";
      case pool_errc::shut_down: return "worker pool is shut down";
      case pool_errc::job_failed: return "job failed";
      case pool_errc::too_large: return "job needs more memory than the budget";
      case pool_errc::helper_failed: return "the helper process running the job died";
    }
    return "unknown worker pool error";
  }
};

// Batch workers' nice value. The lowest weight (15, against the I/O thread's 1024) lets a woken
// I/O thread preempt a worker most often: with nice +10 (weight 110), 0.3–1.3 % of the loop-lag
// monitor's wake-ups waited for the next scheduler tick, and its p99 under full load moved between
// 50 and 375 µs; with +19, 0.1–0.6 % and 50–93 µs (six interleaved runs each, issue 5). The price
// is paid only next to CPU-bound processes of normal priority in the same cgroup: there the
// workers get ~1.5 % of a CPU each instead of ~10 % (see README, "Why batch is the default").
constexpr int batch_nice = 19;

// The kernel's attribute block for sched_setattr(2); glibc 2.36 has no wrapper for it.
struct sched_attr_v0 {
  std::uint32_t size;
  std::uint32_t sched_policy;
  std::uint64_t sched_flags;
  std::int32_t sched_nice;
  std::uint32_t sched_priority;
  std::uint64_t sched_runtime;
  std::uint64_t sched_deadline;
  std::uint64_t sched_period;
};

// Since Linux 6.12 (EEVDF), a running task is protected from wake-up preemption for its time
// slice, 0.75 ms × (1 + log2 CPUs) by default: the I/O thread, woken by a request, could wait that
// long behind a worker. sched_runtime asks for a shorter slice (0.1 ms, the kernel's floor), so a
// worker yields to a woken thread within 0.1 ms. Older kernels ignore the field for SCHED_BATCH.
void shorten_slice(pid_t tid) {
  sched_attr_v0 attr{};
  attr.size = sizeof attr;
  attr.sched_policy = SCHED_BATCH;
  attr.sched_nice = batch_nice;
  attr.sched_runtime = 100'000;  // ns
  syscall(SYS_sched_setattr, tid, &attr, 0U);
}

// The priority for the thread `tid` of this process (0: the calling thread).
void apply_priority_to(pid_t tid, worker_priority priority) {
  if (priority == worker_priority::normal) return;
  sched_param param{};
  param.sched_priority = 0;
  sched_setscheduler(tid, priority == worker_priority::batch ? SCHED_BATCH : SCHED_IDLE, &param);
  if (priority == worker_priority::batch) {
    // On Linux the nice value is per thread: PRIO_PROCESS with a tid, or 0 for the calling one.
    setpriority(PRIO_PROCESS, static_cast<id_t>(tid), batch_nice);
    shorten_slice(tid);
  }
}

// What adopt_worker_priority() remembered: a worker_priority + 1, 0 for none.
std::atomic<int> adopted_priority{0};

}  // namespace

// Best effort: an unprivileged process may always lower its own priority, so failure here
// means an unusual kernel or seccomp policy, and the pool still works at normal priority.
void apply_worker_priority(worker_priority priority) { apply_priority_to(0, priority); }

void adopt_worker_priority(worker_priority priority) {
  adopted_priority.store(static_cast<int>(priority) + 1, std::memory_order_relaxed);
  apply_priority_to(0, priority);
}

void adopt_worker_priority_on_this_thread() noexcept {
  thread_local bool adopted = false;
  if (adopted) return;
  adopted = true;
  if (const int p = adopted_priority.load(std::memory_order_relaxed); p != 0) {
    apply_priority_to(0, static_cast<worker_priority>(p - 1));
  }
}

confined_to_one_cpu::confined_to_one_cpu() noexcept {
  const int cpu = sched_getcpu();
  if (cpu < 0 || sched_getaffinity(0, sizeof before_, &before_) != 0) return;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(static_cast<std::size_t>(cpu), &one);
  confined_ = sched_setaffinity(0, sizeof one, &one) == 0;
}

confined_to_one_cpu::~confined_to_one_cpu() {
  if (confined_) sched_setaffinity(0, sizeof before_, &before_);
}

bool make_io_thread_realtime() noexcept {
  constexpr std::uint64_t reset_on_fork = 0x01;  // SCHED_FLAG_RESET_ON_FORK
  sched_attr_v0 attr{};
  attr.size = sizeof attr;
  attr.sched_policy = SCHED_FIFO;
  attr.sched_flags = reset_on_fork;
  attr.sched_priority = 1;
  return syscall(SYS_sched_setattr, 0, &attr, 0U) == 0;
}

struct memory_lease::shared_state {
  std::atomic<std::uint64_t> in_use{0};  // running jobs' memory and leases'
  std::mutex link;                       // guards pool
  worker_pool* pool = nullptr;           // null once the pool is gone
};

memory_lease::memory_lease(memory_lease&& other) noexcept
    : shared_(std::move(other.shared_)), bytes_(std::exchange(other.bytes_, 0)) {}

memory_lease& memory_lease::operator=(memory_lease&& other) noexcept {
  if (this != &other) {
    release();
    shared_ = std::move(other.shared_);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void memory_lease::shrink_to(std::uint64_t bytes) noexcept {
  if (!shared_ || bytes >= bytes_) return;
  give_back(bytes_ - bytes);
  bytes_ = bytes;
}

void memory_lease::release() noexcept {
  if (!shared_) return;
  give_back(bytes_);
  bytes_ = 0;
  shared_.reset();
}

void memory_lease::give_back(std::uint64_t bytes) noexcept {
  if (bytes == 0) return;
  shared_->in_use.fetch_sub(bytes, std::memory_order_acq_rel);
  std::lock_guard lock(shared_->link);
  if (shared_->pool) shared_->pool->memory_freed();
}

const sys::error_category& pool_category() noexcept {
  static const pool_category_impl category;
  return category;
}

void worker_pool::cancel_handler::operator()(net::cancellation_type type) const {
  if ((type & (net::cancellation_type::terminal | net::cancellation_type::partial |
               net::cancellation_type::total)) != net::cancellation_type::none) {
    pool->cancel(id);
  }
}

worker_pool::worker_pool(worker_pool_options options)
    : queue_limit_(options.queue_limit),
      priority_(options.priority),
      completions_(options.completions),
      memory_budget_(options.memory_budget),
      keep_memory_idle_(options.keep_memory_idle),
      running_(options.workers, nullptr),
      charged_(options.workers, 0),
      memory_(std::make_shared<memory_lease::shared_state>()) {
  memory_->pool = this;
  if (options.workers == 0) throw std::invalid_argument("worker_pool needs at least one worker");
  threads_.reserve(options.workers);
  for (std::size_t i = 0; i < options.workers; ++i) {
    threads_.emplace_back([this, i] { worker_main(i); });
  }
}

worker_pool::~worker_pool() {
  shutdown();
  for (auto& t : threads_) t.join();
  std::lock_guard lock(memory_->link);
  memory_->pool = nullptr;
}

void worker_pool::shutdown() {
  std::deque<std::unique_ptr<task>> abandoned;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    abandoned.swap(queue_);
    for (auto* t : running_) {
      if (t) t->stop_.request_stop();
    }
  }
  ready_.notify_all();
  for (auto& t : abandoned) t->abandon(pool_errc::shut_down);
}

std::size_t worker_pool::queued() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

bool worker_pool::has_room(std::uint64_t tag) const {
  std::lock_guard lock(mutex_);
  return queue_.size() < queue_limit_ || (!queue_.empty() && tag < queue_.back()->tag_);
}

std::size_t worker_pool::busy() const {
  std::lock_guard lock(mutex_);
  return busy_;
}

std::uint64_t worker_pool::memory_in_use() const { return memory_->in_use.load(std::memory_order_acquire); }

std::uint64_t worker_pool::memory_kept() const {
  std::lock_guard lock(mutex_);
  std::uint64_t kept = 0;
  for (std::size_t i = 0; i < running_.size(); ++i) {
    if (running_[i] == nullptr) kept += charged_[i];
  }
  return kept;
}

bool worker_pool::fits(std::uint64_t memory, std::uint64_t kept) const {
  if (memory_budget_ == 0 || memory <= kept) return true;
  const auto in_use = memory_->in_use.load(std::memory_order_acquire);
  return memory - kept <= memory_budget_ - std::min(in_use, memory_budget_);
}

bool worker_pool::head_waits_for_memory() const {
  if (queue_.empty() || memory_budget_ == 0) return false;
  std::uint64_t most_kept = 0;
  for (std::size_t i = 0; i < running_.size(); ++i) {
    if (running_[i] == nullptr) most_kept = std::max(most_kept, charged_[i]);
  }
  return !fits(queue_.front()->memory_, most_kept);
}

std::deque<std::unique_ptr<worker_pool::task>>::iterator worker_pool::next_startable(std::size_t index) {
  if (queue_.empty() || fits(queue_.front()->memory_, charged_[index])) return queue_.begin();
  return std::find_if(queue_.begin(), queue_.end(), [](const auto& t) { return t->memory_ == 0; });
}

memory_lease worker_pool::try_lease(std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  if (memory_budget_ != 0) {
    if (head_waits_for_memory()) return {};
    // Only this function and the workers add to in_use, under mutex_; leases only take away.
    if (bytes > memory_budget_ - std::min(memory_->in_use.load(std::memory_order_acquire), memory_budget_)) return {};
  }
  memory_->in_use.fetch_add(bytes, std::memory_order_acq_rel);
  return memory_lease(memory_, bytes);
}

void worker_pool::memory_freed() {
  // Taking the mutex orders this after a worker that saw too little memory has gone to wait, so
  // that the notification cannot be lost.
  { std::lock_guard lock(mutex_); }
  ready_.notify_all();
}

void worker_pool::enqueue(std::unique_ptr<task> t) {
  sys::error_code rejected;
  std::unique_ptr<task> pushed_out;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      rejected = pool_errc::shut_down;
    } else if (memory_budget_ != 0 && t->memory_ > memory_budget_) {
      rejected = pool_errc::too_large;
    } else if (queue_.size() >= queue_limit_ && (queue_.empty() || t->tag_ >= queue_.back()->tag_)) {
      rejected = pool_errc::queue_full;
    } else {
      if (queue_.size() >= queue_limit_) {
        pushed_out = std::move(queue_.back());
        queue_.pop_back();
      }
      t->enqueued_ = std::chrono::steady_clock::now();
      // After the last job with the same tag or a lower one: in arrival order among equals.
      const auto place = std::upper_bound(queue_.begin(), queue_.end(), t->tag_,
                                          [](std::uint64_t tag, const auto& queued) { return tag < queued->tag_; });
      queue_.insert(place, std::move(t));
    }
  }
  if (rejected) {
    t->enqueued_ = std::chrono::steady_clock::now();
    t->abandon(rejected);
    return;
  }
  if (pushed_out) {
    // It may have been the head that waited for memory: the next one may fit.
    ready_.notify_all();
    pushed_out->abandon(pool_errc::queue_full);
    return;
  }
  ready_.notify_one();
}

void worker_pool::cancel(std::uint64_t id) {
  std::unique_ptr<task> removed;
  {
    std::lock_guard lock(mutex_);
    auto it = std::find_if(queue_.begin(), queue_.end(), [id](const auto& t) { return t->id_ == id; });
    if (it != queue_.end()) {
      removed = std::move(*it);
      queue_.erase(it);
    } else if (const auto r = std::find_if(running_.begin(), running_.end(),
                                           [id](const task* t) { return t && t->id_ == id; });
               r != running_.end()) {
      // Under the lock: the worker frees the task only after it has unlisted it, under the lock.
      // Completed first, then stopped, so that a job that ends because it was stopped cannot win.
      (*r)->abandon(net::error::operation_aborted);
      (*r)->stop_.request_stop();
    }
  }
  if (removed) {
    // It may have been the head that waited for memory: the next one may fit.
    ready_.notify_all();
    removed->abandon(net::error::operation_aborted);
  }
}

void worker_pool::worker_main(std::size_t index) {
  apply_worker_priority(priority_);
  name_thread_for_reports("worker " + std::to_string(index + 1));
  // And for ps, top and perf: "crunch-worker-1" (15 characters at most).
  pthread_setname_np(pthread_self(), ("crunch-worker-" + std::to_string(index + 1)).substr(0, 15).c_str());
  for (;;) {
    job_checkpoint({});  // a job that cannot pause (an Argon2 hash) paces its worker between jobs
    std::unique_ptr<task> t;
    std::uint64_t charged = 0;
    bool give_back = false;
    {
      std::unique_lock lock(mutex_);
      auto next = queue_.end();
      // Kept memory goes back when a queued job waits for the room, or after a while idle.
      auto ready = [&] {
        next = next_startable(index);
        give_back = charged_[index] != 0 && next == queue_.end() && head_waits_for_memory();
        if (next == queue_.end() && !give_back && !queue_.empty()) {
          // The head fits on another idle worker, which keeps more: make sure that one wakes.
          ready_.notify_all();
        }
        return stopping_ || next != queue_.end() || give_back;
      };
      if (charged_[index] == 0) {
        ready_.wait(lock, ready);
      } else if (!ready_.wait_for(lock, keep_memory_idle_, ready)) {
        give_back = true;
      }
      if (!give_back) {
        if (next == queue_.end()) return;  // stopping, and nothing left to do
        t = std::move(*next);
        queue_.erase(next);
        if (t->tag_ > virtual_time_.load(std::memory_order_relaxed)) {
          virtual_time_.store(t->tag_, std::memory_order_relaxed);
        }
        running_[index] = t.get();
        ++busy_;
        // The job's memory, less what this worker keeps already and the job will reuse.
        charged = std::max(charged_[index], t->memory_);
        memory_->in_use.fetch_add(charged - charged_[index], std::memory_order_acq_rel);
        charged_[index] = charged;
      }
    }
    if (give_back) {
      release_worker_memory();
      release_helpers();
      {
        std::lock_guard lock(mutex_);
        memory_->in_use.fetch_sub(charged_[index], std::memory_order_acq_rel);
        charged_[index] = 0;
      }
      ready_.notify_all();
      continue;
    }
    set_running_request(t->request_slot_);
    set_running_deadline(t->deadline_);
    t->run(t->stop_.get_token());
    set_running_request(-1);
    set_running_deadline(std::chrono::steady_clock::time_point::max());
    // What the job left in the worker's kept memory (its helpers' shared memory included) stays
    // charged; the rest of its memory is free.
    const std::uint64_t kept = worker_memory_kept() + helper_memory_kept();
    {
      std::lock_guard lock(mutex_);
      running_[index] = nullptr;
      --busy_;
      if (kept <= charged) {
        memory_->in_use.fetch_sub(charged - kept, std::memory_order_acq_rel);
      } else {
        memory_->in_use.fetch_add(kept - charged, std::memory_order_acq_rel);  // a job that declared too little
      }
      charged_[index] = kept;
    }
    // Freed memory may let the head of the queue start on another worker.
    if (charged != kept) ready_.notify_all();
    t->finish();
  }
}

}  // namespace crunch
