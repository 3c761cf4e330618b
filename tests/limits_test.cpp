// Connection limits: pipelining, max connections, and a storm of thousands of connections.
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

namespace crunch::testing {
namespace {

using namespace std::chrono_literals;

TEST(limits, pipelined_requests_past_the_limit_close_the_connection) {
  auto cfg = test_config(1);
  cfg.max_pipelined = 3;
  running_server s(cfg);
  http_connection conn(s.port());
  std::string six;
  for (int i = 0; i < 6; ++i) six += "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  conn.send(six);
  // The first is read fresh; the next three come from bytes already received. The fourth of those
  // would be one too many, so the third closes the connection.
  for (int i = 0; i < 4; ++i) {
    const auto r = conn.read();
    ASSERT_TRUE(r) << "answer " << i;
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->keep_alive, i < 3) << "answer " << i;
  }
  EXPECT_TRUE(conn.closed_by_peer());
  // A client that waits for each answer is never cut off.
  http_connection patient(s.port());
  for (int i = 0; i < 10; ++i) {
    const auto r = patient.get("/healthz");
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->keep_alive);
  }
}

TEST(limits, connections_over_the_limit_get_503_and_the_others_go_on) {
  auto cfg = test_config(1);
  cfg.max_connections = 2;
  running_server s(cfg);
  http_connection observer(s.port());
  http_connection second(s.port());
  ASSERT_TRUE(second.get("/healthz"));
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_connections_open 2\n"));

  http_connection third(s.port());
  third.send_get("/work/1");
  const auto refused = third.read();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503u);
  EXPECT_EQ(nlohmann::json::parse(refused->body).at("error").at("code"), "too_many_connections");
  EXPECT_EQ(refused->header("retry-after"), "1");
  EXPECT_TRUE(third.closed_by_peer());

  // The two open connections are unharmed, and the refusal is counted.
  EXPECT_EQ(second.get("/work/1")->status, 200u);
  EXPECT_TRUE(wait_for_metric(observer, "\ncrunch_connections_refused_total 1\n"));
}

TEST(limits, a_slowloris_client_is_cut_off_by_the_read_timeout) {
  auto cfg = test_config(1);
  cfg.read_timeout = 300ms;
  running_server s(cfg);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(s.port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  // A head that never ends, one header line every 50 ms: always sending, never done.
  const auto start = std::chrono::steady_clock::now();
  const std::string first = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
  ASSERT_EQ(::send(fd, first.data(), first.size(), MSG_NOSIGNAL), static_cast<ssize_t>(first.size()));
  bool cut_off = false;
  while (!cut_off && std::chrono::steady_clock::now() - start < 5s) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) == 1) {  // the pacing of the trickle; the server's close ends it
      char byte;
      cut_off = ::recv(fd, &byte, 1, 0) <= 0;
      break;
    }
    const std::string line = "X-Slow: y\r\n";
    if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) < 0) cut_off = true;
  }
  const auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  EXPECT_TRUE(cut_off) << "the server must close on a client that never finishes its head";
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 3s);
  http_connection after(s.port());
  EXPECT_EQ(after.get("/healthz")->status, 200u);
}

TEST(limits, an_idle_kept_alive_connection_is_closed_after_the_idle_timeout) {
  auto cfg = test_config(1);
  cfg.idle_timeout = 300ms;
  running_server s(cfg);
  http_connection conn(s.port());
  ASSERT_EQ(conn.get("/healthz")->status, 200u);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(conn.closed_by_peer());
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 3s);
}

// A raw client connection for the storm: non-blocking, driven by poll.
struct storm_client {
  int fd = -1;
  std::string received;
  bool done = false;  // end of file seen (or an error)
  bool failed = false;
};

