#include <crunch/worker_memory.hpp>
#include "workers/worker_pool.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <future>
#include <latch>
#include <set>
#include <thread>
#include <vector>

namespace crunch {
namespace {

using namespace std::chrono_literals;

// An io_context run by one thread of its own, like crunch's I/O thread.
class io_thread {
 public:
  io_thread() : work_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~io_thread() {
    work_.reset();
    thread_.join();
  }
  net::io_context& io() { return io_; }
  std::thread::id id() const { return thread_.get_id(); }

 private:
  net::io_context io_{1};
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::thread thread_;
};

// A job that blocks its worker until released, so that a test controls when workers are busy.
class gate {
 public:
  void open() { released_.count_down(); }
  void wait() { released_.wait(); }

 private:
  std::latch released_{1};
};

TEST(worker_pool, needs_a_worker) { EXPECT_THROW(worker_pool({0, 1, worker_priority::normal}), std::invalid_argument); }

TEST(worker_pool, completion_runs_on_the_callers_executor_not_a_worker) {
  io_thread io;
  worker_pool pool({2, 8, worker_priority::normal});
  auto strand = net::make_strand(io.io());
  std::promise<std::pair<std::thread::id, std::thread::id>> threads;  // job's, handler's
  std::promise<job_result<int>> result;
  net::post(strand, [&] {
    pool.async_submit([](std::stop_token) { return std::this_thread::get_id(); },
                      net::bind_executor(strand, [&](sys::error_code ec, job_result<std::thread::id> r) {
                        EXPECT_FALSE(ec);
                        EXPECT_TRUE(strand.running_in_this_thread());
                        threads.set_value({r.value, std::this_thread::get_id()});
                      }));
  });
  const auto [job_thread, handler_thread] = threads.get_future().get();
  EXPECT_EQ(handler_thread, io.id());
  EXPECT_NE(job_thread, io.id());
}

TEST(worker_pool, never_completes_inline_even_when_rejecting) {
  io_thread io;
  worker_pool pool({1, 0, worker_priority::normal});  // a queue of 0: every submission is rejected
  std::promise<sys::error_code> done;
  bool returned = false;  // touched only on the I/O thread
  net::post(io.io(), [&] {
    pool.async_submit([](std::stop_token) { return 1; },
                      net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int>) {
                        EXPECT_TRUE(returned) << "handler ran inside async_submit";
                        done.set_value(ec);
                      }));
    returned = true;
  });
  EXPECT_EQ(done.get_future().get(), pool_errc::queue_full);
}

TEST(worker_pool, full_queue_rejects_at_once) {
  io_thread io;
  worker_pool pool({1, 1, worker_priority::normal});
  gate g;
  std::latch running(1);
  std::promise<sys::error_code> first, second, third;
  auto submit = [&](std::promise<sys::error_code>& p, bool blocking) {
    pool.async_submit(
        [&, blocking](std::stop_token) {
          if (blocking) {
            running.count_down();
            g.wait();
          }
          return 0;
        },
        net::bind_executor(io.io(), [&p](sys::error_code ec, job_result<int>) { p.set_value(ec); }));
  };
  submit(first, true);
  running.wait();          // the only worker is busy
  submit(second, false);   // fills the queue
  submit(third, false);    // no room
  auto rejected = third.get_future();
  ASSERT_EQ(rejected.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(rejected.get(), pool_errc::queue_full);
  EXPECT_EQ(pool.queued(), 1u);
  EXPECT_EQ(pool.busy(), 1u);
  g.open();
  EXPECT_FALSE(first.get_future().get());
  EXPECT_FALSE(second.get_future().get());
}

TEST(worker_pool, every_accepted_job_runs_exactly_once) {
  io_thread io;
  constexpr int jobs = 2000;
  worker_pool pool({4, jobs, worker_priority::normal});
  std::vector<std::atomic<int>> runs(jobs);
  std::atomic<int> completions{0};
  std::promise<void> all_done;
  for (int i = 0; i < jobs; ++i) {
    pool.async_submit([&runs, i](std::stop_token) { return ++runs[static_cast<std::size_t>(i)]; },
                      net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int> r) {
                        EXPECT_FALSE(ec);
                        EXPECT_EQ(r.value, 1);
                        if (++completions == jobs) all_done.set_value();
                      }));
  }
  all_done.get_future().get();
  for (auto& n : runs) EXPECT_EQ(n.load(), 1);
}

