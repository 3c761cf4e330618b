#pragma once
/// How many CPUs this process may really use: the affinity mask, capped by a cgroup v2 quota.

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string_view>

namespace crunch {

/// CPUs allowed by this thread's affinity mask (at least 1).
std::size_t affinity_cpus();

/// Whole CPUs granted by a cgroup v2 `cpu.max` text ("max 100000" → nullopt, "150000 100000" → 1).
/// Rounds down (at least 1): a pool larger than the quota gets the whole cgroup, I/O thread
/// included, throttled by the CFS bandwidth controller.
std::optional<std::size_t> parse_cpu_max(std::string_view cpu_max);

/// Smallest quota along the cgroup v2 path of this process, read from `proc_self_cgroup`
/// (normally /proc/self/cgroup) under the hierarchy mounted at `cgroup_root`; nullopt when unlimited.
std::optional<std::size_t> cgroup_cpu_quota(const std::filesystem::path& cgroup_root = "/sys/fs/cgroup",
                                            const std::filesystem::path& proc_self_cgroup = "/proc/self/cgroup");

/// The default worker count: affinity_cpus(), capped by cgroup_cpu_quota().
std::size_t usable_cpus();

}  // namespace crunch
