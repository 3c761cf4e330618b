#pragma once
/// The live view's data. Every interval, on the I/O thread, one snapshot of what the server
/// already counts — the loop's lag over the interval, workers and queue against their limits,
/// jobs per second by outcome and by kind — as one JSON object, which GET /v1/stats answers and
/// every /v1/events stream is sent. It adds nothing to the workers' path: the counters it reads
/// are the metrics the I/O thread keeps, the gauges those a /metrics scrape reads.

#include "server/metrics.hpp"
#include "server/net.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace crunch {

/// Snapshots, and the streams that wait for them. Used on the I/O thread only.
class live_view {
 public:
  using clock = std::chrono::steady_clock;

  /// Takes a first snapshot at once, so that latest() always has one. `gauges` reads the server's
  /// state now, as a /metrics scrape does (the fields a snapshot shows; the rest may stay 0).
  live_view(net::any_io_executor executor, const metrics& stats, std::function<metrics_gauges()> gauges,
            std::chrono::milliseconds interval);

  /// Takes a snapshot every interval and wakes the streams, until stop().
  net::awaitable<void> run();
  /// Ends run() and every wait in next_snapshot().
  void stop();

  /// One loop-lag sample (the loop-lag monitor's), for the interval's quantiles.
  void observe_lag(clock::duration lateness);
  /// Takes the snapshot of the interval that ends at `now`: rates are the counts since the last
  /// snapshot over the time between them.
  void take_snapshot(clock::time_point now);

  /// The last snapshot, as JSON.
  const std::string& latest() const noexcept { return latest_; }
  /// How many snapshots have been taken.
  std::uint64_t sequence() const noexcept { return sequence_; }
  /// Waits until a snapshot newer than number `seen` exists. False once stop() was called, or
  /// when the waiting coroutine was cancelled (a drain).
  net::awaitable<bool> next_snapshot(std::uint64_t seen);

  /// Counts a stream in, unless `max` are open already; gives how long after each snapshot the
  /// stream is to send it. Streams are spread over the interval rather than all written at once:
  /// a burst of writes, and of their readers waking, would hold the loop for every stream at once.
  std::optional<std::chrono::nanoseconds> open_stream(std::size_t max) noexcept;
  /// Counts a stream out.
  void close_stream() noexcept { --streams_; }
  /// Streams open now.
  std::size_t streams() const noexcept { return streams_; }

 private:
  const metrics& stats_;
  std::function<metrics_gauges()> gauges_;
  std::chrono::milliseconds interval_;
  std::uint64_t opened_ = 0;  // streams ever opened: each takes the next stagger slot
  net::steady_timer ticker_;
  net::steady_timer snapshot_taken_;  // never expires: its waits end when a snapshot cancels them
  bool stopped_ = false;
  std::vector<clock::duration> lags_;  // this interval's loop-lag samples
  clock::time_point last_time_;
  std::array<std::uint64_t, job_outcome_count> last_jobs_{};
  std::vector<std::pair<std::string_view, std::uint64_t>> last_run_;
  std::uint64_t last_requests_ = 0;
  std::string latest_;
  std::uint64_t sequence_ = 0;
  std::size_t streams_ = 0;
};

}  // namespace crunch
