// The callback sender: the policy, the signature and the retries run here, on the I/O thread; each
// attempt's connection, TLS and HTTP exchange run in a crunch-callback process (callback_helper.cpp).
#include "server/callbacks.hpp"

#include "workers/descriptor.hpp"

#include <crunch/config.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>
#include <sodium.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace crunch {

namespace {

using namespace net::experimental::awaitable_operators;  // NOLINT: for `||` in this file only
using tcp = net::ip::tcp;
using steady = std::chrono::steady_clock;

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t max_url_bytes = 2048;
constexpr std::size_t max_helper_output_bytes = 4096;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string base64(const unsigned char* data, std::size_t size) {
  std::string out(sodium_base64_ENCODED_LEN(size, sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), data, size, sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);
  return out;
}

enum class outcome { delivered, refused, gone, gave_up };
constexpr std::array outcome_names = {"delivered", "refused", "gone", "gave_up"};

struct attempt_result {
  std::optional<outcome> final;                  // nullopt: try again
  std::optional<std::chrono::seconds> retry_after;
  std::string detail;                            // for the log
};

}  // namespace

std::variant<callback_url, std::string> parse_callback_url(std::string_view text) {
  if (text.size() > max_url_bytes) return "callback_url is longer than 2048 bytes";
  if (std::any_of(text.begin(), text.end(), [](unsigned char c) { return c <= 0x20 || c >= 0x7f; })) {
    return "callback_url has a space or a character outside printable ASCII";
  }
  callback_url u;
  u.url = std::string(text);
  const auto scheme_end = text.find("://");
  if (scheme_end == std::string_view::npos) return "callback_url must be an absolute http:// or https:// URL";
  const auto scheme = lower(text.substr(0, scheme_end));
  if (scheme != "http" && scheme != "https") return "callback_url must be an http:// or https:// URL";
  u.tls = scheme == "https";
  auto rest = text.substr(scheme_end + 3);
  if (rest.find('#') != std::string_view::npos) return "callback_url may not have a fragment";
  const auto path_at = rest.find_first_of("/?");
  const auto authority = rest.substr(0, path_at);
  u.target = path_at == std::string_view::npos ? "/" : std::string(rest.substr(path_at));
  if (u.target.front() == '?') u.target.insert(0, "/");
  if (authority.find('@') != std::string_view::npos) return "callback_url may not carry a user name or password";
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return "callback_url has an unclosed [IPv6 address]";
    u.host = std::string(authority.substr(1, close - 1));
    const auto after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') return "callback_url has junk after its [IPv6 address]";
    if (!after.empty()) port = after.substr(1);
    sys::error_code ec;
    (void)net::ip::make_address_v6(u.host, ec);
    if (ec) return "callback_url has a malformed IPv6 address";
  } else {
    const auto colon = authority.find(':');
    u.host = lower(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    if (u.host.empty() || !std::all_of(u.host.begin(), u.host.end(), [](unsigned char c) {
          return std::isalnum(c) || c == '.' || c == '-';
        })) {
      return "callback_url has no host, or one with characters a host name cannot have";
    }
  }
  if (port.empty()) {
    u.port = u.tls ? "443" : "80";
  } else {
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); }) ||
        std::stoul(std::string(port)) == 0 || std::stoul(std::string(port)) > 65535) {
      return "callback_url has a port that is not 1..65535";
    }
    u.port = std::string(port);
  }
  return u;
}

