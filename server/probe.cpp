#include "server/probe.hpp"

#include <array>
#include <cerrno>
#include <cstring>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace crunch {

namespace {

// Closes the socket however the probe ends.
struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

// Waits for `events` on fd until `deadline`; false on timeout or error.
bool wait_for(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return false;
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, static_cast<int>(left.count())) == 1;
}

}  // namespace

probe_result probe(const config& cfg, const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // A server listening on every address is reached on loopback; otherwise on its own address.
  const bool any_v6 = cfg.address == "::";
  const bool v6 = cfg.address.find(':') != std::string::npos;
  sockaddr_storage storage{};
  socklen_t length = 0;
  if (v6) {
    auto& a = reinterpret_cast<sockaddr_in6&>(storage);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(cfg.port);
    if (any_v6) {
      a.sin6_addr = in6addr_loopback;
    } else if (inet_pton(AF_INET6, cfg.address.c_str(), &a.sin6_addr) != 1) {
      return {false, "bad address " + cfg.address};
    }
    length = sizeof a;
  } else {
    auto& a = reinterpret_cast<sockaddr_in&>(storage);
    a.sin_family = AF_INET;
    a.sin_port = htons(cfg.port);
    const std::string host = cfg.address == "0.0.0.0" ? "127.0.0.1" : cfg.address;
    if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) return {false, "bad address " + cfg.address};
    length = sizeof a;
  }

  fd_guard sock{::socket(storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (sock.fd < 0) return {false, std::string("socket: ") + std::strerror(errno)};
  if (::connect(sock.fd, reinterpret_cast<sockaddr*>(&storage), length) != 0) {
    if (errno != EINPROGRESS) return {false, std::string("connect: ") + std::strerror(errno)};
    if (!wait_for(sock.fd, POLLOUT, deadline)) return {false, "connect: timed out"};
    int error = 0;
    socklen_t size = sizeof error;
    ::getsockopt(sock.fd, SOL_SOCKET, SO_ERROR, &error, &size);
    if (error != 0) return {false, std::string("connect: ") + std::strerror(error)};
  }

  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  std::size_t sent = 0;
  while (sent < request.size()) {
    if (!wait_for(sock.fd, POLLOUT, deadline)) return {false, "send: timed out"};
    const auto n = ::send(sock.fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) return {false, std::string("send: ") + std::strerror(errno)};
    if (n > 0) sent += static_cast<std::size_t>(n);
  }

  // The status line is all a probe needs.
  std::string head;
  std::array<char, 512> chunk;
  while (head.find("\r\n") == std::string::npos && head.size() < 4096) {
    if (!wait_for(sock.fd, POLLIN, deadline)) return {false, "no answer in time"};
    const auto n = ::recv(sock.fd, chunk.data(), chunk.size(), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return {false, std::string("recv: ") + std::strerror(errno)};
    }
    head.append(chunk.data(), static_cast<std::size_t>(n));
  }
  const auto status_line = head.substr(0, head.find("\r\n"));
  if (!status_line.starts_with("HTTP/1.")) return {false, "not an HTTP answer"};
  return {status_line.substr(8, 5) == " 200 ", status_line};
}

}  // namespace crunch
