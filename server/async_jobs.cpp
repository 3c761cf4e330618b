#include "server/async_jobs.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>
#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <ctime>

namespace crunch {

namespace {

using namespace net::experimental::awaitable_operators;  // NOLINT: for `||` in this file only
using steady = std::chrono::steady_clock;
using wall = std::chrono::system_clock;

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t fingerprint_slice = 256 * 1024;
// An idempotency record: its key, fingerprint and bookkeeping, besides an answer it keeps.
constexpr std::uint64_t key_record_bytes = 512;
// A job the pipeline refused for load is tried again this much later.
constexpr auto retry_pause = std::chrono::milliseconds(50);
constexpr std::size_t id_bytes = 16;  // 128 random bits

}  // namespace

std::string new_job_id() {
  unsigned char raw[id_bytes];
  randombytes_buf(raw, sizeof raw);
  char text[sodium_base64_ENCODED_LEN(id_bytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
  sodium_bin2base64(text, sizeof text, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  return text;
}

// "2026-12-07T13:45:00.123Z"
std::string rfc3339(std::chrono::system_clock::time_point t) {
  const auto since = t.time_since_epoch();
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(since - seconds).count();
  const std::time_t tt = seconds.count();
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char text[64];
  std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return text;
}

namespace {

std::uint64_t size_of(const reply& r) {
  std::uint64_t n = r.body.capacity();
  for (const auto& [name, value] : r.headers) n += name.size() + value.size() + 64;
  return n;
}

}  // namespace

net::awaitable<void> until_cancelled(std::shared_ptr<net::steady_timer> signal) {
  co_await signal->async_wait(use_tuple);
}

namespace {

std::string key_of(std::string_view owner, std::string_view key) {
  std::string k(owner);
  k += '\n';
  k += key;
  return k;
}

reply not_found() { return error_reply(404, "not_found", "no such job (it may have expired)"); }

}  // namespace

const char* to_string(job_status status) noexcept {
  switch (status) {
    case job_status::queued: return "queued";
    case job_status::running: return "running";
    case job_status::succeeded: return "succeeded";
    case job_status::failed: return "failed";
    case job_status::cancelled: return "cancelled";
    case job_status::expired: return "expired";
  }
  return "?";
}

preferences parse_prefer(const std::vector<std::string_view>& values) {
  preferences p;
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
  auto iequal = [](std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
  };
  for (auto value : values) {
    while (!value.empty()) {
      const auto comma = value.find(',');
      auto item = trim(value.substr(0, comma));
      value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
      item = trim(item.substr(0, item.find(';')));  // parameters of a preference: none understood
      const auto eq = item.find('=');
      const auto name = trim(item.substr(0, eq));
      auto arg = eq == std::string_view::npos ? std::string_view{} : trim(item.substr(eq + 1));
      if (arg.size() >= 2 && arg.front() == '"' && arg.back() == '"') arg = arg.substr(1, arg.size() - 2);
      if (iequal(name, "respond-async") && eq == std::string_view::npos) {
        p.respond_async = true;
      } else if (iequal(name, "wait") && !arg.empty() && arg.size() <= 9 &&
                 std::all_of(arg.begin(), arg.end(), [](unsigned char c) { return std::isdigit(c); })) {
        if (!p.wait) p.wait = std::chrono::seconds(std::stoll(std::string(arg)));  // the first one counts
      }
    }
  }
  return p;
}

std::optional<std::string> parse_idempotency_key(std::string_view value) {
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
    value = value.substr(1, value.size() - 2);
    if (value.find_first_of("\"\\") != std::string_view::npos) return std::nullopt;  // escapes: not worth it
  }
  if (value.empty() || value.size() > 255) return std::nullopt;
  if (!std::all_of(value.begin(), value.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; })) {
    return std::nullopt;
  }
  return std::string(value);
}

fingerprinter::fingerprinter() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium could not start");
  randombytes_buf(key_.data(), key_.size());
}

fingerprinter::fingerprinter(const std::array<unsigned char, 32>& key) : key_(key) {}

net::awaitable<std::string> fingerprinter::fingerprint(std::string_view method, std::string_view target,
                                                       std::string_view content_type, std::string_view body) const {
  crypto_generichash_state state;
  crypto_generichash_init(&state, key_.data(), key_.size(), 32);
  auto add = [&](std::string_view part) {
    crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(part.data()), part.size());
    const unsigned char separator = 0;
    crypto_generichash_update(&state, &separator, 1);
  };
  add(method);
  add(target);
  add(content_type);
  for (std::size_t at = 0; at < body.size(); at += fingerprint_slice) {
    if (at > 0) co_await net::post(co_await net::this_coro::executor, net::use_awaitable);
    const auto slice = body.substr(at, fingerprint_slice);
    crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(slice.data()), slice.size());
  }
  std::string out(32, '\0');
  crypto_generichash_final(&state, reinterpret_cast<unsigned char*>(out.data()), out.size());
  co_return out;
}

