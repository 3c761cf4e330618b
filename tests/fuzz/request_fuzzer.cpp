// libFuzzer target: arbitrary bytes sent as one client connection to an in-process crunchd, over
// the real path — Beast's parser with crunch's limits, the head checks, routing, parameter
// validation, admission and the response writer; image bodies (seeds in corpus/image_*) reach
// the image header reader and libvips's decoders. Then the client half-closes and reads to the end.
//
// It fails (aborts) when crunchd crashes or trips a sanitizer, does not end the connection within
// 5 s of the client's EOF, or writes anything that is not a sequence of well-formed HTTP/1.x
// responses, each error among them carrying the JSON error shape.
//   scripts/fuzz.sh    builds it with clang (ASan + UBSan) and runs it for a minute
#include <crunch/server.hpp>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace {

namespace http = boost::beast::http;

// One server for the whole run, on its own I/O thread; stopped and joined at exit.
class fuzzed_server {
 public:
  fuzzed_server() : server_(make_config()), thread_([this] { server_.run(); }) {}
  ~fuzzed_server() {
    server_.stop();
    thread_.join();
  }
  std::uint16_t port() const { return server_.port(); }

 private:
  static crunch::config make_config() {
    crunch::config c;
    c.address = "127.0.0.1";
    c.port = 0;
    c.workers = 1;
    c.default_timeout = std::chrono::milliseconds(50);  // a fuzzed /fib/90 must not stall the run
    c.max_timeout = std::chrono::milliseconds(200);
    // Asynchronous jobs as short: a fuzzed Prefer: respond-async must not hold the worker an hour.
    c.async_max_timeout = std::chrono::milliseconds(200);
    c.jobs_keep = std::chrono::seconds(1);
    c.jobs_store_bytes = 4 << 20;
    c.read_timeout = std::chrono::seconds(2);
    c.idle_timeout = std::chrono::seconds(2);
    c.drain_timeout = std::chrono::milliseconds(100);
    c.log_level_ = crunch::log_level::error;
    // Small hashes: a fuzzed body may ask for the most memory and passes the bounds allow.
    c.settings["password-m-cost"] = 64;
    c.settings["password-t-cost"] = 1;
    c.settings["password-max-m-cost"] = 1024;
    c.settings["password-max-t-cost"] = 2;
    // Small images: a fuzzed header may declare the most pixels the limit allows.
    c.settings["max-image-pixels"] = 1 << 20;
    c.settings["max-image-bytes"] = 64 * 1024;
    // Flows named by a header the fuzzer writes: any bytes, any length, become flow keys.
    c.fair_key_ = crunch::fair_key::header;
    c.fair_header = "X-Client-Id";
    c.max_flows = 16;
    return c;
  }
  crunch::server server_;
  std::thread thread_;
};

[[noreturn]] void fail(const char* what, std::string_view output) {
  std::fprintf(stderr, "request_fuzzer: %s\n--- crunchd wrote %zu bytes:\n%.*s\n---\n", what, output.size(),
               static_cast<int>(std::min<std::size_t>(output.size(), 2000)), output.data());
  std::abort();
}

// The server's own view, for a failure report: its /metrics (or why it could not be had).
std::string diagnose(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval two_seconds{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &two_seconds, sizeof two_seconds);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return "(connect failed)";
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string text;
  std::array<char, 16384> chunk;
  for (ssize_t n; (n = ::recv(fd, chunk.data(), chunk.size(), 0)) > 0;) text.append(chunk.data(), static_cast<std::size_t>(n));
  ::close(fd);
  std::string lines;  // the connection, job and loop lines are enough
  for (std::size_t at = 0; at < text.size();) {
    const auto end = std::min(text.find('\n', at), text.size());
    const auto line = text.substr(at, end - at);
    if (line.starts_with("crunch_connections") || line.starts_with("crunch_job") || line.starts_with("crunch_workers")) lines += line + "\n";
    at = end + 1;
  }
  return text.empty() ? "(no answer within 2 s)" : lines;
}

