#pragma once
/// The job kinds a server offers, each declared with what it brings to crunchd before it is
/// built: its own settings (flags), its checks of the configuration, and how to build it from
/// that configuration. crunchd's own are a folder each under kinds/ (a pure function, its
/// declaration, its tests); a service built on crunch adds its own beside them.

#include <crunch/config.hpp>
#include <crunch/isolation.hpp>
#include <crunch/jobs.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace crunch {

/// A one-off task a kind offers on the command line instead of serving, such as
/// `crunchd --calibrate-password 250ms`: given its text setting, crunchd runs it and exits.
struct kind_command {
  std::string setting;  ///< the name of one of the kind's text settings, which carries the argument
  /// Prints its result to stdout and returns the exit code; sees the resolved configuration
  /// (workers and memory budget known) with the kinds' defaults filled in.
  std::function<int(const config&)> run;
};

/// A job kind as a server offers it.
struct kind_declaration {
  std::string name;                    ///< the job_kind's name
  std::vector<kind_setting> settings;  ///< its own flags, e.g. --password-m-cost
  /// Why this configuration cannot serve the kind (crunchd refuses to start, exit 2), or nothing:
  /// a setting's default above its maximum, a memory budget that cannot hold one job. Sees the
  /// kind's settings with their defaults filled in, and the resolved memory budget.
  std::function<std::optional<std::string>(const config&)> check;
  /// The kind, configured by `cfg` (its settings read with cfg.setting()).
  std::function<job_kind(const config&)> build;
  std::vector<kind_command> commands = {};  ///< its command-line tasks, if any
  /// Its jobs parse strangers' bytes with a C library: what its sandboxed helper processes run
  /// (isolation.hpp). Its jobs call them with run_isolated(). Empty: its jobs run in crunchd.
  std::optional<kind_isolation> isolation = {};
};

/// crunchd's kinds, a folder each under kinds/ (fib, password, image, ...), in the order
/// kinds/CMakeLists.txt lists them; it generates this function.
std::vector<kind_declaration> builtin_kinds();

/// The built-in kind called `name`; throws std::out_of_range when there is none.
kind_declaration builtin_kind(std::string_view name);

/// Every setting of `kinds`, for parse_config and --help.
std::vector<kind_setting> settings_of(const std::vector<kind_declaration>& kinds);

/// `cfg` with each of `kinds`' settings that it does not give set to its default.
config with_kind_defaults(config cfg, const std::vector<kind_declaration>& kinds);

/// Builds `kinds` from `cfg` (defaults filled in). Throws config_error, "crunchd: " and a kind's
/// own message, when a kind's check refuses the configuration.
job_registry build_jobs(const std::vector<kind_declaration>& kinds, const config& cfg);

/// build_jobs(builtin_kinds(), cfg).
job_registry default_jobs(const config& cfg);

}  // namespace crunch
