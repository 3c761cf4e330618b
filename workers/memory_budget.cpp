#include "workers/memory_budget.hpp"

#include "workers/cgroup.hpp"

#include <algorithm>

#include <unistd.h>

namespace crunch {

namespace {

constexpr std::uint64_t mib = 1024 * 1024;
// The kernel's "no limit" for v1 is PAGE_COUNTER_MAX pages (0x7FFFFFFFFFFFF000 with 4 KiB pages);
// anything this large is no limit on any machine that exists.
constexpr std::uint64_t no_limit_above = std::uint64_t{1} << 62;

}  // namespace

std::optional<std::uint64_t> parse_memory_max(std::string_view memory_max) {
  if (memory_max == "max") return std::nullopt;
  return parse_u64(memory_max);
}

std::optional<std::uint64_t> parse_memory_limit_in_bytes(std::string_view limit_in_bytes) {
  const auto limit = parse_u64(limit_in_bytes);
  if (!limit || *limit >= no_limit_above) return std::nullopt;
  return limit;
}

std::optional<std::uint64_t> cgroup_memory_limit(const std::filesystem::path& cgroup_root,
                                                 const std::filesystem::path& proc_self_cgroup) {
  return cgroup_limit(
      cgroup_root, proc_self_cgroup, "memory",
      [](const std::filesystem::path& dir) {
        const auto text = read_first_line(dir / "memory.max");
        return text ? parse_memory_max(*text) : std::nullopt;
      },
      [](const std::filesystem::path& dir) {
        const auto text = read_first_line(dir / "memory.limit_in_bytes");
        return text ? parse_memory_limit_in_bytes(*text) : std::nullopt;
      });
}

std::uint64_t physical_memory() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 0;
  return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
}

std::uint64_t memory_budget_for(std::uint64_t limit) {
  // Measured: crunchd itself holds 5-8 MiB under load (benchmark, overload scenario). A quarter
  // of a large limit leaves room for connections and socket buffers as the load grows with it.
  const std::uint64_t reserve = std::min(std::max(16 * mib, limit / 4), limit / 2);
  return limit - reserve;
}

std::uint64_t usable_memory() {
  std::uint64_t limit = physical_memory();
  if (const auto cgroup = cgroup_memory_limit(); cgroup && (limit == 0 || *cgroup < limit)) limit = *cgroup;
  return limit;
}

std::uint64_t default_memory_budget() { return memory_budget_for(usable_memory()); }

}  // namespace crunch
