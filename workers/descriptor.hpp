#pragma once
// A file descriptor owned: closed when it goes. Private to crunch_core (the helpers, the callback
// sender).

#include <unistd.h>

#include <utility>

namespace crunch {

struct descriptor {
  int fd = -1;
  descriptor() = default;
  explicit descriptor(int f) : fd(f) {}
  descriptor(descriptor&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  descriptor& operator=(descriptor&& o) noexcept {
    if (this != &o) {
      reset();
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~descriptor() { reset(); }
  /// Gives the descriptor up, unclosed, to whoever owns it next.
  int release() noexcept { return std::exchange(fd, -1); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

}  // namespace crunch
