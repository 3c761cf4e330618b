#pragma once
// Test kinds for isolation (include/crunch/isolation.hpp), built into the tests and into
// crunch_test_service, never into crunchd.
//
// "sandboxed": POST /sandboxed/{function}?ms=&mib=&take= runs `function` in a helper process:
//   echo      answers the body, as it is
//   pid       answers the helper's pid
//   sleep     waits `ms` milliseconds, stopping when asked (a job that stops by itself)
//   spin      burns CPU for `ms` milliseconds and never looks at its stop token (an AVIF encode)
//   crash     writes to a page mapped without access (SIGSEGV)
//   open      opens a file, which its sandbox forbids
//   socket    makes a socket, which its sandbox forbids
//   fork      starts a process, which its sandbox forbids
//   allocate  touches `take` MiB (the job's memory model says `mib` MiB)
// Each job declares `ms` as its cost and `mib` MiB as its memory model.
//
// "crashing": GET /crashing/worker writes to a page mapped without access on a worker of crunchd itself
// (a fatal signal's report; crunch_test_service only: it ends the process).

#include <crunch/kinds.hpp>

#include <vector>

namespace crunch::testing {

/// The "sandboxed" kind.
kind_declaration sandboxed_kind();

/// The "crashing" kind.
kind_declaration crashing_kind();

/// What the test programs serve and what their helpers run: the built-in kinds, these two and
/// the work kind (work_kind.hpp).
std::vector<kind_declaration> kinds_for_tests();

}  // namespace crunch::testing
