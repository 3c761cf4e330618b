// The one translation unit of the server that includes Beast: it is heavy to compile.
#include "server/session.hpp"

#include "server/async_jobs.hpp"
#include "server/shared_jobs.hpp"

#include "server/decimal.hpp"
#include <crunch/wiping.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
// GCC 12 at -O2 with the sanitizers warns that Beast's boost::optional content length "may be used
// uninitialized" inside basic_parser (a false positive; not at -O3, not with clang): where it
// inlines varies with what else this file holds, so the headers are read with it off.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <algorithm>
#include <array>
#include <charconv>
#include <ctime>
#include <iterator>
#include <limits>
#include <optional>
#include <utility>
#include <variant>
#include <vector>

namespace crunch {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using clock = std::chrono::steady_clock;

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// Request bodies and the connection buffer they are read through wipe what they free: a body may
// hold a password (and a sensitive route's are wiped outright once read: forget_body()).
using request_body = http::basic_string_body<char, std::char_traits<char>, wiping_allocator<char>>;
using request_parser = http::request_parser<request_body>;
using request_buffer = beast::basic_flat_buffer<wiping_allocator<char>>;
// A file body (an image) holds no secret: a plain string, moved into its job.
using file_parser_type = http::request_parser<http::string_body>;
constexpr std::size_t read_chunk = 4096;
// A file body is read in pieces of up to this size: few system calls, and no single step holds
// the loop longer than a copy of 256 KiB (~30 µs).
constexpr std::size_t file_read_chunk = 256 * 1024;
constexpr auto linger_time = std::chrono::seconds(1);
constexpr std::size_t linger_bytes = 64 * 1024;
// After refusing a job for overload, the connection's next request is read only this much later:
// a client that retries at once, ignoring Retry-After, cannot turn the loop into a 503 machine
// that starves the workers and delays everyone else's requests. The 503 itself goes out at once.
constexpr auto overload_pause = std::chrono::milliseconds(100);
// A /v1/events reader that has not taken a snapshot within this long is dropped: what it has not
// read stays in a small socket buffer (stream_buffer_bytes), never in crunch's memory.
constexpr auto slow_reader_timeout = std::chrono::seconds(2);
constexpr int stream_buffer_bytes = 16 * 1024;

double ms(clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void append_ms(std::string& out, clock::duration d) {
  char digits[32];
  out.append(digits, std::to_chars(std::begin(digits), std::end(digits), ms(d), std::chars_format::fixed, 3).ptr);
}

// to_chars rather than printf: this runs for every response on the I/O thread.
void append_server_timing(std::string& out, const answer& a, clock::duration total) {
  if (a.timing) {
    out += "queue;dur=";
    append_ms(out, a.timing->queued);
    out += ", compute;dur=";
    append_ms(out, a.timing->computing);
    out += ", ";
  }
  out += "total;dur=";
  append_ms(out, total);
}

bool valid_request_id(std::string_view id) {
  return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == ':';
  });
}

std::string request_id_for(std::string_view sent, session_context& ctx) {
  if (valid_request_id(sent)) return std::string(sent);
  // prefix-000000000001: the count in 12 hex digits.
  char hex[16];
  const auto end = std::to_chars(std::begin(hex), std::end(hex), ++ctx.request_count, 16).ptr;
  const auto digits = static_cast<std::size_t>(end - hex);
  std::string id = ctx.request_id_prefix;
  id += '-';
  if (digits < 12) id.append(12 - digits, '0');
  id.append(hex, digits);
  return id;
}

/// The answer to a request that could not be read, or nullopt when the connection just ends
/// (the peer left, the read timed out — Beast has closed the socket then — or a drain cancelled it).
std::optional<reply> reply_for_read_error(const sys::error_code& ec) {
  std::optional<reply> r;
  if (ec == http::error::header_limit) {
    r = error_reply(431, "header_too_large", "request line and headers exceed the limit");
  } else if (ec == http::error::body_limit) {
    r = error_reply(413, "body_too_large", "request body exceeds the limit");
  } else if (ec == http::error::partial_message || ec == http::error::end_of_stream) {
    return std::nullopt;
  } else if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
    r = error_reply(400, "bad_request", "malformed HTTP request");
  }
  if (r) r->route = "invalid";
  return r;
}

