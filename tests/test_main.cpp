// The test program's main(): started with --crunch-helper by a server under test, it is a helper
// process of an isolated kind (include/crunch/isolation.hpp); otherwise it runs the tests.
#include "sandboxed_kind.hpp"

#include <crunch/service.hpp>

#include <gtest/gtest.h>

int main(int argc, char** argv) {
  if (crunch::is_helper_invocation(argc, argv)) crunch::run_helper(argc, argv, crunch::testing::kinds_for_tests());
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
