#pragma once
/// Memory that held a secret — a request body with a password in it, the password read from it —
/// is wiped when it is let go, so that it lingers neither in freed heap nor in a core dump.

#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

namespace crunch {

/// Overwrites `size` bytes at `data` with zeros; the compiler may not drop it as a dead store.
inline void wipe(void* data, std::size_t size) noexcept {
  if (size != 0) explicit_bzero(data, size);
}

/// An allocator that wipes what it frees. Containers that use it leave nothing behind when they
/// grow, shrink or go (std::basic_string still keeps short strings inside the object itself:
/// wipe those through data() and capacity(), or use `secret`).
template <typename T>
struct wiping_allocator {
  using value_type = T;
  wiping_allocator() = default;
  template <typename U>
  wiping_allocator(const wiping_allocator<U>&) noexcept {}  // NOLINT: converting, as allocators are
  T* allocate(std::size_t n) { return std::allocator<T>{}.allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept {
    wipe(p, n * sizeof(T));
    std::allocator<T>{}.deallocate(p, n);
  }
  template <typename U>
  bool operator==(const wiping_allocator<U>&) const noexcept {
    return true;
  }
};

/// Bytes that must not outlive their use: always on the heap (no small-string buffer), wiped when
/// freed. Copies are wiped as well when they go.
class secret {
 public:
  secret() = default;
  /// A copy of `text`.
  explicit secret(std::string_view text) : bytes_(text.begin(), text.end()) {}
  /// The bytes.
  std::string_view view() const noexcept { return {bytes_.data(), bytes_.size()}; }
  /// Number of bytes.
  std::size_t size() const noexcept { return bytes_.size(); }

 private:
  std::vector<char, wiping_allocator<char>> bytes_;
};

/// Wipes `bytes` of the calling thread's stack below the caller's frame, where the functions it
/// called — a JSON lexer holding a short password in its own small-string buffer, a hash
/// function's state — left their locals.
void wipe_stack_below(std::size_t bytes = 16 * 1024) noexcept;

}  // namespace crunch