std::optional<std::string_view> forbidden_address(const net::ip::address& address) {
  if (address.is_v6()) {
    const auto v6 = address.to_v6();
    if (v6.is_v4_mapped()) return forbidden_address(net::ip::make_address_v4(net::ip::v4_mapped, v6));
    if (v6.is_unspecified()) return "the unspecified address";
    if (v6.is_loopback()) return "a loopback address";
    if (v6.is_link_local()) return "a link-local address";
    if (v6.is_site_local()) return "a site-local address";
    if (v6.is_multicast()) return "a multicast address";
    const auto b = v6.to_bytes();
    if ((b[0] & 0xfe) == 0xfc) return "a private (unique local) address";
    if (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b) return "a NAT64 address";
    return std::nullopt;
  }
  const auto v4 = address.to_v4().to_uint();
  auto in = [&](std::uint32_t net_address, int bits) {
    const std::uint32_t mask = bits == 0 ? 0 : ~std::uint32_t{0} << (32 - bits);
    return (v4 & mask) == (net_address & mask);
  };
  if (in(0x00000000, 8)) return "the unspecified address, or this network";
  if (in(0x7f000000, 8)) return "a loopback address";
  if (in(0x0a000000, 8) || in(0xac100000, 12) || in(0xc0a80000, 16)) return "a private address";
  if (in(0x64400000, 10)) return "a shared (carrier-grade NAT) address";
  if (in(0xa9fe0000, 16)) return "a link-local address (cloud metadata lives here)";
  if (in(0xc0000000, 24)) return "an IETF protocol address";
  if (in(0xc6120000, 15)) return "a benchmarking address";
  if (in(0xe0000000, 4)) return "a multicast address";
  if (in(0xf0000000, 4)) return "a reserved or broadcast address";
  return std::nullopt;
}

std::optional<std::string> callback_policy::refuse(const callback_url& url) const {
  if (allow.empty()) return "this server takes no callbacks (--callback-allow is not set)";
  if (std::none_of(allow.begin(), allow.end(), [&](const std::string& prefix) { return url.url.starts_with(prefix); })) {
    return "callback_url is not under a prefix this server allows (--callback-allow)";
  }
  sys::error_code ec;
  const auto literal = net::ip::make_address(url.host, ec);
  if (!ec && !allow_private) {
    if (const auto why = forbidden_address(literal)) return "callback_url points at " + std::string(*why);
  }
  return std::nullopt;
}

webhook_secrets webhook_secrets::parse(std::string_view text) {
  webhook_secrets s;
  std::istringstream in{std::string(text)};
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    const auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#') continue;
    std::string_view value(line);
    value.remove_prefix(start);
    if (!value.starts_with("whsec_")) throw std::runtime_error("line " + std::to_string(n) + " is not whsec_<base64>");
    value.remove_prefix(6);
    std::string key(value.size(), '\0');
    std::size_t length = 0;
    if (sodium_base642bin(reinterpret_cast<unsigned char*>(key.data()), key.size(), value.data(), value.size(), nullptr,
                          &length, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        length < 24 || length > 64) {
      throw std::runtime_error("line " + std::to_string(n) + ": the secret must be base64 of 24 to 64 bytes");
    }
    key.resize(length);
    s.keys_.push_back(std::move(key));
  }
  if (s.keys_.empty()) throw std::runtime_error("no secret in it");
  return s;
}

webhook_secrets webhook_secrets::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str());
}

std::string webhook_secrets::sign(std::string_view id, std::int64_t timestamp, std::string_view body) const {
  const auto stamp = std::to_string(timestamp);
  std::string out;
  for (const auto& key : keys_) {
    crypto_auth_hmacsha256_state state;
    crypto_auth_hmacsha256_init(&state, reinterpret_cast<const unsigned char*>(key.data()), key.size());
    auto add = [&](std::string_view part) {
      crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(part.data()), part.size());
    };
    add(id);
    add(".");
    add(stamp);
    add(".");
    add(body);
    std::array<unsigned char, crypto_auth_hmacsha256_BYTES> mac{};
    crypto_auth_hmacsha256_final(&state, mac.data());
    if (!out.empty()) out += ' ';
    out += "v1," + base64(mac.data(), mac.size());
  }
  return out;
}

struct callback_sender::state {
  bool stopped = false;
  std::set<net::steady_timer*> waiting;
  std::array<std::uint64_t, outcome_names.size()> outcomes{};
  std::uint64_t attempts = 0;
  std::mt19937_64 random{std::random_device{}()};
};

