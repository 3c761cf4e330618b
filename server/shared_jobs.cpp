#include "server/shared_jobs.hpp"

#include "server/async_jobs.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>

#include <unistd.h>

namespace crunch {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr auto poll_every = std::chrono::milliseconds(50);
using wall = std::chrono::system_clock;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(wall::now().time_since_epoch()).count();
}

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

nlohmann::json status_of(const redis_job_fields& f, const std::string& id) {
  auto get = [&](const char* name) {
    const auto it = f.find(name);
    return it == f.end() ? std::string() : it->second;
  };
  nlohmann::json doc = {{"id", id}, {"kind", get("kind")}, {"operation", get("route")}, {"status", get("status")}};
  if (!get("replica").empty()) doc["replica"] = get("replica");
  if (!get("result_status").empty()) {
    doc["result"] = {{"href", "/v1/jobs/" + id + "/result"},
                     {"status", std::stoi(get("result_status"))},
                     {"content_type", get("result_type")},
                     {"bytes", get("result_body").size()}};
  }
  return doc;
}

}  // namespace

shared_jobs::shared_jobs(net::any_io_executor io, redis_address address, const router& routes, job_pipeline& pipeline,
                         std::size_t workers, std::chrono::milliseconds keep, std::chrono::milliseconds claim_after,
                         logger& log)
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
  for (auto& [entry, signal] : running_) signal->cancel();
}

net::awaitable<redis_job_fields> shared_jobs::read(const std::string& id) {
  co_return co_await await_callback<redis_job_fields>([&](auto done) { jobs_.read(id, std::move(done)); });
}

net::awaitable<reply> shared_jobs::submit(stored_request r) {
  const auto id = new_job_id();
  redis_job_fields fields = {{"status", "queued"},           {"owner", r.owner},
                             {"method", r.method},           {"target", r.target},
                             {"content_type", r.content_type}, {"accept", r.accept},
                             {"body", r.body},               {"flow", r.flow},
                             {"timeout_ms", std::to_string(r.timeout.count())},
                             {"created_ms", std::to_string(now_ms())},
                             {"kind", r.kind},               {"route", r.route}};
  const bool ok = co_await await_callback<bool>([&](auto done) { jobs_.enqueue(id, fields, std::move(done)); });
  if (!ok) {
    co_return unavailable("store_unavailable", "the shared job store (Redis) did not take the job; retry",
                          std::chrono::seconds(1));
  }
  reply out{202, status_of(fields, id).dump(), "application/json", {}};
  out.headers.emplace_back("Location", "/v1/jobs/" + id);
  out.headers.emplace_back("Preference-Applied", "respond-async");
  out.headers.emplace_back("Retry-After", "1");
  co_return out;
}

net::awaitable<reply> shared_jobs::status(std::string owner, std::string id) {
  const auto f = co_await read(id);
  const auto it = f.find("owner");
  if (f.empty() || it == f.end() || it->second != owner) {
    co_return error_reply(404, "not_found", "no such job (it may have expired)");
  }
  co_return reply{200, status_of(f, id).dump(), "application/json", {}};
}

net::awaitable<reply> shared_jobs::result(std::string owner, std::string id) {
  auto f = co_await read(id);
  const auto it = f.find("owner");
  if (f.empty() || it == f.end() || it->second != owner) {
    co_return error_reply(404, "not_found", "no such job (it may have expired)");
  }
  if (f["status"] != "succeeded") {
    co_return error_reply(409, "job_not_finished", "the job is " + f["status"]);
  }
  reply r{static_cast<unsigned>(std::stoi(f["result_status"])), std::move(f["result_body"]), "application/json", {}};
  // The media type is a literal in a reply: the JSON answers' or a kind's own, looked up by name.
  static const std::string_view known[] = {"application/json", "application/zstd", "application/octet-stream",
                                           "image/jpeg", "image/png", "image/webp", "image/avif"};
  for (const auto& k : known) {
    if (k == f["result_type"]) r.content_type = k;
  }
  co_return r;
}

net::awaitable<void> shared_jobs::consume() {
  const bool ready = co_await await_callback<bool>([&](auto done) {
    jobs_.prepare([done = std::move(done)](bool ok, std::string) mutable { done(ok); });
  });
  log_.write(ready ? log_level::info : log_level::error, "shared_jobs", {{"consumer", consumer_}, {"ready", ready}});
  auto last_claim = steady::now();
  auto last_heartbeat = steady::now();
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
      }
      if (taken.size() < free) {
        auto fresh = co_await await_callback<std::vector<redis_entry>>(
            [&](auto done) { jobs_.take(free - taken.size(), std::move(done)); });
        taken.insert(taken.end(), fresh.begin(), fresh.end());
      }
      for (auto& e : taken) {
        running_[e.entry] = std::make_shared<net::steady_timer>(io_, steady::time_point::max());
        net::co_spawn(io_, run(std::move(e)), net::detached);
      }
    }
    if (!running_.empty() && steady::now() - last_heartbeat > claim_after_ / 3) {
      last_heartbeat = steady::now();
      std::vector<std::string> entries;
      for (const auto& [entry, signal] : running_) entries.push_back(entry);
      co_await await_callback<bool>([&](auto done) { jobs_.heartbeat(entries, std::move(done)); });
    }
    tick_->expires_after(poll_every);
    co_await tick_->async_wait(use_tuple);
  }
}

net::awaitable<void> shared_jobs::run(redis_entry e) {
  auto signal = running_[e.entry];
  auto f = co_await read(e.job);
  const bool started = !f.empty() && co_await await_callback<bool>([&](auto done) { jobs_.start(e.job, std::move(done)); });
  redis_job_fields end;
  if (started) {
    const auto match = routes_.match_job(f["method"], f["target"]);
    reply answer;
    std::optional<std::chrono::nanoseconds> computed;
    if (!match) {
      answer = error_reply(400, "invalid_argument", "no route for the stored request");
    } else {
      // Its deadline counts from when it was accepted, on whichever replica that was.
      const auto age = std::chrono::milliseconds(now_ms() - std::stoll(f["created_ms"]));
      const auto received = steady::now() - age;
      auto prepared = routes_.prepare(*match, match->route->json_body ? std::string_view(f["body"]) : std::string_view{},
                                      job_input{.body = match->route->file_body() ? f["body"] : std::string{},
                                                .content_type = f["content_type"],
                                                .accept = f["accept"],
                                                .body_memory = {}},
                                      true);
      if (auto* refused = std::get_if<reply>(&prepared)) {
        answer = std::move(*refused);
      } else {
        auto job = std::move(std::get<job_request>(prepared));
        job.flow = f["flow"];
        job.timeout = std::chrono::milliseconds(std::stoll(f["timeout_ms"]));
        auto a = co_await pipeline_.run(std::move(job), received, until_cancelled(signal));
        if (a.client_gone) {  // stopped by the drain: another replica takes it over
          running_.erase(e.entry);
          co_return;
        }
        answer = std::move(a.r);
      }
    }
    end = {{"status", answer.status >= 200 && answer.status < 300 ? "succeeded"
                      : answer.status == 504                      ? "expired"
                                                                  : "failed"},
           {"result_status", std::to_string(answer.status)},
           {"result_type", std::string(answer.content_type)},
           {"result_body", std::move(answer.body)},
           {"finished_ms", std::to_string(now_ms())}};
  }
  // Stored unless another run of it stored its end first; the entry is acknowledged either way.
  co_await await_callback<bool>([&](auto done) { jobs_.finish(e.job, e.entry, end, keep_, std::move(done)); });
  running_.erase(e.entry);
}

}  // namespace crunch