TEST(worker_pool, reports_timing) {
  io_thread io;
  worker_pool pool({1, 4, worker_priority::normal});
  std::promise<job_result<int>> result;
  pool.async_submit(
      [](std::stop_token) {
        const auto end = std::chrono::steady_clock::now() + 20ms;
        while (std::chrono::steady_clock::now() < end) {
        }
        return 7;
      },
      net::bind_executor(io.io(), [&](sys::error_code, job_result<int> r) { result.set_value(r); }));
  const auto r = result.get_future().get();
  EXPECT_EQ(r.value, 7);
  EXPECT_GE(r.timing.computing, 20ms);
  EXPECT_GE(r.timing.queued, 0ms);
}

TEST(worker_pool, exception_fails_the_job_not_the_worker) {
  io_thread io;
  worker_pool pool({1, 4, worker_priority::normal});
  std::promise<std::pair<sys::error_code, std::string>> failed;
  pool.async_submit([](std::stop_token) -> int { throw std::runtime_error("boom"); },
                    net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int> r) {
                      failed.set_value({ec, r.failure});
                    }));
  const auto [ec, what] = failed.get_future().get();
  EXPECT_EQ(ec, pool_errc::job_failed);
  EXPECT_EQ(what, "boom");

  std::promise<int> next;
  pool.async_submit([](std::stop_token) { return 42; },
                    net::bind_executor(io.io(), [&](sys::error_code, job_result<int> r) { next.set_value(r.value); }));
  EXPECT_EQ(next.get_future().get(), 42);
}

TEST(worker_pool, cancelling_a_queued_job_removes_it_unrun) {
  io_thread io;
  worker_pool pool({1, 4, worker_priority::normal});
  gate g;
  std::latch running(1);
  std::atomic<bool> second_ran{false};
  net::cancellation_signal cancel;
  std::promise<sys::error_code> first, second;
  pool.async_submit(
      [&](std::stop_token) {
        running.count_down();
        g.wait();
        return 0;
      },
      net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int>) { first.set_value(ec); }));
  running.wait();
  std::promise<void> submitted;
  net::post(io.io(), [&] {  // the slot belongs to the I/O thread: submit and cancel there
    pool.async_submit([&](std::stop_token) { return second_ran = true; },
                      net::bind_cancellation_slot(cancel.slot(), net::bind_executor(io.io(), [&](sys::error_code ec,
                                                                                                   job_result<bool>) {
                                                    second.set_value(ec);
                                                  })));
    submitted.set_value();
  });
  submitted.get_future().get();
  EXPECT_EQ(pool.queued(), 1u);
  net::post(io.io(), [&] { cancel.emit(net::cancellation_type::terminal); });
  EXPECT_EQ(second.get_future().get(), net::error::operation_aborted);
  EXPECT_EQ(pool.queued(), 0u);
  g.open();
  EXPECT_FALSE(first.get_future().get());
  EXPECT_FALSE(second_ran);
}

TEST(worker_pool, cancelling_a_running_job_fires_its_stop_token) {
  io_thread io;
  worker_pool pool({1, 4, worker_priority::normal});
  std::latch running(1);
  std::promise<void> saw_stop;
  net::cancellation_signal cancel;
  std::promise<sys::error_code> done;
  net::post(io.io(), [&] {
    pool.async_submit(
        [&](std::stop_token stop) {
          running.count_down();
          while (!stop.stop_requested()) {
          }
          saw_stop.set_value();
          return true;
        },
        net::bind_cancellation_slot(cancel.slot(),
                                    net::bind_executor(io.io(), [&](sys::error_code ec, job_result<bool>) {
                                      done.set_value(ec);
                                    })));
  });
  running.wait();
  net::post(io.io(), [&] { cancel.emit(net::cancellation_type::terminal); });
  auto stopped = saw_stop.get_future();
  ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready);
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get(), net::error::operation_aborted);
}