callback_sender::callback_sender(net::any_io_executor io, settings s, logger& log)
    : io_(std::move(io)), settings_(std::move(s)), log_(log), state_(std::make_shared<state>()) {
  if (!settings_.policy.allow.empty()) spawner_ = std::make_unique<net::thread_pool>(1);
}

callback_sender::~callback_sender() {
  if (spawner_) spawner_->join();  // a spawn in progress ends; none waits to start once the loop is gone
}

void callback_sender::deliver(callback_url url, std::string id, std::string body) {
  net::co_spawn(io_, run(std::move(url), std::move(id), std::move(body)), net::detached);
}

void callback_sender::stop() {
  state_->stopped = true;
  for (auto* timer : state_->waiting) timer->cancel();
}

namespace {

attempt_result failed(std::string detail) { return {std::nullopt, std::nullopt, std::move(detail)}; }

std::string system_error(std::string_view what, int error) { return std::string(what) + ": " + std::strerror(error); }

// Starts crunch-callback with `args`, `request` as its standard input and `output` as its standard
// output; its pid, or the reason it did not start.
std::variant<pid_t, std::string> spawn_helper(const std::vector<std::string>& args, const std::string& request,
                                              int output) {
  // The request is written to memory now, so that neither side ever waits on the other to read it.
  descriptor input(::memfd_create("crunch-callback-request", MFD_CLOEXEC));
  if (input.fd < 0) return system_error("memfd_create", errno);
  for (std::size_t written = 0; written < request.size();) {
    const auto n = ::write(input.fd, request.data() + written, request.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return system_error("writing the request", errno);
    written += static_cast<std::size_t>(n);
  }
  if (::lseek(input.fd, 0, SEEK_SET) != 0) return system_error("lseek", errno);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, input.fd, 0);
  posix_spawn_file_actions_adddup2(&actions, output, 1);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  // Signals as a new program expects them: none blocked, none ignored (crunchd ignores SIGPIPE).
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigset_t all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &all);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  const int error = ::posix_spawn(&pid, args.front().c_str(), &actions, &attributes, argv.data(), environ);
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) return system_error("cannot run " + args.front(), error);
  return pid;
}

// spawn_helper, as a coroutine for the spawner's thread.
net::awaitable<std::variant<pid_t, std::string>> spawn_helper_there(std::vector<std::string> args, std::string request,
                                                                    int output) {
  co_return spawn_helper(args, request, output);
}

// Waits, without blocking the loop, until `pid` has exited, and reaps it; its wait status.
net::awaitable<int> reap(pid_t pid) {
  auto executor = co_await net::this_coro::executor;
  int status = 0;
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd >= 0) {
    net::posix::stream_descriptor exited(executor, pidfd);  // readable once the process has ended
    co_await exited.async_wait(net::posix::stream_descriptor::wait_read, use_tuple);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    co_return status;
  }
  // No pidfds (kernels before 5.3, some container profiles): asked every 2 ms.
  for (net::steady_timer tick(executor);;) {
    const auto r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) co_return status;
    tick.expires_after(std::chrono::milliseconds(2));
    co_await tick.async_wait(use_tuple);
  }
}

// Reads what crunch-callback says, up to its end or the attempt's time.
net::awaitable<std::optional<std::string>> read_said(net::posix::stream_descriptor& output,
                                                     std::chrono::milliseconds timeout) {
  auto executor = co_await net::this_coro::executor;
  net::steady_timer limit(executor, timeout);
  std::string said;
  auto read_all = [&]() -> net::awaitable<bool> {
    std::array<char, 1024> chunk{};
    for (;;) {
      auto [ec, n] = co_await output.async_read_some(net::buffer(chunk), use_tuple);
      said.append(chunk.data(), n);
      if (ec) co_return ec == net::error::eof;
      if (said.size() > max_helper_output_bytes) co_return false;
    }
  };
  const auto raced = co_await (read_all() || limit.async_wait(use_tuple));
  if (raced.index() == 1) co_return std::nullopt;
  if (!std::get<0>(raced)) said.clear();
  co_return said;
}

