// crunch-callback: one attempt at delivering a callback, in a process of its own.
//
// crunchd has resolved the receiver's host, checked every address and signed the message; it
// runs this program with the addresses it checked and the whole request on standard input. This
// process holds no secret -- it sees a signature, never the key -- and it is the one that parses
// what the receiver sends back: its TLS handshake and certificate, and its HTTP answer. crunchd
// thereby neither maps OpenSSL nor parses a receiver's bytes, and it kills this process when the
// attempt's time is up, so nothing here has a timeout of its own.
//
//   crunch-callback [--tls HOST] [--ca-file FILE] ADDRESS:PORT...   < request
//
// --tls: speak TLS, send HOST as the server name (unless it is an address) and require a
// certificate for HOST that chains to the system's authorities or to FILE's. The addresses are
// tried in order, IPv6 ones in brackets. One JSON line on standard output says what happened:
// {"status":503,"retry_after":"7"} or {"failed":"connect: Connection refused"}.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

constexpr std::size_t max_request_bytes = 1024 * 1024;
constexpr std::size_t max_answer_body_bytes = 64 * 1024;
constexpr std::size_t max_answer_header_bytes = 16 * 1024;

struct arguments {
  std::string tls_host;  // empty: plain HTTP
  std::string ca_file;
  std::vector<tcp::endpoint> endpoints;
};

// The arguments, or the reason they are not arguments.
std::variant<arguments, std::string> parse(int argc, char** argv) {
  arguments a;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if ((arg == "--tls" || arg == "--ca-file") && i + 1 < argc) {
      (arg == "--tls" ? a.tls_host : a.ca_file) = argv[++i];
      continue;
    }
    const auto colon = arg.rfind(':');
    if (colon == std::string_view::npos) return "not ADDRESS:PORT: " + std::string(arg);
    auto address = arg.substr(0, colon);
    if (address.size() >= 2 && address.front() == '[' && address.back() == ']') address = address.substr(1, address.size() - 2);
    boost::system::error_code ec;
    const auto ip = net::ip::make_address(std::string(address), ec);
    const auto port = std::strtoul(std::string(arg.substr(colon + 1)).c_str(), nullptr, 10);
    if (ec || port == 0 || port > 65535) return "not ADDRESS:PORT: " + std::string(arg);
    a.endpoints.emplace_back(ip, static_cast<unsigned short>(port));
  }
  if (a.endpoints.empty()) return "no address to connect to";
  return a;
}

// Sends the request and reads the answer's status and Retry-After; the JSON line to print.
template <class Stream>
nlohmann::json exchange(Stream& stream, const std::string& request) {
  boost::system::error_code ec;
  net::write(stream, net::buffer(request), ec);
  if (ec) return {{"failed", "send: " + ec.message()}};
  boost::beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(max_answer_body_bytes);
  parser.header_limit(max_answer_header_bytes);
  http::read(stream, buffer, parser, ec);
  if (ec) return {{"failed", "answer: " + ec.message()}};
  const auto& answer = parser.get();
  nlohmann::json said = {{"status", answer.result_int()}};
  if (const auto retry_after = answer[http::field::retry_after]; !retry_after.empty()) {
    said["retry_after"] = std::string(retry_after.substr(0, 32));
  }
  return said;
}

nlohmann::json attempt(const arguments& a, const std::string& request) {
  net::io_context io;
  // The TLS context first: loading the authorities opens files, which the connection does not need.
  std::optional<net::ssl::context> tls;
  if (!a.tls_host.empty()) {
    tls.emplace(net::ssl::context::tls_client);
    tls->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                     net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1);
    tls->set_verify_mode(net::ssl::verify_peer);
    boost::system::error_code ec;
    tls->set_default_verify_paths(ec);  // the system's authorities, or SSL_CERT_FILE's
    if (!a.ca_file.empty()) {
      tls->load_verify_file(a.ca_file, ec);
      if (ec) return {{"failed", "cannot load " + a.ca_file + ": " + ec.message()}};
    }
  }
  tcp::socket socket(io);
  boost::system::error_code ec;
  net::connect(socket, a.endpoints, ec);  // to the addresses crunchd checked, never resolved here
  if (ec) return {{"failed", "connect: " + ec.message()}};
  if (!tls) return exchange(socket, request);

  net::ssl::stream<tcp::socket&> stream(socket, *tls);
  // The certificate must name the host the URL names; the server is told which one it is (SNI)
  // unless that is an address.
  stream.set_verify_callback(net::ssl::host_name_verification(a.tls_host));
  (void)net::ip::make_address(a.tls_host, ec);
  // SSL_set_tlsext_host_name, without its macro's C cast.
  if (ec && SSL_ctrl(stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                     const_cast<char*>(a.tls_host.c_str())) != 1) {
    return {{"failed", "TLS: could not set the server name"}};
  }
  stream.handshake(net::ssl::stream_base::client, ec);
  if (ec) return {{"failed", "TLS handshake: " + ec.message()}};
  auto said = exchange(stream, request);
  // close_notify, once: a receiver that closes without its own is no failure, so none is awaited.
  if (!said.contains("failed")) (void)SSL_shutdown(stream.native_handle());
  return said;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a receiver that closes early is an error code, not a death
  const auto args = parse(argc, argv);
  nlohmann::json said;
  if (const auto* why = std::get_if<std::string>(&args)) {
    said = {{"failed", "crunch-callback: " + *why}};
  } else {
    std::string request;
    request.reserve(4096);
    std::vector<char> chunk(64 * 1024);
    while (request.size() <= max_request_bytes) {
      const auto got = std::fread(chunk.data(), 1, chunk.size(), stdin);
      request.append(chunk.data(), got);
      if (got < chunk.size()) break;
    }
    said = request.size() > max_request_bytes ? nlohmann::json{{"failed", "crunch-callback: the request is over 1 MiB"}}
                                               : attempt(std::get<arguments>(args), request);
  }
  std::cout << said.dump() << '\n' << std::flush;
  return 0;
}
