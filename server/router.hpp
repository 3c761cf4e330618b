#pragma once
/// Maps a request to an answer or to a CPU job, in two steps: its head picks the route (and
/// refuses what can be refused before the body is read), then, once the body is read, its
/// arguments are checked and the kind prepares the job. Does no I/O and knows no Beast types, so
/// that it is unit-tested without sockets.

#include "server/api_keys.hpp"
#include <crunch/config.hpp>
#include <crunch/jobs.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace crunch {

/// A response, before it becomes HTTP.
struct reply {
  unsigned status = 200;                                     ///< HTTP status code
  std::string body;                                          ///< payload (JSON unless content_type says otherwise)
  std::string_view content_type = "application/json";       ///< Content-Type (a literal)
  std::vector<std::pair<std::string, std::string>> headers;  ///< extra headers (Allow, Retry-After, ...)
  std::string_view route = "unmatched";                      ///< metrics label: which route answered
};

/// The one error shape: {"error":{"code":...,"message":...}}.
reply error_reply(unsigned status, std::string_view code, std::string_view message);
/// 503 with an error_reply body and Retry-After: `retry_after`, at least one second. Every
/// "not now" crunch answers (overloaded, draining, too many connections or streams) is this.
reply unavailable(std::string_view code, std::string_view message, std::chrono::seconds retry_after);

/// A request that needs a worker: what to run, what it costs, and by when it must be done.
struct job_request {
  std::string_view kind;              ///< job kind, e.g. "password": its cost rate and job metrics
  std::string_view route;             ///< route, e.g. "password_hash": its request metrics
  job_function job;                   ///< the prepared job
  double cost_units = 0;              ///< expected cost in the kind's units (0: no cost model)
  std::uint64_t memory_bytes = 0;     ///< memory the job will hold while it runs
  std::chrono::milliseconds timeout;  ///< deadline, from the request's arrival
  /// The request body's share of the memory budget, when the job keeps its body: then the job's
  /// own memory is taken at once too, never waited for, since a job that waits must hold nothing.
  memory_lease body_memory;
  /// Whom it is for (flows.hpp): set by the session from --fair-key; empty is one flow like any.
  std::string flow;
  /// Its kind allows a job its cost model puts under --inline-max-us to run on the I/O thread.
  bool may_run_inline = false;
  /// The request's id (X-Request-Id): a fatal signal's report and the log name it.
  std::string_view request_id = {};
};

/// What the router reads of a request's head.
struct request_head {
  std::string_view method;                      ///< as sent
  std::string_view target;                      ///< the request-target
  std::string_view content_type;                ///< empty when absent
  std::optional<std::uint64_t> content_length;  ///< when the head declares one
  std::string_view authorization = {};          ///< the Authorization header; empty when absent
};

/// A job route that a head matched; prepare() turns it into a job once the body is read.
struct route_match {
  const job_kind* kind = nullptr;   ///< the route's kind
  const job_route* route = nullptr; ///< the route
  std::string_view path_segment;    ///< the value of the path's {parameter}, if it has one
  std::string_view query;           ///< after the '?', undecoded
};

/// A request for an asynchronous job (GET or DELETE /v1/jobs/{id}, GET /v1/jobs/{id}/result),
/// which the job store answers.
struct job_lookup {
  enum class action { status, result, cancel };
  action what = action::status;
  std::string id;  ///< as sent: the store answers 404 for an id it does not know
};

/// What a head leads to.
struct head_route {
  std::variant<reply, route_match> next;  ///< an answer, or a job route to prepare once the body is read
  std::size_t body_limit = 0;             ///< the most body bytes to read for it
  bool refuse_body = false;               ///< answer `next` at once, without reading the body, and close
  bool sensitive = false;                 ///< sent to a route whose bodies hold secrets: wipe it once read
  bool file_body = false;                 ///< the body is a file for the job to keep (job_input), not JSON
  std::uint64_t working_memory = 0;       ///< a file route's job_route::working_memory_hint
  bool event_stream = false;              ///< GET /v1/events: `next` is the stream's 200, the session streams
  std::string client = {};                ///< with API keys: the name of the request's key, once checked
  std::optional<job_lookup> job = {};     ///< for the job store to answer (`next` holds its route's name)
};