TEST(worker_pool, destruction_stops_running_jobs_abandons_queued_ones_and_joins) {
  io_thread io;
  std::atomic<bool> running_job_returned{false};
  std::atomic<bool> queued_job_ran{false};
  std::promise<sys::error_code> queued_outcome;
  {
    worker_pool pool({1, 4, worker_priority::normal});
    std::latch running(1);
    pool.async_submit(
        [&](std::stop_token stop) {
          running.count_down();
          while (!stop.stop_requested()) {
          }
          running_job_returned = true;
          return 0;
        },
        net::bind_executor(io.io(), [](sys::error_code, job_result<int>) {}));
    running.wait();
    pool.async_submit([&](std::stop_token) { return queued_job_ran = true; },
                      net::bind_executor(io.io(), [&](sys::error_code ec, job_result<bool>) {
                        queued_outcome.set_value(ec);
                      }));
  }  // ~worker_pool
  EXPECT_TRUE(running_job_returned);  // the worker was joined, not detached
  EXPECT_FALSE(queued_job_ran);
  EXPECT_EQ(queued_outcome.get_future().get(), pool_errc::shut_down);
}

TEST(worker_pool, works_with_a_callback_on_the_system_executor) {
  worker_pool pool({1, 4, worker_priority::normal});
  std::promise<int> done;
  pool.async_submit([](std::stop_token) { return 5; },
                    [&](sys::error_code, job_result<int> r) { done.set_value(r.value); });
  EXPECT_EQ(done.get_future().get(), 5);
}

TEST(worker_pool, lower_priorities_still_run_jobs) {
  io_thread io;
  for (const auto priority : {worker_priority::batch, worker_priority::idle}) {
    worker_pool pool({1, 4, priority});
    std::promise<int> done;
    pool.async_submit([](std::stop_token) { return 3; },
                      net::bind_executor(io.io(), [&](sys::error_code, job_result<int> r) { done.set_value(r.value); }));
    EXPECT_EQ(done.get_future().get(), 3);
  }
}

// What a worker thread sees of its own scheduling.
struct seen_policy {
  int policy = -1;
  int nice = 0;
  std::uint64_t slice_ns = 0;
};

seen_policy own_policy() {
  struct {
    std::uint32_t size, policy;
    std::uint64_t flags;
    std::int32_t nice;
    std::uint32_t priority;
    std::uint64_t runtime, deadline, period;
  } attr{};
  seen_policy seen;
  seen.policy = sched_getscheduler(0);
  seen.nice = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
  if (syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0U) == 0) seen.slice_ns = attr.runtime;
  return seen;
}

// Custom time slices for SCHED_OTHER/BATCH came with EEVDF in Linux 6.12.
bool kernel_has_custom_slices() {
  utsname u{};
  int major = 0, minor = 0;
  return uname(&u) == 0 && std::sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
         (major > 6 || (major == 6 && minor >= 12));
}

