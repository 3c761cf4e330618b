#pragma once
/// Reading limits from this process's cgroups, v1 and v2 alike: the CPU quota and the memory
/// limit both come through here.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace crunch {

/// Reads one limit from a cgroup directory; nullopt when that directory sets none.
using cgroup_limit_reader = std::function<std::optional<std::uint64_t>(const std::filesystem::path& dir)>;

/// The smallest limit that applies to this process: `read_v2` along its cgroup v2 path under
/// `cgroup_root`, and `read_v1` along its path in the v1 hierarchy of `v1_controller`, mounted at
/// `cgroup_root`/`v1_controller` — both listed in `proc_self_cgroup` (normally /proc/self/cgroup).
/// A limit anywhere up a tree applies, and a hybrid machine has both trees. Directories that do
/// not exist are skipped: inside a cgroup v1 container /proc/self/cgroup shows the host's path
/// while the container's own cgroup is mounted at the hierarchy's root. `where`, when given, is
/// set to the directory that sets the limit returned.
std::optional<std::uint64_t> cgroup_limit(const std::filesystem::path& cgroup_root,
                                          const std::filesystem::path& proc_self_cgroup, std::string_view v1_controller,
                                          const cgroup_limit_reader& read_v2, const cgroup_limit_reader& read_v1,
                                          std::filesystem::path* where = nullptr);

/// The first line of a file, without its newline; nullopt when it cannot be read.
std::optional<std::string> read_first_line(const std::filesystem::path& path);

/// A whole unsigned decimal (a cgroup file's value), or nullopt.
std::optional<std::uint64_t> parse_u64(std::string_view text);

}  // namespace crunch
