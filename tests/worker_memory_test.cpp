// A worker's kept memory (workers/worker_memory.cpp) and how the pool charges it to the memory
// budget, gives it back when idle, and lets a waiting job have its room.
#include <crunch/worker_memory.hpp>
#include <crunch/worker_pool.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <future>
#include <latch>
#include <thread>

namespace crunch {
namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t mib = 1 << 20;

class io_thread {
 public:
  io_thread() : work_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~io_thread() {
    work_.reset();
    thread_.join();
  }
  net::io_context& io() { return io_; }

 private:
  net::io_context io_{1};
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::thread thread_;
};

TEST(worker_memory, is_kept_reused_in_whole_huge_pages_and_shrunk_when_far_too_large) {
  std::thread([] {
    auto first = worker_memory(5 * mib);
    EXPECT_EQ(first.size(), 6 * mib);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(first.data()) % (2 * mib), 0u);
    first[0] = std::byte{42};
    first[first.size() - 1] = std::byte{7};
    auto again = worker_memory(3 * mib);  // fits: the same area, as it was left
    EXPECT_EQ(again.data(), first.data());
    EXPECT_EQ(again.size(), 6 * mib);
    EXPECT_EQ(again[0], std::byte{42});
    EXPECT_EQ(worker_memory_kept(), 6 * mib);
    EXPECT_EQ(worker_memory(40 * mib).size(), 40 * mib);  // grown
    EXPECT_EQ(worker_memory(9 * mib).size(), 40 * mib);   // not four times too large
    EXPECT_EQ(worker_memory(1).size(), 2 * mib);          // far too large: shrunk
    release_worker_memory();
    EXPECT_EQ(worker_memory_kept(), 0u);
  }).join();
}

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

TEST(worker_pool_memory, a_worker_keeps_its_memory_charged_and_gives_it_back_when_idle) {
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
TEST(worker_pool_memory, kept_memory_makes_room_for_a_job_that_waits_for_it) {
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
