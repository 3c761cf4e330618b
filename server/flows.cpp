#include "server/flows.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <vector>

namespace crunch {

namespace {

constexpr std::string_view overflow_key = "(overflow)";
// A job with a cost model is charged at least this: a zero estimate must still space its flow's
// jobs, or a flow of free jobs would never yield its turn.
constexpr flow_table::duration min_cost = std::chrono::microseconds(1);

double ms(flow_table::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace

flow_table::flow_table(std::size_t workers, std::size_t max_flows)
    : workers_(std::max<std::size_t>(1, workers)), max_flows_(std::max<std::size_t>(1, max_flows)) {
  overflow_.key = overflow_key;
  idle_.push_back(overflow_);
}

flow_table::~flow_table() {
  active_.clear();
  idle_.clear();
}

flow_table::flow& flow_table::find(std::string_view key) {
  key = key.substr(0, max_key_bytes);
  if (const auto it = flows_.find(key); it != flows_.end()) return it->second;
  if (flows_.size() >= max_flows_) {
    // The idle flow unused for longest goes; its history goes with it, which costs it nothing
    // it could use: an idle flow's next job starts at the virtual time anyway, or close to it.
    const auto victim = std::find_if(idle_.begin(), idle_.end(), [this](const flow& f) { return &f != &overflow_; });
    if (victim == idle_.end()) {
      ++overflowed_;
      return overflow_;
    }
    const std::string name(victim->key);
    idle_.erase(idle_.iterator_to(*victim));
    flows_.erase(name);
  }
  auto [it, added] = flows_.try_emplace(std::string(key));
  it->second.key = it->first;
  idle_.push_back(it->second);
  return it->second;
}

std::uint64_t flow_table::next_tag(const flow& f, std::uint64_t virtual_now) const {
  return std::max(virtual_now, f.finish_tag);
}

flow_table::duration flow_table::expected_wait(const flow& f) const {
  duration ahead{0};
  // f is among the active flows when it has jobs in flight, and has no backlog when not.
  for (const auto& g : active_) ahead += std::min(g.backlog, f.backlog);
  return ahead / static_cast<duration::rep>(workers_);
}

flow_table::booking flow_table::book(flow& f, std::optional<duration> cost, duration time_left,
                                     std::uint64_t virtual_now) {
  booking b;
  b.booked = std::min(cost.value_or(duration{0}), time_left);
  b.tag = next_tag(f, virtual_now);
  const auto charged = cost ? std::max(b.booked, min_cost) : std::min(unknown_cost, time_left);
  f.finish_tag = b.tag + static_cast<std::uint64_t>(charged.count());
  b.finish = f.finish_tag;
  if (f.in_flight++ == 0) {
    idle_.erase(idle_.iterator_to(f));
    active_.push_back(f);
  }
  f.backlog += b.booked;
  ++f.admitted;
  backlog_ += b.booked;
  return b;
}

void flow_table::release(flow& f, const booking& b, duration computed) {
  f.backlog = std::max(duration{0}, f.backlog - b.booked);
  backlog_ = std::max(duration{0}, backlog_ - b.booked);
  f.computed += computed;
  if (--f.in_flight == 0) {
    active_.erase(active_.iterator_to(f));
    idle_.push_back(f);  // most recently active last
  }
}

void flow_table::refund(flow& f, const booking& b) {
  if (f.finish_tag == b.finish) f.finish_tag = b.tag;
}

std::string flow_table::document(std::size_t top) const {
  std::vector<const flow*> all;
  all.reserve(flows_.size() + 1);
  for (const auto& [key, f] : flows_) all.push_back(&f);
  if (overflow_.admitted + overflow_.refused > 0) all.push_back(&overflow_);
  const auto by_load = [](const flow* a, const flow* b) {
    if (a->backlog != b->backlog) return a->backlog > b->backlog;
    if (a->computed != b->computed) return a->computed > b->computed;
    return a->admitted + a->refused > b->admitted + b->refused;
  };
  top = std::min(top, all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(top), all.end(), by_load);
  auto listed = nlohmann::json::array();
  for (std::size_t i = 0; i < top; ++i) {
    const auto& f = *all[i];
    listed.push_back({{"flow", f.key},
                      {"in_flight", f.in_flight},
                      {"backlog_ms", ms(f.backlog)},
                      {"computed_ms", ms(f.computed)},
                      {"admitted", f.admitted},
                      {"refused", f.refused}});
  }
  return nlohmann::json{{"active", active()},
                        {"tracked", tracked()},
                        {"max_flows", max_flows_},
                        {"overflowed", overflowed_},
                        {"backlog_ms", ms(backlog_)},
                        {"top", std::move(listed)}}
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace crunch
