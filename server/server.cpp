#include <crunch/server.hpp>

#include "server/api_keys.hpp"
#include <crunch/cpu_pacer.hpp>
#include "server/flows.hpp"
#include "server/job_pipeline.hpp"
#include <crunch/kinds.hpp>
#include "server/live_view.hpp"
#include <crunch/log.hpp>
#include "server/metrics.hpp"
#include "server/router.hpp"
#include "server/session.hpp"
#include "workers/worker_pool.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <thread>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <csignal>
#include <optional>
#include <random>
#include <sstream>
#include <variant>

#include <sys/prctl.h>

#include "server/async_jobs.hpp"
#include "server/shared_jobs.hpp"
#include "workers/fatal_signals.hpp"
#include "workers/helpers.hpp"

namespace crunch {

namespace {

using tcp = net::ip::tcp;

std::string random_prefix() {
  std::random_device rd;
  char text[16];
  std::snprintf(text, sizeof text, "%08x", rd());
  return text;
}

// Connections being refused politely at once, at most (see refuse()).
constexpr std::size_t max_refusing = 64;
// When accept fails for lack of descriptors, pausing beats spinning on the error.
constexpr auto accept_backoff = std::chrono::milliseconds(50);
// After a drain's deadline has cancelled everything, how long the loop may take to unwind.
constexpr auto unwind_grace = std::chrono::seconds(1);
// Flows listed by GET /v1/flows.
constexpr std::size_t top_flows = 20;
// How often the loop-lag monitor wakes: 100 times a second costs nothing measurable.
constexpr auto lag_interval = std::chrono::milliseconds(10);

}  // namespace

struct server::state {
  explicit state(config c, job_registry kinds)
      : cfg(resolve_defaults(std::move(c))),
        log(cfg.log_format_, cfg.log_level_),
        completions(io),
        pool({cfg.workers, cfg.queue_limit, cfg.priority, cfg.memory_budget, &completions}),
        flows(cfg.workers, cfg.max_flows),
        keys(load_keys(cfg)),
        reloads(reloads_of(kinds)),
        routes(calibrated(std::move(kinds), admit), view(), cfg),
        pipeline(cfg, pool, admit, flows, stats, &log),
        callbacks(io.get_executor(),
                  callback_sender::settings{.policy = {cfg.callback_allow, cfg.callback_allow_private},
                                            .retry_for = cfg.callback_retry_for,
                                            .helper = cfg.callback_helper,
                                            .ca_file = cfg.callback_ca_file},
                  log),
        async(io.get_executor(),
              async_limits{.max_timeout = cfg.async_max_timeout, .keep = cfg.jobs_keep, .store_bytes = cfg.jobs_store_bytes},
              pipeline, pool, admit, cfg.workers),
        ctx{.cfg = cfg,
            .routes = routes,
            .jobs = pipeline,
            .stats = stats,
            .log = log,
            .request_id_prefix = random_prefix(),
            .async = &async,
            .fingerprints = &fingerprints},
        acceptor(io),
        drain_timer(io),
        lag_timer(io),
        cpu_stat_file(cgroup_cpu_stat_file()) {
    if (!cfg.webhook_secret_file.empty()) {
      try {
        callbacks.set_secrets(std::make_shared<webhook_secrets>(webhook_secrets::load(cfg.webhook_secret_file)));
      } catch (const std::exception& e) {
        throw config_error(std::string("crunchd: invalid --webhook-secret-file: ") + e.what());
      }
    }
    async.set_callbacks(&callbacks);
    if (cfg.jobs_store != "memory") {
      auto address = parse_redis_url(cfg.jobs_store);
      if (auto* why = std::get_if<std::string>(&address)) throw config_error("crunchd: invalid --jobs-store: " + *why);
      shared.emplace(io.get_executor(), std::get<redis_address>(address), routes, pipeline, pool, cfg.workers,
                     cfg.jobs_keep, cfg.jobs_claim_after, log);
      shared->set_callbacks(&callbacks);
      ctx.shared = &*shared;
    }
    if (cfg.ui) {
      live.emplace(io.get_executor(), stats, [this] { return gauges(); }, cfg.event_interval);
      ctx.live = &*live;
    }
    // A helper's data may not pass the whole budget (and a little for its libraries): a job's
    // own limit, from its memory model, is set under that (workers/helpers.cpp).
    helper_settings helpers;
    if (cfg.memory_budget != 0) helpers.memory_ceiling = cfg.memory_budget + (std::uint64_t{512} << 20);
    set_helper_settings(helpers);
  }

