#pragma once
/// The crunch server: one I/O thread, a listener, one coroutine per connection, a worker pool.

#include <crunch/config.hpp>
#include <crunch/jobs.hpp>
#include <crunch/kinds.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace crunch {

/// A crunch server. Construction binds and listens, so port() is known before run().
class server {
 public:
  /// Binds `cfg.address`:`cfg.port` and starts the workers; throws sys::system_error when binding
  /// fails. Serves builtin_kinds().
  explicit server(config cfg);
  /// The same, serving `kinds`, built from `cfg` once its defaults are resolved; throws
  /// config_error when a kind refuses the configuration (kind_declaration::check).
  server(config cfg, const std::vector<kind_declaration>& kinds);
  /// The same, serving `jobs` as they are.
  server(config cfg, job_registry jobs);
  /// Joins every thread the server started.
  ~server();

  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// The bound port (the real one when cfg.port was 0).
  std::uint16_t port() const noexcept;

  /// Makes SIGTERM and SIGINT begin the drain (a second signal cuts it short), and SIGHUP reread
  /// the API key file and the kinds' files (reload()). Call before run().
  void stop_on_signals();

  /// Rereads the API key file and each kind's files (job_kind::reload), as SIGHUP does: new
  /// requests use what was read, open connections stay. A file that cannot be used is logged and
  /// what it would have replaced is kept. Safe from any thread.
  void reload();

  /// Runs the I/O loop on the calling thread until a drain has finished, then joins the workers.
  void run();

  /// Begins the drain: stop accepting, /readyz answers 503, idle connections close, requests
  /// already received are answered, and after cfg.drain_timeout whatever is left is cancelled.
  /// Safe from any thread.
  void stop();

 private:
  struct configured;  // a resolved config and the jobs built from it
  explicit server(configured built);
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace crunch
