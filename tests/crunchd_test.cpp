// Tests of the crunchd binary itself: exit codes, start-up errors, and the SIGTERM drain.
#include "test_support.hpp"

#include <crunch/net.hpp>

#include <fib/fib.hpp>
#include <image/image.hpp>
#include <password/argon2.hpp>
#include <password/password.hpp>

#include <gtest/gtest.h>
#include <sodium.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <memory>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <utility>
#include <array>
#include <ostream>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace crunch::testing {
namespace {

using namespace std::chrono_literals;

// crunchd as a child process with its stdout and stderr on pipes.
class crunchd_process {
 public:
  /// `env`: NAME=value lines added to this process's environment for the child.
  /// `program`: crunchd, or crunch_test_service (crunchd with the test kinds).
  explicit crunchd_process(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                           const char* program = CRUNCHD_PATH) {
    int out[2];
    int err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
    std::vector<std::string> argv_storage{program};
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_storage(env);
    std::vector<char*> envp;
    for (auto& e : env_storage) envp.push_back(e.data());
    for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
    envp.push_back(nullptr);
    const int rc = posix_spawn(&pid_, program, &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    close(err[1]);
    out_ = out[0];
    err_ = err[0];
    if (rc != 0) throw std::runtime_error("posix_spawn failed");
  }

  ~crunchd_process() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) close(out_);
    close(err_);
  }

  crunchd_process(const crunchd_process&) = delete;
  crunchd_process& operator=(const crunchd_process&) = delete;

  /// The next line of stdout; empty on EOF or timeout.
  std::string stdout_line(std::chrono::milliseconds timeout = 20s) { return line(out_, out_buffer_, timeout); }

  /// Everything on stderr until the process closes it.
  std::string all_stderr(std::chrono::milliseconds timeout = 20s) {
    std::string text;
    for (auto l = line(err_, err_buffer_, timeout); !l.empty(); l = line(err_, err_buffer_, timeout)) text += l + "\n";
    return text;
  }

