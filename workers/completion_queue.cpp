#include "workers/completion_queue.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <cerrno>
#include <cstdint>
#include <system_error>

#include <sys/eventfd.h>
#include <unistd.h>

namespace crunch {

struct completion_queue::watch {
  explicit watch(net::io_context& io, int fd) : descriptor(io, fd) {}
  net::posix::stream_descriptor descriptor;  // owns the eventfd once open
  bool open = false;
};

completion_queue::completion_queue(net::io_context& io) : io_(io) {
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  watch_ = std::make_unique<watch>(io_, event_fd_);
}

completion_queue::~completion_queue() {
  item* list = head_.exchange(closed_marker(), std::memory_order_acquire);
  while (list != nullptr && list != closed_marker()) {
    std::unique_ptr<item> owned(list);
    list = list->next_;
  }
}

void completion_queue::push(std::unique_ptr<item> i) {
  item* old = head_.load(std::memory_order_relaxed);
  do {
    if (old == closed_marker()) {
      post(std::move(i));
      return;
    }
    i->next_ = old;
  } while (!head_.compare_exchange_weak(old, i.get(), std::memory_order_release, std::memory_order_relaxed));
  i.release();  // the list owns it now
  // Only the push that finds the list empty wakes the I/O thread: the rest ride on that wake-up.
  if (old == nullptr) {
    const std::uint64_t one = 1;
    // Cannot fail short of a closed descriptor: the counter saturates only after 2^64 - 2 pushes
    // that nobody read.
    [[maybe_unused]] const auto n = ::write(event_fd_, &one, sizeof one);
  }
}

completion_queue::item* completion_queue::reversed(item* newest) noexcept {
  item* oldest = nullptr;
  while (newest != nullptr) {
    item* next = newest->next_;
    newest->next_ = oldest;
    oldest = newest;
    newest = next;
  }
  return oldest;
}

void completion_queue::post(std::unique_ptr<item> i) {
  net::post(io_, [owned = std::move(i)] { owned->deliver(); });
}

void completion_queue::open() {
  if (watch_->open) return;
  watch_->open = true;
  arm();
}

void completion_queue::arm() {
  watch_->descriptor.async_wait(net::posix::stream_descriptor::wait_read, [this](sys::error_code ec) {
    if (ec || !watch_->open) return;
    drain();
    if (watch_->open) arm();  // a delivered completion may have closed it
  });
}

void completion_queue::drain() {
  // The counter is read before the list is taken: a push that lands after the read and finds the
  // list empty writes again, so no item waits for a wake-up that was already consumed.
  std::uint64_t count = 0;
  [[maybe_unused]] const auto n = ::read(event_fd_, &count, sizeof count);
  item* oldest = reversed(head_.exchange(nullptr, std::memory_order_acquire));  // in the order pushed
  if (oldest == nullptr) return;
  // Only this thread writes the counters: a plain increment, no locked read-modify-write per item.
  wakeups_.store(wakeups_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  while (oldest != nullptr) {
    std::unique_ptr<item> owned(oldest);
    oldest = oldest->next_;
    delivered_.store(delivered_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    owned->deliver();
  }
}

void completion_queue::close() {
  if (!watch_->open) return;
  watch_->open = false;
  sys::error_code ignored;
  watch_->descriptor.cancel(ignored);
  item* oldest = reversed(head_.exchange(closed_marker(), std::memory_order_acquire));
  while (oldest != nullptr) {
    std::unique_ptr<item> owned(oldest);
    oldest = oldest->next_;
    post(std::move(owned));
  }
}

}  // namespace crunch