  // What the router reads of the running server.
  server_view view() {
    server_view v{.draining = [this] { return ctx.draining; },
                  .metrics_text = [this] { return metrics_text(); },
                  .rate = [this](std::string_view kind) { return admit.rate(kind); },
                  .live_snapshot = [this] { return live ? live->latest() : std::string("{}"); },
                  .flows_document = [this] { return flows.document(top_flows); }};
    if (keys) v.authenticate = [this](std::string_view authorization) { return authenticate(authorization); };
    return v;
  }

  static std::optional<api_keys> load_keys(const config& c) {
    if (c.api_keys.empty()) return std::nullopt;
    try {
      return api_keys::load(c.api_keys);
    } catch (const api_keys_error& e) {
      throw config_error(std::string("crunchd: invalid --api-keys: ") + e.what());
    }
  }

  std::variant<std::string, auth_failure> authenticate(std::string_view authorization) {
    const auto token = bearer_token(authorization);
    const auto name = token ? keys->find(*token) : std::nullopt;
    if (name) return std::string(*name);
    const auto why = token ? auth_failure::invalid : auth_failure::missing;
    stats.count_auth_failure(why);
    return why;
  }

  // SIGHUP: reads the key file and the kinds' files again. Connections stay; a request is checked
  // against the keys current when its head arrives. A file that cannot be used keeps what it replaced.
  void reload() {
    if (!cfg.webhook_secret_file.empty()) {
      try {
        auto secrets = std::make_shared<webhook_secrets>(webhook_secrets::load(cfg.webhook_secret_file));
        log_event(log_level::info, "webhook_secrets_reloaded", {{"secrets", secrets->size()}});
        callbacks.set_secrets(std::move(secrets));
      } catch (const std::exception& e) {
        log_event(log_level::error, "webhook_secrets_reload_failed", {{"error", e.what()}});
      }
    }
    if (!keys && reloads.empty()) {
      if (!cfg.webhook_secret_file.empty()) return;
      log_event(log_level::warn, "reload_ignored", {{"reason", "no --api-keys file and no kind with files to reload"}});
      return;
    }
    if (keys) {
      try {
        keys = api_keys::load(cfg.api_keys);
        log_event(log_level::info, "api_keys_reloaded", {{"keys", keys->size()}});
      } catch (const api_keys_error& e) {
        log_event(log_level::error, "api_keys_reload_failed", {{"error", e.what()}, {"kept_keys", keys->size()}});
      }
    }
    for (const auto& [kind, reload_kind] : reloads) {
      try {
        log_event(log_level::info, "kind_reloaded", {{"kind", kind}, {"summary", reload_kind()}});
      } catch (const std::exception& e) {
        log_event(log_level::error, "kind_reload_failed", {{"kind", kind}, {"error", e.what()}});
      }
    }
  }

  // Each kind's reload(), by kind name.
  static std::vector<std::pair<std::string, std::function<std::string()>>> reloads_of(const job_registry& jobs) {
    std::vector<std::pair<std::string, std::function<std::string()>>> out;
    for (const auto& [name, kind] : jobs.kinds()) {
      if (kind.reload) out.emplace_back(name, kind.reload);
    }
    return out;
  }

  void wait_for_reload() {
    reload_signals->async_wait([this](sys::error_code ec, int) {
      if (ec) return;
      log_event(log_level::info, "signal", {{"signal", "SIGHUP"}});
      reload();
      wait_for_reload();
    });
  }

