#pragma once
// Waits that end: a test that waits for something that never comes fails with a message instead
// of hanging until ctest's timeout kills it (and every wait says what it waited for).

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <thread>

namespace crunch::testing {

/// How long a test waits for something that should take milliseconds: generous, so that a loaded
/// CI machine or a sanitizer's slowdown never trips it.
inline constexpr std::chrono::milliseconds wait_bound{10'000};

/// Spins (yielding the CPU) until `done()` or until `bound` has passed; whether `done()` came true.
template <class Predicate>
bool spin_until(Predicate done, std::chrono::milliseconds bound = wait_bound) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

/// Runs `io`'s handlers until `done()` or until `bound` has passed; whether `done()` came true.
template <class Predicate>
bool run_until(boost::asio::io_context& io, Predicate done, std::chrono::milliseconds bound = wait_bound) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    io.run_one_until(deadline);
    if (io.stopped()) io.restart();
  }
  return true;
}

}  // namespace crunch::testing
