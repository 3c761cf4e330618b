#include "server/shared_jobs.hpp"

#include "server/callbacks.hpp"

#include "server/metrics.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>
#include <sodium.h>

#include <unistd.h>

#include <algorithm>

namespace crunch {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr auto poll_every = std::chrono::milliseconds(50);
constexpr auto backlog_every = std::chrono::seconds(1);
using wall = std::chrono::system_clock;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(wall::now().time_since_epoch()).count();
}

std::int64_t number(const redis_job_fields& f, const char* name) {
  const auto it = f.find(name);
  if (it == f.end()) return 0;
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    return 0;
  }
}

std::string field(const redis_job_fields& f, const char* name) {
  const auto it = f.find(name);
  return it == f.end() ? std::string() : it->second;
}

std::string at_ms(std::int64_t ms) { return rfc3339(wall::time_point(std::chrono::milliseconds(ms))); }

bool has_ended(const std::string& status) { return !status.empty() && status != "queued" && status != "running"; }

// A callback API as an awaitable. The state is shared with the callback, which may come after
// the waiting coroutine is gone (a drain destroys it).
template <typename T, typename Start>
net::awaitable<T> await_callback(Start start) {
  struct state {
    T value{};
    bool done = false;
    std::unique_ptr<net::steady_timer> timer;
  };
  auto st = std::make_shared<state>();
  st->timer = std::make_unique<net::steady_timer>(co_await net::this_coro::executor, net::steady_timer::time_point::max());
  start([st](T v) {
    st->value = std::move(v);
    st->done = true;
    st->timer->cancel();
  });
  if (!st->done) co_await st->timer->async_wait(use_tuple);
  co_return std::move(st->value);
}

net::awaitable<void> pause(std::chrono::milliseconds how_long) {
  net::steady_timer t(co_await net::this_coro::executor, how_long);
  co_await t.async_wait(use_tuple);
}

// What a status needs, and a result: never the request's body.
const std::vector<std::string> status_fields = {"status",      "owner",  "kind",          "route",
                                                "created_ms",  "timeout_ms", "started_at", "finished_ms",
                                                "replica",     "result_status", "result_type", "result_bytes",
                                                "error"};
const std::vector<std::string> result_fields = {"status", "owner", "result_status", "result_type", "result_headers",
                                                "result_body", "error"};

constexpr std::array<const char*, 2> wait_fields = {"status", "owner"};

// The end of a job DELETE stopped: its status and its answer, the synchronous form's 409.
redis_job_fields cancelled_end(std::string_view message) {
  const auto error = nlohmann::json{{"code", "job_cancelled"}, {"message", message}};
  auto body = nlohmann::json{{"error", error}}.dump();
  return {{"status", "cancelled"},
          {"result_status", "409"},
          {"result_type", "application/json"},
          {"result_bytes", std::to_string(body.size())},
          {"result_body", std::move(body)},
          {"error", error.dump()},
          {"finished_ms", std::to_string(now_ms())}};
}

reply not_found() { return error_reply(404, "not_found", "no such job (it may have expired)"); }

}  // namespace

shared_jobs::shared_jobs(net::any_io_executor io, redis_address address, const router& routes, job_pipeline& pipeline,
                         worker_pool& pool, std::size_t workers, std::chrono::milliseconds keep,
                         std::chrono::milliseconds claim_after, logger& log)
    : io_(io),
      link_(io, std::move(address)),
      consumer_([] {
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        return std::string(host) + ":" + std::to_string(::getpid());
      }()),
      jobs_(link_, consumer_),
      routes_(routes),
      pipeline_(pipeline),
      pool_(pool),
      workers_(workers),
      keep_(keep),
      claim_after_(claim_after),
      log_(log),
      tick_(std::make_shared<net::steady_timer>(io)) {}

shared_jobs::~shared_jobs() = default;

void shared_jobs::start() { net::co_spawn(io_, consume(), net::detached); }

void shared_jobs::stop() {
  stopping_ = true;
  tick_->cancel();
  for (auto& [entry, r] : running_) r.stop->cancel();
}

