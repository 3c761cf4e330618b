// A Beast translation unit (the callback client): heavy to compile, kept apart from the rest.
#include "server/callbacks.hpp"

#include <crunch/config.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <nlohmann/json.hpp>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>

namespace crunch {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using namespace net::experimental::awaitable_operators;  // NOLINT: for `||` in this file only
using tcp = net::ip::tcp;
using steady = std::chrono::steady_clock;

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t max_url_bytes = 2048;
constexpr std::size_t max_answer_bytes = 64 * 1024;

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

struct callback_sender::tls {
  net::ssl::context context{net::ssl::context::tls_client};
};

struct callback_sender::state {
  bool stopped = false;
  std::set<net::steady_timer*> waiting;
  std::array<std::uint64_t, outcome_names.size()> outcomes{};
  std::uint64_t attempts = 0;
  std::mt19937_64 random{std::random_device{}()};
};

callback_sender::callback_sender(net::any_io_executor io, settings s, logger& log)
    : io_(std::move(io)), settings_(std::move(s)), log_(log), state_(std::make_shared<state>()) {
  // The TLS client only where an allowed prefix can name an https:// URL: made now, not at the
  // first delivery, because loading the authorities takes the loop tens of milliseconds; and not
  // at all otherwise, because it keeps 6 MB of libcrypto and the authorities resident.
  const bool https = std::any_of(settings_.policy.allow.begin(), settings_.policy.allow.end(), [](const std::string& p) {
    return std::string_view("https://").starts_with(p) || p.starts_with("https://");
  });
  if (!https) return;
  tls_ = std::make_unique<tls>();
  auto& c = tls_->context;
  c.set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 | net::ssl::context::no_sslv3 |
                net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1);
  c.set_verify_mode(net::ssl::verify_peer);
  // The system's authorities (SSL_CERT_FILE, in the container image), and an operator's own.
  sys::error_code ec;
  c.set_default_verify_paths(ec);
  if (!settings_.ca_file.empty()) {
    c.load_verify_file(settings_.ca_file, ec);
    if (ec) throw std::runtime_error("cannot load " + settings_.ca_file + ": " + ec.message());
  }
}

callback_sender::~callback_sender() = default;

void callback_sender::deliver(callback_url url, std::string id, std::string body) {
  net::co_spawn(io_, run(std::move(url), std::move(id), std::move(body)), net::detached);
}

void callback_sender::stop() {
  state_->stopped = true;
  for (auto* timer : state_->waiting) timer->cancel();
}

