#pragma once
/// Memory taken from a worker pool's budget outside its running jobs: the one type the request
/// path needs of the pool to charge a body to the budget, without the pool's header.

#include <cstdint>
#include <memory>
#include <utility>

namespace crunch {

class worker_pool;

/// Memory taken from a pool's budget outside any running job — a request body while it is read
/// and while its job waits — held until released or destroyed. It may outlive the pool.
class memory_lease {
 public:
  memory_lease() = default;
  memory_lease(memory_lease&& other) noexcept;
  memory_lease& operator=(memory_lease&& other) noexcept;
  ~memory_lease() { release(); }

  /// Bytes held.
  std::uint64_t bytes() const noexcept { return bytes_; }
  /// Whether it holds a reservation (possibly of 0 bytes).
  explicit operator bool() const noexcept { return shared_ != nullptr; }
  /// Gives back what it holds beyond `bytes`.
  void shrink_to(std::uint64_t bytes) noexcept;
  /// Gives everything back.
  void release() noexcept;

  /// What a pool and its leases share: the memory in use, and the pool to wake when some frees.
  struct shared_state;

 private:
  friend class worker_pool;
  memory_lease(std::shared_ptr<shared_state> shared, std::uint64_t bytes) noexcept
      : shared_(std::move(shared)), bytes_(bytes) {}
  void give_back(std::uint64_t bytes) noexcept;

  std::shared_ptr<shared_state> shared_;
  std::uint64_t bytes_ = 0;
};

}  // namespace crunch
