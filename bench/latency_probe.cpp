// Open-loop latency probe: one GET every interval on a kept-alive connection, each round trip
// timed. Unlike a closed-loop wrk, it does not itself saturate the CPU it is measuring, so it
// shows how fast a cheap request is answered while the workers are busy.
// usage: latency_probe PORT [PATH=/healthz] [SECONDS=5] [INTERVAL_US=2000]   → one JSON line
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

using clock_type = std::chrono::steady_clock;

int connect_loopback(unsigned short port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return -1;
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Reads one response with a Content-Length body; false on error or close.
bool read_response(int fd, std::string& buffer) {
  for (;;) {
    const auto end = buffer.find("\r\n\r\n");
    if (end != std::string::npos) {
      std::size_t length = 0;
      const auto cl = buffer.find("Content-Length: ");
      if (cl != std::string::npos && cl < end) length = std::strtoul(buffer.c_str() + cl + 16, nullptr, 10);
      if (buffer.size() >= end + 4 + length) {
        buffer.erase(0, end + 4 + length);
        return true;
      }
    }
    char chunk[4096];
    const auto n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: latency_probe PORT [PATH] [SECONDS] [INTERVAL_US]\n");
    return 2;
  }
  const auto port = static_cast<unsigned short>(std::atoi(argv[1]));
  const std::string path = argc > 2 ? argv[2] : "/healthz";
  const double seconds = argc > 3 ? std::atof(argv[3]) : 5.0;
  const auto interval = std::chrono::microseconds(argc > 4 ? std::atol(argv[4]) : 2000);
  const int fd = connect_loopback(port);
  if (fd < 0) {
    std::perror("connect");
    return 1;
  }
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  std::vector<double> micros;
  std::string buffer;
  const auto stop_at = clock_type::now() + std::chrono::duration_cast<clock_type::duration>(
                                               std::chrono::duration<double>(seconds));
  auto next = clock_type::now();
  int errors = 0;
  while (clock_type::now() < stop_at) {
    std::this_thread::sleep_until(next);  // pacing the load, not synchronising anything
    next += interval;
    const auto start = clock_type::now();
    if (::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size()) ||
        !read_response(fd, buffer)) {
      ++errors;
      break;
    }
    micros.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - start).count());
  }
  ::close(fd);
  if (micros.empty()) return 1;
  std::sort(micros.begin(), micros.end());
  auto pct = [&](double p) { return micros[std::min(micros.size() - 1, static_cast<std::size_t>(p * static_cast<double>(micros.size())))]; };
  std::printf("{\"requests\":%zu,\"errors\":%d,\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}}\n",
              micros.size(), errors, pct(0.50), pct(0.90), pct(0.99), pct(0.999), micros.back());
  return errors == 0 ? 0 : 1;
}