  /// Reads stdout to its end (the process exits), then reaps the process: its exit code, or -1.
  int wait_exit(std::chrono::milliseconds timeout = 30s) {
    const int status = wait_status(timeout);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  /// The same, with waitpid's whole status.
  int wait_status(std::chrono::milliseconds timeout = 30s) {
    while (!stdout_line(timeout).empty()) {
    }
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    return status;
  }

  /// Reaps the process without reading its stdout: its exit code, or -1 if it has not exited
  /// within `timeout` (then it is still there, for the destructor to kill).
  int wait_exit_unread(std::chrono::milliseconds timeout) {
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd < 0) return -1;
    pollfd p{pidfd, POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(timeout.count()));
    ::close(pidfd);
    if (ready != 1) return -1;
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  void signal(int signo) { kill(pid_, signo); }
  pid_t pid() const { return pid_; }
  int stdout_fd() const { return out_; }
  /// Closes this end of the stdout pipe: the process's next write there fails with EPIPE.
  void close_stdout() {
    ::close(out_);
    out_ = -1;
  }

 private:
  static std::string line(int fd, std::string& buffer, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (const auto nl = buffer.find('\n'); nl != std::string::npos) {
        std::string l = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        return l;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left <= 0ms) return {};
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return {};
      std::array<char, 4096> chunk;
      const auto n = ::read(fd, chunk.data(), chunk.size());
      if (n <= 0) {
        std::string rest;
        rest.swap(buffer);
        return rest;
      }
      buffer.append(chunk.data(), static_cast<std::size_t>(n));
    }
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  int out_ = -1;
  int err_ = -1;
  std::string out_buffer_;
  std::string err_buffer_;
};

// Starts crunchd on a free loopback port and reads the port from its "listening" line.
std::uint16_t started_port(crunchd_process& p) {
  const auto line = p.stdout_line();
  const auto event = nlohmann::json::parse(line);
  EXPECT_EQ(event.at("event"), "listening") << line;
  return event.at("port").get<std::uint16_t>();
}

struct refusal {
  std::vector<std::string> args;
  std::string names;
};

void PrintTo(const refusal& r, std::ostream* out) {
  for (const auto& a : r.args) *out << a << ' ';
}

class crunchd_refuses : public ::testing::TestWithParam<refusal> {};

TEST_P(crunchd_refuses, nonsense_at_start_with_exit_2_and_one_line) {
  crunchd_process p(GetParam().args);
  const auto err = p.all_stderr();
  EXPECT_EQ(p.wait_exit(), 2);
  EXPECT_NE(err.find(GetParam().names), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

INSTANTIATE_TEST_SUITE_P(flags, crunchd_refuses,
                         ::testing::Values(refusal{{"--workers", "0"}, "--workers"},
                                           refusal{{"--port", "70000"}, "--port"},
                                           refusal{{"--port", "abc"}, "--port"},
                                           refusal{{"--mode", "turbo"}, "--mode"},
                                           // More than all the memory the process may use: the
                                           // OOM killer, not a 503, would answer.
                                           refusal{{"--memory-budget", "100000GiB"}, "MiB this process may use"},
                                           refusal{{"--memory-budget", "8MiB"}, "cannot hold one password hash"},
                                           refusal{{"--api-keys", "/nonexistent/crunch-keys"}, "--api-keys"},
                                           refusal{{"--fair-key", "key"}, "needs --api-keys"},
                                           refusal{{"--fair-key", "header:"}, "--fair-key"},
                                           refusal{{"--fair-key", "header:X Client"}, "--fair-key"},
                                           refusal{{"--protect-metrics", "true"}, "needs --api-keys"},
                                           refusal{{"--max-flows", "0"}, "--max-flows"},
                                           refusal{{"--io-priority", "fast"}, "--io-priority"},
                                           // The kinds' own flags: bounds, and a kind's check.
                                           refusal{{"--max-image-bytes", "1"}, "--max-image-bytes"},
                                           refusal{{"--password-m-cost", "300000"}, "above --password-max-m-cost"},
                                           refusal{{"--password-t-cost", "7"}, "above --password-max-t-cost"}));

// The I/O thread says how it is scheduled. As asked, or refused at start when real-time is
// required and the OS will not give it; `auto` takes it where allowed (as root, in CI).
TEST(crunchd, the_io_thread_is_real_time_where_allowed_and_says_so) {
  auto io_thread_of = [](std::vector<std::string> args, int& exit_code) {
    args.insert(args.end(), {"--address", "127.0.0.1", "--port", "0"});
    crunchd_process p(args);
    const auto line = p.stdout_line();
    if (line.empty()) {
      const auto err = p.all_stderr();
      exit_code = p.wait_exit();
      return "refused: " + err;
    }
    const auto event = nlohmann::json::parse(line);
    p.signal(SIGTERM);
    exit_code = p.wait_exit();
    return event.at("io_thread").get<std::string>();
  };
  int code = -1;
  EXPECT_EQ(io_thread_of({"--io-priority", "normal"}, code), "normal");
  EXPECT_EQ(code, 0);
  // Inline mode runs whole jobs on the I/O thread: never real-time.
  EXPECT_EQ(io_thread_of({"--mode", "inline"}, code), "normal");
  EXPECT_EQ(code, 0);
  const auto inline_realtime = io_thread_of({"--mode", "inline", "--io-priority", "realtime"}, code);
  EXPECT_NE(inline_realtime.find("--mode inline"), std::string::npos) << inline_realtime;
  EXPECT_EQ(code, 2);
  const auto automatic = io_thread_of({}, code);
  EXPECT_TRUE(automatic == "realtime" || automatic == "normal") << automatic;
  EXPECT_EQ(code, 0);
  const auto required = io_thread_of({"--io-priority", "realtime"}, code);
  if (automatic == "realtime") {
    EXPECT_EQ(required, "realtime");
    EXPECT_EQ(code, 0);
  } else {
    EXPECT_NE(required.find("--io-priority realtime"), std::string::npos) << required;
    EXPECT_EQ(code, 2);
  }
}

// What /proc says the process has mapped: whether any mapping's path contains `name`.
bool maps(pid_t pid, std::string_view name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  for (std::string line; std::getline(in, line);) {
    if (line.find(name) != std::string::npos) return true;
  }
  return false;
}

// The processes whose parent is `pid`.
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> children;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    // "pid (comm) state ppid ...": the name may hold spaces, so read after its last ')'.
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string state;
    pid_t parent = 0;
    rest >> state >> parent;
    if (parent == pid) children.push_back(static_cast<pid_t>(std::stoi(name)));
  }
  return children;
}

// Whether `needle` is anywhere in the readable memory of process `pid` (/proc/PID/maps, then
// /proc/PID/mem): what a debugger or an exploit inside that process could read.
bool memory_holds(pid_t pid, const std::string& needle) {
  const auto proc = "/proc/" + std::to_string(pid);
  std::ifstream maps(proc + "/maps");
  const int mem = ::open((proc + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
  if (mem < 0) throw std::runtime_error("cannot open " + proc + "/mem");
  // Which pages are there (present or swapped out): only those are read, so that a sanitizer's
  // sparse regions cost their pagemap, not gigabytes of zeros.
  const int pagemap = ::open((proc + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC);
  if (pagemap < 0) throw std::runtime_error("cannot open " + proc + "/pagemap");
  const std::uint64_t page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  bool found = false;
  std::string chunk;
  std::vector<std::uint64_t> entries;
  for (std::string line; !found && std::getline(maps, line);) {
    std::uint64_t begin = 0, end = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &begin, &end, perms) != 3 || perms[0] != 'r') continue;
    if (line.find("[vvar]") != std::string::npos || line.find("[vsyscall]") != std::string::npos) continue;
    // Terabytes a sanitizer reserves for its shadow: even their pagemap is too long to read, and
    // nothing of crunch's lives in a mapping over 1 GiB in this test (its jobs are tiny); the
    // positive control in crunchd shows the scan still finds what is there.
    if (end - begin > (1ULL << 30)) continue;
    entries.resize((end - begin) / page);
    const auto bytes = static_cast<ssize_t>(entries.size() * sizeof(std::uint64_t));
    if (pread(pagemap, entries.data(), static_cast<std::size_t>(bytes), static_cast<off_t>(begin / page * 8)) != bytes) continue;
    // Runs of pages that are there, each read whole (a needle may span two pages of a run).
    for (std::size_t i = 0; !found && i < entries.size();) {
      const auto there = [&](std::size_t k) { return (entries[k] >> 62) != 0; };  // bit 63 present, 62 swapped
      if (!there(i)) {
        ++i;
        continue;
      }
      std::size_t j = i;
      while (j < entries.size() && there(j)) ++j;
      chunk.resize((j - i) * page);
      const auto got = pread(mem, chunk.data(), chunk.size(), static_cast<off_t>(begin + i * page));
      if (got > 0) {
        chunk.resize(static_cast<std::size_t>(got));
        found = chunk.find(needle) != std::string::npos;
      }
      i = j;
    }
  }
  ::close(pagemap);
  ::close(mem);
  return found;
}

// No secret ever exists in a helper: after hashes with a pepper, under an API key, and
// thumbnails and compressions that started helpers, no helper's memory holds the pepper or the
// key — while crunchd's own memory holds the pepper (the scan finds what it looks for; of the keys
// crunchd keeps only digests).
TEST(crunchd, no_helper_holds_the_pepper_or_an_api_key) {
  std::random_device random;
  const auto dir = std::filesystem::temp_directory_path();
  const auto tag = std::to_string(getpid()) + "-" + std::to_string(random());
  const std::string pepper = "pepper-secret-" + std::to_string(random()) + "-" + std::to_string(random());
  const std::string key = "api-key-" + std::to_string(random()) + "-" + std::to_string(random());
  const std::string password = "the-password-" + std::to_string(random()) + "-" + std::to_string(random());
  const auto pepper_file = dir / ("crunch-pepper-" + tag);
  const auto key_file = dir / ("crunch-keys-" + tag);
  std::ofstream(pepper_file) << "p1:" << pepper << "\n";
  std::ofstream(key_file) << "tester:" << key << "\n";
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "2", "--password-m-cost", "1024",
                     "--password-t-cost", "1", "--password-pepper-file", pepper_file.string(), "--api-keys",
                     key_file.string(), "--default-timeout", "60s"});  // slow under sanitizers, on a busy machine
  const auto port = started_port(p);
  std::filesystem::remove(pepper_file);
  std::filesystem::remove(key_file);
  const std::string auth = "Authorization: Bearer " + key + "\r\n";
  const auto jpeg = synthetic_image(320, 240, image_format::jpeg);
  for (int round = 0; round < 4; ++round) {
    http_connection c(port);
    const nlohmann::json body = {{"password", password}};
    ASSERT_EQ(c.post("/v1/password/hash", "application/json", body.dump(), auth)->status, 200u);
    ASSERT_EQ(c.post("/v1/image/thumbnail?width=64&format=avif&effort=0", "image/jpeg", jpeg, auth)->status, 200u);
    ASSERT_EQ(c.post("/v1/image/info", "image/jpeg", jpeg, auth)->status, 200u);
    ASSERT_EQ(c.post("/v1/zstd/compress", "text/plain", std::string("text to compress, text to compress"), auth)->status, 200u);
  }
  const auto helpers = children_of(p.pid());
  ASSERT_GE(helpers.size(), 2u);  // an image helper and a zstd one at least
  // The helpers first: an idle worker lets its helper go after 10 s, and scanning crunchd under a
  // sanitizer takes about that long.
  for (const auto helper : helpers) {
    EXPECT_FALSE(memory_holds(helper, pepper)) << "helper " << helper << " holds the pepper";
    EXPECT_FALSE(memory_holds(helper, key)) << "helper " << helper << " holds the API key";
  }
  EXPECT_TRUE(memory_holds(p.pid(), pepper)) << "the scan should find the pepper in crunchd itself";
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit(), 0);
}