struct async_jobs::job {
  std::string id;
  std::string owner;
  std::string flow;
  std::string_view kind;
  std::string_view route;
  std::string request_id;
  job_status status = job_status::queued;
  wall::time_point created{};
  wall::time_point started{};
  wall::time_point finished{};
  steady::time_point received{};
  steady::time_point running_since{};
  std::chrono::milliseconds timeout{};
  std::optional<admission::duration> estimate;
  // While it has not ended: what runs, shared so that a dispatch the pipeline refuses can be
  // tried again; and what it needs besides its body.
  std::shared_ptr<job_function> run;
  double cost_units = 0;
  std::uint64_t working_memory = 0;
  bool may_run_inline = false;
  memory_lease body_memory;
  std::optional<reply> answer;  // once ended
  memory_lease memory;          // the record's share of the memory budget
  memory_lease answer_memory;   // its answer's, when the budget had room for it
  steady::time_point ended_at{};
  std::uint64_t counted = 0;    // in bytes_
  std::shared_ptr<net::steady_timer> stop;   // while running: cancelling it stops the job
  std::shared_ptr<net::steady_timer> ended;  // cancelled when it ends: wakes waiters
  bool cancel_requested = false;
  std::optional<callback_url> callback;  // where its status goes once it has ended
};

struct async_jobs::idempotency_record {
  std::string fingerprint;
  std::string job;              // an asynchronous job it names
  std::optional<reply> answer;  // a synchronous answer it keeps
  bool in_flight = true;        // claimed by a synchronous request not answered yet
  memory_lease memory;          // the record's share of the memory budget
  memory_lease answer_memory;   // its answer's
  std::uint64_t counted = 0;
};

async_jobs::async_jobs(net::any_io_executor io, async_limits limits, job_pipeline& pipeline, worker_pool& pool,
                       const admission& admit, std::size_t workers)
    : io_(std::move(io)),
      limits_(limits),
      pipeline_(pipeline),
      pool_(pool),
      admit_(admit),
      workers_(std::max<std::size_t>(1, workers)),
      retry_timer_(std::make_unique<net::steady_timer>(io_)),
      sweep_timer_(std::make_unique<net::steady_timer>(io_)) {}

async_jobs::~async_jobs() = default;

void async_jobs::in_backlog(const job& j, int change) {
  backlog_size_ = change > 0 ? backlog_size_ + 1 : backlog_size_ - 1;
  if (j.estimate) backlog_seconds_ += change * std::chrono::duration<double>(*j.estimate).count();
  if (backlog_size_ == 0) backlog_seconds_ = 0;  // no drift from the sums
}

bool async_jobs::take(std::uint64_t bytes, memory_lease& lease) {
  if (bytes_ + bytes > limits_.store_bytes) return false;
  lease = pool_.try_lease(bytes);
  return static_cast<bool>(lease);
}

