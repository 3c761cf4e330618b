#pragma once
/// A connection to Redis for the I/O thread (the job store across replicas, issue 32).
///
/// hiredis (Debian's libhiredis) speaks RESP over a blocking socket on a thread of the link's own:
/// commands queue to it, and each reply is posted back to the I/O thread's executor, so the loop
/// never waits on Redis. A link that loses its connection reconnects before its next command and
/// fails the commands meanwhile with an error reply. One link runs its commands in order; a
/// blocking read (XREADGROUP ... BLOCK) needs a link of its own.

#include "server/net.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

namespace crunch {

/// A Redis reply, copied out of hiredis.
struct redis_reply {
  enum class type { nil, integer, string, status, error, array };
  type kind = type::nil;
  std::int64_t integer = 0;
  std::string text;                  ///< string, status or error
  std::vector<redis_reply> elements; ///< array

  bool ok() const { return kind != type::error; }
};

/// Where Redis is: redis://host:port/db.
struct redis_address {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  int db = 0;
};

/// Parses redis://host[:port][/db]; the reason when it is not one.
std::variant<redis_address, std::string> parse_redis_url(std::string_view url);

/// A blocking connection to Redis (on the link's thread only).
class redis_connection {
 public:
  explicit redis_connection(redis_address address, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  ~redis_connection();
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;

  /// Sends one command (its words as they are: binary safe) and waits for the reply; connects
  /// (and selects the database) first when it is not connected. A lost connection is an error
  /// reply, and the next command connects again.
  redis_reply command(const std::vector<std::string>& words);

 private:
  void connect();
  void drop();

  redis_address address_;
  std::chrono::milliseconds timeout_;
  void* context_ = nullptr;  // redisContext
};

/// Commands run in order on a thread of the link's own; replies are handed to the executor.
class redis_link {
 public:
  using handler = std::function<void(redis_reply)>;

  redis_link(net::any_io_executor io, redis_address address, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  ~redis_link();  ///< finishes the command running, drops the rest, joins the thread
  redis_link(const redis_link&) = delete;
  redis_link& operator=(const redis_link&) = delete;

  /// Queues `words`; `done` runs on the executor with the reply.
  void send(std::vector<std::string> words, handler done);

 private:
  void run();

  net::any_io_executor io_;
  redis_connection connection_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::pair<std::vector<std::string>, handler>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace crunch
