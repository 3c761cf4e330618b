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

std::optional<std::size_t> cgroup_cpu_quota(const std::filesystem::path& cgroup_root,
                                            const std::filesystem::path& proc_self_cgroup) {
  // cgroup v2 has one line, "0::/some/path"; v1 lines name controllers and are ignored.
  std::ifstream in(proc_self_cgroup);
  std::string line;
  std::optional<std::string> relative;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) relative = line.substr(3);
  }
  if (!relative) return std::nullopt;

  // A limit anywhere up the tree applies, so the effective quota is the smallest one.
  std::optional<std::size_t> quota;
  std::filesystem::path dir = std::filesystem::path(*relative).relative_path();
  for (;;) {
    if (const auto text = read_first_line(cgroup_root / dir / "cpu.max")) {
      if (const auto q = parse_cpu_max(*text)) quota = quota ? std::min(*quota, *q) : *q;
    }
    if (dir.empty()) break;
    dir = dir.parent_path();
  }
  return quota;
}

std::size_t usable_cpus() {
  const std::size_t cpus = affinity_cpus();
  if (const auto quota = cgroup_cpu_quota()) return std::min(cpus, *quota);
  return cpus;
}

}  // namespace crunch