int connect_nonblocking(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Waits until every client's socket reports `events` (calling on_ready until it says done).
template <typename OnReady>
void wait_all(std::vector<storm_client>& clients, short events, std::chrono::steady_clock::time_point deadline,
              OnReady on_ready) {
  std::vector<pollfd> fds(clients.size());
  std::size_t pending = clients.size();
  std::vector<bool> ready(clients.size(), false);
  while (pending > 0 && std::chrono::steady_clock::now() < deadline) {
    for (std::size_t i = 0; i < clients.size(); ++i) fds[i] = {ready[i] ? -1 : clients[i].fd, events, 0};
    if (::poll(fds.data(), fds.size(), 100) < 0 && errno != EINTR) return;
    for (std::size_t i = 0; i < clients.size(); ++i) {
      if (!ready[i] && fds[i].revents != 0 && on_ready(clients[i])) {
        ready[i] = true;
        --pending;
      }
    }
  }
}

// Waits until every client is connected, or until `deadline`.
void connect_all(std::vector<storm_client>& clients, std::chrono::steady_clock::time_point deadline) {
  wait_all(clients, POLLOUT, deadline, [](storm_client&) { return true; });
}

// Sends each client its request, then reads each answer to the end of the connection.
void exchange_all(std::vector<storm_client>& clients, std::chrono::steady_clock::time_point deadline) {
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  for (auto& c : clients) {
    if (::send(c.fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) c.failed = true;
  }
  wait_all(clients, POLLIN, deadline, [](storm_client& c) {
    std::array<char, 4096> chunk;
    const auto n = ::recv(c.fd, chunk.data(), chunk.size(), 0);
    if (n > 0) {
      c.received.append(chunk.data(), static_cast<std::size_t>(n));
      return false;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return false;
    if (n < 0) c.failed = true;
    c.done = true;
    return true;
  });
}

TEST(limits, a_storm_of_connections_is_answered_or_refused_and_the_loop_stays_fast) {
  // Both ends of every connection live in this process: raise the open-files limit for them.
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  const std::size_t storm = std::min<std::size_t>(3000, limit.rlim_cur > 600 ? limit.rlim_cur - 500 : 0);
  if (storm < 1000) GTEST_SKIP() << "open-files limit " << limit.rlim_cur << " leaves no room for a storm";

  auto cfg = test_config(1);
  cfg.max_connections = 200;
  running_server s(cfg);

  http_connection observer(s.port());
  ASSERT_TRUE(observer.get("/healthz"));

  // Every client connects first and says nothing: the server fills up to its limit with them,
  // refuses the next ones, and leaves the rest in the listen backlog.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  std::vector<storm_client> clients(storm);
  for (auto& c : clients) {
    c.fd = connect_nonblocking(s.port());
    ASSERT_GE(c.fd, 0) << std::strerror(errno);
  }
  connect_all(clients, deadline);
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_connections_open 200\n")) << "the server should fill up";

  // /healthz, one request after another on the observer's connection, while the storm is served.
  std::atomic<bool> storming{true};
  std::atomic<long long> worst_us{0};
  std::atomic<int> probes{0};
  std::atomic<int> probe_failures{0};
  std::thread prober([&] {
    while (storming) {
      const auto start = std::chrono::steady_clock::now();
      const auto r = observer.get("/healthz");
      const auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
      if (!r || r->status != 200) ++probe_failures;
      worst_us = std::max(worst_us.load(), static_cast<long long>(took.count()));
      ++probes;
    }
  });

  exchange_all(clients, deadline);
  storming = false;
  prober.join();

  std::size_t ok = 0, refused = 0, other = 0;
  for (auto& c : clients) {
    ::close(c.fd);
    if (c.received.starts_with("HTTP/1.1 200 ")) {
      ++ok;
    } else if (c.received.starts_with("HTTP/1.1 503 ") &&
               c.received.find("too_many_connections") != std::string::npos) {
      ++refused;
    } else {
      ++other;
    }
  }
  std::printf("storm of %zu: %zu answered, %zu refused with 503, %zu otherwise; /healthz %d times meanwhile, "
              "worst %lld us\n",
              storm, ok, refused, other, probes.load(), worst_us.load());
  EXPECT_EQ(other, 0u) << "every connection gets an answer or a clean 503";
  EXPECT_EQ(ok + refused, storm);
  EXPECT_GT(refused, 0u) << "the limit was reached with clients still waiting: some must be refused";
  EXPECT_GT(ok, 0u);
  EXPECT_EQ(probe_failures.load(), 0);
  EXPECT_GT(probes.load(), 0);
  EXPECT_LT(worst_us.load(), 1'000'000) << "the loop must keep answering /healthz during the storm";
  EXPECT_EQ(observer.get("/healthz")->status, 200u);
}

}  // namespace
}  // namespace crunch::testing
