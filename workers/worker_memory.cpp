#include <crunch/worker_memory.hpp>

#include <cstdint>
#include <new>

#include <sys/mman.h>

namespace crunch {

namespace {

constexpr std::size_t huge_page = std::size_t{2} << 20;

std::size_t round_up(std::size_t bytes) { return (bytes + huge_page - 1) / huge_page * huge_page; }

struct kept_area {
  std::byte* base = nullptr;
  std::size_t size = 0;

  ~kept_area() { release(); }

  void release() noexcept {
    if (base != nullptr) munmap(base, size);
    base = nullptr;
    size = 0;
  }

  void map(std::size_t bytes) {
    // Over-map by a huge page and cut the ends, so that the area starts on a 2 MiB boundary and
    // the kernel can back it with huge pages from its first byte.
    const std::size_t span = bytes + huge_page;
    void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const auto at = reinterpret_cast<std::uintptr_t>(raw);
    const auto aligned = (at + huge_page - 1) / huge_page * huge_page;
    if (aligned > at) munmap(raw, aligned - at);
    const auto tail = at + span - (aligned + bytes);
    if (tail > 0) munmap(reinterpret_cast<void*>(aligned + bytes), tail);
    base = reinterpret_cast<std::byte*>(aligned);
    size = bytes;
    // Both are hints: without THP the area still works in 4 KiB pages.
    madvise(base, size, MADV_HUGEPAGE);
    madvise(base, size, MADV_DONTDUMP);
  }
};

thread_local kept_area area;

}  // namespace

std::size_t worker_memory_size(std::size_t bytes) noexcept { return round_up(bytes == 0 ? 1 : bytes); }

std::span<std::byte> worker_memory(std::size_t bytes) {
  const std::size_t wanted = worker_memory_size(bytes);
  if (area.size < wanted || area.size / 4 > wanted) {
    area.release();
    area.map(wanted);
  }
  return {area.base, area.size};
}

std::size_t worker_memory_kept() noexcept { return area.size; }

void release_worker_memory() noexcept { area.release(); }

}  // namespace crunch
