#pragma once
/// Completions from the worker threads to the I/O thread, without a lock between them.
///
/// Why not net::post: posting to an io_context takes its scheduler's mutex and wakes the I/O
/// thread (epoll_ctl on its interrupter) while still holding it. The woken I/O thread then blocks
/// on that mutex until the worker lets go; a worker has the lowest priority in the process and,
/// next to other busy threads of its class (libvips's own), may wait a scheduler tick (4 ms at
/// HZ=250) before it runs again. Measured under thumbnail load: the I/O thread blocked on that
/// mutex about 8 times a second, and /healthz p99 was 2 ms.
///
/// Here a worker pushes onto a lock-free list (Treiber stack) and writes an eventfd only when the
/// list was empty: the kernel wakes the I/O thread, and no user-space lock is shared with it.
/// Completions that arrive together are delivered in one wake-up, oldest first.

#include "server/net.hpp"

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <cstdint>
#include <memory>

namespace crunch {

class completion_queue {
 public:
  /// One completion: deliver() runs on the I/O thread, once; then the item is destroyed there.
  class item {
   public:
    virtual ~item() = default;
    virtual void deliver() = 0;

   private:
    friend class completion_queue;
    item* next_ = nullptr;
  };

  /// Serves `io`, which one thread runs. Call open() on that thread before the first push.
  explicit completion_queue(net::io_context& io);
  /// Destroys what was never delivered (a server stopped before its completions ran).
  ~completion_queue();

  completion_queue(const completion_queue&) = delete;
  completion_queue& operator=(const completion_queue&) = delete;

  /// The io_context whose thread items are delivered on.
  net::io_context& context() const noexcept { return io_; }

  /// Any thread. Delivers `i` on the I/O thread, never inline. After close(), through net::post.
  void push(std::unique_ptr<item> i);

  /// I/O thread: starts watching for pushes. The watch keeps io_context::run() busy until close().
  void open();
  /// I/O thread: stops watching; items already pushed and any pushed later go through net::post.
  void close();

  /// Wake-ups of the I/O thread so far, and items delivered through them (written by the I/O
  /// thread only; readable from any).
  std::uint64_t wakeups() const noexcept { return wakeups_.load(std::memory_order_relaxed); }
  std::uint64_t delivered() const noexcept { return delivered_.load(std::memory_order_relaxed); }

 private:
  struct watch;
  void arm();
  void drain();
  void post(std::unique_ptr<item> i);
  /// Turns a list that is newest first into one that is oldest first.
  static item* reversed(item* newest) noexcept;
  /// The list's head once closed: pushes see it and go through net::post instead.
  item* closed_marker() noexcept { return reinterpret_cast<item*>(&closed_tag_); }

  net::io_context& io_;
  std::atomic<item*> head_{nullptr};  // newest first; closed_marker() once closed
  char closed_tag_ = 0;
  int event_fd_ = -1;
  std::unique_ptr<watch> watch_;
  std::atomic<std::uint64_t> wakeups_{0};
  std::atomic<std::uint64_t> delivered_{0};
};

}  // namespace crunch