std::string remote_of(beast::tcp_stream& stream) {
  sys::error_code ec;
  const auto endpoint = stream.socket().remote_endpoint(ec);
  if (ec) return "-";
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

std::string_view address_of(std::string_view remote) {
  const auto colon = remote.rfind(':');
  return colon == std::string_view::npos ? remote : remote.substr(0, colon);
}

/// The flow a job belongs to (flows.hpp), by --fair-key.
std::string flow_of(const config& cfg, const head_route& routed, const http::request_header<>& req,
                    std::string_view address) {
  switch (cfg.fair_key_) {
    case fair_key::remote: return std::string(address);
    case fair_key::key: return routed.client;
    case fair_key::header: {
      // Behind a proxy that does not set it, the proxy's address: one flow for its unnamed clients.
      const auto value = req[cfg.fair_header];
      return value.empty() ? std::string(address) : "h:" + std::string(value.substr(0, flow_table::max_key_bytes));
    }
    case fair_key::none: return {};
  }
  return {};
}

/// The target as the access log writes it: a callback_url's value is left out, since receivers
/// often put their token in the URL (a Slack-style webhook path, a ?token=).
std::string_view loggable_target(std::string_view target, std::string& scratch) {
  const auto at = target.find("callback_url=");
  if (at == std::string_view::npos) return target;
  const auto end = target.find('&', at);
  scratch.assign(target.substr(0, at + 13));
  scratch += "(redacted)";
  if (end != std::string_view::npos) scratch += target.substr(end);
  return scratch;
}

/// One access line: who asked what, what it got, and where the time went.
/// `client` is the name of its API key, when it had one: never the key.
void log_access(session_context& ctx, const std::string& remote, std::string_view request_id, std::string_view method,
                std::string_view target, const answer& a, std::size_t bytes, clock::duration took,
                std::string_view client = {}) {
  if (!ctx.log.enabled(log_level::info)) return;
  log_line line(ctx.log.format(), log_level::info, "access");
  line.field("request_id", request_id)
      .field("remote", remote);
  if (!client.empty()) line.field("client", client);
  std::string scratch;
  line.field("method", method)
      .field("target", loggable_target(target, scratch))
      .field("route", a.r.route)
      .field("status", std::uint64_t{a.r.status})
      .field("bytes", std::uint64_t{bytes})
      .millis("duration_ms", ms(took));
  if (a.timing) line.millis("queue_ms", ms(a.timing->queued)).millis("run_ms", ms(a.timing->computing));
  if (a.estimate && ctx.log.enabled(log_level::debug)) line.millis("estimate_ms", ms(*a.estimate));
  ctx.log.write(std::move(line));
}

/// Completes when the peer closes or resets the connection. Bytes that arrive meanwhile —
/// pipelined requests — are kept in `buffer` for the next read; once it is full, reading stops
/// (back-pressure) and this only waits to be cancelled.
net::awaitable<void> peer_closed(beast::tcp_stream& stream, request_buffer& buffer) {
  for (;;) {
    const std::size_t room = buffer.max_size() - buffer.size();
    if (room == 0) {
      net::steady_timer forever(co_await net::this_coro::executor, net::steady_timer::time_point::max());
      co_await forever.async_wait(use_tuple);
      co_return;
    }
    auto [ec, n] = co_await stream.async_read_some(buffer.prepare(std::min(room, read_chunk)), use_tuple);
    if (ec) co_return;  // closed or reset — or cancelled because another branch won the race
    buffer.commit(n);
  }
}

/// How an answer goes out: the connection's fate and what the client asked for.
struct framing {
  unsigned version = 11;  ///< the request's: 10 is answered as HTTP/1.0, anything else as HTTP/1.1
  bool keep_alive = true;
  bool head_only = false;  ///< HEAD: the head without the body
  std::string_view request_id;
};

/// The Date header line (RFC 9110 §6.6.1), its value in IMF-fixdate form:
/// "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n". Formatted again only when the second has changed (the
/// coarse clock is read from the vDSO), and appended whole: one copy per response.
std::string_view date_line() {
  static constexpr std::string_view days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr std::string_view months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  static constexpr std::string_view name = "Date: ";
  thread_local std::time_t formatted_for = -1;
  thread_local std::array<char, 6 + 29 + 2> line{};
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME_COARSE, &now);
  if (now.tv_sec != formatted_for) {
    std::tm t{};
    ::gmtime_r(&now.tv_sec, &t);
    auto two = [](char* at, int v) {
      at[0] = static_cast<char>('0' + v / 10);
      at[1] = static_cast<char>('0' + v % 10);
    };
    char* p = std::copy_n(name.data(), name.size(), line.data());
    std::copy_n(days[static_cast<std::size_t>(t.tm_wday)].data(), 3, p);
    p[3] = ',';
    p[4] = ' ';
    two(p + 5, t.tm_mday);
    p[7] = ' ';
    std::copy_n(months[static_cast<std::size_t>(t.tm_mon)].data(), 3, p + 8);
    p[11] = ' ';
    const int year = t.tm_year + 1900;
    two(p + 12, year / 100);
    two(p + 14, year % 100);
    p[16] = ' ';
    two(p + 17, t.tm_hour);
    p[19] = ':';
    two(p + 20, t.tm_min);
    p[22] = ':';
    two(p + 23, t.tm_sec);
    std::copy_n(" GMT\r\n", 6, p + 25);
    formatted_for = now.tv_sec;
  }
  return {line.data(), line.size()};
}

void append_header(std::string& wire, std::string_view name, std::string_view value) {
  wire += name;
  wire += ": ";
  wire += value;
  wire += "\r\n";
}

/// Writes the whole HTTP/1.1 response for `a` into `wire`, to be sent as one buffer. Beast's
/// serializer hands the socket a sequence of small buffers, and building the fields and walking
/// that sequence cost the I/O thread ~20% of its time (perf, /healthz with 64 connections). Every
/// header here is crunch's own — the request id has been checked by valid_request_id — so writing
/// them out is all that is left to do.
void render(const answer& a, const framing& f, clock::duration total, std::string& wire) {
  static const std::string server_name = std::string("crunch/") + version();
  char digits[24];
  wire.assign(f.version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  wire.append(digits, std::to_chars(std::begin(digits), std::end(digits), a.r.status).ptr);
  wire += ' ';
  wire += http::obsolete_reason(static_cast<http::status>(a.r.status));
  wire += "\r\n";
  wire += date_line();
  append_header(wire, "Server", server_name);
  append_header(wire, "Content-Type", a.r.content_type);
  append_header(wire, "X-Request-Id", f.request_id);
  wire += "Server-Timing: ";
  append_server_timing(wire, a, total);
  wire += "\r\n";
  for (const auto& [name, value] : a.r.headers) append_header(wire, name, value);
  append_header(wire, "Content-Length",
                {digits, std::to_chars(std::begin(digits), std::end(digits), a.r.body.size()).ptr});
  // HTTP/1.1 keeps a connection unless told otherwise; HTTP/1.0 closes it unless told otherwise.
  if (f.version == 10 && f.keep_alive) append_header(wire, "Connection", "keep-alive");
  if (f.version != 10 && !f.keep_alive) append_header(wire, "Connection", "close");
  wire += "\r\n";
  if (!f.head_only) wire += a.r.body;
}

/// Writes the answer through `wire`, a buffer the connection keeps for its answers.
net::awaitable<sys::error_code> write(beast::tcp_stream& stream, const answer& a, const framing& f,
                                      clock::duration total, std::chrono::milliseconds timeout, std::string& wire) {
  render(a, f, total, wire);
  stream.expires_after(timeout);
  auto [ec, n] = co_await net::async_write(stream, net::buffer(wire), use_tuple);
  co_return ec;
}

/// After an error the peer may still be sending; closing with unread data would reset the
/// connection and could destroy the response in flight, so read and discard for a moment first.
net::awaitable<void> linger_close(beast::tcp_stream& stream) {
  sys::error_code ignored;
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_send, ignored);
  // Wiped when freed: it may hold a refused body with a password in it.
  std::vector<char, wiping_allocator<char>> sink(read_chunk);
  std::size_t discarded = 0;
  stream.expires_after(linger_time);
  while (discarded < linger_bytes) {
    auto [ec, n] = co_await stream.async_read_some(net::buffer(sink), use_tuple);
    if (ec) break;
    discarded += n;
  }
}

