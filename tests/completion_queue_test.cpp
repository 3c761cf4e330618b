#include "bounded_wait.hpp"
#include "workers/completion_queue.hpp"
#include "workers/worker_pool.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <functional>
#include <future>
#include <latch>
#include <memory>
#include <thread>
#include <vector>

namespace crunch {

using testing::spin_until;
namespace {

// An item that runs a function when delivered and counts its own destruction.
class call final : public completion_queue::item {
 public:
  call(std::function<void()> f, std::atomic<int>* destroyed = nullptr) : f_(std::move(f)), destroyed_(destroyed) {}
  ~call() override {
    if (destroyed_ != nullptr) ++*destroyed_;
  }
  void deliver() override { f_(); }

 private:
  std::function<void()> f_;
  std::atomic<int>* destroyed_;
};

TEST(completion_queue, items_pushed_before_the_loop_runs_arrive_in_one_wakeup_in_order) {
  net::io_context io{1};
  completion_queue q(io);
  std::vector<int> seen;  // only the I/O thread touches it, once run() runs
  for (int i = 0; i < 5; ++i) {
    q.push(std::make_unique<call>([&seen, &q, i] {
      seen.push_back(i);
      if (seen.size() == 5) q.close();  // the last one lets run() return
    }));
  }
  q.open();
  io.run();
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(q.wakeups(), 1u);
  EXPECT_EQ(q.delivered(), 5u);
}

TEST(completion_queue, delivers_every_item_of_many_threads_once_on_the_io_thread_in_each_threads_order) {
  constexpr int producers = 4;
  constexpr int per_producer = 5000;
  net::io_context io{1};
  completion_queue q(io);
  std::vector<int> last(producers, -1);  // I/O thread only
  int total = 0;                         // I/O thread only
  bool in_order = true;
  std::thread::id io_id;
  bool on_io_thread = true;
  q.open();
  std::thread io_thread([&] {
    io_id = std::this_thread::get_id();
    io.run();
  });
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < per_producer; ++i) {
        q.push(std::make_unique<call>([&, p, i] {
          on_io_thread = on_io_thread && std::this_thread::get_id() == io_id;
          in_order = in_order && i == last[static_cast<std::size_t>(p)] + 1;
          last[static_cast<std::size_t>(p)] = i;
          if (++total == producers * per_producer) q.close();
        }));
      }
    });
  }
  for (auto& t : threads) t.join();
  io_thread.join();  // returns once the last item closed the queue
  EXPECT_EQ(total, producers * per_producer);
  EXPECT_TRUE(in_order);
  EXPECT_TRUE(on_io_thread);
  EXPECT_EQ(q.delivered(), static_cast<std::uint64_t>(producers * per_producer));
  // Pushes that find a wake-up pending ride on it.
  EXPECT_LE(q.wakeups(), q.delivered());
}

TEST(completion_queue, after_close_items_are_still_delivered_on_the_io_thread) {
  net::io_context io{1};
  completion_queue q(io);
  q.open();
  int delivered = 0;
  net::post(io, [&] { q.close(); });
  io.run();  // the watch is gone: run() returns
  std::thread pusher([&] { q.push(std::make_unique<call>([&] { ++delivered; })); });
  pusher.join();
  EXPECT_EQ(delivered, 0);  // never inline
  io.restart();
  io.run();
  EXPECT_EQ(delivered, 1);
}

TEST(completion_queue, destroys_what_was_never_delivered) {
  std::atomic<int> destroyed{0};
  bool ran = false;
  {
    net::io_context io{1};
    completion_queue q(io);
    q.push(std::make_unique<call>([&] { ran = true; }, &destroyed));
    q.push(std::make_unique<call>([&] { ran = true; }, &destroyed));
  }
  EXPECT_FALSE(ran);
  EXPECT_EQ(destroyed.load(), 2);
}

// The pool's completions for handlers on the queue's io_context go through the queue.
class pool_with_queue : public ::testing::Test {
 protected:
  pool_with_queue() {
    q.open();
    io_thread = std::thread([this] { io.run(); });
  }
  ~pool_with_queue() override {
    pool.shutdown();
    net::post(io, [this] { q.close(); });
    io_thread.join();
  }
  net::io_context io{1};
  completion_queue q{io};
  worker_pool pool{{2, 16, worker_priority::normal, 0, &q}};
  std::thread io_thread;
};

TEST_F(pool_with_queue, completions_come_through_the_queue_on_the_io_thread) {
  std::promise<std::thread::id> handler_thread;
  std::promise<std::thread::id> io_id;
  net::post(io, [&] {
    io_id.set_value(std::this_thread::get_id());
    pool.async_submit([](std::stop_token) { return 7; },
                      net::bind_executor(io, [&](sys::error_code ec, job_result<int> r) {
                        EXPECT_FALSE(ec);
                        EXPECT_EQ(r.value, 7);
                        handler_thread.set_value(std::this_thread::get_id());
                      }));
  });
  EXPECT_EQ(handler_thread.get_future().get(), io_id.get_future().get());
  EXPECT_EQ(q.delivered(), 1u);
}

TEST_F(pool_with_queue, a_batch_with_a_cancelled_job_delivers_the_rest_and_the_cancellation_once) {
  // Three jobs end together while the I/O thread is held; one of them was cancelled before it
  // ended (its client went away), so its own late completion must be dropped.
  std::latch running(2);
  std::latch release(1);
  std::promise<void> io_held;
  std::latch hold(1);
  net::cancellation_signal cancel;
  std::atomic<int> ok{0};
  std::atomic<int> aborted{0};
  std::promise<void> all;
  std::atomic<int> handled{0};
  auto count = [&](sys::error_code ec) {
    (ec == net::error::operation_aborted ? aborted : ok)++;
    if (++handled == 3) all.set_value();
  };
  net::post(io, [&] {
    for (int i = 0; i < 3; ++i) {
      auto job = [&](std::stop_token) {
        running.count_down();
        release.wait();
        return 0;
      };
      auto handler = net::bind_executor(io, [&, count](sys::error_code ec, job_result<int>) { count(ec); });
      if (i == 0) {
        pool.async_submit(job, net::bind_cancellation_slot(cancel.slot(), handler));
      } else {
        pool.async_submit(job, handler);
      }
    }
  });
  running.wait();  // jobs 0 and 1 run, 2 is queued
  net::post(io, [&] { cancel.emit(net::cancellation_type::terminal); });
  net::post(io, [&] {
    io_held.set_value();
    hold.wait();  // the workers finish while the I/O thread is busy here
  });
  io_held.get_future().get();
  release.count_down();
  // Wait, off the I/O thread, until all three jobs have ended and their completions are queued.
  EXPECT_TRUE(spin_until([&] { return pool.busy() == 0 && pool.queued() == 0; })) << "the three jobs did not end";
  hold.count_down();
  all.get_future().get();
  EXPECT_EQ(ok.load(), 2);
  EXPECT_EQ(aborted.load(), 1);
  std::promise<int> total;
  net::post(io, [&] { total.set_value(handled.load()); });
  EXPECT_EQ(total.get_future().get(), 3);  // the cancelled job's own ending delivered nothing
}

}  // namespace
}  // namespace crunch
