#include "fib.hpp"

#include <crunch/cpu_pacer.hpp>

#include <limits>

namespace crunch {

namespace {

// Below this n a subtree is a few thousand calls (microseconds): run it without looking at
// the stop token, so that polling costs nothing measurable.
constexpr unsigned poll_threshold = 20;

std::uint64_t fib_plain(unsigned n) {
  if (n < 2) return n;
  return fib_plain(n - 1) + fib_plain(n - 2);
}

std::uint64_t fib_polling(unsigned n, const std::stop_token& stop, bool& stopped) {
  if (n < poll_threshold) return fib_plain(n);
  if (stopped || job_checkpoint(stop)) {
    stopped = true;
    return 0;
  }
  const std::uint64_t a = fib_polling(n - 1, stop, stopped);
  if (stopped) return 0;
  return a + fib_polling(n - 2, stop, stopped);
}

}  // namespace

std::optional<std::uint64_t> fib(unsigned n, std::stop_token stop) {
  bool stopped = false;
  const std::uint64_t value = fib_polling(n, stop, stopped);
  if (stopped) return std::nullopt;
  return value;
}

std::uint64_t fib_calls(unsigned n) {
  // calls(n) = 1 + calls(n-1) + calls(n-2) = 2·F(n+1) − 1, computed iteratively.
  std::uint64_t prev = 0;  // F(0)
  std::uint64_t curr = 1;  // F(1)
  for (unsigned i = 0; i < n; ++i) {
    if (curr > std::numeric_limits<std::uint64_t>::max() - prev) {
      return std::numeric_limits<std::uint64_t>::max();
    }
    const std::uint64_t next = prev + curr;
    prev = curr;
    curr = next;
  }
  if (curr > std::numeric_limits<std::uint64_t>::max() / 2) return std::numeric_limits<std::uint64_t>::max();
  return 2 * curr - 1;
}

}  // namespace crunch