// A fatal signal in crunchd leaves one log line, written with async-signal-safe calls only: the
// signal, the thread, a symbolised stack and the requests in flight; then the process dies of it,
// for its supervisor to restart. The test kind "crashing" writes to a page mapped without access
// on a worker (crunch_test_service: crunchd with the test kinds).
TEST(crunchd, a_fatal_signal_logs_the_signal_the_thread_the_stack_and_the_requests_in_flight) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "2"}, {}, CRUNCH_TEST_SERVICE_PATH);
  const auto port = started_port(p);
  http_connection waiting(port);
  // Five seconds of its flow's booked work: the next job of the same client fits behind it (10 s).
  waiting.send_post("/sandboxed/sleep?ms=5000&timeout_ms=60000", "application/octet-stream", {},
                    "X-Request-Id: waiting-elsewhere\r\n");
  http_connection observer(port);
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_workers_busy 1\n"));
  http_connection c(port);
  c.send_get("/crashing/worker", "X-Request-Id: the-one-that-crashes\r\n");
  nlohmann::json report;
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) {
    if (line.find("fatal_signal") == std::string::npos) continue;
    report = nlohmann::json::parse(line);
    break;
  }
  ASSERT_TRUE(report.is_object()) << "no fatal_signal line";
  EXPECT_EQ(report.at("level"), "fatal");
  EXPECT_EQ(report.at("signal"), "SIGSEGV");
  EXPECT_TRUE(report.at("address").get<std::string>().starts_with("0x")) << report;
  EXPECT_TRUE(report.at("thread").get<std::string>().starts_with("worker ")) << report;
  EXPECT_EQ(report.at("request_id"), "the-one-that-crashes");
  const auto in_flight = report.at("requests_in_flight");
  EXPECT_NE(std::find(in_flight.begin(), in_flight.end(), "the-one-that-crashes"), in_flight.end()) << in_flight;
  EXPECT_NE(std::find(in_flight.begin(), in_flight.end(), "waiting-elsewhere"), in_flight.end()) << in_flight;
  const auto stack = report.at("stack").dump();
  EXPECT_NE(stack.find("crunch_test_service+0x"), std::string::npos) << stack;
  EXPECT_NE(stack.find("worker_pool11worker_main"), std::string::npos) << stack;  // symbols, not only offsets
  const int status = p.wait_status();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) << status;
}