async_jobs::submitted async_jobs::submit(job_request request, std::string owner, steady::time_point received,
                                         std::optional<callback_url> callback) {
  if (stopping_) {
    return {{}, unavailable("draining", "server is shutting down; retry on another instance", std::chrono::seconds(1))};
  }
  auto j = std::make_unique<job>();
  const std::uint64_t need = record_bytes + request.body_memory.bytes();
  // The body's memory is the request's already; the store counts it, and takes the record's.
  if (bytes_ + need > limits_.store_bytes || !take(record_bytes, j->memory)) {
    ++refused_;
    const auto wait = std::chrono::ceil<std::chrono::seconds>(std::chrono::duration<double>(backlog_seconds()) /
                                                              static_cast<double>(workers_));
    return {{}, unavailable("store_full",
                            "the job store is full (--jobs-store-bytes, or the memory budget); retry later",
                            std::max(std::chrono::seconds(1), std::min(wait, std::chrono::seconds(60))))};
  }
  j->id = new_job_id();
  j->owner = std::move(owner);
  j->flow = std::move(request.flow);
  j->kind = request.kind;
  j->route = request.route;
  j->request_id = std::string(request.request_id);
  j->created = wall::now();
  j->received = received;
  j->timeout = request.timeout;
  j->estimate = admit_.estimate(request.kind, request.cost_units);
  j->run = std::make_shared<job_function>(std::move(request.job));
  j->cost_units = request.cost_units;
  j->working_memory = request.memory_bytes;
  j->may_run_inline = request.may_run_inline;
  j->body_memory = std::move(request.body_memory);
  j->callback = std::move(callback);
  j->counted = need;
  j->ended = std::make_shared<net::steady_timer>(io_, steady::time_point::max());
  bytes_ += need;
  ++accepted_;
  auto& queue = backlog_by_flow_[j->flow];
  if (queue.empty()) turns_.push_back(j->flow);
  queue.push_back(j.get());
  in_backlog(*j, +1);
  const auto deadline = received + j->timeout;
  expiries_.emplace(deadline, j->id);
  schedule_sweep(deadline);
  auto id = j->id;
  jobs_.emplace(id, std::move(j));
  pump();
  return {std::move(id), {}};
}

void async_jobs::pump() {
  while (!stopping_ && !retry_armed_ && running_ < workers_ && !turns_.empty()) {
    auto flow = std::move(turns_.front());
    turns_.pop_front();
    auto it = backlog_by_flow_.find(flow);
    auto& queue = it->second;
    job* next = queue.front();
    // Its working memory, taken now or not at all: a job that waits in the pool for memory
    // while its body holds some could wait for another's.
    memory_lease working;
    if (next->working_memory > 0) {
      working = pool_.try_lease(next->working_memory);
      if (!working) {
        turns_.push_front(std::move(flow));
        retry_later();
        return;
      }
    }
    queue.pop_front();
    in_backlog(*next, -1);
    if (queue.empty()) {
      backlog_by_flow_.erase(it);
    } else {
      turns_.push_back(std::move(flow));
    }
    next->status = job_status::running;
    if (next->started == wall::time_point{}) next->started = wall::now();
    next->running_since = steady::now();
    next->stop = std::make_shared<net::steady_timer>(io_, steady::time_point::max());
    ++running_;
    net::co_spawn(io_, run(*next, std::move(working)), net::detached);
  }
}

void async_jobs::retry_later() {
  if (retry_armed_) return;
  retry_armed_ = true;
  retry_timer_->expires_after(retry_pause);
  retry_timer_->async_wait([this](sys::error_code ec) {
    if (ec) return;
    retry_armed_ = false;
    pump();
  });
}

