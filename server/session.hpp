#pragma once
/// One HTTP/1.1 connection: a coroutine that reads requests, routes them, hands jobs to the
/// pipeline and writes the responses in order.

#include <crunch/config.hpp>
#include "server/job_pipeline.hpp"
#include "server/live_view.hpp"
#include <crunch/log.hpp>
#include "server/metrics.hpp"
#include "server/net.hpp"
#include "server/router.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <list>
#include <optional>
#include <string>

namespace crunch {

class async_jobs;
class fingerprinter;
class shared_jobs;

/// A connection's entry in the server's list, through which a drain can close it.
struct connection {
  net::cancellation_signal cancel;  ///< emitting terminal ends the session's current wait
  bool idle = false;                ///< waiting for the first byte of a next request
  bool in_job = false;              ///< waiting for a job: a drain ends that wait through the pipeline
  bool streaming = false;           ///< sending /v1/events: a drain ends it at once
};

/// What all sessions share. Owned by the server; touched only on the I/O thread.
struct session_context {
  const config& cfg;            ///< limits and timeouts
  const router& routes;         ///< the routing table
  job_pipeline& jobs;           ///< where job requests go
  metrics& stats;               ///< counters
  logger& log;                  ///< access and error lines
  bool draining = false;        ///< shutdown began: finish what was received, then close
  bool drain_expired = false;   ///< the drain timeout passed: answer and close at once
  std::list<connection> connections = {};  ///< open connections
  std::string request_id_prefix = {}; ///< random per process, for generated X-Request-Id
  std::uint64_t request_count = 0;    ///< for generated X-Request-Id
  std::size_t refusing = 0;           ///< connections being refused (over max_connections) now
  live_view* live = nullptr;          ///< snapshots for /v1/events; null when the live view is off
  async_jobs* async = nullptr;        ///< the job store: asynchronous jobs and idempotency keys
  const fingerprinter* fingerprints = nullptr;  ///< for requests with an Idempotency-Key
  shared_jobs* shared = nullptr;      ///< with --jobs-store redis://: asynchronous jobs go there
};

/// Answers a connection over --max-connections with 503 `too_many_connections` and closes it
/// (after reading what the client sent, for at most a second, so the answer is not lost to a reset).
net::awaitable<void> refuse_connection(net::ip::tcp::socket socket, session_context* context);

/// Serves one connection until it closes. `context` and `conn` outlive the coroutine.
net::awaitable<void> run_session(net::ip::tcp::socket socket, session_context* context, connection* conn);

}  // namespace crunch
