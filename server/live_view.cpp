#include "server/live_view.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

namespace crunch {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

double ms(live_view::clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Rounded to the microsecond in milliseconds: what a chart can show, and a third of the bytes.
double rounded(double value) { return std::round(value * 1000) / 1000; }

}  // namespace

live_view::live_view(net::any_io_executor executor, const metrics& stats, std::function<metrics_gauges()> gauges,
                     std::chrono::milliseconds interval)
    : stats_(stats),
      gauges_(std::move(gauges)),
      interval_(interval),
      ticker_(executor),
      snapshot_taken_(executor, net::steady_timer::time_point::max()),
      last_time_(clock::now()) {
  lags_.reserve(256);
  take_snapshot(last_time_);
}

net::awaitable<void> live_view::run() {
  const auto interval = interval_;
  auto due = clock::now();
  while (!stopped_) {
    // On a schedule, not `interval` after the last one: a late tick does not shift the rest.
    due = std::max(due + interval, clock::now() - interval);
    ticker_.expires_at(due);
    co_await ticker_.async_wait(use_tuple);
    if (stopped_) break;
    take_snapshot(clock::now());
  }
}

void live_view::stop() {
  stopped_ = true;
  ticker_.cancel();
  snapshot_taken_.cancel();
}

void live_view::observe_lag(clock::duration lateness) {
  // Bounded even if no snapshot were ever taken: a lag sample every 10 ms fills it in 2.5 s.
  if (lags_.size() < lags_.capacity()) lags_.push_back(lateness);
}

void live_view::take_snapshot(clock::time_point now) {
  const auto elapsed = std::chrono::duration<double>(now - last_time_).count();
  const auto per_second = [elapsed](std::uint64_t now_count, std::uint64_t then_count) {
    return elapsed > 0 ? rounded(static_cast<double>(now_count - then_count) / elapsed) : 0.0;
  };

  nlohmann::json lag = {{"samples", lags_.size()}};
  if (lags_.empty()) {
    lag["p50"] = lag["p99"] = lag["max"] = nullptr;
  } else {
    std::sort(lags_.begin(), lags_.end());
    // Nearest rank: the smallest sample with at least p of them at or below it.
    const auto rank = [this](double p) {
      const auto n = static_cast<double>(lags_.size());
      return lags_[static_cast<std::size_t>(std::max(1.0, std::ceil(p * n))) - 1];
    };
    lag["p50"] = rounded(ms(rank(0.50)));
    lag["p99"] = rounded(ms(rank(0.99)));
    lag["max"] = rounded(ms(lags_.back()));
  }
  lags_.clear();

  nlohmann::json jobs_per_s = nlohmann::json::object();
  nlohmann::json jobs_total = nlohmann::json::object();
  for (std::size_t i = 0; i < job_outcome_count; ++i) {
    const auto outcome = static_cast<job_outcome>(i);
    const auto count = stats_.jobs(outcome);
    jobs_per_s[to_string(outcome)] = per_second(count, last_jobs_[i]);
    jobs_total[to_string(outcome)] = count;
    last_jobs_[i] = count;
  }
  nlohmann::json run_per_s = nlohmann::json::object();
  auto run = stats_.jobs_run_by_kind();
  for (const auto& [kind, count] : run) {
    const auto before = std::find_if(last_run_.begin(), last_run_.end(), [kind = kind](const auto& k) { return k.first == kind; });
    run_per_s[std::string(kind)] = per_second(count, before == last_run_.end() ? 0 : before->second);
  }
  last_run_ = std::move(run);
  const auto requests = stats_.requests();

  const auto g = gauges_();
  const nlohmann::json snapshot = {
      {"time_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count()},
      {"interval_ms", rounded(elapsed * 1000)},
      {"loop_lag_ms", std::move(lag)},
      {"workers", {{"busy", g.workers_busy}, {"total", g.workers}}},
      {"queue", {{"depth", g.queue_depth}, {"limit", g.queue_limit}}},
      {"backlog", {{"jobs", g.backlog_jobs}, {"seconds", rounded(g.backlog_seconds)}}},
      {"memory", {{"in_use_bytes", g.memory_in_use}, {"budget_bytes", g.memory_budget}}},
      {"connections", g.connections_open},
      {"event_streams", streams_},
      {"draining", g.draining},
      {"requests_per_s", per_second(requests, last_requests_)},
      {"jobs_per_s", std::move(jobs_per_s)},
      {"jobs_run_per_s", std::move(run_per_s)},
      {"jobs_total", std::move(jobs_total)},
  };
  last_requests_ = requests;
  last_time_ = now;
  latest_ = snapshot.dump();
  ++sequence_;
  // Every stream waiting in next_snapshot() wakes; the timer is set to wait again.
  snapshot_taken_.expires_at(net::steady_timer::time_point::max());
}

net::awaitable<bool> live_view::next_snapshot(std::uint64_t seen) {
  co_await net::this_coro::throw_if_cancelled(false);  // a cancelled wait returns false
  const auto state = co_await net::this_coro::cancellation_state;
  while (sequence_ <= seen) {
    if (stopped_) co_return false;
    co_await snapshot_taken_.async_wait(use_tuple);
    // Woken by a snapshot or stop(), or cancelled: only the coroutine's state tells which.
    if (state.cancelled() != net::cancellation_type::none) co_return false;
  }
  co_return !stopped_;
}

std::optional<std::chrono::nanoseconds> live_view::open_stream(std::size_t max) noexcept {
  // Slots a few ms apart: 16 over the default 250 ms.
  constexpr std::uint64_t slots = 16;
  if (streams_ >= max) return std::nullopt;
  ++streams_;
  return std::chrono::nanoseconds(interval_) * static_cast<std::int64_t>(opened_++ % slots) / slots;
}

}  // namespace crunch