// What crunch-callback's line says of the attempt.
attempt_result judge(const std::string& said) {
  const auto line = nlohmann::json::parse(said, nullptr, false);
  if (!line.is_object()) return failed("crunch-callback said nothing readable");
  if (line.contains("failed") && line["failed"].is_string()) return failed(line["failed"].get<std::string>());
  if (!line.contains("status") || !line["status"].is_number_unsigned()) return failed("crunch-callback said no status");
  const auto status = line["status"].get<unsigned>();
  const auto says = "answered " + std::to_string(status);
  if (status >= 200 && status < 300) return {outcome::delivered, std::nullopt, says};
  if (status == 410) return {outcome::gone, std::nullopt, says + ": the receiver wants no more"};
  if (status >= 300 && status < 400) return {outcome::refused, std::nullopt, says + ": redirects are not followed"};
  std::optional<std::chrono::seconds> retry_after;
  if (line.contains("retry_after") && line["retry_after"].is_string()) {
    const auto header = line["retry_after"].get<std::string>();
    if (!header.empty() && header.size() <= 6 &&
        std::all_of(header.begin(), header.end(), [](unsigned char c) { return std::isdigit(c); })) {
      retry_after = std::chrono::seconds(std::stol(header));
    }
  }
  return {std::nullopt, retry_after, says};
}

// One attempt: resolve, check every address, and have crunch-callback connect to a checked one,
// send the request and read the answer, within `timeout`.
net::awaitable<attempt_result> attempt(const callback_url& url, const callback_sender::settings& settings,
                                       const std::string& request, net::thread_pool& spawner) {
  auto executor = co_await net::this_coro::executor;
  tcp::resolver resolver(executor);
  net::steady_timer limit(executor, settings.attempt_timeout);
  const auto started = steady::now();
  auto raced = co_await (resolver.async_resolve(url.host, url.port, use_tuple) || limit.async_wait(use_tuple));
  if (raced.index() == 1) co_return failed("resolving the host timed out");
  auto [ec, results] = std::get<0>(raced);
  if (ec) co_return failed("resolving the host failed: " + ec.message());
  if (results.empty()) co_return failed("the host has no address");
  std::vector<std::string> args{settings.helper};
  if (url.tls) {
    args.insert(args.end(), {"--tls", url.host});
    if (!settings.ca_file.empty()) args.insert(args.end(), {"--ca-file", settings.ca_file});
  }
  for (const auto& r : results) {
    // Every address the name has is checked: a name with one public and one private address
    // could be answered either way on the next lookup.
    const auto address = r.endpoint().address();
    if (!settings.policy.allow_private) {
      if (const auto why = forbidden_address(address)) {
        co_return attempt_result{outcome::refused, std::nullopt,
                                 url.host + " resolves to " + address.to_string() + ", " + std::string(*why)};
      }
    }
    // To the addresses just checked: crunch-callback never resolves a name.
    const auto text = address.to_string();
    args.push_back((address.is_v6() ? "[" + text + "]" : text) + ":" + std::to_string(r.endpoint().port()));
  }

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) co_return failed(system_error("pipe2", errno));
  descriptor output_read(pipe_fds[0]);
  descriptor output_write(pipe_fds[1]);
  // posix_spawn stops its calling thread until the new process has started its program (0.2 ms
  // measured): on a thread of its own, not on the loop's.
  const auto spawned =
      co_await net::co_spawn(spawner, spawn_helper_there(args, request, output_write.fd), net::use_awaitable);
  if (const auto* why = std::get_if<std::string>(&spawned)) co_return failed(*why);
  const auto pid = std::get<pid_t>(spawned);
  output_write.reset();  // the helper's end: its exit is the end of what it says
  net::posix::stream_descriptor output(executor, output_read.release());
  const auto left = std::max<std::chrono::milliseconds>(
      std::chrono::milliseconds(1),
      settings.attempt_timeout - std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started));
  const auto said = co_await read_said(output, left);
  if (!said || said->empty()) ::kill(pid, SIGKILL);  // its time is up, or it spoke out of turn
  const int status = co_await reap(pid);
  if (!said) co_return failed("no answer within " + std::to_string(settings.attempt_timeout.count()) + " ms");
  if (said->empty()) {
    co_return failed(WIFSIGNALED(status) ? "crunch-callback died of signal " + std::to_string(WTERMSIG(status))
                                         : "crunch-callback said nothing");
  }
  co_return judge(*said);
}

