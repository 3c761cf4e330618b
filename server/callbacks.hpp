#pragma once
/// Signed callbacks: when an asynchronous job with a callback_url ends, its status document is
/// POSTed there as a Standard Webhooks 1.0 message (webhook-id, webhook-timestamp,
/// webhook-signature: v1,<base64 HMAC-SHA256>), retried with exponential backoff and jitter.
///
/// A callback is a request crunchd makes on a stranger's say-so, so it goes only where the
/// operator allowed: the URL must start with one of --callback-allow's prefixes; its host is
/// resolved once and the connection made to the address checked; loopback, private, link-local,
/// unspecified, multicast and broadcast addresses are refused unless --callback-allow-private;
/// and a redirect is never followed. Used on the I/O thread only.
///
/// The policy, the signature and the retries are crunchd's. Each attempt's connection, TLS
/// handshake and exchange run in a crunch-callback process (callback_helper.cpp), given the
/// addresses crunchd checked and the signed request: the process that parses a receiver's
/// certificate and answer holds no secret, and crunchd itself does not map OpenSSL.

#include <crunch/log.hpp>
#include "server/net.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace boost::asio {
class thread_pool;
}

namespace crunch {

/// A callback URL, taken apart.
struct callback_url {
  std::string url;     ///< as given
  bool tls = false;    ///< https
  std::string host;    ///< a name, an IPv4 address, or an IPv6 address without its brackets
  std::string port;    ///< "80", "443" or as given
  std::string target;  ///< path and query, at least "/"
};

/// Parses an absolute http:// or https:// URL without user info or fragment; the reason when it
/// is not one.
std::variant<callback_url, std::string> parse_callback_url(std::string_view text);

/// Why crunchd must not call `address` back (it is loopback, private, link-local, unspecified,
/// multicast or broadcast, IPv4-mapped or not), or nullopt when it may.
std::optional<std::string_view> forbidden_address(const net::ip::address& address);

/// Where callbacks may go.
struct callback_policy {
  std::vector<std::string> allow;  ///< URL prefixes (--callback-allow); empty: no callbacks at all
  bool allow_private = false;      ///< --callback-allow-private: loopback and private networks too

  /// Why `url` may not be called back, judged from the URL alone (its prefix, a literal address),
  /// or nullopt. A host name is judged again by the addresses it resolves to, at each delivery.
  std::optional<std::string> refuse(const callback_url& url) const;
};

/// The webhook secrets (--webhook-secret-file): one `whsec_<base64>` a line, the first current;
/// a message is signed with each, so a receiver may rotate.
class webhook_secrets {
 public:
  /// Reads the file; throws std::runtime_error naming the line when one is not a secret.
  static webhook_secrets load(const std::string& path);
  /// Parses the file's text.
  static webhook_secrets parse(std::string_view text);
  /// The webhook-signature header's value for this message: "v1,<base64> v1,<base64>...".
  std::string sign(std::string_view id, std::int64_t timestamp, std::string_view body) const;
  std::size_t size() const { return keys_.size(); }

 private:
  std::vector<std::string> keys_;  // decoded
};

/// Delivers callbacks, each in a coroutine of its own on the I/O thread.
class callback_sender {
 public:
  struct settings {
    callback_policy policy;
    std::chrono::milliseconds retry_for{3'600'000};    ///< retries stop this long after the first attempt
    std::chrono::milliseconds first_delay{1000};       ///< before the first retry; doubles each time
    std::chrono::milliseconds max_delay{300'000};      ///< between two attempts, at most
    std::chrono::milliseconds attempt_timeout{10'000};  ///< to connect, send and read one answer
    /// The crunch-callback program (config::callback_helper).
    std::string helper;
    /// Certificates of the authorities an https:// receiver's certificate may chain to, besides
    /// the system's (a PEM file; --callback-ca-file). Empty: the system's alone.
    std::string ca_file;
  };

  callback_sender(net::any_io_executor io, settings s, logger& log);
  ~callback_sender();

  /// Replaces the secrets (at start and on SIGHUP).
  void set_secrets(std::shared_ptr<const webhook_secrets> secrets) { secrets_ = std::move(secrets); }
  bool has_secrets() const { return secrets_ != nullptr; }
  const callback_policy& policy() const { return settings_.policy; }

  /// Sends `body` (JSON) to `url` as message `id` of type `type`, until it is taken or given up.
  void deliver(callback_url url, std::string id, std::string body);

  /// The drain: deliveries waiting to retry give up; those in flight end with their attempt.
  void stop();

  /// crunch_callbacks_total and crunch_callback_attempts_total.
  void write_metrics(std::ostream& out) const;

 private:
  struct state;
  net::awaitable<void> run(callback_url url, std::string id, std::string body);

  net::any_io_executor io_;
  settings settings_;
  logger& log_;
  std::unique_ptr<net::thread_pool> spawner_;  // starts crunch-callback; only when callbacks are allowed
  std::shared_ptr<const webhook_secrets> secrets_;
  std::shared_ptr<state> state_;
};

}  // namespace crunch
