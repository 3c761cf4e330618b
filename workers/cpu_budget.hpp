#pragma once
/// How many CPUs this process may really use: the affinity mask, capped by a cgroup CPU quota
/// (v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` on v1 and hybrid machines).

#include <cstddef>
#include <cstdint>
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

/// Whole CPUs granted by a cgroup v1 CFS quota (`cpu.cfs_quota_us`, `cpu.cfs_period_us`): "-1" is
/// unlimited (nullopt); rounded down as parse_cpu_max() does.
std::optional<std::size_t> parse_cfs_quota(std::string_view quota_us, std::string_view period_us);

/// Smallest quota along this process's cgroup paths, read from `proc_self_cgroup` (normally
/// /proc/self/cgroup): the v2 path under `cgroup_root`, and the v1 cpu controller's path under
/// `cgroup_root`/cpu. nullopt when unlimited.
std::optional<std::size_t> cgroup_cpu_quota(const std::filesystem::path& cgroup_root = "/sys/fs/cgroup",
                                            const std::filesystem::path& proc_self_cgroup = "/proc/self/cgroup");

/// The same quota to the thousandth of a CPU ("150000 100000" → 1.5): what the process may
/// really spend per second, for the cpu_pacer. nullopt when unlimited.
std::optional<double> cgroup_cpu_limit(const std::filesystem::path& cgroup_root = "/sys/fs/cgroup",
                                       const std::filesystem::path& proc_self_cgroup = "/proc/self/cgroup");

/// The CFS bandwidth controller's account of a quota, from the cgroup's `cpu.stat`.
struct cpu_throttling {
  std::uint64_t periods = 0;            ///< enforcement periods in which the cgroup had work
  std::uint64_t throttled_periods = 0;  ///< of those, periods that ran out of quota: every thread stopped
  std::uint64_t throttled_ns = 0;       ///< time the cgroup's threads spent stopped
};

/// Reads a `cpu.stat` text, v2 (nr_periods, nr_throttled, throttled_usec) or v1 (nr_periods,
/// nr_throttled, throttled_time in ns); nullopt when it has no bandwidth lines.
std::optional<cpu_throttling> parse_cpu_stat(std::string_view text);

/// The `cpu.stat` of the cgroup whose quota binds this process (the one cgroup_cpu_quota()
/// reads); nullopt when there is no quota.
std::optional<std::filesystem::path> cgroup_cpu_stat_file(const std::filesystem::path& cgroup_root = "/sys/fs/cgroup",
                                                          const std::filesystem::path& proc_self_cgroup = "/proc/self/cgroup");

/// parse_cpu_stat() of a file; nullopt when it cannot be read.
std::optional<cpu_throttling> read_cpu_stat(const std::filesystem::path& file);

/// The default worker count: affinity_cpus(), capped by cgroup_cpu_quota().
std::size_t usable_cpus();

}  // namespace crunch