// libvips and its codecs never run in crunchd: the first image job starts a sandboxed helper,
// which loads them (and calibrates the kind, so that /v1/kinds has no image rate before it and
// one after). An idle crunchd has no helper.
TEST(crunchd, never_maps_libvips_its_first_thumbnail_starts_a_helper_that_does) {
  const auto jpeg = synthetic_image(64, 48, image_format::jpeg);
  crunchd_process p({"--address", "127.0.0.1", "--port", "0"});
  const auto port = started_port(p);
  auto image_rate = [&] {
    http_connection c(port);
    const auto doc = json_of(*c.get("/v1/kinds"));
    for (const auto& kind : doc.at("kinds")) {
      if (kind.at("name") == "image") return kind.at("cost").at("ns_per_unit");
    }
    return nlohmann::json("no image kind");
  };
  {
    http_connection c(port);
    EXPECT_EQ(c.get("/fib/20")->status, 200u);
    EXPECT_EQ(c.get("/healthz")->status, 200u);
  }
  EXPECT_FALSE(maps(p.pid(), "libvips"));
  EXPECT_FALSE(maps(p.pid(), "libcrunch_vips"));
  EXPECT_TRUE(children_of(p.pid()).empty());
  EXPECT_TRUE(image_rate().is_null());
  {
    http_connection c(port);
    const auto r = c.post("/v1/image/thumbnail?width=32&format=webp", "image/jpeg", jpeg);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u) << r->body;
    EXPECT_EQ(r->header("content-type"), "image/webp");
  }
  EXPECT_FALSE(maps(p.pid(), "libcrunch_vips.so"));
  EXPECT_FALSE(maps(p.pid(), "libvips"));
  const auto helpers = children_of(p.pid());
  ASSERT_FALSE(helpers.empty());
  for (const auto helper : helpers) {
    EXPECT_TRUE(maps(helper, "libvips")) << helper;
    std::ifstream cmdline("/proc/" + std::to_string(helper) + "/cmdline");
    std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    EXPECT_NE(args.find(std::string("--crunch-helper\0image", 22)), std::string::npos);
  }
  const auto rate = image_rate();
  ASSERT_TRUE(rate.is_number()) << rate;
  EXPECT_GT(rate.get<double>(), 0);
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit(), 0);
  for (const auto helper : helpers) EXPECT_FALSE(std::filesystem::exists("/proc/" + std::to_string(helper))) << helper;
}

TEST(crunchd, without_its_image_module_does_not_start_and_says_where_it_looked) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0"}, {"CRUNCH_IMAGE_LIBRARY=/nonexistent/libcrunch_vips.so"});
  const auto err = p.all_stderr();
  EXPECT_EQ(p.wait_exit(), 1);
  EXPECT_NE(err.find("/nonexistent/libcrunch_vips.so"), std::string::npos) << err;
  EXPECT_NE(err.find("CRUNCH_IMAGE_LIBRARY"), std::string::npos) << err;
}

TEST(crunchd, help_and_version) {
  {
    crunchd_process p({"--help"});
    const auto first = p.stdout_line();
    EXPECT_NE(first.find("usage: crunchd"), std::string::npos) << first;
    EXPECT_EQ(p.wait_exit(), 0);
  }
  crunchd_process p({"--version"});
  EXPECT_EQ(p.stdout_line().rfind("crunchd ", 0), 0u);
  EXPECT_EQ(p.wait_exit(), 0);
}

TEST(crunchd, calibrate_password_prints_costs_that_take_about_the_time_asked) {
  crunchd_process p({"--calibrate-password", "40ms", "--workers", "1", "--password-max-m-cost", "65536"});
  std::string out;
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) out += line + "\n";
  EXPECT_EQ(p.wait_exit(), 0) << out;
  unsigned long long m = 0, t = 0, took = 0;
  const auto at = out.find("--password-m-cost");
  ASSERT_NE(at, std::string::npos) << out;
  ASSERT_EQ(std::sscanf(out.c_str() + at, "--password-m-cost %llu --password-t-cost %llu", &m, &t), 2) << out;
  ASSERT_EQ(std::sscanf(out.c_str() + out.find("measured"), "measured %llu ms", &took), 1) << out;
  EXPECT_GE(m, 1024u);
  EXPECT_LE(m, 65536u);  // within the bound it was given
  EXPECT_GE(t, 2u);      // never fewer passes than configured
  EXPECT_GT(took, 0u);
  crunchd_process bad({"--calibrate-password", "40"});
  EXPECT_NE(bad.all_stderr().find("invalid --calibrate-password"), std::string::npos);
  EXPECT_EQ(bad.wait_exit(), 2);
}

TEST(crunchd, probe_reports_readiness_as_its_exit_code) {
  crunchd_process server({"--address", "127.0.0.1", "--port", "0", "--workers", "1"});
  const auto port = started_port(server);
  {
    crunchd_process probe({"--probe", "--address", "127.0.0.1", "--port", std::to_string(port)});
    EXPECT_NE(probe.stdout_line().find("200 OK"), std::string::npos);
    EXPECT_EQ(probe.wait_exit(), 0);
  }
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait_exit(), 0);
  // Nothing listens there now: the probe fails, quickly and with a reason.
  crunchd_process probe({"--probe", "--address", "127.0.0.1", "--port", std::to_string(port)});
  const auto err = probe.all_stderr();
  EXPECT_EQ(probe.wait_exit(), 1);
  EXPECT_NE(err.find("connect"), std::string::npos) << err;
}