/// The first field of `req` that may be given once (RFC 9110 §5.3: its value is not a list) and is
/// given more than once; two Content-Types or two Hosts leave open which one a proxy and crunch
/// each took. One pass over the fields, which Beast keeps with their names already looked up.
/// (Idempotency-Key, given twice, is refused where keys are read, and the connection kept.)
std::optional<std::string_view> repeated_singleton(const http::fields& req) {
  bool host = false;
  bool type = false;
  bool authorization = false;
  bool request_id = false;
  auto again = [](bool& seen) { return std::exchange(seen, true); };
  for (const auto& f : req) {
    switch (f.name()) {
      case http::field::host:
        if (again(host)) return "Host";
        break;
      case http::field::content_type:
        if (again(type)) return "Content-Type";
        break;
      case http::field::authorization:
        if (again(authorization)) return "Authorization";
        break;
      case http::field::unknown:
        if (beast::iequals(f.name_string(), "X-Request-Id") && again(request_id)) return "X-Request-Id";
        break;
      default:
        break;
    }
  }
  return std::nullopt;
}

/// A request head that is answered with an error and a closed connection, whatever its target.
std::optional<reply> refuse_head(const request_parser& parser, const config& cfg) {
  const auto& req = parser.get();
  std::optional<reply> r;
  // RFC 9112 §6.3: a request whose last transfer coding is not chunked has no knowable length;
  // guessing would let the rest of the stream be read as another request (smuggling).
  if (req.find(http::field::transfer_encoding) != req.end() && !parser.chunked()) {
    r = error_reply(400, "bad_request", "Transfer-Encoding of a request must end in chunked");
  } else if (static_cast<std::size_t>(std::distance(req.begin(), req.end())) > cfg.max_headers) {
    r = error_reply(431, "header_too_large", "more than " + std::to_string(cfg.max_headers) + " header fields");
  } else if (const auto twice = repeated_singleton(req)) {
    r = error_reply(400, "bad_request", std::string(*twice) + " is given more than once");
  } else if (const auto expect = req[http::field::expect];
             !expect.empty() && req.version() >= 11 && !beast::iequals(expect, "100-continue")) {
    r = error_reply(417, "expectation_failed", "the only expectation understood is 100-continue");
  }
  if (r) r->route = "invalid";
  return r;
}

/// Answers `r` and closes the connection: for a request refused on its head, or one that could
/// not be read at all (then `method` and `target` are "-").
net::awaitable<void> reject_and_close(beast::tcp_stream& stream, session_context& ctx, const std::string& remote, reply r,
                                      std::string_view request_id, std::string_view method, std::string_view target,
                                      unsigned version, clock::time_point received) {
  answer a{std::move(r), std::nullopt};
  std::string wire;
  const auto write_ec = co_await write(stream, a, {version, false, false, request_id}, clock::now() - received,
                                       ctx.cfg.read_timeout, wire);
  const auto took = clock::now() - received;
  ctx.stats.count_request(a.r.route, a.r.status, took);
  log_access(ctx, remote, request_id, method, target, a, a.r.body.size(), took);
  if (!write_ec) co_await linger_close(stream);
}

/// Wipes a body that held a secret, and the bytes of the connection buffer it was read from (all
/// but the unread ones, which prepare() first moves to the front).
void forget_body(request_body::value_type& body, request_buffer& buffer) {
  wipe(body.data(), body.capacity());
  body.clear();
  const auto spare = std::min(buffer.capacity(), buffer.max_size()) - buffer.size();
  const auto read = buffer.prepare(spare);
  wipe(read.data(), read.size());
}

/// Tells a client that sent "Expect: 100-continue" to go on, once its head has been accepted.
net::awaitable<sys::error_code> continue_if_expected(beast::tcp_stream& stream, const http::request_header<>& head) {
  if (head.version() < 11 || !beast::iequals(head[http::field::expect], "100-continue")) co_return sys::error_code{};
  static constexpr std::string_view go_on = "HTTP/1.1 100 Continue\r\n\r\n";
  auto [ec, n] = co_await net::async_write(stream, net::buffer(go_on), use_tuple);
  co_return ec;
}

/// Reads the rest of a request whose head has been read and accepted; tells a client that sent
/// "Expect: 100-continue" to go on first.
template <typename Parser>
net::awaitable<std::tuple<sys::error_code, std::size_t>> read_body(beast::tcp_stream& stream, request_buffer& buffer,
                                                                   Parser& parser) {
  if (parser.is_done()) co_return std::tuple{sys::error_code{}, std::size_t{0}};
  if (auto ec = co_await continue_if_expected(stream, parser.get())) co_return std::tuple{ec, std::size_t{0}};
  co_return co_await http::async_read(stream, buffer, parser, use_tuple);
}