// The request as it goes on the wire, but for the webhook-timestamp and webhook-signature fields
// each attempt adds.
std::string request_head(const callback_url& url, std::string_view id, std::size_t body_size) {
  const bool default_port = url.port == (url.tls ? "443" : "80");
  const auto host = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  std::string head = "POST " + url.target + " HTTP/1.1\r\n";
  head += "Host: " + (default_port ? host : host + ":" + url.port) + "\r\n";
  head += std::string("User-Agent: crunch/") + version() + "\r\n";
  head += "Content-Type: application/json\r\n";
  head += "Content-Length: " + std::to_string(body_size) + "\r\n";
  head += "Connection: close\r\n";
  head += "webhook-id: " + std::string(id) + "\r\n";
  return head;
}

}  // namespace

net::awaitable<void> callback_sender::run(callback_url url, std::string id, std::string body) {
  if (!spawner_) co_return;  // no allowed prefix: nothing is ever sent
  auto st = state_;  // outlives the sender, should the loop end first
  const auto secrets = secrets_;
  const auto started = steady::now();
  auto delay = settings_.first_delay;
  const auto head = request_head(url, id, body.size());
  for (int n = 1;; ++n) {
    const auto timestamp =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    auto request = head + "webhook-timestamp: " + std::to_string(timestamp) + "\r\n";
    if (secrets) request += "webhook-signature: " + secrets->sign(id, timestamp, body) + "\r\n";
    request += "\r\n" + body;
    ++st->attempts;
    attempt_result result;
    result = co_await attempt(url, settings_, request, *spawner_);
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        delay * std::uniform_real_distribution<double>(0.5, 1.5)(st->random));
    if (result.retry_after) {
      wait = std::min<std::chrono::milliseconds>(*result.retry_after, settings_.max_delay);
    }
    if (!result.final && (st->stopped || steady::now() + wait - started > settings_.retry_for)) {
      result.final = outcome::gave_up;
    }
    if (result.final) {
      ++st->outcomes[static_cast<std::size_t>(*result.final)];
      if (!st->stopped || *result.final != outcome::gave_up) {
        log_.write(*result.final == outcome::delivered ? log_level::info : log_level::warn, "callback",
                   {{"job", id},
                    {"host", url.host},
                    {"outcome", outcome_names[static_cast<std::size_t>(*result.final)]},
                    {"attempts", n},
                    {"detail", result.detail}});
      }
      co_return;
    }
    net::steady_timer timer(co_await net::this_coro::executor, wait);
    st->waiting.insert(&timer);
    co_await timer.async_wait(use_tuple);
    st->waiting.erase(&timer);
    delay = std::min(delay * 2, settings_.max_delay);
  }
}

void callback_sender::write_metrics(std::ostream& out) const {
  out << "# HELP crunch_callbacks_total Callbacks ended, by outcome: delivered (a 2xx), refused (an address or a "
         "redirect crunch will not follow), gone (the receiver answered 410), gave_up (retries ran out).\n"
         "# TYPE crunch_callbacks_total counter\n";
  for (std::size_t i = 0; i < outcome_names.size(); ++i) {
    out << "crunch_callbacks_total{outcome=\"" << outcome_names[i] << "\"} " << state_->outcomes[i] << "\n";
  }
  out << "# HELP crunch_callback_attempts_total Callback requests attempted, retries included.\n"
         "# TYPE crunch_callback_attempts_total counter\n"
         "crunch_callback_attempts_total "
      << state_->attempts << "\n";
}

}  // namespace crunch
