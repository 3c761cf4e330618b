#pragma once
/// Structured logs — lifecycle events and one access line per request — as JSON lines or text.
///
/// A line is formatted by the thread that logs it and written by a thread of the logger's own
/// through a bounded queue, so a slow or blocked stdout never stalls the I/O thread: when the
/// queue is full the line is dropped and counted instead. Nor does it stall shutdown: the writer
/// never sits in a write(2) that may block, and what it cannot write within the flush timeout
/// once stopped is dropped and counted too. A broken output (EPIPE: the reader is gone) drops and
/// counts every line from then on; it never raises SIGPIPE.

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

namespace crunch {

/// Severity; lines below the configured level are not formatted at all.
enum class log_level { debug, info, warn, error };

/// Line format.
enum class log_format {
  json,  ///< {"time":...,"level":...,"event":...,...}
  text,  ///< 2026-11-26T05:09:49.775Z info access method=GET ...
};

/// One log line rendered straight to text as fields are added, without building a JSON object
/// first: the access line is written for every request, so its cost is the loop's cost.
class log_line {
 public:
  /// Starts a line with time, level and event.
  log_line(log_format format, log_level level, std::string_view event);
  /// Adds a string field (JSON-escaped, or quoted in text when needed).
  log_line& field(std::string_view key, std::string_view value);
  /// Adds an integer field.
  log_line& field(std::string_view key, std::uint64_t value);
  /// Adds a duration in milliseconds, to the microsecond.
  log_line& millis(std::string_view key, double ms);
  /// The finished line, with its newline.
  std::string finish() &&;

 private:
  void key(std::string_view name);
  log_format format_;
  std::string text_;
};

/// The asynchronous, bounded log writer.
class logger {
 public:
  /// Starts the writer thread; `max_queued` lines may wait for it. Writes go straight to
  /// `out`'s descriptor (what stdio buffered before is flushed first).
  logger(log_format format, log_level level, std::FILE* out = stdout, std::size_t max_queued = 16384,
         std::chrono::milliseconds flush_timeout = std::chrono::seconds(1));
  /// close(), if not done yet.
  ~logger();

  logger(const logger&) = delete;
  logger& operator=(const logger&) = delete;

  /// True when lines of `level` are written.
  bool enabled(log_level level) const noexcept { return level >= level_; }
  /// Formats one line with `fields` (a JSON object) and queues it. Thread-safe.
  void write(log_level level, std::string_view event, const nlohmann::json& fields = nlohmann::json::object());
  /// Queues a line built with log_line (check enabled() before building it). Thread-safe.
  void write(log_line&& line);
  /// Writes what is queued, for at most the flush timeout; drops and counts what is left, says
  /// so on stderr when anything was dropped, and joins the writer thread. Lines written after
  /// are dropped and counted. Not concurrent with itself.
  void close();
  /// The format lines should be built in.
  log_format format() const noexcept { return format_; }
  /// Lines dropped: the queue was full, the output broken, or still blocked at the end.
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }

 private:
  std::string format_line(log_level level, std::string_view event, const nlohmann::json& fields) const;
  void enqueue(std::string line);
  void run();
  enum class output { written, broken, timed_out };
  output write_out(std::string_view& bytes, std::optional<std::chrono::steady_clock::time_point> deadline);

  const log_format format_;
  const log_level level_;
  std::FILE* const out_;
  const int fd_;
  const std::size_t max_queued_;
  const std::chrono::milliseconds flush_timeout_;
  int wake_fd_ = -1;  // an eventfd: ends a writer waiting for its output, at shutdown
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::string> queue_;  // guarded by mutex_
  bool stopping_ = false;          // guarded by mutex_
  std::atomic<std::uint64_t> dropped_{0};
  std::thread writer_;
};

}  // namespace crunch
