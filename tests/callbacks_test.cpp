// Signed callbacks: where they may go, how they are signed, retried and refused.
#include "server/callbacks.hpp"
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace crunch::testing {
namespace {

using namespace std::chrono_literals;

TEST(callbacks, urls_are_absolute_http_without_user_info_or_fragment) {
  auto u = std::get<callback_url>(parse_callback_url("http://Hooks.Example.com:8080/a/b?c=d"));
  EXPECT_EQ(u.host, "hooks.example.com");
  EXPECT_EQ(u.port, "8080");
  EXPECT_EQ(u.target, "/a/b?c=d");
  EXPECT_FALSE(u.tls);
  u = std::get<callback_url>(parse_callback_url("https://[2001:db8::1]"));
  EXPECT_EQ(u.host, "2001:db8::1");
  EXPECT_EQ(u.port, "443");
  EXPECT_EQ(u.target, "/");
  for (const auto* bad : {"ftp://x/", "//x/", "http://user:pw@x/", "http://x/#f", "http:///", "http://x:0/",
                          "http://x:65536/", "http://[::1/", "http://x y/", "http://ex_ample.com/"}) {
    EXPECT_TRUE(std::holds_alternative<std::string>(parse_callback_url(bad))) << bad;
  }
}

TEST(callbacks, loopback_private_link_local_and_unspecified_addresses_are_forbidden) {
  for (const auto* text : {"127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "0.0.0.0", "172.16.5.4", "192.168.1.1",
                           "100.64.0.1", "::ffff:127.0.0.1", "::ffff:10.1.2.3", "fc00::1", "fe80::1", "::", "224.0.0.1",
                           "255.255.255.255"}) {
    EXPECT_TRUE(forbidden_address(net::ip::make_address(text))) << text;
  }
  for (const auto* text : {"93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"}) {
    EXPECT_FALSE(forbidden_address(net::ip::make_address(text))) << text;
  }
}

TEST(callbacks, signatures_are_standard_webhooks_hmac_sha256_by_every_secret) {
  const auto secrets = webhook_secrets::parse(
      "# current first\nwhsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n  whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA  \n");
  ASSERT_EQ(secrets.size(), 2u);
  // The example of the Standard Webhooks specification (and of its reference libraries' tests).
  const auto signature = secrets.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, R"({"test": 2432232314})");
  EXPECT_EQ(signature.substr(0, signature.find(' ')), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  EXPECT_EQ(signature.find("v1,", 1), signature.find(' ') + 1);
  EXPECT_THROW(webhook_secrets::parse("whsec_tooshort\n"), std::runtime_error);
  EXPECT_THROW(webhook_secrets::parse("secret\n"), std::runtime_error);
  EXPECT_THROW(webhook_secrets::parse("# nothing\n"), std::runtime_error);
}

// A receiver on loopback that answers each request with the next of `statuses` (200 after them),
// and keeps what it was sent. Its thread is joined by the destructor.
class receiver {
 public:
  explicit receiver(std::vector<std::string> answers) : answers_(std::move(answers)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t n = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &n);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~receiver() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::uint16_t port() const { return port_; }
  std::vector<std::string> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void serve() {
    for (std::size_t i = 0;; ++i) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string in;
      char chunk[4096];
      for (;;) {
        const auto head_end = in.find("\r\n\r\n");
        if (head_end != std::string::npos) {
          const auto at = in.find("Content-Length: ");
          const auto length = at == std::string::npos ? 0 : std::stoul(in.substr(at + 16));
          if (in.size() >= head_end + 4 + length) break;
        }
        const auto got = ::recv(c, chunk, sizeof chunk, 0);
        if (got <= 0) break;
        in.append(chunk, static_cast<std::size_t>(got));
      }
      {
        std::lock_guard lock(mutex_);
        requests_.push_back(in);
      }
      const std::string answer = i < answers_.size() ? answers_[i] : "200 OK";
      const std::string out = "HTTP/1.1 " + answer + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      (void)::send(c, out.data(), out.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }

  std::vector<std::string> answers_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::mutex mutex_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

const std::string secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const std::string respond_async = "Prefer: respond-async\r\n";

config callback_config(const temp_file& secrets, std::string allow, bool allow_private) {
  auto cfg = test_config(1);
  cfg.callback_allow = {std::move(allow)};
  cfg.callback_allow_private = allow_private;
  cfg.webhook_secret_file = secrets.path();
  cfg.callback_helper = CRUNCH_CALLBACK_PATH;  // the test binary has none beside it
  return cfg;
}

std::string header_of(const std::string& request, const std::string& name) {
  const auto at = request.find("\r\n" + name + ": ");
  if (at == std::string::npos) return {};
  const auto start = at + 4 + name.size();
  return request.substr(start, request.find("\r\n", start) - start);
}

TEST(callbacks, urls_at_loopback_private_link_local_or_unspecified_addresses_are_refused) {
  temp_file secrets("crunch-whsec-", secret + "\n");
  running_server s(callback_config(secrets, "http://", false));
  http_connection c(s.port());
  for (const auto* url : {"http://127.0.0.1/hook", "http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data",
                          "http://[::1]/hook", "http://0.0.0.0/hook", "http://[::ffff:127.0.0.1]:8080/"}) {
    const auto r = c.get(std::string("/work/1?callback_url=") + url, respond_async);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400u) << url;
    EXPECT_EQ(error_code_of(*r), "invalid_callback_url") << url;
    EXPECT_NE(r->body.find("address"), std::string::npos) << r->body;
  }
  // Outside the allowed prefixes, or without Prefer: respond-async: refused too.
  temp_file more("crunch-whsec-", secret + "\n");
  running_server narrow(callback_config(more, "http://hooks.example.com/", false));
  http_connection n(narrow.port());
  EXPECT_EQ(n.get("/work/1?callback_url=http://hooks.example.com.evil.test/", respond_async)->status, 400u);
  EXPECT_EQ(n.get("/work/1?callback_url=http://hooks.example.com/x")->status, 400u);
}

TEST(callbacks, a_name_that_resolves_to_loopback_is_refused_when_it_is_called) {
  temp_file secrets("crunch-whsec-", secret + "\n");
  receiver hook({});
  running_server s(callback_config(secrets, "http://localhost:", false));
  http_connection c(s.port());
  const auto r = c.get("/work/1?callback_url=http://localhost:" + std::to_string(hook.port()) + "/hook", respond_async);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 202u) << r->body;  // a name: judged by its addresses when it is called
  EXPECT_TRUE(wait_for_metric(c, "\ncrunch_callbacks_total{outcome=\"refused\"} 1\n"));
  EXPECT_TRUE(hook.requests().empty());
}

TEST(callbacks, a_redirect_is_never_followed) {
  temp_file secrets("crunch-whsec-", secret + "\n");
  receiver hook({"302 Found\r\nLocation: http://169.254.169.254/latest/meta-data"});
  running_server s(callback_config(secrets, "http://127.0.0.1:", true));
  http_connection c(s.port());
  const auto r = c.get("/work/1?callback_url=http://127.0.0.1:" + std::to_string(hook.port()) + "/hook", respond_async);
  ASSERT_EQ(r->status, 202u) << r->body;
  EXPECT_TRUE(wait_for_metric(c, "\ncrunch_callbacks_total{outcome=\"refused\"} 1\n"));
  EXPECT_EQ(hook.requests().size(), 1u);
  EXPECT_EQ(sample(c.get("/metrics")->body, "crunch_callback_attempts_total"), 1);
}

TEST(callbacks, a_receiver_that_fails_twice_gets_the_signed_status_on_the_third_try) {
  temp_file secrets("crunch-whsec-", secret + "\n");
  receiver hook({"500 Internal Server Error", "503 Service Unavailable"});
  running_server s(callback_config(secrets, "http://127.0.0.1:", true));
  http_connection c(s.port());
  const auto r = c.get("/work/1?callback_url=http://127.0.0.1:" + std::to_string(hook.port()) + "/hook?x=1", respond_async);
  ASSERT_EQ(r->status, 202u) << r->body;
  const auto id = json_of(*r).at("id").get<std::string>();
  ASSERT_TRUE(wait_for_metric(c, "\ncrunch_callbacks_total{outcome=\"delivered\"} 1\n", 200000));
  const auto requests = hook.requests();
  ASSERT_EQ(requests.size(), 3u);
  const auto& last = requests.back();
  EXPECT_EQ(last.substr(0, last.find("\r\n")), "POST /hook?x=1 HTTP/1.1");
  EXPECT_EQ(header_of(last, "webhook-id"), id);  // the same message each time: receivers deduplicate by it
  EXPECT_EQ(header_of(requests.front(), "webhook-id"), id);
  const auto timestamp = header_of(last, "webhook-timestamp");
  const auto body = last.substr(last.find("\r\n\r\n") + 4);
  const auto message = nlohmann::json::parse(body);
  EXPECT_EQ(message.at("type"), "job.succeeded");
  EXPECT_EQ(message.at("data").at("id"), id);
  EXPECT_EQ(message.at("data").at("status"), "succeeded");
  // Verified here as a receiver would, with the secret it shares.
  const auto expected = webhook_secrets::parse(secret).sign(id, std::stoll(timestamp), body);
  EXPECT_EQ(header_of(last, "webhook-signature"), expected);
}

TEST(callbacks, a_receiver_that_answers_410_is_not_called_again) {
  temp_file secrets("crunch-whsec-", secret + "\n");
  receiver hook({"410 Gone"});
  running_server s(callback_config(secrets, "http://127.0.0.1:", true));
  http_connection c(s.port());
  ASSERT_EQ(c.get("/work/1?callback_url=http://127.0.0.1:" + std::to_string(hook.port()) + "/", respond_async)->status,
            202u);
  EXPECT_TRUE(wait_for_metric(c, "\ncrunch_callbacks_total{outcome=\"gone\"} 1\n"));
  EXPECT_EQ(hook.requests().size(), 1u);
}

TEST(callbacks, the_drain_does_not_wait_for_a_callback_being_retried) {
  temp_file secrets("crunch-whsec-", secret + "\n");
  receiver hook(std::vector<std::string>(100, "500 Internal Server Error"));
  running_server s(callback_config(secrets, "http://127.0.0.1:", true));
  {
    http_connection c(s.port());
    ASSERT_EQ(c.get("/work/1?callback_url=http://127.0.0.1:" + std::to_string(hook.port()) + "/", respond_async)->status,
              202u);
    ASSERT_TRUE(wait_for_metric(c, "\ncrunch_callback_attempts_total 1\n"));
  }
  const auto start = std::chrono::steady_clock::now();
  s.stop();  // its next attempt is due in about a second, and it would retry for an hour
  ASSERT_TRUE(s.wait_stopped(10s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 450ms);  // under the least backoff (0.5 s)
}

TEST(callbacks, an_https_url_is_never_sent_in_clear_and_an_attempt_that_hangs_is_killed_at_its_timeout) {
  // A receiver that speaks plain HTTP: it gets a TLS ClientHello, never the message, and does not
  // answer it; crunch-callback waits for a ServerHello until crunchd kills it.
  receiver hook({});
  net::io_context io;
  std::FILE* sink = std::tmpfile();
  logger log(log_format::json, log_level::warn, sink);
  callback_sender::settings settings;
  settings.policy = {{"https://127.0.0.1:"}, true};
  settings.retry_for = 0ms;
  settings.attempt_timeout = 300ms;
  settings.helper = CRUNCH_CALLBACK_PATH;
  callback_sender sender(io.get_executor(), settings, log);
  auto url = std::get<callback_url>(parse_callback_url("https://127.0.0.1:" + std::to_string(hook.port()) + "/hook"));
  const auto start = std::chrono::steady_clock::now();
  sender.deliver(url, "job-1", R"({"type":"job.succeeded"})");
  io.run();  // the delivery's coroutine has ended: the helper was killed and reaped
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  std::ostringstream metrics;
  sender.write_metrics(metrics);
  EXPECT_NE(metrics.str().find("\ncrunch_callback_attempts_total 1\n"), std::string::npos) << metrics.str();
  EXPECT_NE(metrics.str().find("crunch_callbacks_total{outcome=\"gave_up\"} 1\n"), std::string::npos) << metrics.str();
  log.close();
  std::rewind(sink);
  std::string logged(4096, '\0');
  logged.resize(std::fread(logged.data(), 1, logged.size(), sink));
  EXPECT_NE(logged.find("no answer within 300 ms"), std::string::npos) << logged;
  std::fclose(sink);
  for (const auto& seen : hook.requests()) {
    EXPECT_EQ(seen.find("job.succeeded"), std::string::npos);
    EXPECT_EQ(seen.find("webhook-id"), std::string::npos);
    ASSERT_FALSE(seen.empty());
    EXPECT_EQ(seen[0], '\x16');  // a TLS handshake record
  }
}

TEST(callbacks, without_its_helper_program_a_server_with_callbacks_does_not_start) {
  temp_file secrets("crunch-whsec-", secret + "\n");
  auto cfg = callback_config(secrets, "http://127.0.0.1:", true);
  cfg.callback_helper = "/nonexistent/crunch-callback";
  try {
    (void)resolve_defaults(cfg);
    FAIL() << "started without crunch-callback";
  } catch (const config_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/crunch-callback"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace crunch::testing
