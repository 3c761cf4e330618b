#include "fatal_signals.hpp"

#include "helper_protocol.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <csignal>
#include <cstring>
#include <ctime>
#include <utility>

#include <dlfcn.h>
#include <execinfo.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

namespace crunch {

namespace {

constexpr std::array fatal_signals{SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS, SIGXCPU};
constexpr std::size_t max_inflight = 512;
constexpr std::size_t max_id = 128;  // session.cpp's valid_request_id
constexpr int max_frames = 64;

// A slot is free, being written by the thread that claimed it, or readable by a report.
enum slot_state : std::uint8_t { slot_free, slot_writing, slot_ready };

struct inflight_slot {
  std::atomic<std::uint8_t> state{slot_free};
  char id[max_id + 1] = {};
};

inflight_slot inflight[max_inflight];
std::atomic<std::size_t> next_slot{0};
std::atomic<std::uint64_t> unlisted{0};  // requests in flight that found no free slot

std::atomic<int> report_fd{-1};
std::atomic<fatal_report_style> report_style{fatal_report_style::json};
std::atomic<bool> reporting{false};

thread_local char thread_role[48] = "";
thread_local int running_slot = -1;

// The calling thread's alternate signal stack, unmapped when the thread ends.
struct alternate_stack {
  static constexpr std::size_t size = 64 * 1024;
  void* base = nullptr;
  ~alternate_stack() {
    if (base == nullptr) return;
    stack_t off{};
    off.ss_flags = SS_DISABLE;
    sigaltstack(&off, nullptr);
    munmap(base, size);
  }
  void install() {
    if (base != nullptr) return;
    void* mapped = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (mapped == MAP_FAILED) return;
    stack_t on{};
    on.ss_sp = mapped;
    on.ss_size = size;
    if (sigaltstack(&on, nullptr) != 0) {
      munmap(mapped, size);
      return;
    }
    base = mapped;
  }
};
thread_local alternate_stack signal_stack;

// A fixed buffer and appends that neither allocate nor lock.
class report {
 public:
  void add(std::string_view s) {
    const auto n = std::min(s.size(), sizeof text_ - 2 - size_);  // room for a newline
    std::memcpy(text_ + size_, s.data(), n);
    size_ += n;
  }
  void add(char c) { add(std::string_view(&c, 1)); }
  void add_unsigned(std::uint64_t v, unsigned base = 10) {
    char digits[24];
    int n = 0;
    do {
      digits[n++] = "0123456789abcdef"[v % base];
      v /= base;
    } while (v != 0);
    while (n > 0) add(digits[--n]);
  }
  void add_hex(std::uintptr_t v) {
    add("0x");
    add_unsigned(v, 16);
  }
  // A JSON string's body: printable ASCII kept, the rest (and quotes) escaped or replaced.
  void add_escaped(std::string_view s) {
    for (const char ch : s) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\') {
        add('\\');
        add(ch);
      } else if (c < 0x20 || c > 0x7e) {
        add('?');
      } else {
        add(ch);
      }
    }
  }
  void field(std::string_view key, std::string_view value, bool json) {
    add(json ? ",\"" : " ");
    add(key);
    add(json ? "\":\"" : "=\"");
    add_escaped(value);
    add('"');
  }
  void field(std::string_view key, std::uint64_t value, bool json) {
    add(json ? ",\"" : " ");
    add(key);
    add(json ? "\":" : "=");
    add_unsigned(value);
  }
  void finish() { text_[size_++] = '\n'; }
  const char* data() const { return text_; }
  std::size_t size() const { return size_; }

 private:
  char text_[32 * 1024];
  std::size_t size_ = 0;
};

report the_report;  // one at a time: `reporting` admits the first thread

// "2026-12-07T06:43:50.123Z", from the realtime clock, without the C library's locale or locks
// (days to a civil date: Howard Hinnant's algorithm).
void add_timestamp(report& out) {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  const std::int64_t seconds = now.tv_sec;
  std::int64_t days = seconds / 86400;
  const std::int64_t in_day = seconds % 86400;
  days += 719468;
  const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const std::int64_t doe = days - era * 146097;
  const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const std::int64_t mp = (5 * doy + 2) / 153;
  const std::int64_t day = doy - (153 * mp + 2) / 5 + 1;
  const std::int64_t month = mp < 10 ? mp + 3 : mp - 9;
  const std::int64_t year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  auto two = [&](std::int64_t v) {
    out.add(static_cast<char>('0' + v / 10));
    out.add(static_cast<char>('0' + v % 10));
  };
  out.add_unsigned(static_cast<std::uint64_t>(year));
  out.add('-');
  two(month);
  out.add('-');
  two(day);
  out.add('T');
  two(in_day / 3600);
  out.add(':');
  two(in_day / 60 % 60);
  out.add(':');
  two(in_day % 60);
  out.add('.');
  const auto millis = now.tv_nsec / 1'000'000;
  out.add(static_cast<char>('0' + millis / 100));
  two(millis % 100);
  out.add('Z');
}

