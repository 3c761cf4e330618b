// crunchd: parse the configuration, serve until SIGTERM or SIGINT, drain, exit 0.
// With --probe: ask a running crunchd whether it is ready, and exit 0 or 1.
#include <crunch/kinds.hpp>
#include <crunch/service.hpp>

int main(int argc, char** argv) { return crunch::run_service(argc, argv, crunch::builtin_kinds()); }
