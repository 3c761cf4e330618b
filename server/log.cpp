#include <crunch/log.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <csignal>
#include <chrono>
#include <iterator>
#include <ctime>
#include <vector>

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace crunch {

namespace {

// Waking the writer is a futex syscall and a context switch; doing it per line cost the I/O thread
// ~11% of its time at 60k lines/s. So the writer is woken only once this many lines wait, and
// otherwise looks on its own every flush_interval: log output may lag by that much.
constexpr std::size_t wake_batch = 64;
constexpr auto flush_interval = std::chrono::milliseconds(20);

const char* name_of(log_level level) {
  switch (level) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warn: return "warn";
    case log_level::error: return "error";
  }
  return "info";
}

// "2026-11-26T05:09:49.775Z". gmtime_r and the date are done once per second per thread: the
// access line asks for the time on every request.
void append_timestamp(std::string& out) {
  struct cached_second {
    std::time_t second = -1;
    char prefix[32] = {};  // "2026-11-26T05:09:49."
    std::size_t length = 0;
  };
  thread_local cached_second cache;
  const auto now = std::chrono::system_clock::now();
  const auto seconds = std::chrono::system_clock::to_time_t(now);
  if (seconds != cache.second) {
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    const int n = std::snprintf(cache.prefix, sizeof cache.prefix, "%04d-%02d-%02dT%02d:%02d:%02d.", utc.tm_year + 1900,
                                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec);
    cache.length = n > 0 ? static_cast<std::size_t>(n) : 0;
    cache.second = seconds;
  }
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  out.append(cache.prefix, cache.length);
  out += static_cast<char>('0' + millis / 100);
  out += static_cast<char>('0' + millis / 10 % 10);
  out += static_cast<char>('0' + millis % 10);
  out += 'Z';
}

std::string timestamp() {
  std::string stamp;
  append_timestamp(stamp);
  return stamp;
}

std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

// JSON string body. Bytes above 0x7f are written as \u00XX so that any input — a request target
// is not promised to be UTF-8 — still makes valid JSON.
void append_escaped(std::string& out, std::string_view value) {
  static constexpr char hex[] = "0123456789abcdef";
  for (const char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20 || c > 0x7e) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += ch;
    }
  }
}

bool needs_quotes(std::string_view value) {
  return value.empty() || value.find_first_of(" \"=\t\n") != std::string_view::npos;
}

}  // namespace

logger::logger(log_format format, log_level level, std::FILE* out, std::size_t max_queued,
               std::chrono::milliseconds flush_timeout)
    : format_(format),
      level_(level),
      out_((std::fflush(out), out)),
      fd_(fileno(out)),
      max_queued_(max_queued),
      flush_timeout_(flush_timeout),
      wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      writer_([this] { run(); }) {}

logger::~logger() {
  close();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void logger::close() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  ready_.notify_one();
  if (wake_fd_ >= 0) (void)eventfd_write(wake_fd_, 1);  // a writer waiting for its output
  writer_.join();
  if (const auto lost = dropped(); lost > 0) {
    // Best effort and never blocking: stderr may be as stuck as stdout.
    char text[128];
    const int n = std::snprintf(text, sizeof text,
                                "crunchd: %llu log lines dropped: the log output did not keep up or was gone\n",
                                static_cast<unsigned long long>(lost));
    pollfd err{STDERR_FILENO, POLLOUT, 0};
    if (n > 0 && poll(&err, 1, 0) == 1 && (err.revents & POLLOUT) != 0) {
      (void)::write(STDERR_FILENO, text, static_cast<std::size_t>(n));
    }
  }
}