net::awaitable<redis_job_fields> shared_jobs::read(const std::string& id) {
  co_return co_await await_callback<redis_job_fields>([&](auto done) { jobs_.read(id, std::move(done)); });
}

net::awaitable<redis_job_fields> shared_jobs::read(const std::string& id, std::vector<std::string> names) {
  co_return co_await await_callback<redis_job_fields>([&](auto done) { jobs_.read(id, names, std::move(done)); });
}

net::awaitable<std::optional<std::string>> shared_jobs::fingerprint(std::string_view method, std::string_view target,
                                                                    std::string_view content_type,
                                                                    std::string_view body) const {
  if (!fingerprints_) co_return std::nullopt;
  const auto raw = co_await fingerprints_->fingerprint(method, target, content_type, body);
  std::string hex(raw.size() * 2 + 1, '\0');
  sodium_bin2hex(hex.data(), hex.size(), reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
  hex.pop_back();
  co_return hex;
}

reply shared_jobs::status_reply(const redis_job_fields& f, const std::string& id, unsigned code) const {
  const auto status = field(f, "status");
  const auto created = number(f, "created_ms");
  nlohmann::json doc = {{"id", id},
                        {"kind", field(f, "kind")},
                        {"operation", field(f, "route")},
                        {"status", status},
                        {"created_at", at_ms(created)},
                        {"deadline_at", at_ms(created + number(f, "timeout_ms"))},
                        {"estimate_ms", nullptr}};  // known once a replica admits it
  if (f.contains("started_at")) doc["started_at"] = at_ms(number(f, "started_at"));
  if (f.contains("replica")) doc["replica"] = field(f, "replica");
  if (f.contains("finished_ms")) {
    doc["finished_at"] = at_ms(number(f, "finished_ms"));
    doc["expires_at"] = at_ms(number(f, "finished_ms") + keep_.count());
  }
  if (f.contains("result_status")) {
    doc["result"] = {{"href", "/v1/jobs/" + id + "/result"},
                     {"status", number(f, "result_status")},
                     {"content_type", field(f, "result_type")},
                     {"bytes", number(f, "result_bytes")}};
  }
  if (f.contains("error")) {
    if (auto error = nlohmann::json::parse(field(f, "error"), nullptr, false); error.is_object()) doc["error"] = error;
  }
  reply r{code, doc.dump(), "application/json", {}};
  if (code == 202) {
    r.headers.emplace_back("Location", "/v1/jobs/" + id);
    r.headers.emplace_back("Preference-Applied", "respond-async");
  } else {
    r.headers.emplace_back("Cache-Control", "no-store");
  }
  if (!has_ended(status)) r.headers.emplace_back("Retry-After", "1");
  return r;
}

net::awaitable<reply> shared_jobs::submit(stored_request r, std::chrono::milliseconds wait) {
  const auto owner = r.owner;
  auto queued = co_await queue(std::move(r));
  const auto& id = queued.second;
  if (queued.first.status == 202 && wait.count() > 0 && co_await this->wait(owner, id, wait)) {
    co_return co_await result(owner, id);
  }
  co_return std::move(queued.first);
}

net::awaitable<std::pair<reply, std::string>> shared_jobs::queue(stored_request r) {
  if (r.idempotency_key && r.fingerprint.empty()) {
    co_return std::pair{unavailable("store_unavailable", "the shared job store (Redis) is not reachable yet; retry",
                                    std::chrono::seconds(1)),
                        std::string()};
  }
  const auto id = new_job_id();
  redis_job_fields fields = {{"status", "queued"},
                             {"owner", r.owner},
                             {"method", r.method},
                             {"target", r.target},
                             {"content_type", r.content_type},
                             {"accept", r.accept},
                             {"body", std::move(r.body)},
                             {"flow", r.flow},
                             {"timeout_ms", std::to_string(r.timeout.count())},
                             {"created_ms", std::to_string(now_ms())},
                             {"kind", r.kind},
                             {"route", r.route}};
  if (!r.callback.empty()) fields["callback"] = r.callback;
  std::optional<redis_key_claim> key;
  // The key is kept until the job has ended and expired; if it never starts, keep after its deadline.
  if (r.idempotency_key) key = redis_key_claim{r.owner, *r.idempotency_key, r.fingerprint + "\n" + id, r.timeout + keep_};
  const auto queued = co_await await_callback<redis_enqueued>(
      [&](auto done) { jobs_.enqueue(id, fields, key, std::move(done)); });
  if (!queued.ok) {
    co_return std::pair{unavailable("store_unavailable", "the shared job store (Redis) did not take the job; retry",
                                    std::chrono::seconds(1)),
                        std::string()};
  }
  if (queued.held) {
    // The key was taken before: by this same request (its job), or by another (422).
    const auto newline = queued.held->find('\n');
    if (newline == std::string::npos || queued.held->substr(0, newline) != r.fingerprint) {
      co_return std::pair{error_reply(422, "idempotency_key_reused",
                                      "this Idempotency-Key was sent before with a different request; use a new key"),
                          std::string()};
    }
    const auto earlier = queued.held->substr(newline + 1);
    const auto f = co_await read(earlier, status_fields);
    if (f.empty() || field(f, "owner") != r.owner) co_return std::pair{not_found(), std::string()};
    ++replays_;
    co_return std::pair{status_reply(f, earlier, 202), earlier};
  }
  ++accepted_;
  co_return std::pair{status_reply(fields, id, 202), id};
}

net::awaitable<reply> shared_jobs::status(std::string owner, std::string id) {
  const auto f = co_await read(id, status_fields);
  if (f.empty() || field(f, "owner") != owner) co_return not_found();
  co_return status_reply(f, id, 200);
}

net::awaitable<reply> shared_jobs::result(std::string owner, std::string id) {
  auto f = co_await read(id, result_fields);
  if (f.empty() || field(f, "owner") != owner) co_return not_found();
  const auto status = field(f, "status");
  if (!has_ended(status)) {
    auto r = error_reply(409, "job_not_finished", "the job is " + status + "; its result comes once it has ended");
    r.headers.emplace_back("Retry-After", "1");
    co_return r;
  }
  if (status != "succeeded") {
    // It ended without a result: its own error, whose status the job's status document gives.
    const auto error = nlohmann::json::parse(field(f, "error"), nullptr, false);
    if (error.is_object()) {
      co_return error_reply(409, error.value("code", "job_failed"), "the job " + status + ": " + error.value("message", ""));
    }
    co_return error_reply(409, "job_failed", "the job " + status);
  }
  reply r{static_cast<unsigned>(number(f, "result_status")), std::move(f["result_body"]), "application/json", {}};
  const auto type = field(f, "result_type");
  // A reply's media type outlives it: each one the kinds answer is kept here, once (they are few;
  // a store that names more than 64 gets octet-stream for the rest).
  const auto kept = interned_types_.find(type);
  r.content_type = kept != interned_types_.end()   ? std::string_view(*kept)
                   : interned_types_.size() < 64 ? std::string_view(*interned_types_.insert(type).first)
                                                 : std::string_view("application/octet-stream");
  for (const auto& h : nlohmann::json::parse(field(f, "result_headers"), nullptr, false)) {
    if (h.is_array() && h.size() == 2 && h[0].is_string() && h[1].is_string()) r.headers.emplace_back(h[0], h[1]);
  }
  co_return r;
}

net::awaitable<bool> shared_jobs::wait(std::string owner, std::string id, std::chrono::milliseconds how_long) {
  const auto until = steady::now() + how_long;
  for (;;) {
    const auto f = co_await read(id, std::vector<std::string>(wait_fields.begin(), wait_fields.end()));
    if (f.empty() || field(f, "owner") != owner) co_return false;
    if (has_ended(field(f, "status"))) co_return true;
    if (stopping_ || steady::now() + poll_every > until) co_return false;
    co_await pause(poll_every);
  }
}

net::awaitable<reply> shared_jobs::cancel(std::string owner, std::string id) {
  const auto end = cancelled_end("the job was cancelled (DELETE) before it ran");
  const auto outcome = co_await await_callback<redis_cancel>(
      [&](auto done) { jobs_.cancel(owner, id, end, keep_, std::move(done)); });
  switch (outcome) {
    case redis_cancel::missing: co_return not_found();
    case redis_cancel::failed:
      co_return unavailable("store_unavailable", "the shared job store (Redis) did not answer; retry",
                            std::chrono::seconds(1));
    case redis_cancel::flagged:
      // Its replica sees the flag within a poll and stops it as a deadline would.
      co_await wait(owner, id, std::chrono::seconds(30));
      break;
    case redis_cancel::cancelled: ++ended_["cancelled"]; break;
    case redis_cancel::ended: break;
  }
  co_return co_await status(std::move(owner), std::move(id));
}

void shared_jobs::deliver_callback(const redis_job_fields& f, const std::string& id) {
  const auto text = field(f, "callback");
  if (text.empty() || callbacks_ == nullptr || stopping_) return;
  auto url = parse_callback_url(text);
  if (std::holds_alternative<std::string>(url)) return;  // checked when it was submitted
  const auto doc = status_reply(f, id, 200);
  nlohmann::json message = {{"type", "job." + field(f, "status")},
                            {"timestamp", at_ms(number(f, "finished_ms"))},
                            {"data", nlohmann::json::parse(doc.body)}};
  callbacks_->deliver(std::move(std::get<callback_url>(url)), id, message.dump());
}

net::awaitable<void> shared_jobs::refresh_backlog() {
  const auto b = co_await await_callback<std::optional<redis_backlog>>(
      [&](auto done) {
        jobs_.backlog([done = std::move(done)](std::optional<redis_backlog> figures) mutable { done(std::move(figures)); });
      });
  store_up_ = b.has_value();
  if (!b) co_return;
  pending_ = b->pending;
  backlog_.jobs = static_cast<std::size_t>(b->waiting);
  backlog_.seconds = static_cast<double>(b->waiting) * mean_run_seconds_;
  backlog_.oldest_seconds = b->oldest_ms ? std::max<double>(0, static_cast<double>(now_ms() - *b->oldest_ms) / 1000) : 0;
}

net::awaitable<void> shared_jobs::look_for_cancels() {
  std::vector<std::string> ids;
  for (const auto& [entry, r] : running_) {
    if (!r.cancel_requested) ids.push_back(r.job);
  }
  if (ids.empty()) co_return;
  const auto flagged = co_await await_callback<std::vector<std::string>>(
      [&](auto done) { jobs_.cancel_requests(ids, std::move(done)); });
  for (auto& [entry, r] : running_) {
    if (std::find(flagged.begin(), flagged.end(), r.job) != flagged.end()) {
      r.cancel_requested = true;
      r.stop->cancel();
    }
  }
}

net::awaitable<void> shared_jobs::consume() {
  // Redis may not be up yet: ask until it answers, then read (or make) the fingerprint key.
  for (bool warned = false; !stopping_;) {
    const bool ready = co_await await_callback<bool>([&](auto done) {
      jobs_.prepare([done = std::move(done)](bool ok, std::string) mutable { done(ok); });
    });
    std::optional<std::string> secret;
    if (ready) {
      std::array<unsigned char, 32> mine{};
      randombytes_buf(mine.data(), mine.size());
      std::string hex(mine.size() * 2 + 1, '\0');
      sodium_bin2hex(hex.data(), hex.size(), mine.data(), mine.size());
      hex.pop_back();
      secret = co_await await_callback<std::optional<std::string>>(
          [&](auto done) { jobs_.shared_secret(hex, std::move(done)); });
    }
    std::array<unsigned char, 32> key{};
    std::size_t length = 0;
    if (secret && sodium_hex2bin(key.data(), key.size(), secret->data(), secret->size(), nullptr, &length, nullptr) == 0 &&
        length == key.size()) {
      fingerprints_.emplace(key);
      log_.write(log_level::info, "shared_jobs", {{"consumer", consumer_}, {"ready", true}});
      break;
    }
    if (!warned) log_.write(log_level::error, "shared_jobs", {{"consumer", consumer_}, {"ready", false}});
    warned = true;
    co_await pause(std::chrono::seconds(1));
  }
  auto last_claim = steady::now();
  auto last_heartbeat = steady::now();
  auto last_backlog = steady::time_point{};
  while (!stopping_) {
    const auto free = workers_ > running_.size() ? workers_ - running_.size() : 0;
    if (free > 0) {
      // A dead replica's jobs first, every half claim-after, whatever else is waiting: a steady
      // stream of new jobs must not leave them behind for ever.
      std::vector<redis_entry> taken;
      if (steady::now() - last_claim > claim_after_ / 2) {
        last_claim = steady::now();
        taken = co_await await_callback<std::vector<redis_entry>>(
            [&](auto done) { jobs_.claim_stale(claim_after_, free, std::move(done)); });
        // XAUTOCLAIM hands back this replica's own entries too, once idle: they are running here.
        std::erase_if(taken, [&](const redis_entry& e) { return running_.contains(e.entry); });
        taken_over_ += taken.size();
      }
      if (taken.size() < free) {
        auto fresh = co_await await_callback<std::vector<redis_entry>>(
            [&](auto done) { jobs_.take(free - taken.size(), std::move(done)); });
        taken.insert(taken.end(), fresh.begin(), fresh.end());
      }
      for (auto& e : taken) {
        running_[e.entry] = {e.job, std::make_shared<net::steady_timer>(io_, steady::time_point::max()), false};
        net::co_spawn(io_, run(std::move(e)), net::detached);
      }
    }
    if (!running_.empty()) {
      co_await look_for_cancels();
      if (steady::now() - last_heartbeat > claim_after_ / 3) {
        last_heartbeat = steady::now();
        std::vector<std::string> entries;
        for (const auto& [entry, r] : running_) entries.push_back(entry);
        co_await await_callback<bool>([&](auto done) { jobs_.heartbeat(entries, std::move(done)); });
      }
    }
    if (steady::now() - last_backlog >= backlog_every) {
      last_backlog = steady::now();
      co_await refresh_backlog();
    }
    tick_->expires_after(poll_every);
    co_await tick_->async_wait(use_tuple);
  }
}

net::awaitable<std::optional<shared_jobs::ran>> shared_jobs::run_stored(const redis_entry& e, redis_job_fields& f) {
  const auto match = routes_.match_job(f["method"], f["target"]);
  if (!match) co_return ran{error_reply(400, "invalid_argument", "no route for the stored request")};
  // Its deadline counts from when it was accepted, on whichever replica that was.
  const auto age = std::chrono::milliseconds(now_ms() - number(f, "created_ms"));
  const auto received = steady::now() - age;
  // An upload read back from Redis is charged to the memory budget as a received one is: it
  // waits here, holding its worker's place, until the budget has room for it.
  memory_lease body_memory;
  if (const auto bytes = f["body"].size();
      match->route->file_body() && (pool_.memory_budget() == 0 || bytes <= pool_.memory_budget())) {
    for (body_memory = pool_.try_lease(bytes); !body_memory && !stopping_; body_memory = pool_.try_lease(bytes)) {
      co_await pause(poll_every);
    }
    if (!body_memory) co_return std::nullopt;  // the drain came first: another replica takes it over
  }
  auto prepared = routes_.prepare(*match, match->route->json_body ? std::string_view(f["body"]) : std::string_view{},
                                  job_input{.body = match->route->file_body() ? std::move(f["body"]) : std::string{},
                                            .content_type = f["content_type"],
                                            .accept = f["accept"],
                                            .body_memory = std::move(body_memory)},
                                  true);
  if (auto* refused = std::get_if<reply>(&prepared)) co_return ran{std::move(*refused)};
  auto job = std::move(std::get<job_request>(prepared));
  job.flow = f["flow"];
  job.timeout = std::chrono::milliseconds(number(f, "timeout_ms"));
  auto a = co_await pipeline_.run(std::move(job), received, until_cancelled(running_.at(e.entry).stop));
  // Stopped by the drain: another replica takes it over.
  if (a.client_gone && !running_.at(e.entry).cancel_requested) co_return std::nullopt;
  if (a.client_gone) {
    co_return ran{error_reply(409, "job_cancelled", "the job was cancelled (DELETE) before it finished"), true};
  }
  co_return ran{std::move(a.r)};
}

redis_job_fields shared_jobs::end_of(ran r, steady::duration took) {
  // A job that ended as DELETE came keeps its own end; only one DELETE stopped is cancelled.
  const std::string status = r.cancelled                                          ? "cancelled"
                             : r.answer.status >= 200 && r.answer.status < 300 ? "succeeded"
                             : r.answer.status == 504                          ? "expired"
                                                                               : "failed";
  if (status == "succeeded") {
    const double seconds = std::chrono::duration<double>(took).count();
    mean_run_seconds_ = mean_run_seconds_ == 0 ? seconds : 0.8 * mean_run_seconds_ + 0.2 * seconds;
  }
  nlohmann::json headers = nlohmann::json::array();
  for (const auto& [name, value] : r.answer.headers) headers.push_back({name, value});
  redis_job_fields end = {{"status", status},
                          {"result_status", std::to_string(r.answer.status)},
                          {"result_type", std::string(r.answer.content_type)},
                          {"result_headers", headers.dump()},
                          {"result_bytes", std::to_string(r.answer.body.size())},
                          {"finished_ms", std::to_string(now_ms())}};
  if (status != "succeeded") {
    auto error = nlohmann::json::parse(r.answer.body, nullptr, false);
    if (error.is_object() && error.contains("error")) end["error"] = error["error"].dump();
  }
  end["result_body"] = std::move(r.answer.body);
  return end;
}

net::awaitable<void> shared_jobs::run(redis_entry e) {
  auto f = co_await read(e.job);
  // A job DELETE flagged while its replica died is not run again by the one taking it over.
  const bool flagged = f.contains("cancel");
  const bool started = !f.empty() && !flagged &&
                       co_await await_callback<bool>([&](auto done) { jobs_.start(e.job, std::move(done)); });
  redis_job_fields end;
  if (flagged) end = cancelled_end("the job was cancelled (DELETE) before it finished");
  if (started) {
    f["replica"] = consumer_;  // as the start stored them, for the callback's status document
    f["started_at"] = std::to_string(now_ms());
    const auto began = steady::now();
    auto outcome = co_await run_stored(e, f);
    if (!outcome) {
      running_.erase(e.entry);
      co_return;
    }
    end = end_of(std::move(*outcome), steady::now() - began);
  }
  // Stored unless another run of it stored its end first; the entry is acknowledged either way.
  const bool stored = co_await await_callback<bool>(
      [&](auto done) { jobs_.finish(e.job, e.entry, end, keep_, std::move(done)); });
  running_.erase(e.entry);
  if (stored) {
    ++ended_[end["status"]];
    for (auto& [name, value] : end) f[name] = std::move(value);
    deliver_callback(f, e.job);
  }
}

void shared_jobs::write_metrics(std::ostream& out) const {
  exposition e(out);
  e.single("crunch_shared_store_up", "gauge", "1 when the shared job store (Redis) answered the last backlog query.",
           store_up_ ? 1.0 : 0.0);
  e.single("crunch_shared_jobs_accepted_total", "counter", "Asynchronous jobs this replica queued in the shared store.",
           static_cast<double>(accepted_));
  e.single("crunch_shared_jobs_replayed_total", "counter",
           "Asynchronous requests this replica answered with the job their Idempotency-Key names.",
           static_cast<double>(replays_));
  e.single("crunch_shared_jobs_taken_over_total", "counter",
           "Jobs this replica took over from a replica that stopped answering (XAUTOCLAIM).",
           static_cast<double>(taken_over_));
  e.single("crunch_shared_jobs_running", "gauge", "Jobs of the shared store running on this replica.",
           static_cast<double>(running_.size()));
  e.single("crunch_shared_jobs_pending", "gauge",
           "Jobs of the shared store taken by a replica and not yet ended, all replicas together.",
           static_cast<double>(pending_));
  e.header("crunch_shared_jobs_ended_total", "counter", "Jobs of the shared store whose end this replica stored, by status.");
  for (const auto* s : {"succeeded", "failed", "cancelled", "expired"}) {
    const auto it = ended_.find(s);
    e.sample("crunch_shared_jobs_ended_total", label("status", s), it == ended_.end() ? 0.0 : static_cast<double>(it->second));
  }
}

}  // namespace crunch
