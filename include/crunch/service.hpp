#pragma once
/// A whole service's main(), for crunchd and for a service built on crunch (examples/own-kind):
///   int main(int argc, char** argv) { return crunch::run_service(argc, argv, my_kinds()); }

#include <crunch/kinds.hpp>

#include <vector>

namespace crunch {

/// Parses the flags — the server's and `kinds`' own — over their CRUNCH_* environment twins;
/// answers --help, --version and --probe; otherwise serves `kinds` until SIGTERM or SIGINT and
/// drains. Returns the exit code: 0; 1 when it cannot listen or start; 2 for a configuration
/// that cannot work, with one line on stderr naming what is wrong.
int run_service(int argc, char** argv, const std::vector<kind_declaration>& kinds);

}  // namespace crunch
