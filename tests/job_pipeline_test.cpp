// The job pipeline without a socket: an io_context on the test's thread, a real worker pool, and
// clients whose departure the test decides.
#include "bounded_wait.hpp"
#include "server/job_pipeline.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <thread>

namespace crunch {

using testing::run_until;
using testing::spin_until;
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

// A client that stays until `leave` is cancelled.
net::awaitable<void> stays_until(net::steady_timer& leave) {
  co_await leave.async_wait(net::as_tuple(net::use_awaitable));
}

nlohmann::json error_of(const answer& a) { return nlohmann::json::parse(a.r.body).at("error"); }

std::string header(const answer& a, std::string_view name) {
  for (const auto& [n, v] : a.r.headers) {
    if (n == name) return v;
  }
  return {};
}

struct job_pipeline_test : ::testing::Test {
  config cfg;
  net::io_context io{1};
  net::steady_timer never{io, net::steady_timer::time_point::max()};
  worker_pool pool{{1, 1, worker_priority::normal, 1000}};
  admission admit;
  flow_table flows{1, 16};
  metrics stats;
  job_pipeline pipeline{cfg, pool, admit, flows, stats};

  job_request request(job_function job, std::chrono::milliseconds timeout = 10s, std::uint64_t memory = 0) {
    return job_request{"test", "test", std::move(job), 0, memory, timeout, {}, {}};
  }

  // Starts the request; its answer lands in `out` once the io_context has run.
  void start(job_request r, std::optional<answer>& out, net::awaitable<void> gone) {
    net::co_spawn(io, pipeline.run(std::move(r), clock::now(), std::move(gone)),
                  [&out](std::exception_ptr e, answer a) {
                    if (e) std::rethrow_exception(e);
                    out = std::move(a);
                  });
  }
  void start(job_request r, std::optional<answer>& out) { start(std::move(r), out, stays_until(never)); }

  answer run(job_request r) {
    std::optional<answer> out;
    start(std::move(r), out);
    io.run();
    io.restart();
    EXPECT_TRUE(out);
    return out.value_or(answer{});
  }
};

job_function returns(int value) {
  return [value](std::stop_token) -> std::optional<job_output> { return job_output::json({{"value", value}}); };
}

// Runs until its stop token fires, telling `started` once it runs.
job_function until_stopped(std::latch& started, std::atomic<bool>& stopped) {
  return [&](std::stop_token stop) -> std::optional<job_output> {
    started.count_down();
    // Bounded: a job never stopped ends anyway, and the test's own checks say so.
    stopped = spin_until([&] { return stop.stop_requested(); });
    return std::nullopt;
  };
}

TEST_F(job_pipeline_test, a_completed_job_is_200_with_its_timing) {
  const auto a = run(request(returns(7)));
  EXPECT_EQ(a.r.status, 200u);
  EXPECT_EQ(nlohmann::json::parse(a.r.body).at("value"), 7);
  EXPECT_TRUE(a.timing);
  EXPECT_EQ(stats.jobs(job_outcome::completed), 1u);
  EXPECT_EQ(pipeline.pending(), 0u);
}

// A kind calibrated by its first job (job_kind::calibrate_on_first_job): that job's rate becomes
// the kind's; a job whose time includes the setup teaches admission nothing; later ones do.
TEST_F(job_pipeline_test, the_rate_a_first_job_measured_is_the_kinds_and_setup_time_is_not_learnt) {
  admit.expect_rate("test");
  auto priced = [this](job_function job) {
    auto r = request(std::move(job));
    r.cost_units = 1e6;
    return r;
  };
  auto spins_then = [](std::chrono::milliseconds spin, std::optional<double> rate, bool representative) {
    return [=](std::stop_token) -> std::optional<job_output> {
      for (const auto until = clock::now() + spin; clock::now() < until;) {
      }
      job_output out{"{}", "application/json", 200};
      out.calibrated_ns_per_unit = rate;
      out.representative = representative;
      return out;
    };
  };
  EXPECT_EQ(run(priced(spins_then(1ms, 7.0, false))).r.status, 200u);
  ASSERT_TRUE(admit.rate("test"));
  EXPECT_EQ(*admit.rate("test"), 7.0);  // set, not learnt from its 1 ms
  EXPECT_EQ(run(priced(spins_then(1ms, std::nullopt, false))).r.status, 200u);
  EXPECT_EQ(*admit.rate("test"), 7.0);  // it waited for the setup: nothing learnt
  EXPECT_EQ(run(priced(spins_then(1ms, std::nullopt, true))).r.status, 200u);
  EXPECT_LT(*admit.rate("test"), 7.0);  // ~1 ns per unit observed: the rate moves towards it
}

TEST_F(job_pipeline_test, a_job_that_throws_is_500_job_failed) {
  const auto a = run(request([](std::stop_token) -> std::optional<job_output> { throw std::runtime_error("boom"); }));
  EXPECT_EQ(a.r.status, 500u);
  EXPECT_EQ(error_of(a).at("code"), "job_failed");
  EXPECT_EQ(stats.jobs(job_outcome::failed), 1u);
}

TEST_F(job_pipeline_test, the_deadline_stops_a_running_job_with_504) {
  std::latch started(1);
  std::atomic<bool> stopped{false};
  const auto a = run(request(until_stopped(started, stopped), 50ms));
  EXPECT_EQ(a.r.status, 504u);
  EXPECT_EQ(error_of(a).at("code"), "deadline_exceeded");
  EXPECT_EQ(stats.jobs(job_outcome::deadline_exceeded), 1u);
  // The worker has let go once the pool can take the next job.
  EXPECT_EQ(run(request(returns(1))).r.status, 200u);
  EXPECT_TRUE(stopped);
}

TEST_F(job_pipeline_test, a_client_that_leaves_stops_its_job) {
  std::latch started(1);
  std::atomic<bool> stopped{false};
  net::steady_timer leave(io, net::steady_timer::time_point::max());
  std::optional<answer> a;
  start(request([&](std::stop_token stop) -> std::optional<job_output> {
          net::post(io, [&] { leave.cancel(); });  // the client leaves once its job runs
          return until_stopped(started, stopped)(std::move(stop));
        }),
        a, stays_until(leave));
  io.run();
  io.restart();
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->client_gone);
  EXPECT_EQ(stats.jobs(job_outcome::cancelled_client_gone), 1u);
  EXPECT_EQ(run(request(returns(1))).r.status, 200u);
  EXPECT_TRUE(stopped);
}

