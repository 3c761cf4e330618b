// crunch_test_service: crunchd with the test kinds beside its own (sandboxed_kind.hpp), for the
// tests that must end a whole process: a fatal signal's report, a helper killed from outside.
#include "sandboxed_kind.hpp"

#include <crunch/service.hpp>

int main(int argc, char** argv) { return crunch::run_service(argc, argv, crunch::testing::kinds_for_tests()); }