  // Measures each kind's cost rate on this machine before the first request, and gives each
  // kind and route its metrics. The measurements run on a thread with the workers' priority, as
  // the jobs will: a library that starts threads of its own on first use (libvips) starts them
  // with that priority too, instead of the I/O thread's.
  job_registry calibrated(job_registry jobs, admission& rates) {
    job_registry deferred;
    for (const auto& [name, kind] : jobs.kinds()) {
      if (kind.calibrate) rates.expect_rate(name);
      if (kind.calibrate && kind.calibrate_on_first_job) {
        deferred.add(calibrating_on_first_job(kind));
      } else if (kind.calibrate) {
        // A calibration that fails (libvips could not start a thread under a tight address-space
        // limit) leaves the kind without a rate until its first jobs complete: the server starts.
        double rate = 0;
        std::string failure;
        const auto& calibrate = kind.calibrate;  // clang 14 cannot capture a structured binding
        std::thread([&] {
          apply_worker_priority(cfg.priority);
          try {
            rate = calibrate();
          } catch (const std::exception& e) {
            failure = e.what();
          }
        }).join();
        if (failure.empty()) {
          rates.set_rate(name, rate);
        } else {
          log_event(log_level::warn, "calibration_failed", {{"kind", name}, {"error", failure}});
        }
      }
      stats.add_kind(name);
    }
    for (const auto& [name, kind] : deferred.kinds()) jobs.add(kind);
    return jobs;
  }

  // The server's state now, from the parts that own it; all but the CPU quota's account, which
  // is a file to read: a scrape adds it, a live-view snapshot four times a second does not need it.
  metrics_gauges gauges() const {
    return {.workers = pool.workers(),
            .workers_busy = pool.busy(),
            .queue_depth = pool.queued(),
            .queue_limit = pool.queue_limit(),
            .memory_budget = pool.memory_budget(),
            .memory_in_use = pool.memory_in_use(),
            .connections_open = ctx.connections.size(),
            .draining = ctx.draining,
            .log_lines_dropped = log.dropped(),
            .workers_paced_seconds = pacer ? pacer->paused_seconds() : 0,
            .event_streams_open = live ? live->streams() : 0,
            .flows_active = flows.active(),
            .flows_tracked = flows.tracked(),
            .flows_overflowed = flows.overflowed(),
            .memory_kept = pool.memory_kept(),
            .backlog_jobs = shared ? shared->backlog().jobs : async.backlog(),
            .backlog_seconds = shared ? shared->backlog().seconds : async.backlog_seconds(),
            .helper_processes = helper_gauges()};
  }

  static std::vector<metrics_gauges::helpers> helper_gauges() {
    std::vector<metrics_gauges::helpers> out;
    for (const auto& h : helper_statistics()) out.push_back({h.kind, h.started, h.alive, h.crashed, h.killed});
    return out;
  }

  std::string metrics_text() const {
    auto g = gauges();
    if (cpu_stat_file) g.cpu_quota = read_cpu_stat(*cpu_stat_file).value_or(cpu_throttling{});
    auto text = stats.render(g, read_process_stats());
    std::ostringstream more;
    async.write_metrics(more, shared ? &shared->backlog() : nullptr);
    if (shared) shared->write_metrics(more);
    callbacks.write_metrics(more);
    return text + more.str();
  }

  void log_event(log_level level, std::string_view event, const nlohmann::json& fields = nlohmann::json::object()) {
    log.write(level, event, fields);
  }

  // Like Node's monitorEventLoopDelay: a timer asks to wake every lag_interval and records how
  // late it actually ran. Anything that holds the loop — a blocking call, a long handler, an
  // inline job — shows up here, whatever request it delayed.
  net::awaitable<void> watch_loop_lag() {
    for (;;) {
      const auto due = std::chrono::steady_clock::now() + lag_interval;
      lag_timer.expires_at(due);
      auto [ec] = co_await lag_timer.async_wait(net::as_tuple(net::use_awaitable));
      // The flag, not only the error: a timer that had already fired cannot be cancelled.
      if (ec || lag_stopped) co_return;
      const auto lateness = std::chrono::steady_clock::now() - due;
      stats.observe_loop_lag(lateness);
      if (live) live->observe_lag(lateness);
    }
  }