TEST(crunchd, probe_fails_on_a_server_that_is_not_ready) {
  // A listener that answers 503, as a draining crunchd's /readyz does.
  net::io_context io;
  net::ip::tcp::acceptor acceptor(io, {net::ip::make_address("127.0.0.1"), 0});
  std::thread answer([&] {
    auto socket = acceptor.accept();
    std::array<char, 1024> request;
    socket.read_some(net::buffer(request));
    const std::string reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    net::write(socket, net::buffer(reply));
  });
  crunchd_process probe({"--probe", "--address", "127.0.0.1", "--port", std::to_string(acceptor.local_endpoint().port())});
  const auto err = probe.all_stderr();
  EXPECT_EQ(probe.wait_exit(), 1);
  EXPECT_NE(err.find("503"), std::string::npos) << err;
  answer.join();
}

TEST(crunchd, port_in_use_is_a_clear_error) {
  running_server taken(test_config(1));
  crunchd_process p({"--address", "127.0.0.1", "--port", std::to_string(taken.port())});
  const auto err = p.all_stderr();
  EXPECT_EQ(p.wait_exit(), 1);
  EXPECT_NE(err.find("cannot listen"), std::string::npos) << err;
}

// The n whose fib(n) takes about `seconds` on this crunchd, by the rate it calibrated: the drain
// tests' jobs must outlast the scrapes that watch them, in Release as under ThreadSanitizer
// (where fib runs many times slower), and fit in their deadlines in both.
unsigned fib_lasting(std::uint16_t port, double seconds) {
  http_connection c(port);
  const auto doc = json_of(*c.get("/v1/kinds"));
  double ns_per_call = 0;
  for (const auto& kind : doc.at("kinds")) {
    if (kind.at("name") == "fib") ns_per_call = kind.at("cost").at("ns_per_unit").get<double>();
  }
  EXPECT_GT(ns_per_call, 0) << "no fib rate in /v1/kinds";
  unsigned n = 20;
  while (n < 60 && static_cast<double>(fib_calls(n + 1)) * ns_per_call < seconds * 1e9) ++n;
  return n;
}

std::uint64_t fib_value(unsigned n) {
  std::uint64_t a = 0, b = 1;  // F(i), F(i + 1)
  for (unsigned i = 0; i < n; ++i) {
    const auto next = a + b;
    a = b;
    b = next;
  }
  return a;
}

TEST(crunchd, sigterm_drains_in_flight_work_and_exits_0) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--drain-timeout", "20s"});
  const auto port = started_port(p);
  http_connection job(port, 30s);
  const auto n = fib_lasting(port, 1.0);  // the observer sees it running
  job.send_get("/fib/" + std::to_string(n));
  // Wait (bounded) until the job occupies the worker, then ask the server to stop.
  http_connection observer(port);
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_workers_busy 1\n"));
  p.signal(SIGTERM);
  const auto r = job.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(nlohmann::json::parse(r->body).at("result"), fib_value(n));
  EXPECT_FALSE(r->keep_alive);
  EXPECT_EQ(p.wait_exit(), 0);
}

TEST(crunchd, sigterm_with_queued_jobs_answers_what_cannot_finish_with_503_and_exits_0) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--drain-timeout", "10s"});
  const auto port = started_port(p);
  http_connection running(port, 60s);
  // Two seconds of work: still running when the signal comes (a fixed fib(44), 0.6 s in Release,
  // once finished before the queue was seen at 2), done well within the drain.
  const auto n = fib_lasting(port, 2.0);
  running.send_get("/fib/" + std::to_string(n));
  http_connection observer(port);
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_workers_busy 1\n"));
  http_connection fits(port, 60s);
  fits.send_get("/fib/" + std::to_string(n - 5));  // queued; a tenth as long: done long before the drain timeout
  http_connection hopeless(port, 60s);
  // Queued; 11 times as long (fib_lasting picks 1.2 to 2 s, so 13 to 22 s): within its own deadline
  // (admission lets it in), but it cannot finish within the 10 s drain.
  hopeless.send_get("/fib/" + std::to_string(n + 5) + "?timeout_ms=60000");
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_job_queue_depth 2\n"));
  p.signal(SIGTERM);
  const auto cut = hopeless.read();
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->status, 503u);
  EXPECT_EQ(nlohmann::json::parse(cut->body).at("error").at("code"), "draining");
  const auto first = running.read();
  ASSERT_TRUE(first);
  EXPECT_EQ(nlohmann::json::parse(first->body).at("result"), fib_value(n));
  const auto second = fits.read();
  ASSERT_TRUE(second);
  EXPECT_EQ(nlohmann::json::parse(second->body).at("result"), fib_value(n - 5));
  EXPECT_EQ(p.wait_exit(), 0);
}

TEST(crunchd, the_access_log_leaves_a_callback_url_out) {
  // Receivers often carry their token in the URL (a Slack-style path, a ?token=).
  temp_file secrets("crunch-whsec-", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--callback-allow", "http://127.0.0.1:",
                     "--callback-allow-private", "true", "--webhook-secret-file", secrets.path(),
                     "--callback-retry-for", "0s"});
  const auto port = started_port(p);
  http_connection c(port);
  EXPECT_EQ(c.get("/fib/10?callback_url=http://127.0.0.1:9/hooks/T000/s3cr3t-token&timeout_ms=5000",
                  "Prefer: respond-async\r\n")
                ->status,
            202u);
  p.signal(SIGTERM);
  bool found = false;
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) {
    EXPECT_EQ(line.find("s3cr3t-token"), std::string::npos) << line;
    const auto event = nlohmann::json::parse(line);
    if (event.at("event") != "access") continue;
    found = true;
    EXPECT_EQ(event.at("target"), "/fib/10?callback_url=(redacted)&timeout_ms=5000");
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(p.wait_exit(), 0);
}