/// Reads a file body of a known `length` (at most the route's limit) straight into the string its
/// job keeps: first what the connection buffer already holds, then the rest from the socket in
/// reads of up to file_read_chunk. Beast's parser copies every byte twice (socket → connection
/// buffer → body), a connection buffer's worth at a time: 30-40 % more of the I/O thread's time
/// under a load of 2.8 MiB photos.
net::awaitable<sys::error_code> read_file_body(beast::tcp_stream& stream, request_buffer& buffer,
                                               const http::request_header<>& head, std::string& body,
                                               std::size_t length) {
  if (auto ec = co_await continue_if_expected(stream, head)) co_return ec;
  // Reserved, not resized: the string grows a read at a time, so the loop pays for zeroing and
  // first-touching the pages of a large body a step at a time too, never 25 MiB in one go.
  body.reserve(length);
  std::size_t got = std::min(buffer.size(), length);
  body.resize(got);
  net::buffer_copy(net::buffer(body.data(), got), buffer.data());
  buffer.consume(got);
  while (got < length) {
    body.resize(got + std::min(length - got, file_read_chunk));
    auto [ec, n] = co_await stream.async_read_some(net::buffer(body.data() + got, body.size() - got), use_tuple);
    // The peer closing before the end is what Beast reports as a partial message.
    if (ec == net::error::eof) co_return http::error::partial_message;
    if (ec) co_return ec;
    got += n;
    body.resize(got);
  }
  co_return sys::error_code{};
}

/// Sends `wire` (the stream's head), then each snapshot as it is taken, until a write fails (its
/// error in `failed`: set even when the race has already been decided) or the live view stops
/// waiting (stop, drain).
net::awaitable<void> send_snapshots(beast::tcp_stream& stream, live_view& live, std::string& wire,
                                    std::chrono::nanoseconds offset, sys::error_code& failed) {
  // A cancellation (the race lost, a drain) ends the loop through the checks below, not by an
  // exception thrown from whichever wait comes next.
  co_await net::this_coro::throw_if_cancelled(false);
  const auto state = co_await net::this_coro::cancellation_state;
  net::steady_timer stagger(stream.get_executor());
  for (;;) {
    const auto seen = live.sequence();
    wire += "data: ";
    wire += live.latest();
    wire += "\n\n";
    stream.expires_after(slow_reader_timeout);
    auto [ec, n] = co_await net::async_write(stream, net::buffer(wire), use_tuple);
    if (ec) {
      failed = ec;
      co_return;
    }
    stream.expires_never();
    wire.clear();
    if (!co_await live.next_snapshot(seen)) co_return;
    if (offset.count() > 0) {
      stagger.expires_after(offset);
      co_await stagger.async_wait(use_tuple);
      if (state.cancelled() != net::cancellation_type::none) co_return;
    }
  }
}

/// Completes when the client closes its end. An event-stream client has nothing more to say:
/// whatever it sends is read and dropped. On the socket, not the stream: no write timeout applies.
net::awaitable<void> client_left(net::ip::tcp::socket& socket) {
  co_await net::this_coro::throw_if_cancelled(false);
  char sink[512];
  for (;;) {
    auto [ec, n] = co_await socket.async_read_some(net::buffer(sink), use_tuple);
    if (ec) co_return;
  }
}

/// GET /v1/events: the live view's snapshots as Server-Sent Events, one per interval (each is also
/// the heartbeat that keeps proxies from closing the stream), until the client leaves, the drain
/// begins, or the client falls behind. Only the latest snapshot is ever sent: a reader that misses
/// some skips them, and one that stops reading is dropped after slow_reader_timeout.
net::awaitable<void> stream_events(beast::tcp_stream& stream, session_context& ctx,
                                   connection& conn, const std::string& remote, std::string_view request_id,
                                   const http::request_header<>& req, clock::time_point received) {
  using namespace net::experimental::awaitable_operators;  // NOLINT: for `||` here only
  auto& live = *ctx.live;
  const auto offset = ctx.draining ? std::nullopt : live.open_stream(ctx.cfg.max_event_streams);
  if (!offset) {
    auto r = ctx.draining ? unavailable("draining", "server is shutting down", std::chrono::seconds(1))
                          : unavailable("too_many_streams",
                                        "as many /v1/events streams are open as --max-event-streams allows; retry later",
                                        std::chrono::seconds(10));
    r.route = "events";
    co_await reject_and_close(stream, ctx, remote, std::move(r), request_id, req.method_string(), req.target(),
                              req.version(), received);
    co_return;
  }
  sys::error_code ignored;
  stream.socket().set_option(net::socket_base::send_buffer_size(stream_buffer_bytes), ignored);
  static const std::string server_name = std::string("crunch/") + version();
  // No length: the stream ends when the connection does.
  std::string wire = req.version() == 10 ? "HTTP/1.0 200 OK\r\n" : "HTTP/1.1 200 OK\r\n";
  wire += date_line();
  append_header(wire, "Server", server_name);
  append_header(wire, "Content-Type", "text/event-stream");
  append_header(wire, "Cache-Control", "no-store");
  append_header(wire, "X-Accel-Buffering", "no");  // nginx: pass each event on as it comes
  append_header(wire, "X-Request-Id", request_id);
  wire += "Server-Timing: ";
  append_server_timing(wire, answer{}, clock::now() - received);
  wire += "\r\n";
  append_header(wire, "Connection", "close");
  wire += "\r\n";
  // Counted out however the stream ends.
  struct stream_slot {
    live_view& live;
    connection& conn;
    ~stream_slot() {
      conn.streaming = false;
      live.close_stream();
    }
  } slot{live, conn};
  conn.streaming = true;
  // One race for the stream's whole life: the snapshots against the client leaving. A client that
  // closes is let go at once, not at the next write, which may succeed anyway.
  // A write that times out closes the socket, which ends client_left too: either may win the race.
  sys::error_code ec;
  co_await (send_snapshots(stream, live, wire, *offset, ec) || client_left(stream.socket()));
  if (ec == beast::error::timeout) ctx.stats.count_slow_stream();
  const auto took = clock::now() - received;
  answer a{reply{200, {}, "text/event-stream", {}, "events"}, std::nullopt};
  ctx.stats.count_request("events", 200, took);
  log_access(ctx, remote, request_id, req.method_string(), req.target(), a, 0, took);
}

/// The route's view of a request head.
request_head head_of(const request_parser& parser) {
  const auto& req = parser.get();
  // The field, not parser.content_length(): Beast has already checked it, and its boost::optional
  // trips GCC 12's -Wmaybe-uninitialized under the sanitizers.
  std::optional<std::uint64_t> length;
  if (!parser.chunked() && req.has_content_length()) {
    length = parse_decimal(req[http::field::content_length], 0, std::numeric_limits<std::uint64_t>::max());
  }
  return {req.method_string(), req.target(), req[http::field::content_type], length, req[http::field::authorization]};
}

