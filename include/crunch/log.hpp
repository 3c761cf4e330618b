#pragma once
/// Structured logs — lifecycle events and one access line per request — as JSON lines or text.
///
/// A line is formatted by the thread that logs it and written by a thread of the logger's own
/// through a bounded queue, so a slow or blocked stdout never stalls the I/O thread: when the
/// queue is full the line is dropped and counted instead.

#include <nlohmann/json.hpp>

#include <atomic>
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
  /// Starts the writer thread; `max_queued` lines may wait for it.
  logger(log_format format, log_level level, std::FILE* out = stdout, std::size_t max_queued = 16384);
  /// Writes what is queued, then joins the writer thread.
  ~logger();

  logger(const logger&) = delete;
  logger& operator=(const logger&) = delete;

  /// True when lines of `level` are written.
  bool enabled(log_level level) const noexcept { return level >= level_; }
  /// Formats one line with `fields` (a JSON object) and queues it. Thread-safe.
  void write(log_level level, std::string_view event, const nlohmann::json& fields = nlohmann::json::object());
  /// Queues a line built with log_line (check enabled() before building it). Thread-safe.
  void write(log_line&& line);
  /// The format lines should be built in.
  log_format format() const noexcept { return format_; }
  /// Lines dropped because the queue was full.
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }

 private:
  std::string format_line(log_level level, std::string_view event, const nlohmann::json& fields) const;
  void enqueue(std::string line);
  void run();

  const log_format format_;
  const log_level level_;
  std::FILE* const out_;
  const std::size_t max_queued_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::string> queue_;  // guarded by mutex_
  bool stopping_ = false;          // guarded by mutex_
  std::atomic<std::uint64_t> dropped_{0};
  std::thread writer_;
};

}  // namespace crunch