TEST(worker_pool, workers_take_the_chosen_priority) {
  io_thread io;
  const auto run_on_worker = [&](worker_priority priority) {
    worker_pool pool({1, 4, priority});
    std::promise<seen_policy> seen;
    pool.async_submit([](std::stop_token) { return own_policy(); },
                      net::bind_executor(io.io(), [&](sys::error_code, job_result<seen_policy> r) { seen.set_value(r.value); }));
    return seen.get_future().get();
  };
  const auto batch = run_on_worker(worker_priority::batch);
  EXPECT_EQ(batch.policy, SCHED_BATCH);
  EXPECT_EQ(batch.nice, 19);
  if (kernel_has_custom_slices()) {
    EXPECT_EQ(batch.slice_ns, 100'000U);  // yields to a woken I/O thread fast
  }
  EXPECT_EQ(run_on_worker(worker_priority::idle).policy, SCHED_IDLE);
  EXPECT_EQ(run_on_worker(worker_priority::normal).policy, SCHED_OTHER);
}

TEST(worker_pool, a_job_larger_than_the_memory_budget_is_refused_at_once) {
  io_thread io;
  worker_pool pool({2, 8, worker_priority::normal, 1000});
  std::promise<sys::error_code> done;
  std::atomic<bool> ran{false};
  pool.async_submit([&](std::stop_token) { return ran = true; }, 1001,
                    net::bind_executor(io.io(), [&](sys::error_code ec, job_result<bool>) { done.set_value(ec); }));
  EXPECT_EQ(done.get_future().get(), pool_errc::too_large);
  EXPECT_FALSE(ran);
  EXPECT_EQ(pool.memory_budget(), 1000u);
}

// Two workers, but memory for one of the two jobs at a time: the second waits for the first to
// finish and give its memory back, with a worker idle meanwhile.
TEST(worker_pool, jobs_wait_for_memory_as_for_a_worker) {
  io_thread io;
  worker_pool pool({2, 8, worker_priority::normal, 1000});
  gate g;
  std::latch first_running(1);
  std::atomic<bool> first_finished{false};
  std::promise<bool> second_saw_first_finished;
  std::promise<std::uint64_t> second_saw_memory;
  std::promise<sys::error_code> first, second;
  pool.async_submit(
      [&](std::stop_token) {
        first_running.count_down();
        g.wait();
        first_finished = true;
        return 0;
      },
      600, net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int>) { first.set_value(ec); }));
  first_running.wait();
  EXPECT_EQ(pool.memory_in_use(), 600u);
  pool.async_submit(
      [&](std::stop_token) {
        second_saw_first_finished.set_value(first_finished.load());
        second_saw_memory.set_value(pool.memory_in_use());
        return 0;
      },
      600, net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int>) { second.set_value(ec); }));
  EXPECT_EQ(pool.queued(), 1u);
  g.open();
  EXPECT_TRUE(second_saw_first_finished.get_future().get());
  EXPECT_EQ(second_saw_memory.get_future().get(), 600u);  // its own, the first's given back
  EXPECT_FALSE(first.get_future().get());
  EXPECT_FALSE(second.get_future().get());
}

// The head of the queue waits for memory; cancelling it lets the small job behind it start.
TEST(worker_pool, cancelling_the_job_that_waits_for_memory_lets_the_next_one_start) {
  io_thread io;
  worker_pool pool({2, 8, worker_priority::normal, 1000});
  gate g;
  std::latch first_running(1);
  net::cancellation_signal cancel;
  std::promise<sys::error_code> first, big, small;
  pool.async_submit(
      [&](std::stop_token) {
        first_running.count_down();
        g.wait();
        return 0;
      },
      600, net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int>) { first.set_value(ec); }));
  first_running.wait();
  std::promise<void> submitted;
  net::post(io.io(), [&] {
    pool.async_submit([](std::stop_token) { return 0; }, 600,
                      net::bind_cancellation_slot(cancel.slot(), net::bind_executor(io.io(), [&](sys::error_code ec,
                                                                                                   job_result<int>) {
                                                    big.set_value(ec);
                                                  })));
    pool.async_submit([](std::stop_token) { return 0; }, 100,
                      net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int>) { small.set_value(ec); }));
    submitted.set_value();
  });
  submitted.get_future().get();
  net::post(io.io(), [&] { cancel.emit(net::cancellation_type::terminal); });
  EXPECT_EQ(big.get_future().get(), net::error::operation_aborted);
  EXPECT_FALSE(small.get_future().get());  // ran beside the first, which still holds 600
  g.open();
  EXPECT_FALSE(first.get_future().get());
}