std::string_view syscall_name(long number) {
  switch (number) {
    case 2: return "open";
    case 41: return "socket";
    case 42: return "connect";
    case 49: return "bind";
    case 56: return "clone";
    case 57: return "fork";
    case 58: return "vfork";
    case 59: return "execve";
    case 62: return "kill";
    case 85: return "creat";
    case 101: return "ptrace";
    case 257: return "openat";
    case 322: return "execveat";
    case 435: return "clone3";
    case 437: return "openat2";
    default: return {};
  }
}

void describe_stack(report& out, bool json) {
  void* frames[max_frames];
  const int count = backtrace(frames, max_frames);
  out.add(json ? ",\"stack\":[" : " stack=\"");
  for (int i = 0; i < count; ++i) {
    if (i > 0) out.add(json ? "," : " | ");
    if (json) out.add('"');
    Dl_info where{};
    const auto address = reinterpret_cast<std::uintptr_t>(frames[i]);
    if (dladdr(frames[i], &where) != 0 && where.dli_fname != nullptr) {
      // The module and the offset addr2line reads (`addr2line -Cfe crunchd 0x1234`), then the
      // nearest exported symbol, which may be a caller's when the function is file-local.
      std::string_view module = where.dli_fname;
      if (const auto slash = module.rfind('/'); slash != std::string_view::npos) module.remove_prefix(slash + 1);
      out.add_escaped(module);
      out.add('+');
      out.add_hex(address - reinterpret_cast<std::uintptr_t>(where.dli_fbase));
      if (where.dli_sname != nullptr) {
        out.add(' ');
        out.add_escaped(where.dli_sname);
        out.add('+');
        out.add_hex(address - reinterpret_cast<std::uintptr_t>(where.dli_saddr));
      }
    } else {
      out.add_hex(address);
    }
    if (json) out.add('"');
  }
  out.add(json ? "]" : "\"");
}

void describe_requests(report& out, bool json) {
  if (running_slot >= 0 && inflight[running_slot].state.load(std::memory_order_acquire) == slot_ready) {
    out.field("request_id", inflight[running_slot].id, json);
  }
  out.add(json ? ",\"requests_in_flight\":[" : " requests_in_flight=\"");
  bool first = true;
  for (const auto& slot : inflight) {
    if (slot.state.load(std::memory_order_acquire) != slot_ready) continue;
    if (!first) out.add(json ? "," : " ");
    first = false;
    if (json) out.add('"');
    out.add_escaped(slot.id);
    if (json) out.add('"');
  }
  out.add(json ? "]" : "\"");
  if (const auto more = unlisted.load(std::memory_order_relaxed); more > 0) {
    out.field("more_requests_in_flight", more, json);
  }
}

void write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const auto n = ::write(fd, data, size);
    if (n <= 0) return;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

