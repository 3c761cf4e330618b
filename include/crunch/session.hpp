#pragma once
/// One HTTP/1.1 connection: a coroutine that reads requests, routes them, runs jobs on the pool
/// (or inline, in --mode inline) and writes the responses in order.

#include <crunch/config.hpp>
#include <crunch/metrics.hpp>
#include <crunch/net.hpp>
#include <crunch/router.hpp>
#include <crunch/worker_pool.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <list>
#include <string>

namespace crunch {

/// A connection's entry in the server's list, through which a drain can close it.
struct connection {
  net::cancellation_signal cancel;  ///< emitting terminal ends the session's current wait
  bool idle = false;                ///< waiting for the first byte of a next request
};

/// What all sessions share. Owned by the server; touched only on the I/O thread.
struct session_context {
  const config& cfg;            ///< limits and timeouts
  const router& routes;         ///< the routing table
  worker_pool& pool;            ///< where jobs run in offload mode
  metrics& stats;               ///< counters
  bool draining = false;        ///< shutdown began: finish what was received, then close
  std::list<connection> connections;  ///< open connections
  std::string request_id_prefix;      ///< random per process, for generated X-Request-Id
  std::uint64_t request_count = 0;    ///< for generated X-Request-Id
};

/// Serves one connection until it closes. `context` and `conn` outlive the coroutine.
net::awaitable<void> run_session(net::ip::tcp::socket socket, session_context* context, connection* conn);

}  // namespace crunch