TEST_F(job_pipeline_test, a_full_queue_refuses_at_once_with_retry_after) {
  std::latch started(1);
  std::atomic<bool> stopped{false};
  std::optional<answer> running, queued, refused;
  start(request(until_stopped(started, stopped), 10s), running);
  io.poll();
  started.wait();                      // the only worker is busy
  start(request(returns(2)), queued);  // fills the queue of one
  start(request(returns(3)), refused);
  ASSERT_TRUE(run_until(io, [&] { return refused.has_value(); })) << "the third job got no answer";
  EXPECT_EQ(refused->r.status, 503u);
  EXPECT_EQ(error_of(*refused).at("code"), "overloaded");
  EXPECT_FALSE(header(*refused, "Retry-After").empty());
  EXPECT_TRUE(refused->overloaded);
  EXPECT_EQ(stats.jobs(job_outcome::rejected_queue_full), 1u);
  pipeline.cut_all();  // let the others end
  io.run();
  io.restart();
  EXPECT_EQ(running->r.status, 503u);
  EXPECT_EQ(queued->r.status, 503u);
  // The running job was answered at once; its worker lets go when the job sees its stop token,
  // and before this test's `stopped` goes away.
  EXPECT_EQ(run(request(returns(1))).r.status, 200u);
  EXPECT_TRUE(stopped);
}

TEST_F(job_pipeline_test, work_queued_ahead_that_would_make_it_late_refuses_with_the_wait) {
  admit.set_rate("test", 1e6);  // a unit is a millisecond
  flows.book(flows.find(""), 5s, 10s, 0);  // five seconds of this flow's work ahead, on the one worker
  auto r = request(returns(1), 1s);
  r.cost_units = 100;
  const auto a = run(std::move(r));
  EXPECT_EQ(a.r.status, 503u);
  EXPECT_EQ(header(a, "Retry-After"), "5");  // 5 s + 0.1 s of its own − 1 s left, rounded up
  EXPECT_EQ(stats.jobs(job_outcome::rejected_would_miss_deadline), 1u);
}

TEST_F(job_pipeline_test, more_memory_than_the_whole_budget_is_400_before_any_work) {
  std::atomic<bool> ran{false};
  const auto a = run(request(
      [&](std::stop_token) -> std::optional<job_output> {
        ran = true;
        return job_output::json(nlohmann::json::object());
      },
      10s, 1001));
  EXPECT_EQ(a.r.status, 400u);
  EXPECT_EQ(error_of(a).at("code"), "invalid_argument");
  EXPECT_FALSE(ran);
}

TEST_F(job_pipeline_test, a_deadline_already_past_is_504_without_running) {
  std::atomic<bool> ran{false};
  std::optional<answer> a;
  net::co_spawn(io,
                pipeline.run(request(
                                 [&](std::stop_token) -> std::optional<job_output> {
                                   ran = true;
                                   return job_output::json(nlohmann::json::object());
                                 },
                                 100ms),
                             clock::now() - 1s, stays_until(never)),
                [&](std::exception_ptr, answer x) { a = std::move(x); });
  io.run();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->r.status, 504u);
  EXPECT_FALSE(ran);
}