net::awaitable<void> async_jobs::run(job& j, memory_lease working) {
  job_request request{j.kind,
                      j.route,
                      [run = j.run](std::stop_token stop) { return (*run)(std::move(stop)); },
                      j.cost_units,
                      0,
                      j.timeout,
                      std::move(working),
                      j.flow,
                      j.may_run_inline,
                      j.request_id};
  auto a = co_await pipeline_.run(std::move(request), j.received, until_cancelled(j.stop));
  --running_;
  j.stop.reset();
  if (a.overloaded && !j.cancel_requested && !stopping_) {
    // Refused for load: back to the head of its flow, tried again a little later.
    ++retried_;
    j.status = job_status::queued;
    auto& queue = backlog_by_flow_[j.flow];
    if (queue.empty()) turns_.push_front(j.flow);
    queue.push_front(&j);
    in_backlog(j, +1);
    retry_later();
    co_return;
  }
  job_status status = job_status::failed;
  if (a.client_gone) {
    a.r = j.cancel_requested
              ? error_reply(409, "job_cancelled", "the job was cancelled (DELETE) before it finished")
              : unavailable("draining", "the server shut down before the job finished", std::chrono::seconds(1));
    status = j.cancel_requested ? job_status::cancelled : job_status::failed;
  } else if (a.r.status >= 200 && a.r.status < 300) {
    status = job_status::succeeded;
  } else if (a.r.status == 504) {
    status = job_status::expired;
  }
  finish(j, status, std::move(a.r));
  pump();
}

void async_jobs::finish(job& j, job_status status, reply answer) {
  j.status = status;
  j.finished = wall::now();
  j.ended_at = steady::now();
  j.run.reset();
  j.body_memory.release();
  bytes_ -= j.counted;
  j.counted = record_bytes;
  // The answer is kept whatever its size: it was promised when the job was accepted. What it
  // takes beyond the budget's room is counted in the store all the same, which then refuses new
  // jobs until some expire.
  const auto size = size_of(answer);
  j.answer_memory = pool_.try_lease(size);
  j.counted += size;
  bytes_ += j.counted;
  answer.route = "job_result";
  j.answer = std::move(answer);
  ++ended_[static_cast<std::size_t>(status)];
  notify(j);
  if (j.callback && callbacks_ != nullptr && !stopping_) {
    // A Standard Webhooks message: its type, when, and the job's status document.
    nlohmann::json message = {{"type", std::string("job.") + to_string(status)},
                              {"timestamp", rfc3339(j.finished)},
                              {"data", nlohmann::json::parse(status_document(j))}};
    callbacks_->deliver(std::move(*j.callback), j.id, message.dump());
    j.callback.reset();
  }
  const auto expires = j.ended_at + limits_.keep;
  expiries_.emplace(expires, j.id);
  schedule_sweep(expires);
}

void async_jobs::notify(job& j) {
  if (j.ended) j.ended->cancel();
}

void async_jobs::schedule_sweep(steady::time_point at) {
  if (stopping_ || at >= sweep_at_) return;
  sweep_at_ = at;
  sweep_timer_->expires_at(at);
  sweep_timer_->async_wait([this](sys::error_code ec) {
    if (ec) return;
    sweep_at_ = steady::time_point::max();
    sweep();
  });
}

void async_jobs::sweep() {
  const auto now = steady::now();
  while (!expiries_.empty() && expiries_.begin()->first <= now) {
    const auto name = std::move(expiries_.begin()->second);
    expiries_.erase(expiries_.begin());
    if (name.starts_with("k:")) {
      auto it = keys_.find(std::string_view(name).substr(2));
      if (it != keys_.end() && !it->second.in_flight) {
        bytes_ -= it->second.counted;
        keys_.erase(it);
      }
      continue;
    }
    auto it = jobs_.find(name);
    if (it == jobs_.end()) continue;
    auto& j = *it->second;
    if (j.status == job_status::queued && j.received + j.timeout <= now) {
      // Its deadline passed in the backlog: it leaves it (pump skips it) and ends.
      auto& queue = backlog_by_flow_[j.flow];
      queue.erase(std::find(queue.begin(), queue.end(), &j));
      in_backlog(j, -1);
      if (queue.empty()) {
        backlog_by_flow_.erase(j.flow);
        turns_.erase(std::find(turns_.begin(), turns_.end(), j.flow));
      }
      finish(j, job_status::expired,
             error_reply(504, "deadline_exceeded",
                         "job did not finish within " + std::to_string(j.timeout.count()) + " ms"));
    } else if (j.answer && j.ended_at + limits_.keep <= now) {
      forget(j);
      jobs_.erase(it);
    }
  }
  if (!expiries_.empty()) schedule_sweep(expiries_.begin()->first);
}