  void listen() {
    const tcp::endpoint endpoint(net::ip::make_address(cfg.address), cfg.port);
    acceptor.open(endpoint.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(net::socket_base::max_listen_connections);
    port = acceptor.local_endpoint().port();
  }

  net::awaitable<void> accept_loop() {
    for (;;) {
      // Full, and already refusing as many as it will at once: leave the rest in the listen
      // backlog until a connection or a refusal ends, rather than close them unanswered.
      while (ctx.connections.size() >= cfg.max_connections && ctx.refusing >= max_refusing && acceptor.is_open()) {
        accept_gate.expires_at(net::steady_timer::time_point::max());
        co_await accept_gate.async_wait(net::as_tuple(net::use_awaitable));
      }
      // A session runs on the io_context's own executor. One thread runs the io_context, so that
      // is already the connection's strand (Asio's "implicit strand"): its handlers never run
      // concurrently, and a job's completion, posted there by a worker, runs on the I/O thread.
      // An explicit strand added a mutex and a hand-off to every completion: without it /healthz
      // does 19% more requests a second (perf and A/B, issue 5). Were the I/O side ever run on
      // several threads, this is the one place to put net::make_strand(io) back.
      auto [ec, socket] = co_await acceptor.async_accept(io, net::as_tuple(net::use_awaitable));
      if (!acceptor.is_open()) co_return;
      if (ec) {
        log_event(log_level::warn, "accept_failed", {{"error", ec.message()}});
        net::steady_timer pause(io, accept_backoff);
        co_await pause.async_wait(net::as_tuple(net::use_awaitable));
        continue;
      }
      if (ctx.connections.size() >= cfg.max_connections) {
        refuse(std::move(socket));
        continue;
      }
      stats.count_connection();
      // Every answer goes out as one buffer, so Nagle's algorithm can only delay: with pipelined
      // requests it held each answer after the first until the client's delayed ACK, 40 ms for
      // every 50 answers (0.8 ms a request, measured with /healthz).
      sys::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      auto it = ctx.connections.emplace(ctx.connections.end());
      auto executor = socket.get_executor();
      net::co_spawn(executor, run_session(std::move(socket), &ctx, &*it),
                    net::bind_cancellation_slot(it->cancel.slot(), [this, it](std::exception_ptr e) {
                      if (e) log_event(log_level::error, "session_failed", {{"error", describe(e)}});
                      // The entry is the coroutine's cancellation slot: free it only once the
                      // coroutine machinery has fully unwound.
                      net::post(io, [this, it] {
                        ctx.connections.erase(it);
                        accept_gate.cancel();
                        finish_if_drained();
                      });
                    }));
    }
  }

  // Over max_connections: answered 503 and closed, the loop unharmed. At most max_refusing at a
  // time (accept_loop waits beyond that), so that refusals cannot exhaust the descriptors.
  void refuse(tcp::socket socket) {
    stats.count_refused_connection();
    const auto now = std::chrono::steady_clock::now();
    if (now - last_refusal_log >= std::chrono::seconds(1)) {
      last_refusal_log = now;
      log_event(log_level::warn, "connections_refused", {{"max_connections", cfg.max_connections}});
    }
    ++ctx.refusing;
    auto executor = socket.get_executor();
    net::co_spawn(executor, refuse_connection(std::move(socket), &ctx), [this](std::exception_ptr) {
      net::post(io, [this] {
        --ctx.refusing;
        accept_gate.cancel();
      });
    });
  }

  static std::string describe(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      return x.what();
    } catch (...) {
      return "unknown exception";
    }
  }

