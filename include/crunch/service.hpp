#pragma once
/// A whole service's main(), for crunchd and for a service built on crunch (examples/own-kind):
///   int main(int argc, char** argv) { return crunch::run_service(argc, argv, my_kinds()); }
/// The same executable, started with `--crunch-helper`, is a helper process of an isolated kind.

#include <crunch/kinds.hpp>

#include <vector>

namespace crunch {

/// Parses the flags — the server's and `kinds`' own — over their CRUNCH_* environment twins;
/// answers --help, --version and --probe; otherwise serves `kinds` until SIGTERM or SIGINT and
/// drains. Returns the exit code: 0; 1 when it cannot listen or start; 2 for a configuration
/// that cannot work, with one line on stderr naming what is wrong.
int run_service(int argc, char** argv, const std::vector<kind_declaration>& kinds);

/// Whether this process was started as a helper of an isolated kind (isolation.hpp): crunchd
/// starts its own executable with `--crunch-helper`. run_service() checks it first; a program
/// whose main() does not call run_service must check it before anything else and then call
/// run_helper().
bool is_helper_invocation(int argc, char** argv) noexcept;

/// Runs this process as a helper of one of `kinds` (its kind_isolation), with the arguments
/// crunchd started it with, until crunchd lets it go. Reads no configuration, no file, no
/// secret; never returns.
[[noreturn]] void run_helper(int argc, char** argv, const std::vector<kind_declaration>& kinds);

}  // namespace crunch