TEST(crunchd, access_log_line_carries_the_request_id) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1"});
  const auto port = started_port(p);
  http_connection c(port);
  EXPECT_EQ(c.get("/fib/10", "X-Request-Id: trace-42\r\n")->status, 200u);
  p.signal(SIGTERM);
  bool found = false;
  for (auto line = p.stdout_line(); !line.empty() && !found; line = p.stdout_line()) {
    const auto event = nlohmann::json::parse(line);
    if (event.at("event") != "access") continue;
    found = true;
    EXPECT_EQ(event.at("request_id"), "trace-42");
    EXPECT_EQ(event.at("target"), "/fib/10");
    EXPECT_EQ(event.at("route"), "fib");
    EXPECT_EQ(event.at("status"), 200);
    EXPECT_TRUE(event.contains("run_ms"));
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(p.wait_exit(), 0);
}

// A log collector that stops reading (a stuck logging driver, a full `docker logs` pipe): crunchd
// goes on serving, and SIGTERM still ends it within the drain timeout and the log's short flush
// (1 s), exit 0, every thread joined, saying on stderr how many lines it could not write.
TEST(crunchd, a_stdout_nobody_reads_does_not_hold_up_shutdown) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--drain-timeout", "1s"});
  const auto port = started_port(p);
  ASSERT_GT(fcntl(p.stdout_fd(), F_SETPIPE_SZ, 4096), 0);  // the smallest pipe: full in a few lines
  {
    http_connection c(port);
    for (int i = 0; i < 300; ++i) ASSERT_EQ(c.get("/fib/1")->status, 200u);  // ~75 KB of access lines
  }
  const auto start = std::chrono::steady_clock::now();
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit_unread(20s), 0) << "still not gone 20 s after SIGTERM";
  EXPECT_LT(std::chrono::steady_clock::now() - start, 6s);  // 1 s drain + 1 s flush, and room
  EXPECT_NE(p.all_stderr().find("log lines dropped"), std::string::npos);
}

// The reader of stdout is gone (EPIPE): crunchd is not killed by SIGPIPE, goes on serving, and
// exits 0 on SIGTERM, counting the lines it could not write.
TEST(crunchd, a_stdout_whose_reader_is_gone_costs_log_lines_only) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1"});
  const auto port = started_port(p);
  p.close_stdout();
  {
    http_connection c(port);
    for (int i = 0; i < 100; ++i) ASSERT_EQ(c.get("/fib/1")->status, 200u);
    // Lines are dropped once the writer has met the broken pipe (within its 20 ms flush interval).
    std::optional<http_reply> metrics;
    for (int i = 0; i < 1000; ++i) {
      metrics = c.get("/metrics");
      ASSERT_TRUE(metrics);
      if (metrics->body.find("crunch_log_lines_dropped_total 0\n") == std::string::npos) break;
      ASSERT_EQ(c.get("/fib/1")->status, 200u);
    }
    EXPECT_EQ(metrics->body.find("crunch_log_lines_dropped_total 0\n"), std::string::npos);
  }
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit_unread(20s), 0);
  EXPECT_NE(p.all_stderr().find("log lines dropped"), std::string::npos);
}

// Whether `needle` is anywhere in the readable and writable mappings of process `pid`, read
// through /proc/pid/mem: what a core dump of it would hold. Mappings over a GiB are skipped: a
// sanitizer's shadow memory (terabytes of it under TSan), never a Release build's heap or stacks.
// Sets `scanned` to the bytes read.
bool in_process_memory(pid_t pid, const std::string& needle, std::size_t& scanned) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  const int mem = ::open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(mem, 0) << "cannot read the server's memory: " << std::strerror(errno);
  constexpr std::size_t chunk_size = 1 << 20;
  std::string chunk;
  bool found = false;
  scanned = 0;
  for (std::string line; !found && std::getline(maps, line);) {
    std::istringstream fields(line);
    std::string range, perms;
    fields >> range >> perms;
    if (perms.size() < 2 || perms[0] != 'r' || perms[1] != 'w') continue;
    const auto dash = range.find('-');
    const auto begin = std::stoull(range.substr(0, dash), nullptr, 16);
    const auto end = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (end - begin > (1ULL << 30)) continue;
    // Chunks overlap by the needle's length, so that none is missed across a boundary.
    for (auto at = begin; !found && at < end; at += chunk_size) {
      chunk.resize(std::min<std::uint64_t>(chunk_size + needle.size(), end - at));
      const auto n = pread(mem, chunk.data(), chunk.size(), static_cast<off_t>(at));
      if (n <= 0) break;
      scanned += static_cast<std::size_t>(n);
      found = std::string_view(chunk.data(), static_cast<std::size_t>(n)).find(needle) != std::string_view::npos;
    }
  }
  if (mem >= 0) ::close(mem);
  return found;
}