  void begin_drain() {
    if (ctx.draining) {
      log_event(log_level::warn, "drain_cut_short");
      expire_drain();
      return;
    }
    ctx.draining = true;
    async.stop();
    callbacks.stop();
    if (shared) shared->stop();
    log_event(log_level::info, "draining", {{"connections", ctx.connections.size()},
                                   {"drain_timeout_ms", cfg.drain_timeout.count()}});
    sys::error_code ignored;
    acceptor.close(ignored);
    accept_gate.cancel();
    for (auto& c : ctx.connections) {
      if (c.idle || c.streaming) c.cancel.emit(net::cancellation_type::terminal);
    }
    cut_jobs_that_cannot_finish();
    drain_timer.expires_after(cfg.drain_timeout);
    drain_timer.async_wait([this](sys::error_code ec) {
      if (!ec) expire_drain();
    });
    finish_if_drained();
  }

  void cut_jobs_that_cannot_finish() {
    const auto cut = pipeline.cut_jobs_that_cannot_finish(cfg.drain_timeout);
    if (cut > 0) log_event(log_level::info, "drain_cut_queued_jobs", {{"jobs", cut}});
  }

  // The drain ran out of time: jobs still waited for are answered 503 (queued ones dropped,
  // running ones stopped), other unfinished exchanges are cancelled, and if the loop still has
  // not unwound after a grace, it is stopped.
  void expire_drain() {
    ctx.drain_expired = true;
    log_event(log_level::warn, "drain_timeout", {{"connections", ctx.connections.size()}});
    pipeline.cut_all();
    for (auto& c : ctx.connections) {
      if (!c.in_job) c.cancel.emit(net::cancellation_type::terminal);
    }
    drain_timer.expires_after(unwind_grace);
    drain_timer.async_wait([this](sys::error_code ec) {
      if (!ec) io.stop();
    });
  }

  void finish_if_drained() {
    if (!ctx.draining || !ctx.connections.empty()) return;
    drain_timer.cancel();
    lag_stopped = true;
    lag_timer.cancel();
    if (live) live->stop();
    if (signals) signals->cancel();
    if (reload_signals) reload_signals->cancel();
    // No session is left to wait for a job: whatever a worker still finishes is dropped.
    completions.close();
  }

  void wait_for_signal() {
    signals->async_wait([this](sys::error_code ec, int signo) {
      if (ec) return;
      log_event(log_level::info, "signal", {{"signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"}});
      begin_drain();
      if (!ctx.connections.empty()) wait_for_signal();  // a second signal cuts the drain short
    });
  }