std::string logger::format_line(log_level level, std::string_view event, const nlohmann::json& fields) const {
  if (format_ == log_format::json) {
    // Ordered, so that every line starts with time, level and event.
    nlohmann::ordered_json line = {{"time", timestamp()}, {"level", name_of(level)}, {"event", event}};
    if (fields.is_object()) {
      for (const auto& [key, value] : fields.items()) line[key] = value;
    }
    return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  std::string line = timestamp() + " " + name_of(level) + " " + std::string(event);
  if (fields.is_object()) {
    for (const auto& [key, value] : fields.items()) {
      std::string text = value.is_string() ? value.get<std::string>() : dump(value);
      // logfmt: quote values that would not read back as one token.
      if (text.empty() || text.find_first_of(" \"=\t\n") != std::string::npos) text = dump(nlohmann::json(text));
      line += " " + key + "=" + text;
    }
  }
  return line + "\n";
}

log_line::log_line(log_format format, log_level level, std::string_view event) : format_(format) {
  text_.reserve(320);
  if (format_ == log_format::json) {
    text_ += "{\"time\":\"";
    append_timestamp(text_);
    text_ += "\",\"level\":\"";
    text_ += name_of(level);
    text_ += "\",\"event\":\"";
    append_escaped(text_, event);
    text_ += '"';
  } else {
    append_timestamp(text_);
    text_ += ' ';
    text_ += name_of(level);
    text_ += ' ';
    text_ += event;
  }
}

void log_line::key(std::string_view name) {
  if (format_ == log_format::json) {
    text_ += ",\"";
    text_ += name;
    text_ += "\":";
  } else {
    text_ += ' ';
    text_ += name;
    text_ += '=';
  }
}

log_line& log_line::field(std::string_view name, std::string_view value) {
  key(name);
  if (format_ == log_format::json || needs_quotes(value)) {
    text_ += '"';
    append_escaped(text_, value);
    text_ += '"';
  } else {
    text_ += value;
  }
  return *this;
}

log_line& log_line::field(std::string_view name, std::uint64_t value) {
  key(name);
  char digits[24];
  const auto end = std::to_chars(std::begin(digits), std::end(digits), value).ptr;
  text_.append(digits, end);
  return *this;
}

log_line& log_line::millis(std::string_view name, double ms) {
  key(name);
  char digits[32];
  const auto end = std::to_chars(std::begin(digits), std::end(digits), ms, std::chars_format::fixed, 3).ptr;
  text_.append(digits, end);
  return *this;
}

std::string log_line::finish() && {
  if (format_ == log_format::json) text_ += '}';
  text_ += '\n';
  return std::move(text_);
}

void logger::write(log_line&& line) { enqueue(std::move(line).finish()); }

void logger::write(log_level level, std::string_view event, const nlohmann::json& fields) {
  if (!enabled(level)) return;
  enqueue(format_line(level, event, fields));
}

void logger::enqueue(std::string line) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || queue_.size() >= max_queued_) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queue_.push_back(std::move(line));
    wake = queue_.size() == wake_batch;
  }
  if (wake) ready_.notify_one();
}

// A write(2) on a pipe, a terminal or a socket blocks while its reader does not read, and a
// blocked writer could not be joined. So the writer waits in poll(), which the destructor can end
// (wake_fd_), and then writes at most PIPE_BUF bytes: a pipe that polls writable has a free page
// and takes them without blocking, and a terminal, socket or file takes that much at once too.
logger::output logger::write_out(std::string_view& bytes,
                                 std::optional<std::chrono::steady_clock::time_point> deadline) {
  while (!bytes.empty()) {
    int timeout = -1;
    if (deadline) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return output::timed_out;
      timeout = static_cast<int>(left.count());
    }
    // Until stopped, the wake-up may end the wait; after, the deadline does.
    pollfd fds[2] = {{fd_, POLLOUT, 0}, {wake_fd_, POLLIN, 0}};
    const int ready = poll(fds, !deadline && wake_fd_ >= 0 ? 2 : 1, timeout);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return output::broken;
    if (ready == 0) return output::timed_out;
    if ((fds[0].revents & (POLLERR | POLLNVAL)) != 0) return output::broken;
    if ((fds[0].revents & POLLOUT) == 0) return output::timed_out;  // woken to stop
    const auto n = ::write(fd_, bytes.data(), std::min<std::size_t>(bytes.size(), PIPE_BUF));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return output::broken;  // EPIPE (SIGPIPE is blocked on this thread), EBADF, ENOSPC...
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return output::written;
}

void logger::run() {
  // A write to a pipe whose reader is gone raises SIGPIPE on the writing thread; blocked here, it
  // stays pending and the write fails with EPIPE instead of ending the process.
  sigset_t pipe_signal;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);

  std::string chunk;  // lines taken from the queue; what is left of it is not written yet
  std::string_view unwritten;
  bool broken = false;
  std::optional<std::chrono::steady_clock::time_point> deadline;  // once stopping
  const auto drop = [this](std::string_view lines) {
    dropped_.fetch_add(static_cast<std::uint64_t>(std::count(lines.begin(), lines.end(), '\n')),
                       std::memory_order_relaxed);
  };
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      if (unwritten.empty()) {
        ready_.wait_for(lock, flush_interval, [this] { return stopping_ || queue_.size() >= wake_batch; });
      }
      if (stopping_ && !deadline) deadline = std::chrono::steady_clock::now() + flush_timeout_;
      if (unwritten.empty()) {
        if (queue_.empty() && stopping_) return;  // everything written or counted
        // One write for the batch, not one per line.
        chunk.clear();
        for (const auto& line : queue_) chunk += line;
        queue_.clear();
        unwritten = chunk;
      }
    }
    if (unwritten.empty()) continue;
    if (broken) {
      drop(unwritten);
      unwritten = {};
      continue;
    }
    switch (write_out(unwritten, deadline)) {
      case output::written: break;
      case output::broken:
        broken = true;
        drop(unwritten);
        unwritten = {};
        break;
      case output::timed_out:
        if (deadline && std::chrono::steady_clock::now() >= *deadline) {
          // Out of time: what is left is dropped, the queue with it.
          drop(unwritten);
          unwritten = {};
          std::lock_guard lock(mutex_);
          dropped_.fetch_add(queue_.size(), std::memory_order_relaxed);
          queue_.clear();
          return;
        }
        break;  // woken to stop: the loop sets the deadline
    }
  }
}

}  // namespace crunch