void async_jobs::forget(job& j) {
  bytes_ -= j.counted;
  j.counted = 0;
}

async_jobs::job* async_jobs::find(std::string_view owner, std::string_view id) const {
  const auto it = jobs_.find(std::string(id));
  if (it == jobs_.end() || it->second->owner != owner) return nullptr;
  return it->second.get();
}

std::string async_jobs::status_document(const job& j) const {
  nlohmann::json doc = {{"id", j.id},
                        {"kind", j.kind},
                        {"operation", j.route},
                        {"status", to_string(j.status)},
                        {"created_at", rfc3339(j.created)},
                        {"deadline_at", rfc3339(j.created + j.timeout)},
                        {"estimate_ms", j.estimate ? nlohmann::json(std::chrono::duration<double, std::milli>(*j.estimate).count())
                                                   : nlohmann::json(nullptr)}};
  if (j.started != wall::time_point{}) doc["started_at"] = rfc3339(j.started);
  if (j.answer) {
    doc["finished_at"] = rfc3339(j.finished);
    doc["expires_at"] = rfc3339(j.finished + limits_.keep);
    doc["result"] = {{"href", "/v1/jobs/" + j.id + "/result"},
                     {"status", j.answer->status},
                     {"content_type", j.answer->content_type},
                     {"bytes", j.answer->body.size()}};
    if (j.status != job_status::succeeded) {
      auto error = nlohmann::json::parse(j.answer->body, nullptr, false);
      if (error.is_object() && error.contains("error")) doc["error"] = error["error"];
    }
  }
  return doc.dump();
}

namespace {

std::chrono::seconds retry_after_for(std::optional<admission::duration> left, double backlog_s, std::size_t workers) {
  double s = left ? std::chrono::duration<double>(*left).count() : 1.0;
  s += backlog_s / static_cast<double>(std::max<std::size_t>(1, workers));
  return std::chrono::seconds(std::clamp<long long>(static_cast<long long>(std::ceil(s)), 1, 60));
}

}  // namespace

reply async_jobs::accepted(std::string_view id) const {
  const auto it = jobs_.find(std::string(id));
  if (it == jobs_.end()) return not_found();
  const auto& j = *it->second;
  reply r{202, status_document(j), "application/json", {}};
  r.headers.emplace_back("Location", "/v1/jobs/" + j.id);
  r.headers.emplace_back("Preference-Applied", "respond-async");
  if (!j.answer) r.headers.emplace_back("Retry-After", std::to_string(retry_after_for(j.estimate, backlog_seconds(), workers_).count()));
  return r;
}

reply async_jobs::status(std::string_view owner, std::string_view id) const {
  const auto* j = find(owner, id);
  if (j == nullptr) return not_found();
  reply r{200, status_document(*j), "application/json", {}};
  r.headers.emplace_back("Cache-Control", "no-store");
  if (!j->answer) {
    std::optional<admission::duration> left = j->estimate;
    if (left && j->status == job_status::running) {
      left = std::max(admission::duration::zero(), *left - (steady::now() - j->running_since));
    }
    r.headers.emplace_back("Retry-After", std::to_string(retry_after_for(left, j->status == job_status::queued ? backlog_seconds() : 0, workers_).count()));
  }
  return r;
}

reply async_jobs::result(std::string_view owner, std::string_view id) const {
  const auto* j = find(owner, id);
  if (j == nullptr) return not_found();
  if (j->status == job_status::succeeded) return *j->answer;
  if (!j->answer) {
    auto r = error_reply(409, "job_not_finished",
                         std::string("the job is ") + to_string(j->status) + "; its result comes once it has ended");
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }
  // It ended without a result: its own error, whose status the job's status document gives.
  const auto error = nlohmann::json::parse(j->answer->body, nullptr, false);
  if (error.is_object() && error.contains("error") && error["error"].is_object()) {
    return error_reply(409, error["error"].value("code", "job_failed"),
                       std::string("the job ") + to_string(j->status) + ": " + error["error"].value("message", ""));
  }
  return error_reply(409, "job_failed", std::string("the job ") + to_string(j->status));
}

