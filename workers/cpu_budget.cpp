#include "workers/cpu_budget.hpp"

#include "workers/cgroup.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>

#include <sched.h>

namespace crunch {

std::size_t affinity_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return static_cast<std::size_t>(std::max(1, CPU_COUNT(&set)));
}

namespace {

// A quota in thousandths of a CPU ("150000 100000" → 1500), so that a walk up the cgroup tree
// compares whole numbers and the pacer gets the fraction.
std::optional<std::uint64_t> millicpus(std::string_view quota_text, std::string_view period_text) {
  const auto quota = parse_u64(quota_text);
  const auto period = parse_u64(period_text);
  if (!quota || !period || *period == 0) return std::nullopt;
  return *quota * 1000 / *period;
}

std::optional<std::uint64_t> cpu_max_millicpus(std::string_view cpu_max) {
  const auto space = cpu_max.find(' ');
  if (space == std::string_view::npos || cpu_max.substr(0, space) == "max") return std::nullopt;
  return millicpus(cpu_max.substr(0, space), cpu_max.substr(space + 1));
}

std::optional<std::uint64_t> cfs_quota_millicpus(std::string_view quota_us, std::string_view period_us) {
  if (quota_us == "-1") return std::nullopt;  // unlimited
  return millicpus(quota_us, period_us);
}

// Whole CPUs, rounded down, at least 1.
std::optional<std::size_t> whole_cpus(std::optional<std::uint64_t> millis) {
  if (!millis) return std::nullopt;
  return std::max<std::size_t>(1, static_cast<std::size_t>(*millis / 1000));
}

// The smallest quota up the cgroup trees, in thousandths of a CPU; `where` gets its directory.
std::optional<std::uint64_t> cpu_quota_in(const std::filesystem::path& cgroup_root,
                                          const std::filesystem::path& proc_self_cgroup, std::filesystem::path* where) {
  return cgroup_limit(
      cgroup_root, proc_self_cgroup, "cpu",
      [](const std::filesystem::path& dir) -> std::optional<std::uint64_t> {
        const auto text = read_first_line(dir / "cpu.max");
        return text ? cpu_max_millicpus(*text) : std::nullopt;
      },
      [](const std::filesystem::path& dir) -> std::optional<std::uint64_t> {
        const auto quota_us = read_first_line(dir / "cpu.cfs_quota_us");
        const auto period_us = read_first_line(dir / "cpu.cfs_period_us");
        return quota_us && period_us ? cfs_quota_millicpus(*quota_us, *period_us) : std::nullopt;
      },
      where);
}

}  // namespace

std::optional<std::size_t> parse_cpu_max(std::string_view cpu_max) { return whole_cpus(cpu_max_millicpus(cpu_max)); }

std::optional<std::size_t> parse_cfs_quota(std::string_view quota_us, std::string_view period_us) {
  return whole_cpus(cfs_quota_millicpus(quota_us, period_us));
}

std::optional<std::size_t> cgroup_cpu_quota(const std::filesystem::path& cgroup_root,
                                            const std::filesystem::path& proc_self_cgroup) {
  return whole_cpus(cpu_quota_in(cgroup_root, proc_self_cgroup, nullptr));
}

std::optional<double> cgroup_cpu_limit(const std::filesystem::path& cgroup_root,
                                       const std::filesystem::path& proc_self_cgroup) {
  const auto millis = cpu_quota_in(cgroup_root, proc_self_cgroup, nullptr);
  if (!millis || *millis == 0) return std::nullopt;
  return static_cast<double>(*millis) / 1000;
}

std::optional<cpu_throttling> parse_cpu_stat(std::string_view text) {
  cpu_throttling t;
  bool periods = false;
  while (!text.empty()) {
    const auto end = text.find('\n');
    const auto line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    const auto space = line.find(' ');
    if (space == std::string_view::npos) continue;
    const auto key = line.substr(0, space);
    const auto value = parse_u64(line.substr(space + 1));
    if (!value) continue;
    if (key == "nr_periods") {
      t.periods = *value;
      periods = true;
    } else if (key == "nr_throttled") {
      t.throttled_periods = *value;
    } else if (key == "throttled_usec") {
      t.throttled_ns = *value * 1000;  // v2
    } else if (key == "throttled_time") {
      t.throttled_ns = *value;  // v1
    }
  }
  if (!periods) return std::nullopt;
  return t;
}

std::optional<std::filesystem::path> cgroup_cpu_stat_file(const std::filesystem::path& cgroup_root,
                                                          const std::filesystem::path& proc_self_cgroup) {
  std::filesystem::path dir;
  if (!cpu_quota_in(cgroup_root, proc_self_cgroup, &dir)) return std::nullopt;
  return dir / "cpu.stat";
}

std::optional<cpu_throttling> read_cpu_stat(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) return std::nullopt;
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_cpu_stat(text);
}

std::size_t usable_cpus() {
  const std::size_t cpus = affinity_cpus();
  if (const auto quota = cgroup_cpu_quota()) return std::min(cpus, *quota);
  return cpus;
}

}  // namespace crunch
