// Open-loop latency probe: one GET every interval on a kept-alive connection, each round trip
// timed. Unlike a closed-loop wrk, it does not itself saturate the CPU it is measuring, so it
// shows how fast a cheap request is answered while the workers are busy.
// Each request is timed from when it was due, not from when it was sent: a slow answer delays the
// next request, and that delay counts (no coordinated omission).
// usage: latency_probe PORT [PATH=/healthz] [SECONDS=5] [INTERVAL_US=2000] [HEADER_LINE]  → one JSON line
// with the latency of every answer, that of the 200s alone, that of every answer from when it was
// sent (the old measure, without the probe's own lateness), the count of answers by status, and
// whether the probe ran real-time (see main).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/prctl.h>
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

// Reads one response with a Content-Length body and gives its status; 0 on error or close.
int read_response(int fd, std::string& buffer) {
  for (;;) {
    const auto end = buffer.find("\r\n\r\n");
    if (end != std::string::npos) {
      const int status = buffer.size() > 12 ? std::atoi(buffer.c_str() + 9) : 0;
      std::size_t length = 0;
      const auto cl = buffer.find("Content-Length: ");
      if (cl != std::string::npos && cl < end) length = std::strtoul(buffer.c_str() + cl + 16, nullptr, 10);
      if (buffer.size() >= end + 4 + length) {
        buffer.erase(0, end + 4 + length);
        return status;
      }
    }
    char chunk[4096];
    const auto n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) return 0;
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: latency_probe PORT [PATH] [SECONDS] [INTERVAL_US] [HEADER_LINE]\n");
    return 2;
  }
  // Wake on time: with the default 50 µs timer slack, the probe's own oversleep would count as
  // latency, since each request is timed from when it was due.
  prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
  // The instrument must not be what is measured: on 2 cores the probe shares the CPUs with the
  // server's workers (and a peer's threads), and under the fair scheduler a woken normal process
  // can wait a whole run of a busy batch thread — measured up to 5 ms under thumbnail load, the
  // same for any server. Real-time (where allowed: root, or an RLIMIT_RTPRIO) it runs when woken;
  // the report says which it was. PROBE_NORMAL=1 keeps normal scheduling.
  bool realtime = false;
  if (std::getenv("PROBE_NORMAL") == nullptr) {
    sched_param param{};
    param.sched_priority = 1;
    realtime = sched_setscheduler(0, SCHED_FIFO, &param) == 0;
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
  const std::string header = argc > 5 ? std::string(argv[5]) + "\r\n" : std::string();
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + "\r\n";
  std::vector<double> micros;
  std::vector<double> ok_micros;
  std::vector<double> sent_micros;  // from when it was sent: without the probe's own lateness
  std::map<int, int> statuses;
  std::string buffer;
  const auto stop_at = clock_type::now() + std::chrono::duration_cast<clock_type::duration>(
                                               std::chrono::duration<double>(seconds));
  auto next = clock_type::now();
  int errors = 0;
  while (clock_type::now() < stop_at) {
    std::this_thread::sleep_until(next);  // pacing the load, not synchronising anything
    const auto due = next;
    next += interval;
    int status = 0;
    const auto sent = clock_type::now();
    if (::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size()) ||
        (status = read_response(fd, buffer)) == 0) {
      ++errors;
      break;
    }
    const double took = std::chrono::duration<double, std::micro>(clock_type::now() - due).count();
    micros.push_back(took);
    sent_micros.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - sent).count());
    if (status == 200) ok_micros.push_back(took);
    ++statuses[status];
  }
  ::close(fd);
  if (micros.empty()) return 1;
  const auto summary = [](std::vector<double> v) {
    if (v.empty()) return std::string("null");
    std::sort(v.begin(), v.end());
    auto pct = [&](double p) { return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))]; };
    char text[256];
    std::snprintf(text, sizeof text, "{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}", pct(0.50),
                  pct(0.90), pct(0.99), pct(0.999), v.back());
    return std::string(text);
  };
  std::string by_status;
  for (const auto& [status, n] : statuses) {
    by_status += (by_status.empty() ? "" : ",") + ("\"" + std::to_string(status) + "\":" + std::to_string(n));
  }
  std::printf("{\"requests\":%zu,\"errors\":%d,\"realtime\":%s,\"latency_us\":%s,\"ok_latency_us\":%s,\"sent_latency_us\":%s,\"status\":{%s}}\n",
              micros.size(), errors, realtime ? "true" : "false", summary(micros).c_str(), summary(ok_micros).c_str(),
              summary(sent_micros).c_str(), by_status.c_str());
  return errors == 0 ? 0 : 1;
}