TEST_F(job_pipeline_test, a_drain_cuts_the_queued_jobs_that_cannot_finish_in_time) {
  admit.set_rate("test", 1e6);
  std::latch started(1);
  std::atomic<bool> stopped{false};
  std::optional<answer> running, queued;
  auto first = request(until_stopped(started, stopped));
  first.cost_units = 300;  // 0.3 s, running: it keeps the drain's whole timeout
  start(std::move(first), running);
  io.poll();
  started.wait();
  auto second = request(returns(2));
  second.cost_units = 800;  // queued behind 0.3 s: done at 1.1 s, after a 1 s drain
  start(std::move(second), queued);
  io.poll();
  EXPECT_EQ(pipeline.pending(), 2u);
  EXPECT_EQ(pipeline.cut_jobs_that_cannot_finish(1s), 1u);
  ASSERT_TRUE(run_until(io, [&] { return queued.has_value(); })) << "the queued job was not cut";
  EXPECT_EQ(queued->r.status, 503u);
  EXPECT_EQ(error_of(*queued).at("code"), "draining");
  EXPECT_FALSE(running);
  pipeline.cut_all();
  io.run();
  io.restart();
  EXPECT_EQ(running->r.status, 503u);
  EXPECT_EQ(stats.jobs(job_outcome::drained), 2u);
  EXPECT_EQ(run(request(returns(1))).r.status, 200u);  // once the one worker is free
  EXPECT_TRUE(stopped);
}

TEST_F(job_pipeline_test, inline_mode_runs_the_job_on_the_calling_thread) {
  cfg.mode = run_mode::inline_;
  std::thread::id ran_on;
  const auto a = run(request([&](std::stop_token) -> std::optional<job_output> {
    ran_on = std::this_thread::get_id();
    return job_output::json(nlohmann::json::object());
  }));
  EXPECT_EQ(a.r.status, 200u);
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

// A job that records the thread it ran on.
job_function records_thread(std::thread::id& ran_on) {
  return [&ran_on](std::stop_token) -> std::optional<job_output> {
    ran_on = std::this_thread::get_id();
    return job_output::json(nlohmann::json::object());
  };
}

TEST_F(job_pipeline_test, a_job_estimated_below_the_inline_ceiling_runs_here_not_on_a_worker) {
  admit.set_rate("test", 1000);  // a unit is a microsecond
  std::thread::id ran_on;
  auto tiny = request(records_thread(ran_on));
  tiny.cost_units = 2;  // 2 µs: at the default ceiling
  tiny.may_run_inline = true;
  const auto a = run(std::move(tiny));
  EXPECT_EQ(a.r.status, 200u);
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  ASSERT_TRUE(a.timing);
  EXPECT_EQ(a.timing->queued, clock::duration::zero());
  EXPECT_EQ(stats.inline_jobs(), 1u);
  EXPECT_EQ(stats.jobs(job_outcome::completed), 1u);

  // Above the ceiling, or with the ceiling at 0: a worker.
  auto larger = request(records_thread(ran_on));
  larger.cost_units = 3;
  larger.may_run_inline = true;
  EXPECT_EQ(run(std::move(larger)).r.status, 200u);
  EXPECT_NE(ran_on, std::this_thread::get_id());
  cfg.inline_max = std::chrono::microseconds(0);
  auto off = request(records_thread(ran_on));
  off.cost_units = 0;
  off.may_run_inline = true;
  EXPECT_EQ(run(std::move(off)).r.status, 200u);
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_EQ(stats.inline_jobs(), 1u);
}

TEST_F(job_pipeline_test, a_kind_without_a_cost_model_or_consent_or_a_job_with_memory_never_runs_inline) {
  std::thread::id ran_on;
  auto unmodelled = request(records_thread(ran_on));  // "test" has no rate yet
  unmodelled.may_run_inline = true;
  EXPECT_EQ(run(std::move(unmodelled)).r.status, 200u);
  EXPECT_NE(ran_on, std::this_thread::get_id());
  admit.set_rate("test", 1000);
  auto holding = request(records_thread(ran_on), 10s, 100);  // 100 bytes of memory
  holding.may_run_inline = true;
  EXPECT_EQ(run(std::move(holding)).r.status, 200u);
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_EQ(run(request(records_thread(ran_on))).r.status, 200u);  // its kind did not allow it
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_EQ(stats.inline_jobs(), 0u);
}

}  // namespace
}  // namespace crunch
