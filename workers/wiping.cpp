#include <crunch/wiping.hpp>

#include <algorithm>

#include <alloca.h>

namespace crunch {

// Not inlined, so that its frame sits below the caller's: the stack it wipes is the stack the
// caller's callees used and left.
[[gnu::noinline]] void wipe_stack_below(std::size_t bytes) noexcept {
  bytes = std::min<std::size_t>(bytes, 64 * 1024);
  void* below = alloca(bytes);
  wipe(below, bytes);
}

}  // namespace crunch
