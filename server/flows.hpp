#pragma once
/// Flows: whom each job is for, and fair shares of the workers between them, so that one client
/// flooding the server cannot take the others' share.
///
/// A flow is named by a key the session derives from the request (--fair-key: the client's
/// address, its API key's name, a header, or one flow for all). The table is bounded: when it is
/// full, the flow idle for longest is forgotten, and when none is idle, a new key shares one
/// overflow flow — spraying random keys costs nothing but a slot.
///
/// Scheduling is Start-time Fair Queuing (P. Goyal, H. M. Vin, H. Cheng, "Start-time Fair
/// Queueing: A Scheduling Algorithm for Integrated Services Packet Switching Networks", SIGCOMM
/// 1996), with a job's estimated run time as its length:
///   - each job gets a start tag S = max(v, F), where F is the finish tag of its flow's previous
///     job, and the flow's finish tag becomes S + cost;
///   - the workers take jobs in order of S (worker_pool keeps its queue sorted by tag), and the
///     virtual time v is the highest start tag taken so far (worker_pool::virtual_time()).
/// So a flow's jobs are spaced in virtual time by what they cost: backlogged flows get equal CPU
/// time, not equal job counts (fib(40) costs 100× fib(30), and is charged so); within a flow the
/// order is arrival order; a flow that has sent nothing lately starts at v, ahead of the work
/// another flow has queued beyond its share; and a lone flow has the whole pool and queue, as
/// nothing else has a lower tag. SFQ rather than deficit round robin because job costs span four
/// orders of magnitude: DRR needs a quantum near the largest cost to do O(1) work per job and is
/// then coarse for small ones, while SFQ needs no quantum, and its tags are computed once, here
/// on the I/O thread, so the pool only orders numbers.
///
/// Admission uses the same shares: a job's expected wait is the time its flow's backlog takes to
/// drain when every active flow gets an equal share of the workers and gives back what it does
/// not use (water-filling: Σ over active flows g of min(backlog_g, backlog_f), over the workers).
/// A flow alone waits for its whole backlog; a flow that sends little waits for nearly nothing.
///
/// Used on the I/O thread only: no locks.

#include <boost/intrusive/list.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace crunch {

/// The flows the server knows, their backlogs and their fair-queuing tags.
class flow_table {
 public:
  using duration = std::chrono::nanoseconds;

  /// Longest flow key kept; longer ones are cut (they still name one flow each).
  static constexpr std::size_t max_key_bytes = 128;
  /// What a job without a cost model is charged in virtual time.
  static constexpr duration unknown_cost = std::chrono::milliseconds(1);

  /// One client's jobs.
  struct flow {
    std::string_view key;           ///< its name (the table's key; "(overflow)" for the shared one)
    std::size_t in_flight = 0;      ///< jobs admitted and not yet ended
    duration backlog{0};            ///< their booked run-time estimates
    std::uint64_t finish_tag = 0;   ///< SFQ: virtual time at which its last job ends
    std::uint64_t admitted = 0;     ///< jobs admitted since the flow was added
    std::uint64_t refused = 0;      ///< jobs refused for load since it was added
    duration computed{0};           ///< worker time of its jobs that ran
    boost::intrusive::list_member_hook<> hook;  ///< in active_ while in_flight > 0, else in idle_
  };

  /// A job's place and booked load, from book(); what release() takes back.
  struct booking {
    duration booked{0};     ///< its estimate, capped at its deadline
    std::uint64_t tag = 0;     ///< its start tag, for worker_pool's queue
    std::uint64_t finish = 0;  ///< its flow's finish tag after it
  };

  /// `workers` share the backlog; at most `max_flows` flows are tracked (at least 1).
  flow_table(std::size_t workers, std::size_t max_flows);
  ~flow_table();
  flow_table(const flow_table&) = delete;
  flow_table& operator=(const flow_table&) = delete;

  /// The flow named `key` (cut to max_key_bytes), added if new. The reference stays valid while
  /// the flow has jobs in flight, and until the next call to find() otherwise.
  flow& find(std::string_view key);

  /// The start tag a job of `f` would get now.
  std::uint64_t next_tag(const flow& f, std::uint64_t virtual_now) const;

  /// How long a new job of `f` should wait for a worker under fair shares.
  duration expected_wait(const flow& f) const;

  /// Books an admitted job of `f`: its estimate `cost` (capped at `time_left`, as a job is stopped
  /// at its deadline) joins the flow's backlog, and it gets its start tag.
  booking book(flow& f, std::optional<duration> cost, duration time_left, std::uint64_t virtual_now);
  /// Takes back a job's booking when it ends, however it ends; `computed` is its worker time.
  void release(flow& f, const booking& b, duration computed);
  /// For a job that never ran (pushed out of the queue): when it is still its flow's last, its
  /// flow's finish tag goes back to where it was, so the flow is not charged for work not done.
  void refund(flow& f, const booking& b);
  /// Counts a refusal of one of `f`'s jobs, for the top consumers.
  void count_refused(flow& f) { ++f.refused; }

  /// Flows with jobs in flight.
  std::size_t active() const { return active_.size(); }
  /// Flows tracked, idle ones included (the overflow flow is not counted).
  std::size_t tracked() const { return flows_.size(); }
  /// The most flows tracked.
  std::size_t max_flows() const { return max_flows_; }
  /// Jobs whose new key found the table full of active flows and went to the overflow flow.
  std::uint64_t overflowed() const { return overflowed_; }
  /// Estimated work in flight, all flows together.
  duration backlog() const { return backlog_; }

  /// GET /v1/flows: the counts, and the `top` flows by backlog then by worker time, as JSON.
  std::string document(std::size_t top) const;

 private:
  using flow_list = boost::intrusive::list<
      flow, boost::intrusive::member_hook<flow, boost::intrusive::list_member_hook<>, &flow::hook>>;

  std::size_t workers_;
  std::size_t max_flows_;
  std::map<std::string, flow, std::less<>> flows_;
  flow overflow_;
  flow_list active_;  // flows with jobs in flight (the overflow flow too, while it has some)
  flow_list idle_;    // the others, least recently active first
  duration backlog_{0};
  std::uint64_t overflowed_ = 0;
};

}  // namespace crunch
