#include "helpers.hpp"

#include "descriptor.hpp"
#include "fatal_signals.hpp"
#include "helper_protocol.hpp"

#include <crunch/isolation.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char** environ;

namespace crunch {

namespace {

using clock = std::chrono::steady_clock;
using namespace helper_protocol;

// The deadline of the calling thread's running job (set_running_deadline).
thread_local clock::time_point running_deadline = clock::time_point::max();

// Why crunchd reaps a helper: it died by itself, crunchd killed it because its job would not
// stop, or crunchd no longer needs it (its thread gave back its memory, or ended).
enum class ending { died, killed_for_job, retired };

[[noreturn]] void fail(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

// ---- what every thread's helpers share ----

struct shared_state {
  std::mutex mutex;
  helper_settings settings;
  std::map<std::string, helper_counts, std::less<>> counts;
  std::vector<pid_t> alive;                  // helpers that have not been reaped
  std::chrono::nanoseconds retired_cpu{0};  // CPU time of the helpers reaped so far
  bool held = false;                         // the CPU pacer holds them (SIGSTOP)
};

// Never destroyed: a worker may still be reaping a helper while the process runs its static
// destructors.
shared_state& shared() {
  static auto* const state = new shared_state;
  return *state;
}

helper_counts& counts_of(shared_state& s, std::string_view kind) {
  auto it = s.counts.find(kind);
  if (it == s.counts.end()) {
    it = s.counts.emplace(std::string(kind), helper_counts{}).first;
    it->second.kind = kind;
  }
  return it->second;
}

// The environment a helper gets: what the dynamic loader, the C library and the sanitizers read,
// and the image module's path — never the rest, which may hold what a helper must not see.
std::vector<std::string> helper_environment() {
  static const std::vector<std::string_view> passed{
      "LD_LIBRARY_PATH", "LD_PRELOAD",   "GLIBC_TUNABLES", "MALLOC_CHECK_",        "MALLOC_PERTURB_",
      "ASAN_OPTIONS",    "UBSAN_OPTIONS", "TSAN_OPTIONS",  "LSAN_OPTIONS",         "CRUNCH_IMAGE_LIBRARY"};
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const auto name = entry.substr(0, entry.find('='));
    if (std::find(passed.begin(), passed.end(), name) != passed.end()) env.emplace_back(entry);
  }
  return env;
}

// The calling thread's scheduling class, for the helper to take the same (a worker's).
const char* own_priority() {
  switch (sched_getscheduler(0)) {
    case SCHED_BATCH: return "batch";
    case SCHED_IDLE: return "idle";
    default: return "normal";
  }
}

std::chrono::nanoseconds cpu_time_of(pid_t pid) {
  clockid_t clock_id{};
  timespec ts{};
  if (clock_getcpuclockid(pid, &clock_id) != 0 || clock_gettime(clock_id, &ts) != 0) return {};
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// A sanitizer's runtime reserves terabytes of shadow memory as private writable mappings, which
// RLIMIT_DATA counts: under one, helpers get no memory limit.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool limit_data = false;
#else
constexpr bool limit_data = true;
#endif

// Bytes of private data a process maps now: /proc/PID/statm's sixth field, in pages.
std::uint64_t data_bytes_of(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/statm";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char text[256];
  const auto n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  if (n <= 0) return 0;
  text[n] = '\0';
  unsigned long long fields[6] = {};
  if (std::sscanf(text, "%llu %llu %llu %llu %llu %llu", &fields[0], &fields[1], &fields[2], &fields[3], &fields[4],
                  &fields[5]) != 6) {
    return 0;
  }
  return fields[5] * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

std::string program_path() {
  std::string path(4096, '\0');
  const auto n = readlink("/proc/self/exe", path.data(), path.size());
  if (n <= 0 || static_cast<std::size_t>(n) >= path.size()) return "crunchd";
  path.resize(static_cast<std::size_t>(n));
  if (path.ends_with(" (deleted)")) path.resize(path.size() - 10);
  return path;
}

// What a helper executes: this very program. /proc/self/exe stays it even after an upgrade
// replaced the file, so a helper always speaks this crunchd's protocol. It is opened once and
// given to the spawn as descriptor 6, executed as /proc/self/fd/6: the same file, and also what a
// process running under valgrind can execute (its /proc/self/exe is valgrind's own program, while
// opening it gives the client's). The helper closes 6 first thing (helper_main.cpp). -1: not open.
int this_program() {
  static const int fd = [] {
    const int opened = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (opened < 0) return -1;
    const int moved = fcntl(opened, F_DUPFD_CLOEXEC, 16);  // out of the way of the dup2s to 3..6
    ::close(opened);
    return moved;
  }();
  return fd;
}

std::uint64_t round_up_pow2(std::uint64_t n) {
  std::uint64_t p = 1 << 20;
  while (p < n) p <<= 1;
  return p;
}

// A memfd that neither side can shrink, nor seal further.
descriptor shared_memory(const char* name) {
  descriptor d(memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (d.fd < 0) fail("memfd_create");
  if (fcntl(d.fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) fail("F_ADD_SEALS");
  return d;
}

// How a helper ended, from wait4's status.
std::string describe_exit(int status, bool killed_by_crunch) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (!WIFSIGNALED(status)) return "ended";
  const int sig = WTERMSIG(status);
  std::string why = "died of " + std::string(signal_name(sig)) + " (signal " + std::to_string(sig) + ")";
  if (sig == SIGSYS) why += ": its sandbox refused a system call";
  if (sig == SIGXCPU) why += ": it used up its CPU time limit";
  if (sig == SIGKILL && !killed_by_crunch) why += ": killed from outside crunchd, or by the kernel's OOM killer";
  return why;
}

std::atomic<bool> pidfds_wanted{true};

// ---- one helper process ----

class helper_process {
 public:
  // Starts it; ready() then waits for it to say it is.
  helper_process(std::string kind, std::string label) : kind_(std::move(kind)), label_(std::move(label)) { spawn(); }

  ~helper_process() {
    if (pid_ > 0) {
      kill_now();
      reap(ending::retired);
    }
  }

  helper_process(const helper_process&) = delete;
  helper_process& operator=(const helper_process&) = delete;

  // Whether it is still there to take a job; one that died while idle is reaped and counted.
  bool usable() {
    if (pid_ <= 0) return false;
    if (exited()) {
      reap(ending::died);
      return false;
    }
    return true;
  }

  std::uint64_t kept_bytes() const noexcept { return input_size_ + output_size_; }

  std::optional<isolated_output> call(std::string_view function, std::string_view params, std::string_view body,
                                      const isolated_limits& limits, const std::stop_token& stop);

  // Waits until it has loaded its kind and closed its sandbox: true. False when `stop` fired
  // first: it is killed (a job asked to stop does not wait for a start). Throws when it dies or
  // does not say so within the start timeout.
  bool ready(const std::stop_token& stop);

 private:
  void spawn();
  void set_limits(const isolated_limits& limits);
  void provide_input(std::string_view body);
  // call()'s steps: the job's packet sent (its sequence number returned), and what one packet
  // from the helper says -- nothing yet (a crash report, a stale answer), or how the job ended.
  std::uint64_t send_job(std::string_view function, std::string_view params, std::size_t body_bytes);
  std::optional<std::optional<isolated_output>> on_packet(std::string_view packet, std::uint64_t sequence,
                                                          std::string_view function, const isolated_limits& limits);
  std::string read_output(std::uint64_t bytes);
  // Reads what the helper sent before it went (its crash report), without blocking.
  void drain_reports();
  // wait4 on it, counts it by `why`, and returns what ended it.
  std::string reap(ending why);
  void kill_and_reap() {
    kill_now();
    reap(ending::killed_for_job);
  }
  // SIGKILL, through its pidfd or, where there is none, by its pid: both are safe, since the pid
  // stays this child's until reap() has waited for it.
  void kill_now() const {
    if (pidfd_.fd >= 0) {
      syscall(SYS_pidfd_send_signal, pidfd_.fd, SIGKILL, nullptr, 0U);
    } else {
      ::kill(pid_, SIGKILL);
    }
  }
  // Whether it has exited, without reaping it.
  bool exited() const {
    siginfo_t info{};
    return waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0;
  }
  [[noreturn]] void died_with_job();

  std::string kind_;
  std::string label_;
  pid_t pid_ = -1;
  descriptor pidfd_;
  descriptor socket_;
  descriptor input_;
  descriptor output_;
  descriptor wake_;  // written when the running job's stop token fires
  std::uint64_t input_size_ = 0;
  std::uint64_t output_size_ = 0;
  std::uint64_t data_ceiling_ = RLIM_INFINITY;
  std::uint64_t sequence_ = 0;
  std::string crash_report_;
};

// Signals as a new process has them: none blocked, each at its default (SIGPIPE is ignored
// here, and an ignored signal stays ignored across exec).
void with_default_signals(posix_spawnattr_t& attributes) {
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &all);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
}

void helper_process::spawn() {
  auto& s = shared();
  helper_settings settings;
  {
    std::lock_guard lock(s.mutex);
    settings = s.settings;
  }
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) fail("socketpair");
  socket_ = descriptor(pair[0]);
  descriptor child_socket(pair[1]);
  input_ = shared_memory("crunch-input");
  output_ = shared_memory("crunch-output");
  wake_ = descriptor(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (wake_.fd < 0) fail("eventfd");

  // The child's copies at 10 and above, so that putting them at 3, 4 and 5 cannot overwrite one
  // another; dup2 clears their close-on-exec flag.
  descriptor child_fds[3] = {descriptor(fcntl(child_socket.fd, F_DUPFD_CLOEXEC, 10)),
                             descriptor(fcntl(input_.fd, F_DUPFD_CLOEXEC, 10)),
                             descriptor(fcntl(output_.fd, F_DUPFD_CLOEXEC, 10))};
  for (const auto& d : child_fds) {
    if (d.fd < 0) fail("fcntl(F_DUPFD_CLOEXEC)");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, child_fds[0].fd, socket_fd);
  posix_spawn_file_actions_adddup2(&actions, child_fds[1].fd, input_fd);
  posix_spawn_file_actions_adddup2(&actions, child_fds[2].fd, output_fd);
  const bool ours = settings.executable == "/proc/self/exe" && this_program() >= 0;
  if (ours) posix_spawn_file_actions_adddup2(&actions, this_program(), program_fd);
  posix_spawn_file_actions_addclosefrom_np(&actions, ours ? program_fd + 1 : output_fd + 1);
  posix_spawnattr_t attributes;
  with_default_signals(attributes);

  const std::string parent = std::to_string(getpid());
  // argv[0] is the program's real path (what ps shows, and what a stack's frames are named by),
  // while what is executed is settings.executable: this very program (this_program()).
  std::vector<std::string> args{program_path(), flag, kind_, label_, own_priority(), parent};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  auto env = helper_environment();
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string executable = ours ? "/proc/self/fd/" + std::to_string(program_fd) : settings.executable;
  const int rc = posix_spawn(&pid_, executable.c_str(), &actions, &attributes, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (rc != 0) {
    pid_ = -1;
    errno = rc;
    fail("cannot start a helper (" + settings.executable + ")");
  }
  // A pidfd wakes a poll when the helper exits. Without one (kernels before 5.3, valgrind, a
  // container profile that refuses pidfd_open) its socket's hang-up says the same, a moment later.
  if (pidfds_wanted.load(std::memory_order_relaxed)) pidfd_ = descriptor(static_cast<int>(syscall(SYS_pidfd_open, pid_, 0U)));
  {
    std::lock_guard lock(s.mutex);
    s.alive.push_back(pid_);
    ++counts_of(s, kind_).started;
    ++counts_of(s, kind_).alive;
    if (s.held) ::kill(pid_, SIGSTOP);
    data_ceiling_ = settings.memory_ceiling != 0 ? settings.memory_ceiling : RLIM_INFINITY;
  }
  // The hard limit only ever comes down: a job's own limit is set under it (set_limits).
  const rlimit data{data_ceiling_, data_ceiling_};
  if (limit_data) prlimit(pid_, RLIMIT_DATA, &data, nullptr);
}

bool helper_process::ready(const std::stop_token& stop) {
  const auto timeout = [] {
    std::lock_guard lock(shared().mutex);
    return shared().settings.start_timeout;
  }();
  const auto give_up = clock::now() + timeout;
  std::uint64_t drained = 0;
  (void)eventfd_read(wake_.fd, &drained);
  const int wake = wake_.fd;
  std::stop_callback on_stop(stop, [wake] { (void)eventfd_write(wake, 1); });
  for (;;) {
    pollfd fds[3] = {{socket_.fd, POLLIN, 0}, {pidfd_.fd, POLLIN, 0}, {wake_.fd, POLLIN, 0}};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(give_up - clock::now()).count();
    const int n = poll(fds, 3, static_cast<int>(std::max<long long>(0, left)));
    if (n > 0 && (fds[2].revents & POLLIN) != 0) {
      kill_now();
      reap(ending::retired);
      return false;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      kill_and_reap();
      throw std::runtime_error("the " + kind_ + " helper did not start within " + std::to_string(timeout.count()) +
                               " ms (does this program's main() call crunch::run_service?)");
    }
    if ((fds[0].revents & POLLIN) != 0) {
      message type{};
      char packet[max_packet];
      const auto got = recv(socket_.fd, packet, sizeof packet, MSG_DONTWAIT);
      if (got >= static_cast<ssize_t>(sizeof type)) {
        std::memcpy(&type, packet, sizeof type);
        if (type == message::ready) return true;
        if (type == message::crash) crash_report_.assign(packet + sizeof type, static_cast<std::size_t>(got) - sizeof type);
        continue;
      }
    }
    if ((fds[0].revents & (POLLHUP | POLLERR)) != 0 || (fds[1].revents & POLLIN) != 0) {
      drain_reports();
      const auto why = reap(ending::died);
      throw std::runtime_error("the " + kind_ + " helper could not start: it " + why +
                               (crash_report_.empty() ? std::string() : ": " + crash_report_));
    }
  }
}

void helper_process::set_limits(const isolated_limits& limits) {
  // Memory: what it holds now, twice the job's model, and room for the libraries' own.
  if (limit_data) {
    const auto now = data_bytes_of(pid_);
    const std::uint64_t wanted = now + 2 * limits.memory_bytes + (std::uint64_t{64} << 20);
    const rlimit data{std::min(wanted, data_ceiling_), data_ceiling_};
    prlimit(pid_, RLIMIT_DATA, &data, nullptr);
  }
  // CPU: the time left to the job's deadline on top of what it has used, a second's rounding
  // and one more: a job that stops at its deadline never meets it; one that keeps a thread busy
  // past every deadline (crunchd's kill could not reach it) dies of SIGXCPU.
  const auto left = running_deadline == clock::time_point::max()
                        ? std::chrono::seconds(3600)
                        : std::chrono::ceil<std::chrono::seconds>(std::max(clock::duration::zero(), running_deadline - clock::now()));
  const auto used = std::chrono::ceil<std::chrono::seconds>(cpu_time_of(pid_));
  const rlimit cpu{static_cast<rlim_t>(used.count() + left.count() + 2), RLIM_INFINITY};
  prlimit(pid_, RLIMIT_CPU, &cpu, nullptr);
}

void helper_process::provide_input(std::string_view body) {
  if (body.size() > input_size_) {
    const auto size = round_up_pow2(body.size());
    if (ftruncate(input_.fd, static_cast<off_t>(size)) != 0) fail("ftruncate of a helper's input");
    input_size_ = size;
  }
  std::size_t done = 0;
  while (done < body.size()) {
    const auto n = pwrite(input_.fd, body.data() + done, body.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("writing a helper's input");
    done += static_cast<std::size_t>(n);
  }
}

std::string helper_process::read_output(std::uint64_t bytes) {
  struct stat st{};
  if (fstat(output_.fd, &st) != 0) fail("fstat of a helper's output");
  output_size_ = static_cast<std::uint64_t>(st.st_size);
  // The size cannot shrink (F_SEAL_SHRINK), so what is checked here stays readable.
  if (bytes > output_size_) {
    kill_and_reap();
    throw isolated_job_failed("helper_crashed", "the " + kind_ + " helper answered with more bytes than it wrote");
  }
  std::string out(static_cast<std::size_t>(bytes), '\0');
  std::size_t done = 0;
  while (done < out.size()) {
    const auto n = pread(output_.fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("reading a helper's output");
    done += static_cast<std::size_t>(n);
  }
  return out;
}

void helper_process::drain_reports() {
  char packet[max_packet];
  for (;;) {
    const auto got = recv(socket_.fd, packet, sizeof packet, MSG_DONTWAIT);
    if (got < static_cast<ssize_t>(sizeof(message))) return;
    message type{};
    std::memcpy(&type, packet, sizeof type);
    if (type == message::crash) crash_report_.assign(packet + sizeof type, static_cast<std::size_t>(got) - sizeof type);
  }
}

std::string helper_process::reap(ending why) {
  int status = 0;
  rusage usage{};
  while (wait4(pid_, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  const auto cpu = std::chrono::seconds(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                   std::chrono::microseconds(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
  auto& s = shared();
  {
    std::lock_guard lock(s.mutex);
    std::erase(s.alive, pid_);
    s.retired_cpu += std::chrono::duration_cast<std::chrono::nanoseconds>(cpu);
    auto& counts = counts_of(s, kind_);
    --counts.alive;
    if (why == ending::died) ++counts.crashed;
    if (why == ending::killed_for_job) ++counts.killed;
  }
  pid_ = -1;
  return describe_exit(status, why != ending::died);
}

void helper_process::died_with_job() {
  // Its socket closed: it is dying. One that closed it and lives on is not waited for long
  // (without a pidfd, not at all: a SIGKILL does not change the signal a dying process dies of).
  pollfd gone{pidfd_.fd, POLLIN, 0};
  if (pidfd_.fd < 0 ? !exited() : poll(&gone, 1, 1000) != 1) kill_now();
  drain_reports();
  const auto why = reap(ending::died);
  throw isolated_job_failed("helper_crashed", "the " + kind_ + " helper running this job " + why, crash_report_);
}

std::uint64_t helper_process::send_job(std::string_view function, std::string_view params, std::size_t body_bytes) {
  job_head head;
  head.function_bytes = static_cast<std::uint32_t>(function.size());
  head.params_bytes = static_cast<std::uint32_t>(params.size());
  head.body_bytes = body_bytes;
  head.sequence = ++sequence_;
  iovec parts[3] = {{&head, sizeof head},
                    {const_cast<char*>(function.data()), function.size()},
                    {const_cast<char*>(params.data()), params.size()}};
  msghdr packet{};
  packet.msg_iov = parts;
  packet.msg_iovlen = 3;
  if (sendmsg(socket_.fd, &packet, MSG_NOSIGNAL) < 0) died_with_job();
  return head.sequence;
}

std::optional<std::optional<isolated_output>> helper_process::on_packet(std::string_view packet, std::uint64_t sequence,
                                                                        std::string_view function,
                                                                        const isolated_limits& limits) {
  message type{};
  std::memcpy(&type, packet.data(), sizeof type);
  if (type == message::crash) {
    crash_report_.assign(packet.substr(sizeof type));
    return std::nullopt;
  }
  answer_head answer{};
  if (type != message::answer || packet.size() < sizeof answer) return std::nullopt;
  std::memcpy(&answer, packet.data(), sizeof answer);
  if (answer.sequence != sequence) return std::nullopt;  // a stop that crossed an earlier answer
  const std::string text(packet.substr(sizeof answer));
  switch (answer.how) {
    case outcome::output:
      if (answer.status != 200 && answer.status != 400) break;
      return std::optional<isolated_output>(isolated_output{answer.status, read_output(answer.body_bytes)});
    case outcome::stopped:
      return std::optional<isolated_output>();
    case outcome::failed:
      throw std::runtime_error(text);
    case outcome::out_of_memory:
      // Its heap is in whatever state the failure left it: replaced.
      kill_and_reap();
      throw isolated_job_failed("helper_out_of_memory", "the " + kind_ + " helper ran out of its memory limit (" +
                                                            std::to_string(limits.memory_bytes >> 20) +
                                                            " MiB for this job, twice over): " + text);
    case outcome::no_function:
      throw std::logic_error("the " + kind_ + " kind's helpers have no function " + std::string(function));
  }
  kill_and_reap();
  throw isolated_job_failed("helper_crashed", "the " + kind_ + " helper answered out of protocol");
}

std::optional<isolated_output> helper_process::call(std::string_view function, std::string_view params,
                                                    std::string_view body, const isolated_limits& limits,
                                                    const std::stop_token& stop) {
  if (stop.stop_requested()) return std::nullopt;
  if (sizeof(job_head) + function.size() + params.size() > max_packet) {
    throw std::length_error("an isolated job's parameters are over " + std::to_string(max_packet) + " bytes");
  }
  if (body.size() > max_bytes) throw std::length_error("an isolated job's body is over 1 GiB");
  set_limits(limits);
  provide_input(body);
  std::uint64_t drained = 0;
  (void)eventfd_read(wake_.fd, &drained);
  crash_report_.clear();
  const auto sequence = send_job(function, params, body.size());

  // The stop token fires on the thread that cancels (the I/O thread): it only writes the eventfd.
  const int wake = wake_.fd;
  std::stop_callback on_stop(stop, [wake] { (void)eventfd_write(wake, 1); });
  std::optional<clock::time_point> kill_at;
  for (;;) {
    pollfd fds[3] = {{socket_.fd, POLLIN, 0}, {pidfd_.fd, POLLIN, 0}, {wake_.fd, POLLIN, 0}};
    int timeout = -1;
    if (kill_at) {
      timeout = static_cast<int>(std::max<long long>(
          0, std::chrono::ceil<std::chrono::milliseconds>(*kill_at - clock::now()).count()));
    }
    const int n = poll(fds, kill_at ? 2 : 3, timeout);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("poll on a helper");
    if (n == 0) {
      // Asked to stop, and it did not within the grace: a job that cannot stop (an AVIF
      // encode) is stopped this way.
      kill_and_reap();
      return std::nullopt;
    }
    if ((fds[0].revents & POLLIN) != 0) {
      char buffer[max_packet];
      const auto got = recv(socket_.fd, buffer, sizeof buffer, MSG_DONTWAIT);
      if (got >= static_cast<ssize_t>(sizeof(message))) {
        auto ended = on_packet({buffer, static_cast<std::size_t>(got)}, sequence, function, limits);
        if (ended) return std::move(*ended);
        continue;
      }
      if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) died_with_job();
    }
    if ((fds[0].revents & (POLLHUP | POLLERR)) != 0 || (fds[1].revents & POLLIN) != 0) died_with_job();
    if (!kill_at && (fds[2].revents & POLLIN) != 0) {
      const stop_head stopping{message::stop, 0, sequence};
      (void)send(socket_.fd, &stopping, sizeof stopping, MSG_NOSIGNAL);
      std::lock_guard lock(shared().mutex);
      kill_at = clock::now() + shared().settings.stop_grace;
    }
  }
}

// ---- the calling thread's helpers ----

struct thread_helpers {
  std::map<std::string, std::unique_ptr<helper_process>, std::less<>> by_kind;
};
thread_local thread_helpers mine;

}  // namespace

void set_helper_settings(const helper_settings& settings) {
  std::lock_guard lock(shared().mutex);
  shared().settings = settings;
}

void use_pidfds(bool use) noexcept { pidfds_wanted.store(use, std::memory_order_relaxed); }

void release_helpers() noexcept { mine.by_kind.clear(); }

std::uint64_t helper_memory_kept() noexcept {
  std::uint64_t kept = 0;
  for (const auto& [kind, helper] : mine.by_kind) kept += helper->kept_bytes();
  return kept;
}

void set_running_deadline(clock::time_point deadline) noexcept { running_deadline = deadline; }

std::vector<helper_counts> helper_statistics() {
  auto& s = shared();
  std::lock_guard lock(s.mutex);
  std::vector<helper_counts> out;
  for (const auto& [kind, counts] : s.counts) out.push_back(counts);
  return out;
}

std::chrono::nanoseconds helpers_cpu_time() {
  auto& s = shared();
  std::lock_guard lock(s.mutex);
  auto total = s.retired_cpu;
  for (const auto pid : s.alive) total += cpu_time_of(pid);
  return total;
}

void hold_helpers(bool hold) {
  auto& s = shared();
  std::lock_guard lock(s.mutex);
  if (s.held == hold) return;
  s.held = hold;
  for (const auto pid : s.alive) ::kill(pid, hold ? SIGSTOP : SIGCONT);
}

std::optional<isolated_output> run_isolated(std::string_view kind, std::string_view function, std::string_view params,
                                            std::string_view body, const isolated_limits& limits, std::stop_token stop) {
  auto it = mine.by_kind.find(kind);
  if (it != mine.by_kind.end() && !it->second->usable()) {
    mine.by_kind.erase(it);
    it = mine.by_kind.end();
  }
  if (it == mine.by_kind.end()) {
    if (stop.stop_requested()) return std::nullopt;
    const auto label = thread_name_for_reports();
    auto helper = std::make_unique<helper_process>(std::string(kind), label.empty() ? std::string("thread") : std::string(label));
    if (!helper->ready(stop)) return std::nullopt;
    it = mine.by_kind.emplace(std::string(kind), std::move(helper)).first;
  }
  try {
    auto out = it->second->call(function, params, body, limits, stop);
    if (!it->second->usable()) mine.by_kind.erase(it);  // killed at the end of its grace
    return out;
  } catch (...) {
    if (!it->second->usable()) mine.by_kind.erase(it);
    throw;
  }
}

}  // namespace crunch