// One request, read whole: its head, its route, and its body as the route wants it.
struct request {
  request_parser parser;                        // the head, and a JSON (or empty) body
  std::optional<file_parser_type> file_parser;  // takes over from `parser` for a chunked file body
  std::optional<std::string> file_body;         // a file body, once read: its job keeps it
  memory_lease body_memory;                     // a file body's share of the memory budget
  head_route routed;
  clock::time_point received;                   // when it was whole: deadlines and durations count from here

  const http::request_header<>& head() const { return file_parser ? file_parser->get().base() : parser.get().base(); }
  bool keep_alive() const { return file_parser ? file_parser->get().keep_alive() : parser.get().keep_alive(); }
};

// Waits, idle, for the first bytes of the next request. False: the connection is done (the peer
// closed, the idle timeout, or the drain).
net::awaitable<bool> wait_for_request(beast::tcp_stream& stream, request_buffer& buffer, session_context& ctx,
                                      connection& conn) {
  if (ctx.draining) co_return false;
  conn.idle = true;
  stream.expires_after(ctx.cfg.idle_timeout);
  auto [ec, n] = co_await stream.async_read_some(buffer.prepare(read_chunk), use_tuple);
  conn.idle = false;
  if (ec) co_return false;
  buffer.commit(n);
  co_return true;
}

// Reads a file body (an image) into a plain string the job keeps, charged to the memory budget
// before it is read. False: refused (answered, the connection to close) or a read error in `ec`.
net::awaitable<bool> read_file_request(beast::tcp_stream& stream, request_buffer& buffer, session_context& ctx,
                                       const std::string& remote, request& in, clock::time_point head_read,
                                       sys::error_code& ec) {
  const auto& head = in.parser.get();
  const auto declared = head_of(in.parser).content_length;
  // A file body is charged to the memory budget before it is read, for as long as it is kept —
  // with room for its job's working memory: 256 uploads of 25 MiB must not become 6 GiB, nor fill
  // the budget with bodies that can never run. A chunked one is charged its limit until read.
  in.body_memory = ctx.jobs.lease_body(in.routed.working_memory + declared.value_or(in.routed.body_limit));
  if (!in.body_memory) {
    // Answered after the same pause as a job refused for load, for the same reason: a client
    // that reconnects and re-sends at once must not turn the loop into a 503 machine that
    // starves the workers. The body is not read meanwhile.
    net::steady_timer later(co_await net::this_coro::executor, overload_pause);
    co_await later.async_wait(use_tuple);
    auto r = unavailable("overloaded", "the memory budget is taken by the jobs and uploads in flight; retry later",
                         std::chrono::seconds(1));
    r.route = std::get<route_match>(in.routed.next).route->name;
    co_await reject_and_close(stream, ctx, remote, std::move(r), request_id_for(head["X-Request-Id"], ctx),
                              head.method_string(), head.target(), head.version(), head_read);
    co_return false;
  }
  // Straight from the socket when its length is known, else (chunked) through Beast.
  in.file_body.emplace();
  if (declared) {
    ec = *declared > in.routed.body_limit
             ? http::error::body_limit  // the router refuses it from the head; checked again here
             : co_await read_file_body(stream, buffer, head.base(), *in.file_body, static_cast<std::size_t>(*declared));
  } else {
    in.file_parser.emplace(std::move(in.parser));
    in.file_parser->body_limit(in.routed.body_limit);
    std::tie(ec, std::ignore) = co_await read_body(stream, buffer, *in.file_parser);
    if (!ec) *in.file_body = std::move(in.file_parser->get().body());
  }
  if (ec) co_return false;
  in.body_memory.shrink_to(in.file_body->capacity() + in.routed.working_memory);
  co_return true;
}

// Reads a request: its head, refused from the head when it can be (before any body is read, and
// before a client that sent "Expect: 100-continue" is told to go on), routed, then its body.
// False: it was answered already, or could not be read; the connection is to close.
net::awaitable<bool> read_request(beast::tcp_stream& stream, request_buffer& buffer, session_context& ctx,
                                  const std::string& remote, request& in) {
  const config& cfg = ctx.cfg;
  in.parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(cfg.max_header_bytes, UINT32_MAX)));
  in.parser.body_limit(ctx.routes.largest_body_limit());  // until the route says how much it takes
  stream.expires_after(cfg.read_timeout);
  auto [ec, n] = co_await http::async_read_header(stream, buffer, in.parser, use_tuple);
  const auto head_read = clock::now();
  if (!ec) {
    const auto& head = in.parser.get();
    auto refused = refuse_head(in.parser, cfg);
    if (!refused) {
      in.routed = ctx.routes.route(head_of(in.parser));
      if (in.routed.refuse_body) refused = std::move(std::get<reply>(in.routed.next));
    }
    if (refused) {
      co_await reject_and_close(stream, ctx, remote, std::move(*refused), request_id_for(head["X-Request-Id"], ctx),
                                head.method_string(), head.target(), head.version(), head_read);
      co_return false;
    }
    if (in.routed.file_body && !in.parser.is_done()) {
      if (!co_await read_file_request(stream, buffer, ctx, remote, in, head_read, ec) && !ec) co_return false;
    } else {
      in.parser.body_limit(in.routed.body_limit);
      std::tie(ec, n) = co_await read_body(stream, buffer, in.parser);
    }
  }
  if (ec) {
    if (auto r = reply_for_read_error(ec)) {
      co_await reject_and_close(stream, ctx, remote, std::move(*r), request_id_for({}, ctx), "-", "-", 11, head_read);
    }
    co_return false;
  }
  in.received = clock::now();
  co_return true;
}

// A job answer, and for an asynchronous job the id the store gave it.
struct job_answer : answer {
  std::string accepted;  // the asynchronous job's id, once the store took it
};

