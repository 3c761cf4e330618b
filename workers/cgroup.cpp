#include "workers/cgroup.hpp"

#include "server/decimal.hpp"

#include <fstream>
#include <limits>

namespace crunch {

namespace {

bool names_controller(std::string_view controllers, std::string_view wanted) {
  while (!controllers.empty()) {
    const auto comma = controllers.find(',');
    if (controllers.substr(0, comma) == wanted) return true;
    if (comma == std::string_view::npos) break;
    controllers.remove_prefix(comma + 1);
  }
  return false;
}

struct membership {
  std::optional<std::string> unified;  // the cgroup v2 path
  std::optional<std::string> v1;       // the path in the v1 hierarchy asked for
};

membership read_membership(const std::filesystem::path& proc_self_cgroup, std::string_view v1_controller) {
  // "0::/path" is the cgroup v2 (unified) line; "N:cpu,cpuacct:/path" a v1 hierarchy.
  membership found;
  std::ifstream in(proc_self_cgroup);
  std::string line;
  while (std::getline(in, line)) {
    const auto first = line.find(':');
    const auto second = first == std::string::npos ? std::string::npos : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string_view controllers = std::string_view(line).substr(first + 1, second - first - 1);
    if (line.compare(0, first, "0") == 0 && controllers.empty()) {
      found.unified = line.substr(second + 1);
    } else if (names_controller(controllers, v1_controller)) {
      found.v1 = line.substr(second + 1);
    }
  }
  return found;
}

struct found_limit {
  std::uint64_t value;
  std::filesystem::path dir;
};

void keep_smaller(std::optional<found_limit>& smallest, std::optional<found_limit> limit) {
  if (limit && (!smallest || limit->value < smallest->value)) smallest = std::move(limit);
}

// From the process's own cgroup up to the root: on a tie the deepest directory is kept.
std::optional<found_limit> smallest_up_the_tree(const std::filesystem::path& hierarchy, std::string_view cgroup_path,
                                                const cgroup_limit_reader& read_limit) {
  std::optional<found_limit> smallest;
  std::filesystem::path dir = std::filesystem::path(cgroup_path).relative_path();
  for (;;) {
    const auto here = hierarchy / dir;
    if (const auto limit = read_limit(here)) keep_smaller(smallest, found_limit{*limit, here});
    if (dir.empty()) break;
    dir = dir.parent_path();
  }
  return smallest;
}

}  // namespace

std::optional<std::string> read_first_line(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  return line;
}

std::optional<std::uint64_t> parse_u64(std::string_view text) {
  return parse_decimal(text, 0, std::numeric_limits<std::uint64_t>::max());
}

std::optional<std::uint64_t> cgroup_limit(const std::filesystem::path& cgroup_root,
                                          const std::filesystem::path& proc_self_cgroup, std::string_view v1_controller,
                                          const cgroup_limit_reader& read_v2, const cgroup_limit_reader& read_v1,
                                          std::filesystem::path* where) {
  const auto member = read_membership(proc_self_cgroup, v1_controller);
  std::optional<found_limit> smallest;
  if (member.unified) keep_smaller(smallest, smallest_up_the_tree(cgroup_root, *member.unified, read_v2));
  if (member.v1) keep_smaller(smallest, smallest_up_the_tree(cgroup_root / v1_controller, *member.v1, read_v1));
  if (!smallest) return std::nullopt;
  if (where != nullptr) *where = smallest->dir;
  return smallest->value;
}

}  // namespace crunch
