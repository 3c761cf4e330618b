#include "server/job_pipeline.hpp"

#include "workers/fatal_signals.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <exception>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

namespace crunch {

namespace {

using namespace net::experimental::awaitable_operators;  // NOLINT: for `||` in this file only
using clock = std::chrono::steady_clock;

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

reply overloaded(std::string_view message, std::chrono::seconds retry_after) {
  return unavailable("overloaded", message, retry_after);
}

reply draining() {
  return unavailable("draining", "server is shutting down; retry on another instance", std::chrono::seconds(1));
}

reply deadline_exceeded(std::chrono::milliseconds timeout) {
  return error_reply(504, "deadline_exceeded", "job did not finish within " + std::to_string(timeout.count()) + " ms");
}

long long as_ms(admission::duration d) { return std::chrono::ceil<std::chrono::milliseconds>(d).count(); }

// Which ended a job's race: its answer, its deadline, or its client leaving (race_result's
// alternatives, in that order).
constexpr std::size_t job_answered = 0;
constexpr std::size_t deadline_passed = 1;
constexpr std::size_t client_left = 2;

std::string mib(std::uint64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

// A job only returns nothing when its stop token fired, which the race treats before this.
answer completed(std::optional<job_output> value, job_timing timing, metrics& stats) {
  if (!value) {
    stats.count_job(job_outcome::drained);
    return {draining(), timing};
  }
  stats.count_job(job_outcome::completed);
  return {reply{value->status, std::move(value->body), value->content_type, std::move(value->headers)}, timing};
}

}  // namespace

job_pipeline::job_pipeline(const config& cfg, worker_pool& pool, admission& admit, flow_table& flows, metrics& stats,
                           logger* log)
    : cfg_(cfg), pool_(pool), admit_(admit), flows_(flows), stats_(stats), log_(log) {}

answer job_pipeline::run_inline(job_request request) {
  job_timing timing;
  const auto started = clock::now();
  try {
    auto value = request.job(std::stop_token{});
    timing.computing = clock::now() - started;
    stats_.observe_job(request.kind, timing.queued, timing.computing);
    return completed(std::move(value), timing, stats_);
  } catch (const std::exception& e) {
    stats_.count_job(job_outcome::failed);
    return {error_reply(500, "job_failed", e.what()), std::nullopt};
  }
}

net::awaitable<answer> job_pipeline::run(job_request request, clock::time_point received,
                                         net::awaitable<void> client_gone) {
  if (auto refused = refuse_what_never_fits(request)) co_return std::move(*refused);
  if (cfg_.mode == run_mode::inline_) co_return run_inline(std::move(request));
  auto verdict = admit(request, received);
  if (auto* refused = std::get_if<answer>(&verdict)) co_return std::move(*refused);
  auto& job = std::get<admitted>(verdict);
  if (job.runs_here) {
    stats_.count_inline_job();
    co_return run_inline(std::move(request));
  }
  if (auto refused = hold_memory(request, job)) co_return std::move(*refused);
  co_return co_await race(std::move(request), received, std::move(client_gone), job);
}

std::optional<answer> job_pipeline::refuse_what_never_fits(const job_request& request) const {
  // Whatever its deadline or the load, a job that can never get its memory is the request's
  // fault, not a moment's: it is refused outright rather than asked to retry.
  // A job that keeps its body needs the body's memory too.
  const auto needed = request.memory_bytes + request.body_memory.bytes();
  if (pool_.memory_budget() == 0 || needed <= pool_.memory_budget()) return std::nullopt;
  return answer{.r = error_reply(400, "invalid_argument",
                                 "this job needs " + mib(needed) + " of memory, more than the server's budget of " +
                                     mib(pool_.memory_budget()))};
}

std::variant<answer, job_pipeline::admitted> job_pipeline::admit(const job_request& request,
                                                                 clock::time_point received) {
  admitted job;
  job.cost = admit_.estimate(request.kind, request.cost_units);
  job.time_left = std::chrono::duration_cast<admission::duration>(request.timeout - (clock::now() - received));
  if (job.time_left <= admission::duration::zero()) {
    stats_.count_job(job_outcome::deadline_exceeded);
    return answer{.r = deadline_exceeded(request.timeout)};
  }
  // A job that costs less than the trip to a worker and back (by its kind's cost model), of a kind
  // that allows it, runs here, now: that takes the loop less time than the trip would, takes no
  // worker from anyone, and ends long before any deadline, drain or client could want it stopped.
  job.runs_here = request.may_run_inline && job.cost && cfg_.inline_max.count() > 0 && *job.cost <= cfg_.inline_max &&
                  request.memory_bytes == 0 && !request.body_memory;
  if (job.runs_here) return job;
  job.flow = &flows_.find(request.flow);
  // Read once: the tag checked for room is the tag the job is booked with.
  job.virtual_now = pool_.virtual_time();
  job.decision = admit_.decide(job.cost, job.time_left, flows_.expected_wait(*job.flow));
  // Only this thread adds to the queue, so a check here is exact, and refusing costs no more
  // than answering /healthz: no timer, no race, no trip through the pool. A full queue still
  // takes a job that fair queuing puts ahead of its last one (which then gives up its place).
  if (!pool_.has_room(flows_.next_tag(*job.flow, job.virtual_now))) {
    stats_.count_job(job_outcome::rejected_queue_full);
    flows_.count_refused(*job.flow);
    const auto wait = std::chrono::ceil<std::chrono::seconds>(job.decision.expected_wait);
    return answer{.r = overloaded("job queue is full; retry later", wait), .overloaded = true};
  }
  if (job.decision.hopeless) {
    // Alone on an idle worker, by its kind's model, it would still be late: refused now, not
    // after burning a worker until its deadline. Not a 503: the same request later would fare
    // no better; a longer timeout_ms would.
    stats_.count_job(job_outcome::rejected_would_miss_deadline);
    flows_.count_refused(*job.flow);
    return answer{.r = error_reply(504, "deadline_exceeded",
                                   "this job is expected to take " + std::to_string(as_ms(*job.cost)) +
                                       " ms, more than the " + std::to_string(as_ms(job.time_left)) +
                                       " ms left of its deadline; give it a longer timeout_ms")};
  }
  if (!job.decision.admit) {
    stats_.count_job(job_outcome::rejected_would_miss_deadline);
    flows_.count_refused(*job.flow);
    return answer{.r = overloaded("the work queued ahead would make this job miss its deadline; retry later",
                                  job.decision.retry_after),
                  .overloaded = true};
  }
  return job;
}

std::optional<answer> job_pipeline::hold_memory(job_request& request, admitted& job) {
  job.pool_memory = request.memory_bytes;
  if (!request.body_memory) return std::nullopt;  // the pool takes it when a worker is free
  // A job that keeps its request's body holds memory already, so it must not wait for more: a
  // job that waits for memory holds none, or two could wait for each other's. Its own memory is
  // taken now with the body's, or it is refused like a full queue.
  memory_lease memory;
  if (request.memory_bytes > 0) memory = pool_.try_lease(request.memory_bytes);
  if (request.memory_bytes > 0 && !memory) {
    stats_.count_job(job_outcome::rejected_memory);
    flows_.count_refused(*job.flow);
    return answer{.r = overloaded("the memory budget is taken by the jobs and uploads in flight; retry later",
                                  std::chrono::seconds(1)),
                  .overloaded = true};
  }
  // Held by the job, so given back when the worker is done with it (or it leaves the queue).
  auto held = std::make_shared<std::pair<memory_lease, memory_lease>>(std::move(request.body_memory), std::move(memory));
  request.job = [job = std::move(request.job), held = std::move(held)](std::stop_token stop) {
    return job(std::move(stop));
  };
  job.pool_memory = 0;
  return std::nullopt;
}

net::awaitable<answer> job_pipeline::race(job_request request, clock::time_point received,
                                          net::awaitable<void> client_gone, admitted& job) {
  const auto booking = flows_.book(*job.flow, job.cost, job.time_left, job.virtual_now);
  // Listed while it is in flight: a fatal signal's report names it.
  const inflight_request listed(request.request_id);
  net::steady_timer deadline(co_await net::this_coro::executor);
  deadline.expires_at(received + request.timeout);
  pending_job pending;
  pending.cost = job.cost;
  pending.submitted = clock::now();
  pending.tag = booking.tag;
  pending.deadline = &deadline;
  pending_.push_back(pending);
  // Cleanup is explicit, not RAII: a forced stop destroys suspended frames after the server state.
  auto settle = [&](clock::duration computed) {
    pending_.erase(pending_.iterator_to(pending));
    flows_.release(*job.flow, booking, std::chrono::duration_cast<flow_table::duration>(computed));
  };
  race_result raced;
  try {
    const job_ticket ticket{job.pool_memory, booking.tag, listed.slot(), received + request.timeout};
    raced = co_await (pool_.async_submit(std::move(request.job), ticket, use_tuple) ||
                      deadline.async_wait(use_tuple) || std::move(client_gone));
  } catch (...) {
    settle(clock::duration::zero());
    throw;
  }
  settle(raced.index() == job_answered ? std::get<1>(std::get<job_answered>(raced)).timing.computing
                                        : clock::duration::zero());
  if (raced.index() == client_left) {
    stats_.count_job(job_outcome::cancelled_client_gone);
    co_return answer{.r = error_reply(499, "client_closed", "client closed the connection"), .client_gone = true};
  }
  if (raced.index() == deadline_passed) {
    stats_.count_job(pending.cut_by_drain ? job_outcome::drained : job_outcome::deadline_exceeded);
    co_return answer{.r = pending.cut_by_drain ? draining() : deadline_exceeded(request.timeout)};
  }
  auto& [ec, result] = std::get<job_answered>(raced);
  co_return answer_of(ec, std::move(result), request, job, booking);
}

answer job_pipeline::answer_of(sys::error_code ec, job_result<std::optional<job_output>> result,
                               const job_request& request, admitted& job, const flow_table::booking& booking) {
  if (!ec || ec == pool_errc::job_failed) {
    stats_.observe_job(request.kind, result.timing.queued, result.timing.computing);
  }
  if (!ec) {
    if (result.value && result.value->calibrated_ns_per_unit) {
      admit_.set_rate(std::string(request.kind), *result.value->calibrated_ns_per_unit);
    } else if (result.value && result.value->representative) {
      admit_.learn(request.kind, request.cost_units, result.timing.computing);
    }
    auto done = completed(std::move(result.value), result.timing, stats_);
    done.estimate = job.cost;
    return done;
  }
  if (ec == pool_errc::queue_full) {
    // A job of a flow over its share gave its place to one of a flow under it: refused, and its
    // flow is not charged for it. (The flow is still there: nothing else ran since settle().)
    stats_.count_job(job_outcome::rejected_queue_full);
    stats_.count_pushed_out();
    flows_.count_refused(*job.flow);
    flows_.refund(*job.flow, booking);
    const auto wait = std::chrono::ceil<std::chrono::seconds>(job.decision.expected_wait);
    return answer{.r = overloaded("job queue is full; retry later", wait), .timing = result.timing, .overloaded = true};
  }
  if (ec == pool_errc::job_failed) {
    stats_.count_job(job_outcome::failed);
    return answer{.r = error_reply(500, "job_failed", result.failure), .timing = result.timing};
  }
  if (ec == pool_errc::helper_failed) {
    // The helper is gone with this job alone: the client gets a 502 of its own, the log the
    // helper's report (its signal, thread and stack).
    stats_.count_job(job_outcome::helper_crashed);
    log_helper_failure(request, result);
    return answer{.r = error_reply(502, result.failure_code, result.failure), .timing = result.timing};
  }
  // Shut down, or cancelled with the whole session.
  stats_.count_job(job_outcome::drained);
  return answer{.r = draining(), .timing = result.timing};
}

void job_pipeline::log_helper_failure(const job_request& request, const job_result<std::optional<job_output>>& result) {
  if (log_ == nullptr) return;
  nlohmann::json fields = {{"kind", request.kind},
                           {"route", request.route},
                           {"request_id", request.request_id},
                           {"code", result.failure_code},
                           {"error", result.failure}};
  if (!result.failure_details.empty()) {
    // The helper's own report, a JSON object unless the helper was too far gone to write one.
    auto report = nlohmann::json::parse(result.failure_details, nullptr, false);
    fields["report"] = report.is_object() ? std::move(report) : nlohmann::json(result.failure_details);
  }
  log_->write(log_level::error, "helper_died", fields);
}

namespace {

void cut(pending_job& job) {
  job.cut_by_drain = true;
  job.deadline->cancel();  // ends the race: the job leaves the queue or is stopped
}

}  // namespace

memory_lease job_pipeline::lease_body(std::uint64_t bytes) {
  auto lease = pool_.try_lease(bytes);
  if (!lease) stats_.count_job(job_outcome::rejected_memory);
  return lease;
}

std::size_t job_pipeline::cut_jobs_that_cannot_finish(std::chrono::milliseconds drain_timeout) {
  const auto now = clock::now();
  // In the queue's order: by tag, and in submission order among equal tags.
  std::vector<pending_job*> queue;
  queue.reserve(pending_.size());
  for (auto& job : pending_) queue.push_back(&job);
  std::stable_sort(queue.begin(), queue.end(), [](const pending_job* a, const pending_job* b) { return a->tag < b->tag; });
  std::vector<admission::duration> lanes(pool_.workers(), admission::duration::zero());
  std::size_t index = 0;
  std::size_t cut_count = 0;
  // Cutting a job cancels its timer, whose handler — the end of the race, which unlists the job —
  // runs later on this thread: the list does not change under the loop.
  for (auto* job : queue) {
    auto& lane = *std::min_element(lanes.begin(), lanes.end());
    if (index++ < lanes.size()) {
      if (job->cost) lane = std::max(admission::duration::zero(), *job->cost - (now - job->submitted));
      continue;
    }
    if (!job->cost) continue;  // no estimate: it gets until the drain timeout
    if (lane + *job->cost > drain_timeout) {
      cut(*job);
      ++cut_count;
    } else {
      lane += *job->cost;
    }
  }
  return cut_count;
}

void job_pipeline::cut_all() {
  for (auto& job : pending_) cut(job);
}

}  // namespace crunch
