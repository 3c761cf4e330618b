#include <crunch/router.hpp>

#include <crunch/decimal.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>

namespace crunch {

namespace {

constexpr std::string_view cheap_methods = "GET, HEAD";
constexpr std::string_view job_methods = "GET";

reply method_not_allowed(std::string_view allow) {
  auto r = error_reply(405, "method_not_allowed", "method not allowed; allowed: " + std::string(allow));
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

// The value of `name` in a query string ("a=1&b=2"), undecoded; nullopt when absent.
std::optional<std::string_view> query_value(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

}  // namespace

reply error_reply(unsigned status, std::string_view code, std::string_view message) {
  const nlohmann::json body = {{"error", {{"code", code}, {"message", message}}}};
  // Replace rather than throw on invalid UTF-8: a message may quote hostile input.
  return {status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json", {}};
}

router::router(job_registry jobs, server_view view, std::chrono::milliseconds default_timeout,
               std::chrono::milliseconds max_timeout)
    : jobs_(std::move(jobs)), view_(std::move(view)), default_timeout_(default_timeout), max_timeout_(max_timeout) {}

route_result router::route(std::string_view method, std::string_view target) const {
  // Absolute form (RFC 9112 §3.2.2), which servers must accept: route on its path.
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (target.size() > scheme.size() && target.substr(0, scheme.size()) == scheme) {
      const auto path = target.find_first_of("/?", scheme.size());
      target = path == std::string_view::npos ? std::string_view("/") : target.substr(path);
      if (target.front() == '?') return error_reply(400, "invalid_target", "request target has no path");
      break;
    }
  }
  if (target.empty() || target.front() != '/') {
    return error_reply(400, "invalid_target", "request target must be an absolute path");
  }
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const std::string_view query = question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);
  const bool cheap_method = method == "GET" || method == "HEAD";

  auto on_route = [](std::string_view route, reply r) {
    r.route = route;
    return r;
  };
  if (path == "/healthz") {
    if (!cheap_method) return on_route("healthz", method_not_allowed(cheap_methods));
    return reply{200, R"({"status":"ok"})", "application/json", {}, "healthz"};
  }
  if (path == "/readyz") {
    if (!cheap_method) return on_route("readyz", method_not_allowed(cheap_methods));
    if (view_.draining()) {
      auto r = error_reply(503, "draining", "server is shutting down");
      r.headers.emplace_back("Retry-After", "1");
      return on_route("readyz", std::move(r));
    }
    return reply{200, R"({"status":"ready"})", "application/json", {}, "readyz"};
  }
  if (path == "/metrics") {
    if (!cheap_method) return on_route("metrics", method_not_allowed(cheap_methods));
    return reply{200, view_.metrics_text(), "text/plain; version=0.0.4; charset=utf-8", {}, "metrics"};
  }

  // GET /{kind}/{parameter}
  const auto slash = path.find('/', 1);
  const job_kind* kind = slash == std::string_view::npos ? nullptr : jobs_.find(path.substr(1, slash - 1));
  const std::string_view parameter = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
  if (kind == nullptr || parameter.find('/') != std::string_view::npos) {
    return error_reply(404, "not_found", "no route for this path");
  }
  if (method != "GET") return on_route(kind->name, method_not_allowed(job_methods));

  auto timeout = default_timeout_;
  if (const auto text = query_value(query, "timeout_ms")) {
    const auto bad = error_reply(400, "invalid_argument",
                                 "timeout_ms must be an integer in 1.." + std::to_string(max_timeout_.count()));
    const auto ms = parse_decimal(*text, 1, static_cast<std::uint64_t>(max_timeout_.count()));
    if (!ms) return on_route(kind->name, bad);
    timeout = std::chrono::milliseconds(*ms);
  }

  auto prepared = kind->prepare(parameter);
  if (auto* invalid = std::get_if<invalid_argument>(&prepared)) {
    return on_route(kind->name, error_reply(400, "invalid_argument", invalid->message));
  }
  auto& job = std::get<prepared_job>(prepared);
  return job_request{kind->name, std::move(job.run), job.cost_units, 0, timeout};
}

}  // namespace crunch
