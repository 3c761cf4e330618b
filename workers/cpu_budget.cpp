#include <crunch/cpu_budget.hpp>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <string>

#include <sched.h>

namespace crunch {

namespace {

std::optional<std::string> read_first_line(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  return line;
}

std::optional<std::uint64_t> parse_u64(std::string_view text) {
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

std::size_t affinity_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return static_cast<std::size_t>(std::max(1, CPU_COUNT(&set)));
}

std::optional<std::size_t> parse_cpu_max(std::string_view cpu_max) {
  const auto space = cpu_max.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  const auto quota_text = cpu_max.substr(0, space);
  if (quota_text == "max") return std::nullopt;
  const auto quota = parse_u64(quota_text);
  const auto period = parse_u64(cpu_max.substr(space + 1));
  if (!quota || !period || *period == 0) return std::nullopt;
  return std::max<std::size_t>(1, static_cast<std::size_t>(*quota / *period));
}

std::optional<std::size_t> parse_cfs_quota(std::string_view quota_us, std::string_view period_us) {
  if (quota_us == "-1") return std::nullopt;  // unlimited
  const auto quota = parse_u64(quota_us);
  const auto period = parse_u64(period_us);
  if (!quota || !period || *period == 0) return std::nullopt;
  return std::max<std::size_t>(1, static_cast<std::size_t>(*quota / *period));
}

namespace {

std::optional<std::size_t> smaller(std::optional<std::size_t> a, std::optional<std::size_t> b) {
  if (a && b) return std::min(*a, *b);
  return a ? a : b;
}

// A limit anywhere up the tree applies, so the effective quota is the smallest one. Directories
// that do not exist are skipped: inside a cgroup v1 container /proc/self/cgroup shows the host's
// path while the container's own cgroup is mounted at the hierarchy's root.
template <typename Read>
std::optional<std::size_t> smallest_up_the_tree(const std::filesystem::path& hierarchy, std::string_view cgroup_path,
                                                Read read_quota) {
  std::optional<std::size_t> quota;
  std::filesystem::path dir = std::filesystem::path(cgroup_path).relative_path();
  for (;;) {
    quota = smaller(quota, read_quota(hierarchy / dir));
    if (dir.empty()) break;
    dir = dir.parent_path();
  }
  return quota;
}

bool names_cpu_controller(std::string_view controllers) {
  while (!controllers.empty()) {
    const auto comma = controllers.find(',');
    if (controllers.substr(0, comma) == "cpu") return true;
    if (comma == std::string_view::npos) break;
    controllers.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

std::optional<std::size_t> cgroup_cpu_quota(const std::filesystem::path& cgroup_root,
                                            const std::filesystem::path& proc_self_cgroup) {
  // "0::/path" is the cgroup v2 (unified) line; "N:cpu,cpuacct:/path" is the v1 cpu controller.
  // A hybrid machine has both; whichever holds a limit counts.
  std::ifstream in(proc_self_cgroup);
  std::string line;
  std::optional<std::string> v2_path, v1_cpu_path;
  while (std::getline(in, line)) {
    const auto first = line.find(':');
    const auto second = first == std::string::npos ? std::string::npos : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string_view controllers = std::string_view(line).substr(first + 1, second - first - 1);
    if (line.compare(0, first, "0") == 0 && controllers.empty()) {
      v2_path = line.substr(second + 1);
    } else if (names_cpu_controller(controllers)) {
      v1_cpu_path = line.substr(second + 1);
    }
  }

  std::optional<std::size_t> quota;
  if (v2_path) {
    quota = smallest_up_the_tree(cgroup_root, *v2_path, [](const std::filesystem::path& dir) {
      const auto text = read_first_line(dir / "cpu.max");
      return text ? parse_cpu_max(*text) : std::nullopt;
    });
  }
  if (v1_cpu_path) {
    // The v1 cpu controller is mounted at <root>/cpu (often a link to cpu,cpuacct).
    quota = smaller(quota, smallest_up_the_tree(cgroup_root / "cpu", *v1_cpu_path, [](const std::filesystem::path& dir) {
      const auto quota_us = read_first_line(dir / "cpu.cfs_quota_us");
      const auto period_us = read_first_line(dir / "cpu.cfs_period_us");
      return quota_us && period_us ? parse_cfs_quota(*quota_us, *period_us) : std::nullopt;
    }));
  }
  return quota;
}

std::size_t usable_cpus() {
  const std::size_t cpus = affinity_cpus();
  if (const auto quota = cgroup_cpu_quota()) return std::min(cpus, *quota);
  return cpus;
}

}  // namespace crunch