/// What the cheap routes read of the running server.
struct server_view {
  std::function<bool()> draining;                                   ///< true once shutdown began
  std::function<std::string()> metrics_text;                        ///< Prometheus exposition
  std::function<std::optional<double>(std::string_view kind)> rate; ///< a kind's ns per cost unit now
  std::function<std::string()> live_snapshot;                       ///< the live view's last snapshot (JSON)
  /// With API keys: the name of the key in an Authorization header's value, or why not (the
  /// server counts the failures). Null: no keys, every route is open.
  std::function<std::variant<std::string, auth_failure>(std::string_view authorization)> authenticate = {};
  std::function<std::string()> flows_document = {};                 ///< GET /v1/flows: the top flows (JSON)
};

/// The routing table: /healthz, /readyz, /metrics, /v1/kinds, /v1/flows, /openapi.json, the live
/// view (/, its files under /ui/, /v1/stats, /v1/events) unless cfg.ui is false, and every route of
/// every job kind. With API keys (server_view::authenticate), the job routes and /v1/flows need a
/// key — and /metrics, /v1/stats and /v1/events too with cfg.protect_metrics — checked on the head,
/// so a request without one is refused 401 before its body is read.
class router {
 public:
  /// Takes the deadlines, body limit and memory budget from `cfg`.
  router(job_registry jobs, server_view view, const config& cfg);

  /// Routes a request on its head alone.
  head_route route(const request_head& head) const;

  /// The job route `method` and `target` name, without a key check: for a job stored by another
  /// replica, whose request was checked when it was submitted. nullopt when none does.
  std::optional<route_match> match_job(std::string_view method, std::string_view target) const;

  /// For a matched route, once the body is read: its arguments checked, the job prepared — or the
  /// 400 that says why not. A JSON route's body is `body`; a file route's comes in `input`. An
  /// asynchronous job (`async`) takes its deadline within --async-max-timeout, and a kept body's
  /// lease keeps the body alone: its working memory is taken when it leaves the backlog.
  std::variant<reply, job_request> prepare(const route_match& match, std::string_view body, job_input input = {},
                                           bool async = false) const;

  /// The largest body any route takes: a parser's limit before the route is known.
  std::size_t largest_body_limit() const noexcept { return largest_body_limit_; }
  /// The largest body a route takes that is not a file: what a connection's buffer must hold at
  /// once (a file body goes straight from the socket into its string).
  std::size_t largest_buffered_body() const noexcept { return largest_buffered_body_; }

  /// Every route's name: the cheap ones and the kinds', for the metrics to know from the start.
  std::vector<std::string> route_names() const;

  /// GET /v1/kinds: every kind, its routes, their parameters with bounds, and its cost rate.
  std::string kinds_document() const;

 private:
  std::size_t body_limit(const job_route& route) const noexcept;

  // route()'s steps. An answer that needs no body, refused before it is read when the head
  // declares more than `limit` (0: --max-body-bytes).
  head_route sized(const request_head& head, reply r, std::size_t limit = 0) const;
  // A route that needs a key, when the server has keys: 401 from the head, before any body is
  // read or any work is done; with one, the key's name goes with the request.
  head_route guarded(const request_head& head, head_route routed) const;
  // The fixed routes (/healthz, /metrics, the live view, ...), and /v1/jobs/{id}[/result].
  std::optional<head_route> route_fixed(const request_head& head, std::string_view path) const;
  std::optional<head_route> route_stored_job(const request_head& head, std::string_view path) const;
  // A kind's route whose path and method matched: its body's limit and media type checked.
  head_route route_job(const request_head& head, const job_kind& kind, const job_route& r, std::string_view segment,
                       std::string_view query) const;

  // The routes that are not a kind's, one row each (router.cpp), and what they answer.
  struct fixed_route;
  static const fixed_route fixed_routes[];
  static reply answer_healthz(const router&);
  static reply answer_readyz(const router&);
  static reply answer_metrics(const router&);
  static reply answer_openapi(const router&);
  static reply answer_flows(const router&);
  static reply answer_kinds(const router&);
  static reply answer_stats(const router&);
  static reply answer_events(const router&);
  template <std::size_t file>
  static reply answer_ui(const router&);

  job_registry jobs_;
  server_view view_;
  std::chrono::milliseconds default_timeout_;
  std::chrono::milliseconds max_timeout_;
  std::chrono::milliseconds async_max_timeout_;
  std::size_t max_body_bytes_;
  std::uint64_t memory_budget_;
  bool ui_;
  bool protect_metrics_;
  std::string openapi_;  ///< GET /openapi.json, generated once
  std::size_t largest_body_limit_ = 0;
  std::size_t largest_buffered_body_ = 0;
};

}  // namespace crunch