// Prepares the request's job and runs it — or, `async`, hands it to the job store. The client
// leaving mid-job is counted and logged here (a.client_gone: there is no one to write to).
net::awaitable<job_answer> run_job(beast::tcp_stream& stream, request_buffer& buffer, session_context& ctx,
                                   connection& conn, std::string_view request_id, request& in,
                                   const std::string& remote, bool async,
                                   std::optional<callback_url> callback = std::nullopt) {
  job_answer a;
  const auto& req = in.head();
  const auto& match = std::get<route_match>(in.routed.next);
  auto prepared = in.file_body ? ctx.routes.prepare(match, {},
                                                    job_input{.body = std::move(*in.file_body),
                                                              .content_type = req[http::field::content_type],
                                                              .accept = req[http::field::accept],
                                                              .body_memory = std::move(in.body_memory)},
                                                    async)
                               : ctx.routes.prepare(match, in.parser.get().body(), {}, async);
  if (in.routed.sensitive) forget_body(in.parser.get().body(), buffer);
  if (auto* refused = std::get_if<reply>(&prepared)) {
    a.r = std::move(*refused);
    co_return a;
  }
  auto job = std::move(std::get<job_request>(prepared));
  job.flow = flow_of(ctx.cfg, in.routed, req, address_of(remote));
  job.request_id = request_id;
  const auto route = job.route;
  if (async) {
    auto submitted = ctx.async->submit(std::move(job), in.routed.client, in.received, std::move(callback));
    if (submitted.id.empty()) a.r = std::move(submitted.refused);
    a.accepted = std::move(submitted.id);
    a.r.route = route;
    co_return a;
  }
  stream.expires_never();
  conn.in_job = true;
  static_cast<answer&>(a) = co_await ctx.jobs.run(std::move(job), in.received, peer_closed(stream, buffer));
  conn.in_job = false;
  a.r.route = route;
  if (a.client_gone) {
    const auto took = clock::now() - in.received;
    ctx.stats.count_request(route, a.r.status, took);
    log_access(ctx, remote, request_id, req.method_string(), req.target(), a, 0, took, in.routed.client);
  }
  co_return a;
}

// The answer to a request whose job the store holds: the job's own answer when it ends within the
// client's Prefer wait=, else 202 with where to find it.
net::awaitable<reply> async_answer(session_context& ctx, const std::string& owner, const std::string& id,
                                   const preferences& prefs) {
  if (prefs.wait && prefs.wait->count() > 0) {
    const auto longest = std::chrono::duration_cast<std::chrono::seconds>(ctx.cfg.max_timeout);
    if (co_await ctx.async->wait(owner, id, std::min(*prefs.wait, longest))) co_return ctx.async->result(owner, id);
  }
  co_return ctx.async->accepted(id);
}

net::awaitable<answer> answer_job_request(beast::tcp_stream& stream, request_buffer& buffer, session_context& ctx,
                                          connection& conn, const std::string& remote, std::string_view request_id,
                                          request& in);

// What to answer: the route's reply, or its job's, run on a worker while the connection is
// watched for the client leaving. nullopt when the client left during the job (counted and
// logged here: there is no one to write to).
net::awaitable<std::optional<answer>> answer_request(beast::tcp_stream& stream, request_buffer& buffer,
                                                     session_context& ctx, connection& conn, const std::string& remote,
                                                     std::string_view request_id, request& in) {
  answer a;
  if (auto* r = std::get_if<reply>(&in.routed.next)) {
    a.r = std::move(*r);
    if (in.routed.sensitive) forget_body(in.parser.get().body(), buffer);
    if (in.routed.job) {
      const auto route = a.r.route;
      const auto& owner = in.routed.client;
      // Prefer: wait=N on a status or a result: answered once the job has ended, or after N
      // seconds (a long poll, instead of asking again and again).
      if (in.routed.job->what != job_lookup::action::cancel) {
        std::vector<std::string_view> prefer;
        for (auto [it, end] = in.head().equal_range("Prefer"); it != end; ++it) prefer.push_back(it->value());
        if (const auto wait = prefer.empty() ? std::nullopt : parse_prefer(prefer).wait; wait && wait->count() > 0) {
          const auto longest = std::chrono::duration_cast<std::chrono::seconds>(ctx.cfg.max_timeout);
          if (ctx.shared != nullptr) {
            co_await ctx.shared->wait(owner, in.routed.job->id, std::min<std::chrono::milliseconds>(*wait, longest));
          } else {
            co_await ctx.async->wait(owner, in.routed.job->id, std::min(*wait, longest));
          }
        }
      }
      if (ctx.shared != nullptr) {
        switch (in.routed.job->what) {
          case job_lookup::action::status: a.r = co_await ctx.shared->status(owner, in.routed.job->id); break;
          case job_lookup::action::result: a.r = co_await ctx.shared->result(owner, in.routed.job->id); break;
          case job_lookup::action::cancel: a.r = co_await ctx.shared->cancel(owner, in.routed.job->id); break;
        }
        a.r.route = route;
        co_return a;
      }
      switch (in.routed.job->what) {
        case job_lookup::action::status: a.r = ctx.async->status(owner, in.routed.job->id); break;
        case job_lookup::action::result: a.r = ctx.async->result(owner, in.routed.job->id); break;
        case job_lookup::action::cancel: a.r = co_await ctx.async->cancel(owner, in.routed.job->id); break;
      }
      a.r.route = route;
    }
    co_return a;
  }
  a = co_await answer_job_request(stream, buffer, ctx, conn, remote, request_id, in);
  if (a.client_gone) co_return std::nullopt;
  // Whether it ran asynchronously, or was replayed, depends on Prefer and Idempotency-Key.
  auto vary = std::find_if(a.r.headers.begin(), a.r.headers.end(), [](const auto& h) { return h.first == "Vary"; });
  if (vary == a.r.headers.end()) {
    a.r.headers.emplace_back("Vary", "Prefer");
  } else {
    vary->second += ", Prefer";
  }
  co_return a;
}

