#pragma once
// The test suite's own kind, "work": the load and the clock of the core's tests, so that they
// name no product kind (fib, the hashes, images, zstd live in kinds/ with their own tests) and
// hold whichever of those is built or left out. Built into the tests and crunch_test_service,
// never into crunchd.
//
//   GET  /work/{ms}?mib=&held=  burns `ms` milliseconds of CPU (its cost: one unit is one
//                               millisecond, exactly), holding `mib` MiB by its memory model; with
//                               held=1 it first waits for its probe's gate (job_probe::open_gate).
//                               It stops at its token, and pauses at job_checkpoint as kinds do.
//                               /work/0 is tiny: it may run on the I/O thread.
//   POST /v1/work/echo?ms=         a file body (text/plain, application/octet-stream or JSON), answered
//                               as it came after `ms` milliseconds of CPU.
//   POST /v1/work/note             a JSON body {"note": 1..1024 bytes, "ms": 0.., "tag": "red"|"green"},
//                               held as a secret (wiped once read); answers {"note": ...}.
//
// Its setting --work-max-ms (default 3,600,000) bounds {ms}; its check refuses a maximum of 0.

#include <crunch/kinds.hpp>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

namespace crunch::testing {

/// What the work kind's jobs report, for tests to wait on instead of sleeping, and the gate its
/// held jobs wait for.
class job_probe {
 public:
  void note_started();
  void note_stopped();
  /// Waits until at least `n` jobs started; false on timeout.
  bool wait_started(int n, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  /// Waits until at least `n` jobs saw their stop token; false on timeout.
  bool wait_stopped(int n, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  int started();
  int stopped();
  /// Lets every held job (held=1), now and later, go on.
  void open_gate();
  /// Waits for the gate; false if `stop` fired first.
  bool wait_gate(const std::stop_token& stop);

 private:
  std::mutex mutex_;
  std::condition_variable_any changed_;
  int started_ = 0;
  int stopped_ = 0;
  bool open_ = false;
};

/// A work job: burns `ms` milliseconds of CPU, reporting to `probe`; answers {"ms": ms}.
job_function burning(std::shared_ptr<job_probe> probe, std::uint64_t ms);

/// The "work" kind, reporting to `probe` (a probe of its own when null).
kind_declaration work_kind(std::shared_ptr<job_probe> probe = nullptr);

}  // namespace crunch::testing
