#include "server/admission.hpp"

#include <algorithm>
#include <cmath>

namespace crunch {

namespace {

// Runs shorter than this carry too much timer noise to learn a rate from.
constexpr auto min_learning_run = std::chrono::microseconds(200);
// Weight of the newest observation in the moving average.
constexpr double learning_weight = 0.2;
// One observation counts as at most this many times the rate, or this many times less: a job whose
// time the model does not explain (a 4x4 AVIF, all encoder start-up and no pixels, was 300 times
// the image kind's rate per pixel) moves the rate by at most 1.6 times, not 300. A real change in
// speed is still followed: each job moves it by up to 1.6 times.
constexpr double learning_clamp = 4.0;

admission::duration clamp_ns(double ns) {
  // Saturate rather than overflow: fib(92) is estimated in years.
  constexpr double max_ns = 1e18;
  return admission::duration(static_cast<admission::duration::rep>(std::min(std::max(ns, 0.0), max_ns)));
}

}  // namespace

void admission::set_rate(const std::string& kind, double ns_per_unit) { ns_per_unit_[kind] = ns_per_unit; }

void admission::expect_rate(const std::string& kind) { priced_.insert(kind); }

std::optional<double> admission::rate(std::string_view kind) const {
  const auto it = ns_per_unit_.find(kind);
  if (it == ns_per_unit_.end()) return std::nullopt;
  return it->second;
}

std::optional<admission::duration> admission::estimate(std::string_view kind, double units) const {
  const auto r = rate(kind);
  if (!r) return std::nullopt;
  return clamp_ns(*r * units);
}

admission::decision admission::decide(std::optional<duration> cost, duration time_left, duration expected_wait) const {
  decision d;
  d.expected_wait = expected_wait;
  const duration own = cost.value_or(duration{0});
  if (own > time_left) {
    d.admit = false;
    d.hopeless = true;
    return d;
  }
  if (d.expected_wait + own <= time_left) return d;

  d.admit = false;
  // When would enough of the backlog have drained for this job to fit?
  const auto excess = d.expected_wait + own - time_left;
  const double seconds = std::ceil(std::chrono::duration<double>(excess).count());
  d.retry_after = std::chrono::seconds(std::max<long long>(1, static_cast<long long>(seconds)));
  return d;
}

void admission::learn(std::string_view kind, double units, duration computing) {
  if (units <= 0 || computing < min_learning_run) return;
  const double observed = static_cast<double>(computing.count()) / units;
  auto it = ns_per_unit_.find(kind);
  if (it == ns_per_unit_.end()) {
    // A kind without a cost model stays without one; one still waiting for its rate takes this.
    if (const auto priced = priced_.find(kind); priced != priced_.end()) ns_per_unit_.emplace(*priced, observed);
    return;
  }
  const double bounded = std::clamp(observed, it->second / learning_clamp, it->second * learning_clamp);
  it->second = (1 - learning_weight) * it->second + learning_weight * bounded;
}

}  // namespace crunch