// Everything the server writes back, until it closes the connection; nullopt when the transport,
// not crunch, failed to deliver the request.
std::optional<std::string> exchange(std::uint16_t port, const std::uint8_t* data, std::size_t size) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("socket", {});
  // Each connection from another loopback source address (127.1.0.1, 127.1.0.2, ...), so that at
  // a thousand connections a second no address and port pair is reused within the run.
  static std::uint32_t next_source = 0;
  const std::uint32_t k = next_source++;
  sockaddr_in source{};
  source.sin_family = AF_INET;
  source.sin_addr.s_addr = htonl((127u << 24) | (1u + k / 254u / 256u % 200u) << 16 | (k / 254u % 256u) << 8 | (1u + k % 254u));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof source) != 0) fail(std::strerror(errno), "bind failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // Non-blocking, and every wait a poll that goes on after EINTR: libFuzzer's SIGALRM (its
  // -timeout watchdog) interrupts blocking calls.
  const auto wait_for = [fd](short events, std::chrono::seconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd, events, 0};
      const int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r == 1) return true;
      if (r < 0 && errno != EINTR) return false;
    }
  };
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) fail(std::strerror(errno), "connect failed");
    if (!wait_for(POLLOUT, std::chrono::seconds(60))) fail("connect did not complete in 60 s", {});
    int error = 0;
    socklen_t length = sizeof error;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
    if (error != 0) fail(std::strerror(error), "connect failed");
  }
  // The server may answer and close before taking everything (an error closes the connection);
  // a failed send is not a finding.
  std::size_t sent = 0;
  while (sent < size) {
    const auto n = ::send(fd, data + sent, size - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait_for(POLLOUT, std::chrono::seconds(5))) break;
    } else {
      break;
    }
  }
  ::shutdown(fd, SHUT_WR);
  std::string output;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto transport_patience = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    const int ready = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready != 1) {
      tcp_info info{};
      socklen_t length = sizeof info;
      ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length);
      // Segments the server's kernel has not even acknowledged are the transport's delay, not
      // crunch's: on a loaded machine this kernel has held a loopback segment in a host queue
      // for seconds (nstat: TCPSpuriousRtxHostQueues). Wait for the transport, not for crunch.
      if (info.tcpi_unacked > 0 && std::chrono::steady_clock::now() < transport_patience) {
        deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        continue;
      }
      std::fprintf(stderr, "client socket: TCP state %u, %u segments unacknowledged; the server's /metrics now:\n%s\n",
                   info.tcpi_state, info.tcpi_unacked, diagnose(port).c_str());
      if (info.tcpi_unacked > 0) {
        std::fprintf(stderr, "request_fuzzer: the transport held a segment for 60 s; input skipped\n");
        ::close(fd);
        return std::nullopt;
      }
      fail("connection not closed within 5 s of the server having the whole request", output);
    }
    std::array<char, 16384> chunk;
    const auto n = ::recv(fd, chunk.data(), chunk.size(), 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) break;
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) fail("recv failed", output);
    output.append(chunk.data(), static_cast<std::size_t>(n));
  }
  // Closed with a reset, not a FIN: a client that closes first keeps the port in TIME_WAIT for
  // a minute, and at a thousand connections a second the ephemeral ports run out.
  linger abort_on_close{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
  ::close(fd);
  return output;
}

// The output must be whole HTTP/1.x responses, one after another.
void check(std::string_view output) {
  boost::beast::flat_buffer buffer;
  auto writable = buffer.prepare(output.size());
  std::copy(output.begin(), output.end(), static_cast<char*>(writable.data()));
  buffer.commit(output.size());
  while (buffer.size() > 0) {
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.body_limit(64 * 1024 * 1024);
    boost::system::error_code ec;
    while (!parser.is_done()) {
      if (buffer.size() == 0) {
        // A response without a length (a /v1/events stream) ends where the connection does.
        if (!parser.is_header_done() || parser.content_length() || parser.chunked()) fail("a response was cut short", output);
        parser.put_eof(ec);
        if (ec) fail("a response was cut short", output);
        break;
      }
      const auto used = parser.put(buffer.data(), ec);
      buffer.consume(used);
      if (ec == http::error::need_more) continue;
      if (ec) fail("not a well-formed HTTP response", output);
    }
    const auto& res = parser.get();
    const unsigned status = res.result_int();
    if (status < 100 || status > 599) fail("status out of range", output);
    if (status >= 400) {
      const auto body = nlohmann::json::parse(res.body(), nullptr, false);
      if (!body.is_object() || !body.contains("error") || !body["error"].contains("code")) {
        fail("an error without the JSON error shape", output);
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto server = std::make_unique<fuzzed_server>();
  const auto answered = exchange(server->port(), data, size);
  if (!answered) return 0;
  const auto& output = *answered;
  // An answer to HEAD announces a body it does not carry, which only the request tells apart;
  // with a HEAD among the requests, the output is only required to start as HTTP.
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (input.find("HEAD") != std::string_view::npos) {
    if (!output.empty() && !output.starts_with("HTTP/1.")) fail("not HTTP", output);
  } else {
    check(output);
  }
  return 0;
}