// A job that cannot stop midway: cancelling it completes the operation at once, and the job's own
// end, later, completes nothing.
TEST(worker_pool, cancelling_a_running_job_completes_at_once_though_it_runs_on) {
  io_thread io;
  worker_pool pool({1, 4, worker_priority::normal});
  gate g;
  std::latch running(1);
  std::atomic<bool> saw_stop{false};
  std::atomic<int> completions{0};
  net::cancellation_signal cancel;
  std::promise<sys::error_code> done;
  net::post(io.io(), [&] {
    pool.async_submit(
        [&](std::stop_token stop) {
          running.count_down();
          g.wait();  // deaf to its token until released
          saw_stop = stop.stop_requested();
          return 0;
        },
        net::bind_cancellation_slot(cancel.slot(), net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int>) {
                                      ++completions;
                                      done.set_value(ec);
                                    })));
  });
  running.wait();
  net::post(io.io(), [&] { cancel.emit(net::cancellation_type::terminal); });
  EXPECT_EQ(done.get_future().get(), net::error::operation_aborted);  // while the job still runs
  EXPECT_EQ(pool.busy(), 1u);
  g.open();
  // Once the worker is free for the next job, the first has ended — and completed nothing more.
  std::promise<void> next;
  pool.async_submit([](std::stop_token) { return 0; },
                    net::bind_executor(io.io(), [&](sys::error_code, job_result<int>) { next.set_value(); }));
  next.get_future().get();
  std::promise<int> count;
  net::post(io.io(), [&] { count.set_value(completions.load()); });
  EXPECT_EQ(count.get_future().get(), 1);
  EXPECT_TRUE(saw_stop);
}

constexpr std::uint64_t mib = 1 << 20;

// A job of `declared` bytes that takes `used` bytes of its worker's kept memory.
auto job_using(std::uint64_t used, std::latch* started = nullptr, std::latch* go = nullptr) {
  return [=](std::stop_token) {
    auto memory = worker_memory(used);
    memory[0] = std::byte{1};
    if (started) started->count_down();
    if (go) go->wait();
    return 0;
  };
}

TEST(worker_pool, a_worker_keeps_its_memory_charged_and_gives_it_back_when_idle) {
  io_thread io;
  worker_pool_options options{1, 8, worker_priority::normal, 64 * mib};
  options.keep_memory_idle = 200ms;
  worker_pool pool(options);
  std::promise<sys::error_code> done;
  pool.async_submit(job_using(4 * mib), 4 * mib,
                    net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int>) { done.set_value(ec); }));
  EXPECT_FALSE(done.get_future().get());
  // Charged while kept: the job's completion comes after its worker has booked what it keeps.
  EXPECT_EQ(pool.memory_kept(), 4 * mib);
  EXPECT_EQ(pool.memory_in_use(), 4 * mib);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (pool.memory_kept() != 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(pool.memory_kept(), 0u) << "idle memory was not given back";
  EXPECT_EQ(pool.memory_in_use(), 0u);
}

// Two workers keep 6 and 4 MiB of a 10 MiB budget. A job declaring 8 MiB fits on neither as it
// is: an idle worker gives its memory back, and the job runs instead of waiting forever.
TEST(worker_pool, kept_memory_makes_room_for_a_job_that_waits_for_it) {
  io_thread io;
  worker_pool_options options{2, 8, worker_priority::normal, 10 * mib};
  options.keep_memory_idle = 1h;  // only the waiting job can make them give it back
  worker_pool pool(options);
  std::latch started(2), go(1);
  std::promise<sys::error_code> a, b, big;
  std::promise<std::uint64_t> in_use_when_big_ran;
  pool.async_submit(job_using(6 * mib, &started, &go), 6 * mib,
                    net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int>) { a.set_value(ec); }));
  pool.async_submit(job_using(4 * mib, &started, &go), 4 * mib,
                    net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int>) { b.set_value(ec); }));
  started.wait();  // one on each worker
  go.count_down();
  EXPECT_FALSE(a.get_future().get());
  EXPECT_FALSE(b.get_future().get());
  EXPECT_EQ(pool.memory_kept(), 10 * mib);
  pool.async_submit(
      [&](std::stop_token) {
        in_use_when_big_ran.set_value(pool.memory_in_use());
        return 0;
      },
      8 * mib, net::bind_executor(io.io(), [&](sys::error_code ec, job_result<int>) { big.set_value(ec); }));
  auto ran = in_use_when_big_ran.get_future();
  ASSERT_EQ(ran.wait_for(20s), std::future_status::ready) << "the job waited for memory the idle workers kept";
  EXPECT_LE(ran.get(), 10 * mib);
  EXPECT_FALSE(big.get_future().get());
  EXPECT_LE(pool.memory_in_use(), 10 * mib);
}

}  // namespace
}  // namespace crunch
