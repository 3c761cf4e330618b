// The fair queue: flow_table's tags and shares, and worker_pool's queue in their order.
#include "bounded_wait.hpp"
#include "server/flows.hpp"
#include "workers/worker_pool.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <latch>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace crunch {

using testing::run_until;
using testing::spin_until;
namespace {

using namespace std::chrono_literals;
using ns = flow_table::duration;

// A job of `flow` costing `cost`, as the pipeline books it.
struct queued {
  std::string flow;
  ns cost;
  std::uint64_t tag;
};

// Books every job (with the virtual time still at 0, as when all arrive while one job runs) and
// returns the flows' names in the order the pool would start their jobs.
std::vector<std::string> start_order(flow_table& flows, const std::vector<std::pair<std::string, ns>>& arrivals) {
  std::vector<queued> q;
  for (const auto& [flow, cost] : arrivals) {
    q.push_back({flow, cost, flows.book(flows.find(flow), cost, 10s, 0).tag});
  }
  std::stable_sort(q.begin(), q.end(), [](const queued& a, const queued& b) { return a.tag < b.tag; });
  std::vector<std::string> order;
  for (const auto& j : q) order.push_back(j.flow);
  return order;
}

TEST(flow_table, flows_of_equal_cost_take_turns_though_one_arrived_first_with_all_its_jobs) {
  flow_table flows(1, 16);
  std::vector<std::pair<std::string, ns>> arrivals(6, {"flood", 10ms});
  for (int i = 0; i < 3; ++i) arrivals.emplace_back("polite", 10ms);
  const auto order = start_order(flows, arrivals);
  const std::vector<std::string> expected{"flood", "polite", "flood", "polite", "flood", "polite", "flood", "flood", "flood"};
  EXPECT_EQ(order, expected);
}

TEST(flow_table, shares_are_of_cpu_time_not_of_jobs) {
  // One flow asks for 40 ms jobs, the other for 10 ms ones, as often: equal time means four of
  // the small for each large one.
  flow_table flows(1, 16);
  std::vector<std::pair<std::string, ns>> arrivals;
  for (int i = 0; i < 10; ++i) {
    arrivals.emplace_back("large", 40ms);
    arrivals.emplace_back("small", 10ms);
  }
  const auto order = start_order(flows, arrivals);
  // Over the first 200 ms of work, each flow's share is 100 ms, give or take one job.
  ns served_large{0};
  ns served_small{0};
  for (const auto& f : order) {
    if (served_large + served_small >= 200ms) break;
    (f == "large" ? served_large : served_small) += f == "large" ? ns(40ms) : ns(10ms);
  }
  EXPECT_LE(served_large > served_small ? served_large - served_small : served_small - served_large, ns(40ms))
      << "large " << served_large.count() << " ns, small " << served_small.count() << " ns";
  EXPECT_GE(std::count(order.begin(), order.begin() + 10, "small"), 7);
}

TEST(flow_table, a_flow_that_was_idle_starts_at_the_virtual_time_ahead_of_a_backlog) {
  flow_table flows(2, 16);
  auto& flood = flows.find("flood");
  std::uint64_t last = 0;
  for (int i = 0; i < 20; ++i) last = flows.book(flood, 100ms, 10s, 0).tag;
  const std::uint64_t now = 300'000'000;  // three of its jobs have started
  const auto polite = flows.book(flows.find("polite"), 100ms, 10s, now).tag;
  EXPECT_EQ(polite, now);
  EXPECT_LT(polite, last);
}

TEST(flow_table, within_a_flow_jobs_keep_their_arrival_order) {
  flow_table flows(2, 16);
  auto& f = flows.find("one");
  std::uint64_t previous = 0;
  for (const auto cost : {ns(5ms), ns(0), ns(1s), ns(1us)}) {
    const auto tag = flows.book(f, cost, 10s, 0).tag;
    EXPECT_TRUE(previous == 0 || tag > previous);
    previous = tag;
  }
  // A job without a cost model is charged flow_table::unknown_cost: its flow still yields.
  const auto a = flows.book(f, std::nullopt, 10s, 0).tag;
  EXPECT_EQ(flows.book(f, std::nullopt, 10s, 0).tag - a, static_cast<std::uint64_t>(flow_table::unknown_cost.count()));
}

TEST(flow_table, expected_wait_is_the_flows_fair_share_of_the_backlog) {
  flow_table flows(2, 16);
  auto& flood = flows.find("flood");
  flows.book(flood, 10s, 60s, 0);
  auto& polite = flows.find("polite");
  // Alone, a flow waits for all its backlog over the workers: the old FIFO rule.
  EXPECT_EQ(flows.expected_wait(flood), 5s);
  // A flow with nothing in flight waits for nothing of the other's backlog.
  EXPECT_EQ(flows.expected_wait(polite), 0s);
  const auto b = flows.book(polite, 1s, 60s, 0);
  EXPECT_EQ(flows.expected_wait(polite), 1s);  // (1 + min(10, 1)) / 2
  EXPECT_EQ(flows.expected_wait(flood), 5500ms);  // (10 + 1) / 2
  EXPECT_EQ(flows.active(), 2u);
  flows.release(polite, b, 900ms);
  EXPECT_EQ(flows.active(), 1u);
  EXPECT_EQ(flows.expected_wait(polite), 0s);
  EXPECT_EQ(flows.backlog(), 10s);
}

TEST(flow_table, a_job_pushed_out_unrun_is_not_charged_to_its_flow) {
  flow_table flows(1, 4);
  auto& f = flows.find("a");
  const auto first = flows.book(f, 10ms, 1s, 0);
  const auto last = flows.book(f, 10ms, 1s, 0);
  flows.refund(f, first);  // not its flow's last job: nothing changes
  EXPECT_EQ(flows.next_tag(f, 0), last.finish);
  flows.release(f, last, 0ns);
  flows.refund(f, last);
  EXPECT_EQ(flows.next_tag(f, 0), last.tag);  // as if it had never been booked
}

TEST(flow_table, books_no_more_than_the_deadline_and_releases_it) {
  flow_table flows(1, 4);
  auto& f = flows.find("a");
  const auto b = flows.book(f, std::chrono::hours(1), 200ms, 0);  // it will be stopped at 200 ms
  EXPECT_EQ(b.booked, 200ms);
  EXPECT_EQ(flows.backlog(), 200ms);
  flows.release(f, b, 200ms);
  EXPECT_EQ(flows.backlog(), 0ns);
}

TEST(flow_table, spraying_keys_is_bounded_by_the_table_and_then_shares_one_flow) {
  flow_table flows(2, 8);
  // Idle flows are forgotten, least recently active first.
  for (int i = 0; i < 1000; ++i) {
    auto& f = flows.find("spray-" + std::to_string(i));
    flows.release(f, flows.book(f, 1ms, 1s, 0), 1ms);
    EXPECT_LE(flows.tracked(), 8u);
  }
  EXPECT_EQ(flows.overflowed(), 0u);
  // With every slot held by a flow that has jobs in flight, new keys share the overflow flow.
  std::vector<flow_table::flow*> held;
  for (int i = 0; i < 8; ++i) {
    auto& f = flows.find("busy-" + std::to_string(i));
    flows.book(f, 1ms, 1s, 0);
    held.push_back(&f);
  }
  auto& a = flows.find("new-a");
  auto& b = flows.find("new-b");
  EXPECT_EQ(&a, &b);
  EXPECT_EQ(a.key, "(overflow)");
  EXPECT_EQ(flows.overflowed(), 2u);
  EXPECT_EQ(flows.tracked(), 8u);
  for (auto* f : held) EXPECT_EQ(&flows.find(f->key), f) << "an active flow was forgotten";
}

TEST(flow_table, keys_are_cut_to_a_bounded_length) {
  flow_table flows(1, 4);
  const std::string long_key(10'000, 'k');
  auto& f = flows.find(long_key);
  EXPECT_EQ(f.key.size(), flow_table::max_key_bytes);
  EXPECT_EQ(&flows.find(long_key + "more"), &f);
}

TEST(flow_table, the_document_lists_the_heaviest_flows_first) {
  flow_table flows(1, 16);
  flows.book(flows.find("light"), 1ms, 1s, 0);
  flows.book(flows.find("heavy"), 900ms, 1s, 0);
  flows.count_refused(flows.find("heavy"));
  const auto doc = nlohmann::json::parse(flows.document(1));
  EXPECT_EQ(doc.at("active"), 2);
  ASSERT_EQ(doc.at("top").size(), 1u);
  EXPECT_EQ(doc.at("top")[0].at("flow"), "heavy");
  EXPECT_EQ(doc.at("top")[0].at("refused"), 1);
  EXPECT_DOUBLE_EQ(doc.at("top")[0].at("backlog_ms").get<double>(), 900.0);
}

// worker_pool runs its queue in tag order, and a full queue gives the last place to a lower tag.
class ordered_pool : public ::testing::Test {
 protected:
  ordered_pool() : work_(io_.get_executor()) {}
  ~ordered_pool() override {
    work_.reset();
    io_.run();  // the completions left, so that nothing outlives the pool's work
  }

  // Submits a job that records `name` when it runs, and its completion's error in `errors`.
  void submit(const std::string& name, std::uint64_t tag) {
    pool_.async_submit(
        [this, name](std::stop_token) {
          std::lock_guard lock(mutex_);
          ran_.push_back(name);
          return 0;
        },
        job_ticket{0, tag},
        net::bind_executor(io_, [this, name](sys::error_code ec, job_result<int>) { errors_[name] = ec; }));
  }
  // Blocks the one worker until open() is called.
  void block() {
    pool_.async_submit([this](std::stop_token) { blocker_.wait(); return 0; }, [](sys::error_code, job_result<int>) {});
    EXPECT_TRUE(spin_until([this] { return pool_.busy() != 0; })) << "the blocking job never started";
  }
  void open_and_finish(std::size_t jobs) {
    blocker_.count_down();
    EXPECT_TRUE(run_until(io_, [&] { return completed() >= jobs; })) << completed() << " of " << jobs << " jobs completed";
  }
  std::size_t completed() const { return errors_.size(); }

  net::io_context io_{1};
  net::executor_work_guard<net::io_context::executor_type> work_;
  worker_pool pool_{{1, 3, worker_priority::normal}};
  std::latch blocker_{1};
  std::mutex mutex_;
  std::vector<std::string> ran_;
  std::map<std::string, sys::error_code> errors_;
};

TEST_F(ordered_pool, runs_jobs_in_tag_order_and_equal_tags_in_arrival_order) {
  block();
  submit("c", 30);
  submit("a1", 10);
  submit("a2", 10);
  open_and_finish(3);
  const std::vector<std::string> expected{"a1", "a2", "c"};
  EXPECT_EQ(ran_, expected);
  EXPECT_EQ(pool_.virtual_time(), 30u);
}

TEST_F(ordered_pool, a_full_queue_gives_its_last_place_to_a_lower_tag) {
  block();
  submit("flood1", 10);
  submit("flood2", 20);
  submit("flood3", 30);
  EXPECT_FALSE(pool_.has_room(30));
  EXPECT_TRUE(pool_.has_room(15));
  submit("polite", 15);  // takes flood3's place
  submit("late", 40);    // refused at once: nothing queued is behind it
  open_and_finish(5);
  EXPECT_EQ(errors_["flood3"], pool_errc::queue_full);
  EXPECT_EQ(errors_["late"], pool_errc::queue_full);
  EXPECT_FALSE(errors_["polite"]);
  const std::vector<std::string> expected{"flood1", "polite", "flood2"};
  EXPECT_EQ(ran_, expected);
}

}  // namespace
}  // namespace crunch
