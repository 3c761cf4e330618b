#pragma once
/// Working memory a thread keeps from one job to the next. A job that needs a large scratch area
/// (Argon2's blocks) takes it from here instead of mapping fresh memory: the kernel then neither
/// faults in and zeroes it on every job nor, on unmapping it, flushes the TLB of every CPU the
/// process runs on — the I/O thread's included. The worker pool charges what each worker keeps
/// to the memory budget, and gives it back after a while idle or when a queued job needs the room
/// (worker_pool.hpp).
///
/// The area is mapped in 2 MiB steps, asked for as transparent huge pages (fewer TLB misses for
/// Argon2's random reads), and left out of core dumps. Whoever writes a secret into it wipes it
/// before the job ends.

#include <cstddef>
#include <span>

namespace crunch {

/// The calling thread's kept area, grown (or, when it is over four times larger than needed,
/// shrunk) to at least `bytes`; aligned to 2 MiB. Valid until the next call on this thread or
/// release_worker_memory(). Throws std::bad_alloc when it cannot be mapped.
std::span<std::byte> worker_memory(std::size_t bytes);

/// What worker_memory(bytes) keeps: `bytes` rounded up to whole 2 MiB.
std::size_t worker_memory_size(std::size_t bytes) noexcept;

/// Bytes the calling thread keeps now.
std::size_t worker_memory_kept() noexcept;

/// Unmaps the calling thread's area, if any.
void release_worker_memory() noexcept;

}  // namespace crunch