namespace {

// One attempt: resolve, check every address, connect to a checked one, POST, read the answer.
net::awaitable<attempt_result> attempt(const callback_url& url, const callback_policy& policy,
                                       const http::request<http::string_body>& request,
                                       std::chrono::milliseconds timeout, net::ssl::context* tls_context) {
  auto executor = co_await net::this_coro::executor;
  tcp::resolver resolver(executor);
  net::steady_timer limit(executor, timeout);
  auto raced = co_await (resolver.async_resolve(url.host, url.port, use_tuple) || limit.async_wait(use_tuple));
  if (raced.index() == 1) co_return attempt_result{std::nullopt, std::nullopt, "resolving the host timed out"};
  auto [ec, results] = std::get<0>(raced);
  if (ec) co_return attempt_result{std::nullopt, std::nullopt, "resolving the host failed: " + ec.message()};
  std::vector<tcp::endpoint> endpoints;
  for (const auto& r : results) {
    // Every address the name has is checked: a name with one public and one private address
    // could be answered either way on the next lookup.
    if (!policy.allow_private) {
      if (const auto why = forbidden_address(r.endpoint().address())) {
        co_return attempt_result{outcome::refused, std::nullopt,
                                 url.host + " resolves to " + r.endpoint().address().to_string() + ", " + std::string(*why)};
      }
    }
    endpoints.push_back(r.endpoint());
  }
  if (endpoints.empty()) co_return attempt_result{std::nullopt, std::nullopt, "the host has no address"};
  beast::tcp_stream plain(executor);
  plain.expires_after(timeout);
  // To the addresses just checked: never resolved again.
  auto [connect_ec, connected] = co_await plain.async_connect(endpoints, use_tuple);
  if (connect_ec) co_return attempt_result{std::nullopt, std::nullopt, "connect: " + connect_ec.message()};
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(max_answer_bytes);
  parser.header_limit(16 * 1024);
  sys::error_code exchange_ec;
  std::string step;
  if (tls_context == nullptr) {
    step = "send";
    std::tie(exchange_ec, std::ignore) = co_await http::async_write(plain, request, use_tuple);
    if (!exchange_ec) {
      step = "answer";
      std::tie(exchange_ec, std::ignore) = co_await http::async_read(plain, buffer, parser, use_tuple);
    }
    sys::error_code ignored;
    plain.socket().shutdown(tcp::socket::shutdown_both, ignored);
  } else {
    beast::ssl_stream<beast::tcp_stream> stream(std::move(plain), *tls_context);
    // The certificate must name the host the URL names (an address, or a DNS name), and the
    // server is told which one it is (SNI) unless it is an address.
    stream.set_verify_callback(net::ssl::host_name_verification(url.host));
    sys::error_code literal_ec;
    (void)net::ip::make_address(url.host, literal_ec);
    // SSL_set_tlsext_host_name, without its macro's C cast.
    if (literal_ec && SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                               const_cast<char*>(url.host.c_str())) != 1) {
      co_return attempt_result{std::nullopt, std::nullopt, "TLS: could not set the server name"};
    }
    step = "TLS handshake";
    std::tie(exchange_ec) = co_await stream.async_handshake(net::ssl::stream_base::client, use_tuple);
    if (!exchange_ec) {
      step = "send";
      std::tie(exchange_ec, std::ignore) = co_await http::async_write(stream, request, use_tuple);
    }
    if (!exchange_ec) {
      step = "answer";
      std::tie(exchange_ec, std::ignore) = co_await http::async_read(stream, buffer, parser, use_tuple);
    }
    if (!exchange_ec) {
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(1));
      co_await stream.async_shutdown(use_tuple);  // a receiver that closes without it is no failure
    }
  }
  if (exchange_ec) co_return attempt_result{std::nullopt, std::nullopt, step + ": " + exchange_ec.message()};
  const auto& answer = parser.get();
  const auto status = answer.result_int();
  const auto said = "answered " + std::to_string(status);
  if (status >= 200 && status < 300) co_return attempt_result{outcome::delivered, std::nullopt, said};
  if (status == 410) co_return attempt_result{outcome::gone, std::nullopt, said + ": the receiver wants no more"};
  if (status >= 300 && status < 400) {
    co_return attempt_result{outcome::refused, std::nullopt, said + ": redirects are not followed"};
  }
  std::optional<std::chrono::seconds> retry_after;
  const auto header = answer[http::field::retry_after];
  if (!header.empty() && header.size() <= 6 &&
      std::all_of(header.begin(), header.end(), [](unsigned char c) { return std::isdigit(c); })) {
    retry_after = std::chrono::seconds(std::stol(std::string(header)));
  }
  co_return attempt_result{std::nullopt, retry_after, said};
}

}  // namespace

net::awaitable<void> callback_sender::run(callback_url url, std::string id, std::string body) {
  // The policy admits no https:// URL without the TLS client it made for them; never sent in clear.
  if (url.tls && !tls_) co_return;
  auto st = state_;  // outlives the sender, should the loop end first
  const auto secrets = secrets_;
  const auto started = steady::now();
  auto delay = settings_.first_delay;
  http::request<http::string_body> request{http::verb::post, url.target, 11};
  const bool default_port = url.port == (url.tls ? "443" : "80");
  const auto host = (url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host);
  request.set(http::field::host, default_port ? host : host + ":" + url.port);
  request.set(http::field::user_agent, std::string("crunch/") + version());
  request.set(http::field::content_type, "application/json");
  request.set("webhook-id", id);
  request.body() = std::move(body);
  request.prepare_payload();
  for (int n = 1;; ++n) {
    const auto timestamp =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    request.set("webhook-timestamp", std::to_string(timestamp));
    if (secrets) request.set("webhook-signature", secrets->sign(id, timestamp, request.body()));
    ++st->attempts;
    attempt_result result;
    result = co_await attempt(url, settings_.policy, request, settings_.attempt_timeout,
                              url.tls ? &tls_->context : nullptr);
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