net::awaitable<bool> async_jobs::wait(std::string owner, std::string id, std::chrono::milliseconds how_long) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second->owner != owner) co_return false;
  if (it->second->answer) co_return true;
  auto ended = it->second->ended;  // outlives the record, and the store
  net::steady_timer timer(co_await net::this_coro::executor, how_long);
  co_await (ended->async_wait(use_tuple) || timer.async_wait(use_tuple));
  // A stopping store wakes its waiters too: look again.
  it = jobs_.find(id);
  co_return it != jobs_.end() && it->second->answer.has_value();
}

net::awaitable<reply> async_jobs::cancel(std::string owner, std::string id) {
  auto* j = find(owner, id);
  if (j == nullptr) co_return not_found();
  if (j->status == job_status::queued) {
    auto& queue = backlog_by_flow_[j->flow];
    queue.erase(std::find(queue.begin(), queue.end(), j));
    in_backlog(*j, -1);
    if (queue.empty()) {
      backlog_by_flow_.erase(j->flow);
      turns_.erase(std::find(turns_.begin(), turns_.end(), j->flow));
    }
    finish(*j, job_status::cancelled, error_reply(409, "job_cancelled", "the job was cancelled (DELETE) before it ran"));
  } else if (j->status == job_status::running) {
    j->cancel_requested = true;
    if (j->stop) j->stop->cancel();
    co_await wait(owner, id, std::chrono::hours(1));
  }
  co_return status(owner, id);
}

async_jobs::replay async_jobs::claim_key(const std::string& owner, const std::string& key,
                                         const std::string& fingerprint) {
  const auto name = key_of(owner, key);
  auto it = keys_.find(name);
  if (it != keys_.end()) {
    auto& record = it->second;
    if (record.fingerprint != fingerprint) {
      return {error_reply(422, "idempotency_key_reused",
                          "this Idempotency-Key was sent before with a different request; use a new key"),
              {}};
    }
    if (!record.job.empty() && jobs_.contains(record.job)) {
      ++replays_;
      return {std::nullopt, record.job};
    }
    if (record.answer) {
      ++replays_;
      auto r = *record.answer;
      r.headers.emplace_back("Idempotent-Replayed", "true");
      return {std::move(r), {}};
    }
    if (record.in_flight) {
      auto r = error_reply(409, "idempotency_key_in_use",
                           "a request with this Idempotency-Key is still running; retry once it has been answered");
      r.headers.emplace_back("Retry-After", "1");
      return {std::move(r), {}};
    }
    bytes_ -= record.counted;
    keys_.erase(it);  // it named a job that has expired: the key is free again
  }
  idempotency_record record;
  record.fingerprint = fingerprint;
  record.counted = key_record_bytes + name.size();
  if (!take(record.counted, record.memory)) {
    ++refused_;
    return {unavailable("store_full", "the job store is full (--jobs-store-bytes, or the memory budget); retry later",
                        std::chrono::seconds(1)),
            {}};
  }
  bytes_ += record.counted;
  keys_.emplace(name, std::move(record));
  return {};
}

void async_jobs::bind_key(const std::string& owner, const std::string& key, const std::string& id) {
  const auto name = key_of(owner, key);
  auto it = keys_.find(name);
  if (it == keys_.end()) return;
  it->second.job = id;
  it->second.in_flight = false;
  // Kept as long as its job may be: the job's own expiry is at most its deadline plus --jobs-keep.
  const auto j = jobs_.find(id);
  const auto expires = steady::now() + (j != jobs_.end() ? j->second->timeout : std::chrono::milliseconds(0)) + limits_.keep;
  expiries_.emplace(expires, "k:" + name);
  schedule_sweep(expires);
}

