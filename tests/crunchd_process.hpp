#pragma once
// crunchd (or crunch_test_service) as a child process, for the tests of a whole process: its
// exit codes, its log, its signals, its helpers, what its memory holds.
#include "test_support.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace crunch::testing {

using namespace std::chrono_literals;

// crunchd as a child process with its stdout and stderr on pipes.
class crunchd_process {
 public:
  /// `env`: NAME=value lines added to this process's environment for the child.
  /// `program`: crunch_test_service (crunchd's run_service with the test kinds beside the built-in
  /// ones), or crunchd itself (CRUNCHD_PATH).
  explicit crunchd_process(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                           const char* program = CRUNCH_TEST_SERVICE_PATH) {
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
inline std::uint16_t started_port(crunchd_process& p) {
  const auto line = p.stdout_line();
  const auto event = nlohmann::json::parse(line);
  EXPECT_EQ(event.at("event"), "listening") << line;
  return event.at("port").get<std::uint16_t>();
}

// What /proc says the process has mapped: whether any mapping's path contains `name`.
inline bool maps(pid_t pid, std::string_view name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  for (std::string line; std::getline(in, line);) {
    if (line.find(name) != std::string::npos) return true;
  }
  return false;
}

// The processes whose parent is `pid`.
inline std::vector<pid_t> children_of(pid_t pid) {
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
inline bool memory_holds(pid_t pid, const std::string& needle) {
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

// Whether `needle` is anywhere in the readable and writable mappings of process `pid`, read
// through /proc/pid/mem: what a core dump of it would hold. Mappings over a GiB are skipped: a
// sanitizer's shadow memory (terabytes of it under TSan), never a Release build's heap or stacks.
// Sets `scanned` to the bytes read.
inline bool in_process_memory(pid_t pid, const std::string& needle, std::size_t& scanned) {
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

// Reads the log until a line with `needle`, keeping every line in `log`; false if it never came.
inline bool read_log_until(crunchd_process& p, const std::string& needle, std::string& log) {
  for (auto line = p.stdout_line(); !line.empty(); line = p.stdout_line()) {
    log += line + "\n";
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace crunch::testing