  // Members are destroyed in reverse: the pool (joining its workers) before the io_context it
  // posts to.
  config cfg;
  logger log;  // first built, last destroyed: everything else may log
  net::io_context io{1};
  metrics stats;
  completion_queue completions;  // the workers' way back to the I/O thread
  worker_pool pool;
  admission admit;
  flow_table flows;
  std::optional<api_keys> keys;  // with --api-keys; replaced on SIGHUP, on this thread
  const std::vector<std::pair<std::string, std::function<std::string()>>> reloads;  // the kinds' own, on SIGHUP
  router routes;
  job_pipeline pipeline;
  callback_sender callbacks;
  async_jobs async;  // after the pipeline it feeds
  std::optional<shared_jobs> shared;  // with --jobs-store redis://
  fingerprinter fingerprints;
  session_context ctx;
  tcp::acceptor acceptor;
  net::steady_timer accept_gate{io};  // accept_loop waits on it while full; cancelled when a slot frees
  std::chrono::steady_clock::time_point last_refusal_log{};
  net::steady_timer drain_timer;
  net::steady_timer lag_timer;
  const std::optional<std::filesystem::path> cpu_stat_file;  // the CPU quota's account, read per scrape
  const std::optional<double> cpu_quota = cgroup_cpu_limit();  // CPUs
  const double paced_cpus = cpu_quota ? *cpu_quota * (100.0 - static_cast<double>(cfg.cpu_reserve_percent)) / 100 : 0;
  // Under a quota, the workers are held to it less the reserve (cpu_pacer.hpp).
  std::optional<cpu_pacer> pacer = cpu_quota && cfg.cpu_reserve_percent > 0 && cfg.mode == run_mode::offload
                                       ? std::make_optional<cpu_pacer>(paced_cpus)
                                       : std::nullopt;
  bool lag_stopped = false;
  std::optional<live_view> live;  // the live view's snapshots, unless --ui=false
  std::optional<net::signal_set> signals;
  std::optional<net::signal_set> reload_signals;
  std::uint16_t port = 0;
};

server::server(config cfg) : server(std::move(cfg), builtin_kinds()) {}

struct server::configured {
  config cfg;
  job_registry jobs;
};

// The kinds are built from the resolved configuration: their checks compare with the memory
// budget it settles.
server::server(config cfg, const std::vector<kind_declaration>& kinds)
    : server([&] {
        auto resolved = with_kind_defaults(resolve_defaults(std::move(cfg)), kinds);
        auto jobs = build_jobs(kinds, resolved);
        return configured{std::move(resolved), std::move(jobs)};
      }()) {}

server::server(configured built) : server(std::move(built.cfg), std::move(built.jobs)) {}

server::server(config cfg, job_registry jobs) : state_(std::make_unique<state>(std::move(cfg), std::move(jobs))) {
  for (const auto& route : state_->routes.route_names()) state_->stats.add_route(route);
  state_->listen();
}

server::~server() = default;

std::uint16_t server::port() const noexcept { return state_->port; }

void server::stop_on_signals() {
  state_->signals.emplace(state_->io, SIGTERM, SIGINT);
  state_->wait_for_signal();
  state_->reload_signals.emplace(state_->io, SIGHUP);
  state_->wait_for_reload();
}

void server::reload() {
  net::post(state_->io, [s = state_.get()] { s->reload(); });
}

void server::run() {
  auto& s = *state_;
  name_thread_for_reports("io");
  // Timers on this thread fire within 1 µs of their time instead of the default 50 µs slack, so
  // the loop-lag monitor measures the loop, not the slack.
  prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
  // Inline mode runs whole jobs on the I/O thread: they must not run real-time.
  const bool inline_jobs = s.cfg.mode == run_mode::inline_;
  if (s.cfg.io_scheduling == io_priority::realtime && inline_jobs) {
    throw config_error("crunchd: --io-priority realtime with --mode inline would run jobs at real-time priority");
  }
  const bool realtime = s.cfg.io_scheduling != io_priority::normal && !inline_jobs && make_io_thread_realtime();
  if (s.cfg.io_scheduling == io_priority::realtime && !realtime) {
    throw config_error("crunchd: --io-priority realtime: the OS refused SCHED_FIFO (it needs CAP_SYS_NICE, or an "
                       "RLIMIT_RTPRIO of at least 1: docker run --ulimit rtprio=1)");
  }
  s.log_event(log_level::info, "listening",
            {{"address", s.cfg.address},
             {"port", port()},
             {"workers", s.pool.workers()},
             {"queue_limit", s.pool.queue_limit()},
             {"memory_budget_bytes", s.pool.memory_budget()},
             {"max_connections", s.cfg.max_connections},
             {"mode", s.cfg.mode == run_mode::offload ? "offload" : "inline"},
             {"io_thread", realtime ? "realtime" : "normal"},
             {"cpu_quota", s.cpu_quota ? nlohmann::json(*s.cpu_quota) : nlohmann::json(nullptr)},
             {"paced_cpus", s.pacer ? nlohmann::json(s.paced_cpus) : nlohmann::json(nullptr)},
             {"version", version()}});
  net::co_spawn(s.io, s.accept_loop(), [&s](std::exception_ptr e) {
    if (e) s.log_event(log_level::error, "accept_loop_failed", {{"error", state::describe(e)}});
  });
  net::co_spawn(s.io, s.watch_loop_lag(), net::detached);
  if (s.live) net::co_spawn(s.io, s.live->run(), net::detached);
  if (s.shared) s.shared->start();
  s.completions.open();
  s.io.run();
  s.pool.shutdown();
  s.log_event(log_level::info, "stopped");
}

void server::stop() {
  net::post(state_->io, [s = state_.get()] { s->begin_drain(); });
}

}  // namespace crunch