void on_fatal_signal(int signal, siginfo_t* info, void*) {
  const int saved_errno = errno;
  // One report at a time; a second thread that faults meanwhile waits for the first to end the
  // process.
  if (reporting.exchange(true)) {
    for (;;) pause();
  }
  const auto style = report_style.load();
  const bool json = style != fatal_report_style::text;
  auto& out = the_report;
  if (style == fatal_report_style::packet) {
    const auto type = helper_protocol::message::crash;
    out.add(std::string_view(reinterpret_cast<const char*>(&type), sizeof type));
    out.add("{\"event\":\"fatal_signal\"");
  } else if (json) {
    out.add("{\"time\":\"");
    add_timestamp(out);
    out.add("\",\"level\":\"fatal\",\"event\":\"fatal_signal\"");
  } else {
    add_timestamp(out);
    out.add(" fatal fatal_signal");
  }
  out.field("signal", signal_name(signal), json);
  out.field("signal_number", static_cast<std::uint64_t>(signal), json);
  if (info != nullptr) {
    if (info->si_code <= 0) {
      out.field("sent_by_pid", static_cast<std::uint64_t>(info->si_pid), json);  // kill(2) from outside
    } else if (signal == SIGSYS) {
      out.field("syscall", static_cast<std::uint64_t>(info->si_syscall), json);
      if (const auto name = syscall_name(info->si_syscall); !name.empty()) out.field("syscall_name", name, json);
    } else if (signal == SIGSEGV || signal == SIGBUS || signal == SIGILL || signal == SIGFPE) {
      out.add(json ? ",\"address\":\"" : " address=\"");
      out.add_hex(reinterpret_cast<std::uintptr_t>(info->si_addr));
      out.add('"');
    }
  }
  out.field("pid", static_cast<std::uint64_t>(getpid()), json);
  out.field("thread", thread_role[0] != '\0' ? thread_role : "unnamed", json);
  // A helper's requests are crunchd's to name (its log line for the job carries the id).
  if (style != fatal_report_style::packet) describe_requests(out, json);
  describe_stack(out, json);
  if (json) out.add('}');
  const int fd = report_fd.load();
  if (style == fatal_report_style::packet) {
    // One packet; crunchd may be gone, then stderr has it.
    if (send(fd, out.data(), out.size(), MSG_NOSIGNAL) < 0) {
      out.finish();
      write_all(STDERR_FILENO, out.data() + sizeof(helper_protocol::message), out.size() - sizeof(helper_protocol::message));
    }
  } else {
    out.finish();
    write_all(fd, out.data(), out.size());
  }
  // Now the signal does what it would have done: the default action, from here.
  struct sigaction default_action{};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  sigaction(signal, &default_action, nullptr);
  sigset_t only{};
  sigemptyset(&only);
  sigaddset(&only, signal);
  raise(signal);
  pthread_sigmask(SIG_UNBLOCK, &only, nullptr);
  // Still here: PID 1 in a container ignores a signal it sends itself.
  errno = saved_errno;
  _exit(128 + signal);
}

}  // namespace

std::string_view signal_name(int signal) noexcept {
  switch (signal) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGABRT: return "SIGABRT";
    case SIGSYS: return "SIGSYS";
    case SIGXCPU: return "SIGXCPU";
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGTRAP: return "SIGTRAP";
    case SIGPIPE: return "SIGPIPE";
    case SIGXFSZ: return "SIGXFSZ";
    default: return "signal";
  }
}

void install_fatal_signal_report(int fd, fatal_report_style style) {
  // backtrace() loads libgcc's unwinder on its first call, which is not safe in a handler.
  void* warm[2];
  (void)backtrace(warm, 2);
  report_fd.store(fd);
  report_style.store(style);
  struct sigaction action{};
  action.sa_sigaction = &on_fatal_signal;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  for (const int s : fatal_signals) sigaction(s, &action, nullptr);
}

void name_thread_for_reports(std::string_view role) {
  const auto n = std::min(role.size(), sizeof thread_role - 1);
  if (n > 0) std::memcpy(thread_role, role.data(), n);
  thread_role[n] = '\0';
  signal_stack.install();
}

std::string_view thread_name_for_reports() noexcept { return thread_role; }

inflight_request::inflight_request(std::string_view request_id) noexcept {
  const auto start = next_slot.fetch_add(1, std::memory_order_relaxed);
  for (std::size_t i = 0; i < max_inflight; ++i) {
    auto& s = inflight[(start + i) % max_inflight];
    auto expected = static_cast<std::uint8_t>(slot_free);
    if (!s.state.compare_exchange_strong(expected, slot_writing, std::memory_order_acquire)) continue;
    const auto n = std::min(request_id.size(), max_id);
    if (n > 0) std::memcpy(s.id, request_id.data(), n);
    s.id[n] = '\0';
    s.state.store(slot_ready, std::memory_order_release);
    slot_ = static_cast<int>((start + i) % max_inflight);
    return;
  }
  unlisted.fetch_add(1, std::memory_order_relaxed);
  slot_ = unlisted_slot;
}

inflight_request::inflight_request(inflight_request&& other) noexcept : slot_(std::exchange(other.slot_, none)) {}

inflight_request::~inflight_request() {
  if (slot_ >= 0) {
    inflight[slot_].state.store(slot_free, std::memory_order_release);
  } else if (slot_ == unlisted_slot) {
    unlisted.fetch_sub(1, std::memory_order_relaxed);
  }
}

void set_running_request(int slot) noexcept { running_slot = slot; }

}  // namespace crunch