// A job request answered without running its job (refused, or replayed): a secret body is
// forgotten, and the answer is counted under its route.
answer without_job(request& in, request_buffer& buffer, const route_match& match, reply r) {
  if (in.routed.sensitive) forget_body(in.parser.get().body(), buffer);
  r.route = match.route->name;
  return answer{.r = std::move(r)};
}

// Where an asynchronous job's status goes once it has ended (callbacks.hpp), checked now: no
// callback_url, a checked one, or why it is refused.
std::variant<std::optional<callback_url>, std::string> callback_of(const session_context& ctx, const route_match& match,
                                                                   const preferences& prefs) {
  const auto text = query_value(match.query, "callback_url");
  if (!text) return std::optional<callback_url>{};
  if (!prefs.respond_async) return std::string("callback_url needs Prefer: respond-async");
  const auto decoded = percent_decoded(*text);
  if (!decoded) return std::string("callback_url has a malformed %-escape");
  auto parsed = parse_callback_url(*decoded);
  if (auto* reason = std::get_if<std::string>(&parsed)) return std::move(*reason);
  if (auto policy = ctx.async->callback_policy_refuses(std::get<callback_url>(parsed))) return std::move(*policy);
  return std::optional<callback_url>(std::move(std::get<callback_url>(parsed)));
}

// What a job request asks of the job store: its preferences (RFC 7240), its idempotency key and
// its callback.
struct store_request {
  preferences prefs;
  std::optional<std::string> key;
  std::optional<callback_url> callback;
};

// The request's store_request, or why it is a 400.
std::variant<store_request, reply> store_request_of(const session_context& ctx, const request& in,
                                                    const route_match& match) {
  const auto& req = in.head();
  store_request asked;
  std::vector<std::string_view> prefer;
  for (auto [it, end] = req.equal_range("Prefer"); it != end; ++it) prefer.push_back(it->value());
  if (!prefer.empty()) asked.prefs = parse_prefer(prefer);
  if (auto [it, end] = req.equal_range("Idempotency-Key"); it != end) {
    asked.key = std::next(it) == end ? parse_idempotency_key(it->value()) : std::nullopt;
    if (!asked.key) {
      return error_reply(400, "invalid_idempotency_key",
                         "Idempotency-Key must be sent once, as a string of 1 to 255 printable ASCII characters");
    }
  }
  auto callback = callback_of(ctx, match, asked.prefs);
  if (auto* why = std::get_if<std::string>(&callback)) return error_reply(400, "invalid_callback_url", *why);
  asked.callback = std::move(std::get<std::optional<callback_url>>(callback));
  return asked;
}

// respond-async with --jobs-store redis://: the request is written to the shared store, for
// whichever replica runs it.
net::awaitable<answer> submit_shared(session_context& ctx, request_buffer& buffer, const std::string& remote,
                                     request& in, const route_match& match, store_request asked) {
  // The shared store keeps the request for whichever replica runs it: never a secret.
  if (in.routed.sensitive) {
    co_return without_job(in, buffer, match,
                          error_reply(400, "not_in_shared_store",
                                      "this route's body is a secret, never written to the shared job store: ask "
                                      "synchronously"));
  }
  const auto& req = in.head();
  shared_jobs::stored_request stored;
  stored.method = std::string(req.method_string());
  stored.target = std::string(req.target());
  stored.content_type = std::string(req[http::field::content_type]);
  stored.accept = std::string(req[http::field::accept]);
  stored.body = in.file_body ? std::move(*in.file_body)
                             : std::string(in.parser.get().body().data(), in.parser.get().body().size());
  if (asked.key) {
    stored.idempotency_key = asked.key;
    stored.fingerprint = (co_await ctx.shared->fingerprint(stored.method, stored.target, stored.content_type,
                                                           stored.body)).value_or("");
  }
  stored.owner = in.routed.client;
  stored.flow = flow_of(ctx.cfg, in.routed, req, address_of(remote));
  stored.timeout = ctx.cfg.async_max_timeout;
  if (const auto t = query_value(match.query, "timeout_ms")) {
    if (const auto ms = parse_decimal(*t, 1, static_cast<std::uint64_t>(ctx.cfg.async_max_timeout.count()))) {
      stored.timeout = std::chrono::milliseconds(*ms);
    }
  }
  stored.kind = match.kind->name;
  stored.route = match.route->name;
  if (asked.callback) stored.callback = asked.callback->url;
  // respond-async, wait=N: the job's answer when it ends within N seconds.
  const auto longest = std::chrono::duration_cast<std::chrono::seconds>(ctx.cfg.max_timeout);
  const auto wait =
      asked.prefs.wait ? std::min<std::chrono::milliseconds>(*asked.prefs.wait, longest) : std::chrono::milliseconds{};
  // (Not co_await inside a braced initializer: GCC 12 miscompiles that in a coroutine.)
  answer a;
  a.r = co_await ctx.shared->submit(std::move(stored), wait);
  a.r.route = match.route->name;
  co_return a;
}