// The first 64 bytes of the last Argon2 block a hash of `password` at m KiB and t passes left in
// its memory, recomputed here from the salt of its PHC string `phc`: what a worker's kept memory
// would still hold after the hash had it not been wiped.
std::string last_block_of(const std::string& password, const std::string& phc, std::uint32_t m, std::uint32_t t) {
  const auto parsed = std::get<phc_hash>(parse_phc(phc));
  std::string salt(64, '\0');
  std::size_t salt_bytes = 0;
  EXPECT_EQ(sodium_base642bin(reinterpret_cast<unsigned char*>(salt.data()), salt.size(), parsed.salt.data(),
                              parsed.salt.size(), nullptr, &salt_bytes, nullptr, sodium_base64_VARIANT_ORIGINAL_NO_PADDING),
            0);
  salt.resize(salt_bytes);
  const auto bytes = argon2_memory_bytes(m, 1);
  std::unique_ptr<std::byte, decltype(&std::free)> memory(static_cast<std::byte*>(std::aligned_alloc(64, bytes)), &std::free);
  std::array<std::uint8_t, 32> tag{};
  argon2_compute({argon2_variant::id, m, t, 1, password, salt, {}, {}}, tag, {memory.get(), bytes});
  return std::string(reinterpret_cast<const char*>(memory.get()) + bytes - 1024, 64);
}

// A password goes through hash, verify and a refused request, at --log-level debug: afterwards it
// is in no log line, and nowhere in the server's memory — buffers that held it were wiped.
TEST(crunchd, a_password_is_never_logged_and_does_not_linger_in_memory) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--log-level", "debug",
                     "--password-m-cost", "1024", "--password-t-cost", "1"});
  const auto port = started_port(p);
  std::random_device random;
  const std::string password = "pw-" + std::to_string(random()) + "-" + std::to_string(random()) + "-secret";
  const std::string short_password = "s" + std::to_string(random() % 100000);  // fits a string's own buffer
  // Connections stay open while memory is read: their buffers are not freed yet, and the last
  // request on each is one that carried the password.
  std::vector<std::unique_ptr<http_connection>> open;
  std::string last_hash;  // of the short password, hashed last
  for (const auto& pw : {password, short_password}) {
    auto& c = *open.emplace_back(std::make_unique<http_connection>(port));
    const auto hashed = c.post("/v1/password/hash", "application/json", nlohmann::json{{"password", pw}}.dump());
    ASSERT_EQ(hashed->status, 200u) << hashed->body;
    const auto hash = nlohmann::json::parse(hashed->body).at("hash").get<std::string>();
    last_hash = hash;
    const auto verified = c.post("/v1/password/verify", "application/json",
                                 nlohmann::json{{"password", pw}, {"hash", hash}}.dump());
    EXPECT_EQ(nlohmann::json::parse(verified->body).at("match"), true);
    EXPECT_EQ(c.post("/v1/password/verify", "application/json",
                     nlohmann::json{{"password", pw + "x"}, {"hash", hash}}.dump())->status, 200u);
    EXPECT_EQ(c.post("/v1/password/hash", "application/json", nlohmann::json{{"password", pw}, {"colour", 1}}.dump())
                  ->status, 400u);
    auto& last = *open.emplace_back(std::make_unique<http_connection>(port));
    EXPECT_EQ(last.post("/v1/password/hash", "text/plain", nlohmann::json{{"password", pw}}.dump())->status, 415u);
    auto& verify_last = *open.emplace_back(std::make_unique<http_connection>(port));
    EXPECT_EQ(verify_last.post("/v1/password/verify", "application/json",
                               nlohmann::json{{"password", pw}, {"hash", hash}}.dump())->status, 200u);
  }
  std::size_t scanned = 0;
  EXPECT_FALSE(in_process_memory(p.pid(), password, scanned)) << "the long password is still in memory";
  EXPECT_GT(scanned, 1u << 20);
  EXPECT_FALSE(in_process_memory(p.pid(), short_password, scanned)) << "the short password is still in memory";
  // The worker keeps its Argon2 memory for the next hash: what the last hash left there was wiped.
  EXPECT_FALSE(in_process_memory(p.pid(), last_block_of(short_password, last_hash, 1024, 1), scanned))
      << "the last hash's blocks are still in the worker's kept memory";
  EXPECT_GT(scanned, 1u << 20);
  open.clear();
  p.signal(SIGTERM);
  std::string log;
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) log += line + "\n";
  EXPECT_NE(log.find("\"route\":\"password_verify\""), std::string::npos) << log;  // the log did see them
  EXPECT_EQ(log.find(password), std::string::npos) << log;
  EXPECT_EQ(log.find(short_password), std::string::npos) << log;
  EXPECT_EQ(p.wait_exit(), 0);
}

