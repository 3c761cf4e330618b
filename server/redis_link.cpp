#include "server/redis_link.hpp"

#include <boost/asio/post.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace crunch {

namespace {

redis_reply copy(const redisReply* r) {
  redis_reply out;
  if (r == nullptr) {
    out.kind = redis_reply::type::error;
    out.text = "no reply";
    return out;
  }
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      out.kind = redis_reply::type::integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      out.kind = redis_reply::type::string;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.kind = redis_reply::type::status;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.kind = redis_reply::type::error;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      out.kind = redis_reply::type::array;
      out.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(copy(r->element[i]));
      break;
    default:
      out.kind = redis_reply::type::nil;
  }
  return out;
}

redis_reply error(std::string text) {
  redis_reply r;
  r.kind = redis_reply::type::error;
  r.text = std::move(text);
  return r;
}

timeval as_timeval(std::chrono::milliseconds d) {
  timeval t{};
  t.tv_sec = static_cast<decltype(t.tv_sec)>(d.count() / 1000);
  t.tv_usec = static_cast<decltype(t.tv_usec)>((d.count() % 1000) * 1000);
  return t;
}

}  // namespace

std::variant<redis_address, std::string> parse_redis_url(std::string_view url) {
  constexpr std::string_view scheme = "redis://";
  if (!url.starts_with(scheme)) return "must be redis://host[:port][/db]";
  url.remove_prefix(scheme.size());
  redis_address a;
  const auto slash = url.find('/');
  auto authority = url.substr(0, slash);
  if (slash != std::string_view::npos) {
    const auto db = url.substr(slash + 1);
    int value = 0;
    if (!db.empty()) {
      const auto [end, ec] = std::from_chars(db.data(), db.data() + db.size(), value);
      if (ec != std::errc{} || end != db.data() + db.size() || value < 0 || value > 15) return "the db must be 0..15";
    }
    a.db = value;
  }
  const auto colon = authority.rfind(':');
  if (colon != std::string_view::npos) {
    unsigned port = 0;
    const auto digits = authority.substr(colon + 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (ec != std::errc{} || end != digits.data() + digits.size() || port == 0 || port > 65535) {
      return "the port must be 1..65535";
    }
    a.port = static_cast<std::uint16_t>(port);
    authority = authority.substr(0, colon);
  }
  if (authority.empty() || !std::all_of(authority.begin(), authority.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '.' || c == '-';
      })) {
    return "the host must be a name or an IPv4 address";
  }
  a.host = std::string(authority);
  return a;
}

redis_connection::redis_connection(redis_address address, std::chrono::milliseconds timeout)
    : address_(std::move(address)), timeout_(timeout) {}

redis_connection::~redis_connection() { drop(); }

void redis_connection::drop() {
  if (context_ != nullptr) redisFree(static_cast<redisContext*>(context_));
  context_ = nullptr;
}

void redis_connection::connect() {
  auto* c = redisConnectWithTimeout(address_.host.c_str(), address_.port, as_timeval(timeout_));
  if (c == nullptr) return;
  if (c->err != 0) {
    redisFree(c);
    return;
  }
  redisSetTimeout(c, as_timeval(timeout_));
  context_ = c;
  if (address_.db != 0) {
    const auto selected = command({"SELECT", std::to_string(address_.db)});
    if (!selected.ok()) drop();
  }
}

redis_reply redis_connection::command(const std::vector<std::string>& words) {
  if (context_ == nullptr) connect();
  if (context_ == nullptr) {
    return error("cannot connect to redis://" + address_.host + ":" + std::to_string(address_.port));
  }
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  argv.reserve(words.size());
  lengths.reserve(words.size());
  for (const auto& w : words) {
    argv.push_back(w.data());
    lengths.push_back(w.size());
  }
  auto* c = static_cast<redisContext*>(context_);
  auto* raw = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lengths.data()));
  if (raw == nullptr) {
    auto lost = error(std::string("redis connection lost: ") + (c->errstr[0] != '\0' ? c->errstr : "unknown"));
    drop();
    return lost;
  }
  auto reply = copy(raw);
  freeReplyObject(raw);
  return reply;
}

redis_link::redis_link(net::any_io_executor io, redis_address address, std::chrono::milliseconds timeout)
    : io_(std::move(io)), connection_(std::move(address), timeout), thread_([this] { run(); }) {}

redis_link::~redis_link() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
  }
  wake_.notify_one();
  thread_.join();
}

void redis_link::send(std::vector<std::string> words, handler done) {
  {
    std::lock_guard lock(mutex_);
    queue_.emplace_back(std::move(words), std::move(done));
  }
  wake_.notify_one();
}

void redis_link::run() {
  for (;;) {
    std::pair<std::vector<std::string>, handler> next;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      next = std::move(queue_.front());
      queue_.pop_front();
    }
    auto reply = connection_.command(next.first);
    net::post(io_, [done = std::move(next.second), reply = std::move(reply)]() mutable { done(std::move(reply)); });
  }
}

}  // namespace crunch
