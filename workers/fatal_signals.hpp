#pragma once
// A fatal signal leaves evidence: one line naming the signal, the thread, the stack and the
// requests whose jobs were in flight, written with async-signal-safe calls only. Then the signal
// ends the process as it would have (a core dump where the system makes them), so that its
// supervisor restarts it. crunchd writes the line to its log (stdout); a helper sends it to
// crunchd, which logs it with the job that died (helpers.cpp).

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace crunch {

/// How the report is written.
enum class fatal_report_style {
  json,    ///< one JSON log line, as crunchd's logger writes them
  text,    ///< one logfmt line
  packet,  ///< a helper_protocol crash message on a SOCK_SEQPACKET socket (a helper's)
};

/// Installs the handlers for SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS and SIGXCPU: the
/// report goes to `fd` in `style`. The last call wins (one per process in practice).
void install_fatal_signal_report(int fd, fatal_report_style style);

/// Names the calling thread in reports ("io", "worker 2"), and gives it an alternate signal stack
/// (so that a stack overflow is reported too), freed when the thread ends.
void name_thread_for_reports(std::string_view role);

/// The calling thread's name in reports, "" when it has none.
std::string_view thread_name_for_reports() noexcept;

/// A request whose job is in flight, listed by any fatal-signal report while this lives: its id
/// is copied into a fixed table (512 at once; beyond, reports say how many more there were).
class inflight_request {
 public:
  inflight_request() = default;
  explicit inflight_request(std::string_view request_id) noexcept;
  ~inflight_request();
  inflight_request(inflight_request&& other) noexcept;
  inflight_request& operator=(inflight_request&&) = delete;
  inflight_request(const inflight_request&) = delete;

  /// Its place in the table, for set_running_request(); -1 when it has none.
  int slot() const noexcept { return slot_ >= 0 ? slot_ : -1; }

 private:
  static constexpr int none = -2;           // default-constructed, or moved from
  static constexpr int unlisted_slot = -1;  // in flight, but the table was full
  int slot_ = none;
};

/// Marks the calling thread as running the job of the request in `slot` (-1: none), which a
/// report names as this thread's.
void set_running_request(int slot) noexcept;

/// Number of the signal's name: "SIGSEGV" for 11; "signal" when it is none of the usual ones.
std::string_view signal_name(int signal) noexcept;

}  // namespace crunch