void async_jobs::settle_key(const std::string& owner, const std::string& key, const reply& answer) {
  const auto name = key_of(owner, key);
  auto it = keys_.find(name);
  if (it == keys_.end()) return;
  if (answer.status >= 500 || answer.status == 499 || answer.status == 409) {
    release_key(owner, key);
    return;
  }
  auto& record = it->second;
  const auto size = size_of(answer);
  // Kept if the store has room for it; else the key is let go: a retry runs again.
  memory_lease more;
  if (!take(size, more)) {
    release_key(owner, key);
    return;
  }
  record.answer = answer;
  record.in_flight = false;
  record.counted += size;
  bytes_ += size;
  record.answer_memory = std::move(more);
  const auto expires = steady::now() + limits_.keep;
  expiries_.emplace(expires, "k:" + name);
  schedule_sweep(expires);
}

void async_jobs::release_key(const std::string& owner, const std::string& key) {
  auto it = keys_.find(key_of(owner, key));
  if (it == keys_.end()) return;
  bytes_ -= it->second.counted;
  keys_.erase(it);
}

void async_jobs::stop() {
  stopping_ = true;
  retry_timer_->cancel();
  sweep_timer_->cancel();
  for (auto& [id, j] : jobs_) {
    if (j->stop) j->stop->cancel();
    notify(*j);
  }
}

job_backlog async_jobs::backlog_figures() const {
  double oldest = 0;
  const auto now = steady::now();
  for (const auto& [flow, queue] : backlog_by_flow_) {
    if (!queue.empty()) oldest = std::max(oldest, std::chrono::duration<double>(now - queue.front()->received).count());
  }
  return {backlog_size_, backlog_seconds(), oldest};
}

void async_jobs::write_metrics(std::ostream& out, const job_backlog* shared) const {
  exposition e(out);
  e.single("crunch_async_jobs_accepted_total", "counter", "Asynchronous jobs accepted (202).", static_cast<double>(accepted_));
  e.single("crunch_async_jobs_refused_total", "counter",
           "Asynchronous jobs and idempotency keys refused because the job store was full (503).",
           static_cast<double>(refused_));
  e.single("crunch_async_jobs_retried_total", "counter",
           "Dispatches of an asynchronous job that the pipeline refused for load; the job went back to the backlog.",
           static_cast<double>(retried_));
  e.header("crunch_async_jobs_ended_total", "counter", "Asynchronous jobs ended, by status.");
  for (auto s : {job_status::succeeded, job_status::failed, job_status::cancelled, job_status::expired}) {
    e.sample("crunch_async_jobs_ended_total", label("status", to_string(s)), static_cast<double>(ended_[static_cast<std::size_t>(s)]));
  }
  e.single("crunch_async_jobs_running", "gauge", "Asynchronous jobs handed to the workers now.", static_cast<double>(running_));
  e.single("crunch_async_jobs_stored", "gauge", "Asynchronous jobs the store holds: queued, running and ended.",
           static_cast<double>(jobs_.size()));
  const auto backlog = shared != nullptr ? *shared : backlog_figures();
  e.single("crunch_async_backlog_jobs", "gauge", "Asynchronous jobs waiting in the backlog: the signal to scale on.",
           static_cast<double>(backlog.jobs));
  e.single("crunch_async_backlog_seconds", "gauge",
           "Estimated seconds of work waiting in the backlog, on one worker.", backlog.seconds);
  e.single("crunch_async_backlog_oldest_seconds", "gauge", "Age of the oldest job waiting in the backlog.",
           backlog.oldest_seconds);
  e.single("crunch_async_store_bytes", "gauge", "Bytes the job store holds: records, queued bodies, answers, idempotency records.",
           static_cast<double>(bytes_));
  e.single("crunch_async_store_limit_bytes", "gauge", "What the job store may hold (--jobs-store-bytes).",
           static_cast<double>(limits_.store_bytes));
  e.single("crunch_idempotency_keys", "gauge", "Idempotency keys the store holds.", static_cast<double>(keys_.size()));
  e.single("crunch_idempotent_replays_total", "counter",
           "Requests answered from an Idempotency-Key's stored job or answer, without running again.",
           static_cast<double>(replays_));
}

}  // namespace crunch
