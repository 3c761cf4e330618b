#pragma once
/// How much memory crunch may give to jobs: by default the cgroup memory limit (or, without one,
/// physical memory) less a reserve for everything else the process holds — its code, connections,
/// buffers and the kernel's socket memory charged to the same cgroup.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>

namespace crunch {

/// The limit in a cgroup v2 `memory.max` ("max" → nullopt).
std::optional<std::uint64_t> parse_memory_max(std::string_view memory_max);

/// The limit in a cgroup v1 `memory.limit_in_bytes`; the kernel writes "no limit" as a number
/// near 2^63, taken here as nullopt.
std::optional<std::uint64_t> parse_memory_limit_in_bytes(std::string_view limit_in_bytes);

/// The smallest memory limit along this process's cgroup paths (v2 `memory.max`, v1
/// `memory.limit_in_bytes`); nullopt when unlimited. Arguments as for cgroup_limit().
std::optional<std::uint64_t> cgroup_memory_limit(const std::filesystem::path& cgroup_root = "/sys/fs/cgroup",
                                                 const std::filesystem::path& proc_self_cgroup = "/proc/self/cgroup");

/// Physical memory of the machine, in bytes.
std::uint64_t physical_memory();

/// The job budget of a process that may use `limit` bytes in all: the limit less a reserve of
/// max(16 MiB, limit / 4), the reserve never more than half the limit.
std::uint64_t memory_budget_for(std::uint64_t limit);

/// What this process may use in all: the cgroup memory limit, or physical memory when that is
/// smaller or there is none.
std::uint64_t usable_memory();

/// memory_budget_for(usable_memory()).
std::uint64_t default_memory_budget();

}  // namespace crunch