// Reads the log until a line with `needle`, keeping every line in `log`; false if it never came.
bool read_log_until(crunchd_process& p, const std::string& needle, std::string& log) {
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) {
    log += line + "\n";
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

TEST(crunchd, api_keys_are_reread_on_sighup_without_dropping_connections_and_never_logged) {
  std::random_device random;
  const auto path = std::filesystem::temp_directory_path() /
                    ("crunch-keys-" + std::to_string(getpid()) + "-" + std::to_string(random()));
  const std::string first = "first-" + std::to_string(random()) + "-" + std::to_string(random());
  const std::string second = "second-" + std::to_string(random()) + "-" + std::to_string(random());
  std::ofstream(path) << "alice:" << first << "\n";
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--api-keys", path.string()});
  const auto port = started_port(p);
  const auto with = [](const std::string& key) { return "Authorization: Bearer " + key + "\r\n"; };
  EXPECT_EQ(http_connection(port).get("/fib/10")->status, 401u);
  EXPECT_EQ(http_connection(port).get("/fib/10", with(second))->status, 401u);
  http_connection kept(port);
  EXPECT_EQ(kept.get("/fib/10", with(first))->status, 200u);

  std::ofstream(path) << "# alice's key was rotated\nbob:" << second << "\n";
  p.signal(SIGHUP);
  std::string log;
  ASSERT_TRUE(read_log_until(p, "api_keys_reloaded", log)) << log;
  EXPECT_EQ(http_connection(port).get("/fib/10", with(first))->status, 401u);
  EXPECT_EQ(kept.get("/fib/10", with(second))->status, 200u) << "the kept-alive connection was dropped";

  // A file that cannot be used keeps the keys there were.
  std::ofstream(path) << "carol " << first << "\n";
  p.signal(SIGHUP);
  ASSERT_TRUE(read_log_until(p, "api_keys_reload_failed", log)) << log;
  EXPECT_EQ(kept.get("/fib/10", with(second))->status, 200u);

  p.signal(SIGTERM);
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) log += line + "\n";
  EXPECT_EQ(p.wait_exit(), 0);
  std::filesystem::remove(path);
  EXPECT_NE(log.find("\"client\":\"alice\""), std::string::npos) << log;  // names are logged
  EXPECT_NE(log.find("\"client\":\"bob\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"status\":401"), std::string::npos) << log;
  EXPECT_EQ(log.find(first), std::string::npos) << log;  // keys are not
  EXPECT_EQ(log.find(second), std::string::npos) << log;
}

TEST(crunchd, pepper_keys_are_reread_on_sighup_and_never_logged_even_at_debug) {
  std::random_device random;
  const auto path = std::filesystem::temp_directory_path() /
                    ("crunch-pepper-" + std::to_string(getpid()) + "-" + std::to_string(random()));
  const std::string secret_a = "pepper-a-" + std::to_string(random()) + "-" + std::to_string(random());
  const std::string secret_b = "pepper-b-" + std::to_string(random()) + "-" + std::to_string(random());
  const std::string password = "hunter2-" + std::to_string(random());
  std::ofstream(path) << "a:" << secret_a << "\n";
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1", "--log-level", "debug",
                     "--password-m-cost", "1024", "--password-t-cost", "1", "--password-pepper-file", path.string()});
  const auto port = started_port(p);
  http_connection c(port);
  auto call = [&](const std::string& target, const nlohmann::json& body) {
    const auto r = c.post(target, "application/json", body.dump());
    EXPECT_TRUE(r);
    return r ? std::make_pair(r->status, nlohmann::json::parse(r->body)) : std::make_pair(0u, nlohmann::json());
  };
  const auto [status, made] = call("/v1/password/hash", {{"password", password}});
  ASSERT_EQ(status, 200u);
  const auto under_a = made.at("hash").get<std::string>();
  EXPECT_NE(under_a.find(",keyid=a$"), std::string::npos) << under_a;

  // Key b becomes current; a stays listed, so its hashes verify and ask to be made again.
  std::ofstream(path) << "b:" << secret_b << "\na:" << secret_a << "\n";
  p.signal(SIGHUP);
  std::string log;
  ASSERT_TRUE(read_log_until(p, "kind_reloaded", log)) << log;
  EXPECT_EQ(call("/v1/password/verify", {{"password", password}, {"hash", under_a}}).second,
            (nlohmann::json{{"match", true}, {"needs_rehash", true}}));
  EXPECT_NE(call("/v1/password/hash", {{"password", password}}).second.at("hash").get<std::string>().find(",keyid=b$"),
            std::string::npos);

  // A file that cannot be used keeps the keys there were.
  std::ofstream(path) << "b:short\n";
  p.signal(SIGHUP);
  ASSERT_TRUE(read_log_until(p, "kind_reload_failed", log)) << log;
  EXPECT_EQ(call("/v1/password/verify", {{"password", password}, {"hash", under_a}}).first, 200u);

  // Key a retired: its hashes are a clear 400.
  std::ofstream(path) << "b:" << secret_b << "\n";
  p.signal(SIGHUP);
  ASSERT_TRUE(read_log_until(p, "kind_reloaded", log)) << log;
  const auto [refused, why] = call("/v1/password/verify", {{"password", password}, {"hash", under_a}});
  EXPECT_EQ(refused, 400u);
  EXPECT_EQ(why.at("error").at("message"),
            "hash was made with pepper key a, which this server's --password-pepper-file does not hold");

  p.signal(SIGTERM);
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) log += line + "\n";
  EXPECT_EQ(p.wait_exit(), 0);
  std::filesystem::remove(path);
  EXPECT_NE(log.find("\"estimate_ms\":"), std::string::npos) << "the debug fields are missing: " << log;
  EXPECT_NE(log.find("\"summary\":\"2 pepper keys, current b\""), std::string::npos) << log;
  EXPECT_EQ(log.find(secret_a), std::string::npos) << log;
  EXPECT_EQ(log.find(secret_b), std::string::npos) << log;
  EXPECT_EQ(log.find("short"), std::string::npos) << log;
  EXPECT_EQ(log.find(password), std::string::npos) << log;
}

TEST(crunchd, sigint_on_an_idle_server_exits_0) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0", "--workers", "1"});
  const auto port = started_port(p);
  http_connection c(port);
  EXPECT_EQ(c.get("/healthz")->status, 200u);
  p.signal(SIGINT);
  EXPECT_EQ(p.wait_exit(), 0);
  EXPECT_TRUE(c.closed_by_peer());
}

}  // namespace
}  // namespace crunch::testing
