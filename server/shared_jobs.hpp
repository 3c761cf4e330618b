#pragma once
/// Asynchronous jobs on Redis, shared by replicas (--jobs-store redis://...). WORK IN PROGRESS:
/// submit, the consumer loop (take what the workers can run, keep it claimed, take over a dead
/// replica's), status and result. Not yet: idempotency keys, DELETE, callbacks, metrics.
///
/// A job is stored as its request, so that any replica can prepare it again (router::match_job,
/// router::prepare); a password's body is never written here: those routes stay synchronous.

#include "server/redis_jobs.hpp"
#include "server/redis_link.hpp"

#include <crunch/job_pipeline.hpp>
#include <crunch/log.hpp>
#include <crunch/router.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <string>

namespace crunch {

class shared_jobs {
 public:
  using steady = std::chrono::steady_clock;

  /// What a replica needs of a request to prepare it again.
  struct stored_request {
    std::string method;
    std::string target;
    std::string content_type;
    std::string accept;
    std::string body;
    std::string owner;
    std::string flow;
    std::chrono::milliseconds timeout{};
    std::string kind;
    std::string route;
  };

  shared_jobs(net::any_io_executor io, redis_address address, const router& routes, job_pipeline& pipeline,
              std::size_t workers, std::chrono::milliseconds keep, std::chrono::milliseconds claim_after, logger& log);
  ~shared_jobs();

  /// Creates the group if needed and starts taking jobs.
  void start();
  /// The drain: takes nothing more; what runs is stopped (another replica takes it over).
  void stop();

  /// Stores and queues the job: 202 with its Location, or 503 when Redis cannot take it.
  net::awaitable<reply> submit(stored_request request);
  /// GET /v1/jobs/{id} and its result, from Redis.
  net::awaitable<reply> status(std::string owner, std::string id);
  net::awaitable<reply> result(std::string owner, std::string id);

 private:
  net::awaitable<void> consume();
  net::awaitable<void> run(redis_entry entry);
  net::awaitable<redis_job_fields> read(const std::string& id);

  net::any_io_executor io_;
  redis_link link_;
  std::string consumer_;
  redis_jobs jobs_;
  const router& routes_;
  job_pipeline& pipeline_;
  std::size_t workers_;
  std::chrono::milliseconds keep_;
  std::chrono::milliseconds claim_after_;
  logger& log_;
  bool stopping_ = false;
  std::map<std::string, std::shared_ptr<net::steady_timer>> running_;  // entry → its stop signal
  std::shared_ptr<net::steady_timer> tick_;
};

}  // namespace crunch
