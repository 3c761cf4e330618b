#pragma once
// crunchd's side of isolated jobs (include/crunch/isolation.hpp): the helper processes a thread
// keeps, one per isolated kind, what they may use, and what the server reads of them. A helper is
// started by the first job of its kind on a thread, kept between jobs, killed when a job will not
// stop, replaced after it dies, and stopped when the thread gives back its memory or ends.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace crunch {

/// Process-wide settings of the helpers; the server sets them once, before its workers start.
struct helper_settings {
  /// What is executed: crunchd's own executable, whose main() hands `--crunch-helper` to
  /// run_helper (service.hpp).
  std::string executable = "/proc/self/exe";
  /// Hard limit on a helper's data (RLIMIT_DATA): a job's own limit is set below it. 0: none.
  std::uint64_t memory_ceiling = 0;
  /// How long a helper asked to stop may take before it is killed.
  std::chrono::milliseconds stop_grace{50};
  /// How long a new helper may take to say it is ready (a sanitizer build starts slowly).
  std::chrono::milliseconds start_timeout{10'000};
};

/// Replaces the process's helper settings.
void set_helper_settings(const helper_settings& settings);

/// Whether helpers started from now on are watched through pidfds (the default) or, as where the
/// system has none (kernels before 5.3, valgrind, container profiles that refuse pidfd_open),
/// through their sockets and waitid(). For the tests of that path.
void use_pidfds(bool use) noexcept;

/// Stops the calling thread's helpers (killed and reaped) and frees their shared memory.
void release_helpers() noexcept;

/// Bytes of shared memory (the two memfds of each) the calling thread's helpers keep.
std::uint64_t helper_memory_kept() noexcept;

/// The deadline of the job the calling thread runs now (max: none), which bounds the CPU time a
/// helper may use for it.
void set_running_deadline(std::chrono::steady_clock::time_point deadline) noexcept;

/// What helpers of one kind have done since the process started.
struct helper_counts {
  std::string kind;
  std::uint64_t started = 0;  ///< helpers started
  std::uint64_t alive = 0;    ///< helpers running now
  std::uint64_t crashed = 0;  ///< died with a job or while idle: a signal, the sandbox, a limit
  std::uint64_t killed = 0;   ///< killed by crunchd: a job that would not stop at its deadline
};

/// The counts of every kind that has started a helper.
std::vector<helper_counts> helper_statistics();

/// CPU time used by every helper of this process, those gone included: for the CPU pacer.
std::chrono::nanoseconds helpers_cpu_time();

/// Stops (SIGSTOP) or resumes (SIGCONT) every helper: the CPU pacer holds them as it holds the
/// workers, whose jobs they run.
void hold_helpers(bool hold);

}  // namespace crunch