// A job route's answer: run now, or handed to the job store (Prefer: respond-async), or replayed
// for its Idempotency-Key. a.client_gone: the client left mid-job (counted and logged already).
net::awaitable<answer> answer_job_request(beast::tcp_stream& stream, request_buffer& buffer, session_context& ctx,
                                          connection& conn, const std::string& remote, std::string_view request_id,
                                          request& in) {
  const auto& req = in.head();
  const auto& match = std::get<route_match>(in.routed.next);
  auto asking = store_request_of(ctx, in, match);
  if (auto* r = std::get_if<reply>(&asking)) co_return without_job(in, buffer, match, std::move(*r));
  auto& asked = std::get<store_request>(asking);
  const auto& prefs = asked.prefs;
  const auto& key = asked.key;
  if (!prefs.respond_async && !key) co_return co_await run_job(stream, buffer, ctx, conn, request_id, in, remote, false);
  if (prefs.respond_async && ctx.shared != nullptr) {
    co_return co_await submit_shared(ctx, buffer, remote, in, match, std::move(asked));
  }
  const auto& owner = in.routed.client;
  if (key) {
    const std::string_view body = in.file_body ? std::string_view(*in.file_body)
                                               : std::string_view(in.parser.get().body().data(), in.parser.get().body().size());
    const auto fingerprint = co_await ctx.fingerprints->fingerprint(req.method_string(), req.target(),
                                                                     req[http::field::content_type], body);
    auto claim = ctx.async->claim_key(owner, *key, fingerprint);
    if (claim.answer) co_return without_job(in, buffer, match, std::move(*claim.answer));
    if (!claim.job.empty()) {
      auto stored = co_await async_answer(ctx, owner, claim.job, prefs);
      co_return without_job(in, buffer, match, std::move(stored));
    }
  }
  if (prefs.respond_async) {
    auto submitted =
        co_await run_job(stream, buffer, ctx, conn, request_id, in, remote, true, std::move(asked.callback));
    if (!submitted.accepted.empty()) {
      if (key) ctx.async->bind_key(owner, *key, submitted.accepted);
      submitted.r = co_await async_answer(ctx, owner, submitted.accepted, prefs);
    } else if (key) {
      ctx.async->release_key(owner, *key);
    }
    submitted.r.route = match.route->name;
    co_return std::move(submitted);
  }
  auto a = co_await run_job(stream, buffer, ctx, conn, request_id, in, remote, false);
  if (a.client_gone) {
    ctx.async->release_key(owner, *key);
  } else {
    ctx.async->settle_key(owner, *key, a.r);
  }
  co_return a;
}

// Whether the connection reads another request after this answer.
bool stays_open(const request& in, const session_context& ctx, const request_buffer& buffer, std::size_t in_a_row) {
  if (!in.keep_alive()) return false;                    // the client asked to close
  if (ctx.drain_expired) return false;                   // the drain ran out of time: close after this answer
  if (ctx.draining && buffer.size() == 0) return false;  // draining: what was received is answered, then close
  // Requests answered in a row from bytes already received (pipelined): past max_pipelined, the
  // answer closes the connection, and a client that stacks requests must come back for the rest.
  return in_a_row < ctx.cfg.max_pipelined;
}

// Writes the answer, counts and logs it. False: the connection is done (closed here when the
// answer said so, or the write failed).
net::awaitable<bool> write_answer(beast::tcp_stream& stream, request_buffer& buffer, session_context& ctx,
                                  connection& conn, const std::string& remote, std::string_view request_id,
                                  const request& in, const answer& a, bool keep_alive, std::string& wire) {
  const auto& req = in.head();
  const framing f{req.version(), keep_alive, req.method() == http::verb::head, request_id};
  const auto write_ec = co_await write(stream, a, f, clock::now() - in.received, ctx.cfg.read_timeout, wire);
  const auto took = clock::now() - in.received;
  ctx.stats.count_request(a.r.route, a.r.status, took);
  log_access(ctx, remote, request_id, req.method_string(), req.target(), a, a.r.body.size(), took, in.routed.client);
  if (write_ec) co_return false;
  if (!keep_alive) {
    // Requests still unread (pipelined past the limit): closing on them would reset the
    // connection and could lose this answer in flight.
    if (buffer.size() > 0) co_await linger_close(stream);
    sys::error_code ignored;
    stream.socket().shutdown(net::ip::tcp::socket::shutdown_send, ignored);
    co_return false;
  }
  if (a.overloaded) {
    // The connection's next request waits (see overload_pause).
    net::steady_timer later(co_await net::this_coro::executor, overload_pause);
    conn.idle = buffer.size() == 0;  // a drain may close it meanwhile
    co_await later.async_wait(use_tuple);
    conn.idle = false;
  }
  co_return true;
}

// A connection: read a request, route it, run it, write the answer; again while it stays open.
net::awaitable<void> serve(beast::tcp_stream& stream, session_context* ctx, connection* conn) {
  // Bounds memory per connection, pipelined bytes included.
  request_buffer buffer(ctx->cfg.max_header_bytes + ctx->routes.largest_buffered_body() + 2 * read_chunk);
  const std::string remote = remote_of(stream);
  std::string wire;  // each answer is rendered here, then written
  for (std::size_t in_a_row = 0;;) {
    in_a_row = buffer.size() == 0 ? 0 : in_a_row + 1;
    if (buffer.size() == 0 && !co_await wait_for_request(stream, buffer, *ctx, *conn)) co_return;
    request in;
    if (!co_await read_request(stream, buffer, *ctx, remote, in)) co_return;
    const std::string request_id = request_id_for(in.head()["X-Request-Id"], *ctx);
    if (in.routed.event_stream) {
      co_await stream_events(stream, *ctx, *conn, remote, request_id, in.head(), in.received);
      co_return;
    }
    const auto a = co_await answer_request(stream, buffer, *ctx, *conn, remote, request_id, in);
    if (!a) co_return;
    const bool keep_alive = stays_open(in, *ctx, buffer, in_a_row);
    if (!co_await write_answer(stream, buffer, *ctx, *conn, remote, request_id, in, *a, keep_alive, wire)) co_return;
  }
}

}  // namespace

net::awaitable<void> refuse_connection(net::ip::tcp::socket socket, session_context* ctx) {
  beast::tcp_stream stream(std::move(socket));
  // Answered before the request is read: whatever it is, the answer is the same.
  answer a{unavailable("too_many_connections", "the server has as many connections open as it allows; retry",
                       std::chrono::seconds(1)),
           std::nullopt};
  const auto request_id = request_id_for({}, *ctx);
  std::string wire;
  if (!co_await write(stream, a, {11, false, false, request_id}, clock::duration::zero(), linger_time, wire)) {
    co_await linger_close(stream);
  }
}

net::awaitable<void> run_session(net::ip::tcp::socket socket, session_context* context, connection* conn) {
  beast::tcp_stream stream(std::move(socket));
  try {
    co_await serve(stream, context, conn);
  } catch (const sys::system_error& e) {
    // A drain that ran out of time cancelled this session mid-operation; nothing to answer.
    if (e.code() != net::error::operation_aborted) throw;
  }
}

}  // namespace crunch
