#pragma once
// Helpers for the integration tests: a server on 127.0.0.1 port 0 running on its own thread,
// a blocking HTTP client with timeouts, and job kinds that exist only in the tests.

#include <crunch/jobs.hpp>
#include <crunch/kinds.hpp>
#include <crunch/server.hpp>

#include "work_kind.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace crunch::testing {

/// A test configuration: loopback, any free port, small limits.
config test_config(std::size_t workers = 2);

/// A crunch::server on its own I/O thread. The destructor drains it and joins the thread.
class running_server {
 public:
  /// Serves test_jobs() with a probe of its own.
  explicit running_server(config cfg);
  running_server(config cfg, job_registry jobs);
  ~running_server();
  running_server(const running_server&) = delete;
  running_server& operator=(const running_server&) = delete;

  std::uint16_t port() const { return server_.port(); }
  /// Begins the drain (what SIGTERM does).
  void stop() { server_.stop(); }
  /// Waits for run() to return; false if it has not within `timeout`.
  bool wait_stopped(std::chrono::milliseconds timeout);

 private:
  server server_;
  std::mutex mutex_;
  std::condition_variable stopped_cv_;
  bool stopped_ = false;
  std::thread thread_;
};

/// A file that exists for one test, in the temporary directory (a key file, a secret file),
/// removed by the destructor.
class temp_file {
 public:
  temp_file(const std::string& prefix, const std::string& text);
  ~temp_file();
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  std::string path() const { return path_; }

 private:
  std::string path_;
};

/// A parsed HTTP response.
struct http_reply {
  unsigned status = 0;
  std::map<std::string, std::string> headers;  ///< names in lower case
  std::string body;
  bool keep_alive = true;
  std::vector<unsigned> interim;               ///< 1xx answers that came first (100 Continue)
  std::string header(const std::string& lower_name) const;
};

/// The reply's body as JSON.
nlohmann::json json_of(const http_reply& r);
/// The code of the reply's JSON error, {"error":{"code":...}}.
std::string error_code_of(const http_reply& r);

/// One blocking TCP connection to 127.0.0.1:port; every read gives up after a timeout.
class http_connection {
 public:
  explicit http_connection(std::uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~http_connection();
  http_connection(const http_connection&) = delete;
  http_connection& operator=(const http_connection&) = delete;

  /// Writes bytes as they are.
  void send(const std::string& bytes);
  /// Sends "GET target HTTP/1.1" with Host and any extra header lines ("Name: value\r\n...").
  void send_get(const std::string& target, const std::string& extra_headers = {});
  /// Sends "POST target HTTP/1.1" with Content-Type, Content-Length and `body`.
  void send_post(const std::string& target, const std::string& content_type, const std::string& body,
                 const std::string& extra_headers = {});
  /// send_post then read.
  std::optional<http_reply> post(const std::string& target, const std::string& content_type, const std::string& body,
                                 const std::string& extra_headers = {});
  /// Reads one response; nullopt if the connection closed (or timed out) first.
  std::optional<http_reply> read(bool head_request = false);
  /// Reads one answer's head only, and gives its status: for waiting on an interim 100 Continue.
  std::optional<unsigned> read_interim();
  /// send_get then read.
  std::optional<http_reply> get(const std::string& target, const std::string& extra_headers = {});
  /// True when the peer has closed: a read returns end of file within the timeout.
  bool closed_by_peer();
  /// Reads until `needle` has arrived; returns what came up to and including it, and keeps the
  /// rest for the next read. nullopt if the connection closed (or timed out) first.
  std::optional<std::string> read_until(const std::string& needle);
  /// Reads and drops whatever comes until the peer closes; false if it did not within the timeout.
  bool drain_until_closed();
  /// Shrinks the socket's receive buffer: a reader that stops reading is noticed sooner.
  void shrink_receive_buffer();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Scrapes /metrics on `observer` until `line` (e.g. "\ncrunch_job_queue_depth 1\n") appears:
/// a condition wait on the server's own state, bounded by `attempts`. False if it never did.
bool wait_for_metric(http_connection& observer, const std::string& line, int attempts = 5000);

/// The value of one sample line ("name{labels} value") of a /metrics text, 0 when absent.
double sample(const std::string& metrics, const std::string& series);

/// Scrapes /metrics on `observer` until crunch_workers_busy is `busy`, and says how long that
/// took; nullopt if it was not within `timeout`. How a test times a worker's release.
std::optional<std::chrono::milliseconds> workers_busy_within(http_connection& observer, int busy,
                                                             std::chrono::milliseconds timeout = std::chrono::seconds(10));

/// How much longer a sanitizer build takes to start and stop a helper process (its runtime maps
/// and unmaps its shadow memory): 5, and 1 without sanitizers. Timing bounds are multiplied by it.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr int sanitizer_slack = 5;
#else
inline constexpr int sanitizer_slack = 1;
#endif

/// `kinds` built from `cfg`, each given at start a rate of 1e-12 ns a unit (fib(80) looks like 47 µs) (and none
/// calibrating on its first job): admission expects every job to be quick and lets it in, so that
/// a test can watch one outlast its deadline and be stopped.
job_registry underpriced_jobs(const std::vector<kind_declaration>& kinds, const config& cfg);

/// A job that was stopped: its answer, and how long its worker stayed busy after it.
struct stopped_job {
  http_reply answer;
  std::chrono::milliseconds busy_after{};
};

/// Sends `request` (raw bytes, whose timeout_ms its job cannot meet) to the one-worker server on
/// `port`, reads its answer (a 504 at the deadline), and times the worker's release after it.
std::optional<stopped_job> run_past_deadline(std::uint16_t port, const std::string& request);

/// Sends `request` (raw bytes, a long job with a long deadline) to the one-worker server on
/// `port`, leaves once its worker is busy, and times the worker's release from then.
std::optional<std::chrono::milliseconds> leave_mid_job(std::uint16_t port, const std::string& request);

/// The promise every kind keeps (issue 31), checked on the one-worker server on `port`:
/// `request(timeout_ms)` (raw bytes of a job longer than `short_timeout_ms`) gets its 504 and its
/// worker is free within 100 ms after it; with a long deadline, a client that leaves mid-job frees
/// its worker within 100 ms too (both scaled by sanitizer_slack). Fails the calling test if not.
void expect_stops_within_100_ms(std::uint16_t port, const std::function<std::string(int timeout_ms)>& request,
                                int short_timeout_ms);

/// Memory a server holds beyond what its idle workers keep for their next job (Argon2's area,
/// their helpers' shared memory): crunch_job_memory_bytes less crunch_job_memory_kept_bytes, from
/// a /metrics text. 0 once every body and job has given its memory back.
double memory_held(const std::string& metrics);

/// One Server-Sent Event's data from a /v1/events stream, as JSON; nullopt if the stream ended.
std::optional<nlohmann::json> next_event(http_connection& stream);

/// GET /opaque/{ms}: burns CPU as /work/{ms} does, with no cost model: only the queue limit and
/// the deadline bound it.
job_kind opaque_job(std::shared_ptr<job_probe> probe);

/// GET /throw/{message}: throws std::runtime_error(message) on the worker.
job_kind throw_job();

/// What a test server serves: the built-in kinds, whichever are built (for their own tests, in
/// kinds/), the work kind reporting to `probe`, opaque and throw, configured by `cfg`. The core's
/// tests name only the test kinds.
job_registry test_jobs(std::shared_ptr<job_probe> probe, const config& cfg = config{});

}  // namespace crunch::testing
