#include <crunch/router.hpp>

#include <crunch/decimal.hpp>
#include <crunch/embedded.hpp>
#include <crunch/media_type.hpp>
#include <crunch/openapi.hpp>

#include <algorithm>
#include <cctype>

namespace crunch {

namespace {

constexpr std::string_view cheap_methods = "GET, HEAD";

reply method_not_allowed(std::string_view allow) {
  auto r = error_reply(405, "method_not_allowed", "method not allowed; allowed: " + std::string(allow));
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

reply on_route(std::string_view route, reply r) {
  r.route = route;
  return r;
}

// The value of the template's {parameter} when `path` matches it ("" for a template without one);
// nullopt when it does not match. The parameter is one path segment, possibly empty.
std::optional<std::string_view> match_path(std::string_view path_template, std::string_view path) {
  const auto brace = path_template.find('{');
  if (brace == std::string_view::npos) {
    if (path != path_template) return std::nullopt;
    return std::string_view{};
  }
  const auto prefix = path_template.substr(0, brace);
  if (path.substr(0, prefix.size()) != prefix) return std::nullopt;
  const auto segment = path.substr(prefix.size());
  if (segment.find('/') != std::string_view::npos) return std::nullopt;
  return segment;
}

// The media type of `content_type` (parameters and case ignored) is one of `types`.
bool one_of_media_types(const std::vector<std::string>& types, std::string_view content_type) {
  return std::any_of(types.begin(), types.end(), [&](const std::string& t) { return names_media_type(content_type, t); });
}

const char* source_name(parameter_source in) {
  switch (in) {
    case parameter_source::path: return "path";
    case parameter_source::query: return "query";
    case parameter_source::body: return "body";
  }
  return "?";
}

// The live view's page and files, built into the binary. The page may load only what crunch
// serves and talk only to crunch: nothing leaves for a CDN, and an injected script could not
// either.
struct ui_file {
  std::string_view path;
  const std::string_view* bytes;
  std::string_view content_type;
};
const ui_file ui_files[] = {
    {"/", &live_page, "text/html; charset=utf-8"},
    {"/ui/live.js", &live_script, "text/javascript; charset=utf-8"},
    {"/ui/live.css", &live_style, "text/css; charset=utf-8"},
    {"/ui/uPlot.iife.min.js", &uplot_script, "text/javascript; charset=utf-8"},
    {"/ui/uPlot.min.css", &uplot_style, "text/css; charset=utf-8"},
};

reply ui_reply(const ui_file& f) {
  reply r{200, std::string(*f.bytes), f.content_type, {}, "ui"};
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
                         "frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Cache-Control", "no-cache");
  return r;
}

nlohmann::json describe(const parameter& p) {
  nlohmann::json d = {{"name", p.name},
                      {"in", source_name(p.in)},
                      {"type", p.type == parameter_type::integer ? "integer" : "string"},
                      {"required", p.required()},
                      {"description", p.description}};
  if (p.type == parameter_type::integer) {
    d["minimum"] = p.minimum;
    d["maximum"] = p.maximum;
  } else {
    d["min_bytes"] = p.minimum;
    d["max_bytes"] = p.maximum;
  }
  if (p.default_value) d["default"] = *p.default_value;
  if (!p.one_of.empty()) d["enum"] = p.one_of;
  return d;
}

}  // namespace

reply error_reply(unsigned status, std::string_view code, std::string_view message) {
  const nlohmann::json body = {{"error", {{"code", code}, {"message", message}}}};
  // Replace rather than throw on invalid UTF-8: a message may quote hostile input.
  return {status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json", {}};
}

reply unavailable(std::string_view code, std::string_view message, std::chrono::seconds retry_after) {
  auto r = error_reply(503, code, message);
  r.headers.emplace_back("Retry-After", std::to_string(std::max<std::chrono::seconds::rep>(1, retry_after.count())));
  return r;
}

router::router(job_registry jobs, server_view view, const config& cfg)
    : jobs_(std::move(jobs)),
      view_(std::move(view)),
      default_timeout_(cfg.default_timeout),
      max_timeout_(cfg.max_timeout),
      max_body_bytes_(cfg.max_body_bytes),
      memory_budget_(cfg.memory_budget),
      ui_(cfg.ui),
      protect_metrics_(cfg.protect_metrics) {
  openapi_ = openapi_document(jobs_);
  largest_body_limit_ = max_body_bytes_;
  largest_buffered_body_ = max_body_bytes_;
  for (const auto& [name, kind] : jobs_.kinds()) {
    for (const auto& r : kind.routes) {
      largest_body_limit_ = std::max(largest_body_limit_, body_limit(r));
      if (!r.file_body()) largest_buffered_body_ = std::max(largest_buffered_body_, body_limit(r));
    }
  }
}

std::size_t router::body_limit(const job_route& route) const noexcept {
  return route.max_body_bytes != 0 ? route.max_body_bytes : max_body_bytes_;
}

head_route router::route(const request_head& head) const {
  std::string_view target = head.target;
  // Absolute form (RFC 9112 §3.2.2), which servers must accept: route on its path.
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (target.size() > scheme.size() && target.substr(0, scheme.size()) == scheme) {
      const auto path = target.find_first_of("/?", scheme.size());
      target = path == std::string_view::npos ? std::string_view("/") : target.substr(path);
      break;
    }
  }
  // Answers that do not need the body; one that is too large is refused before it is read.
  auto answer = [&](reply r, std::size_t limit = 0) {
    if (limit == 0) limit = max_body_bytes_;
    if (head.content_length && *head.content_length > limit) {
      auto too_large = on_route(r.route, error_reply(413, "body_too_large", "request body exceeds the limit of " +
                                                                                std::to_string(limit) + " bytes"));
      return head_route{std::move(too_large), limit, true};
    }
    return head_route{std::move(r), limit, false};
  };
  // A route that needs a key, when the server has keys: 401 from the head, before any body is
  // read or any work is done; with one, the key's name goes with the request.
  auto guarded = [&](head_route routed) {
    if (!view_.authenticate) return routed;
    auto who = view_.authenticate(head.authorization);
    if (auto* name = std::get_if<std::string>(&who)) {
      routed.client = std::move(*name);
      return routed;
    }
    const bool missing = std::get<auth_failure>(who) == auth_failure::missing;
    auto r = error_reply(401, "unauthorized",
                         missing ? "this route needs an API key: send 'Authorization: Bearer <key>'"
                                 : "the API key is not valid");
    r.headers.emplace_back("WWW-Authenticate", missing ? R"(Bearer realm="crunch")"
                                                       : R"(Bearer realm="crunch", error="invalid_token")");
    r.route = std::holds_alternative<reply>(routed.next) ? std::get<reply>(routed.next).route
                                                         : std::string_view(std::get<route_match>(routed.next).route->name);
    return head_route{std::move(r), routed.body_limit, true};
  };
  auto observability = [&](head_route routed) { return protect_metrics_ ? guarded(std::move(routed)) : routed; };

  if (target.empty() || target.front() != '/') {
    return answer(error_reply(400, "invalid_target", "request target must be an absolute path"));
  }
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const std::string_view query = question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);
  const bool cheap_method = head.method == "GET" || head.method == "HEAD";

  if (path == "/healthz") {
    if (!cheap_method) return answer(on_route("healthz", method_not_allowed(cheap_methods)));
    return answer(reply{200, R"({"status":"ok"})", "application/json", {}, "healthz"});
  }
  if (path == "/readyz") {
    if (!cheap_method) return answer(on_route("readyz", method_not_allowed(cheap_methods)));
    if (view_.draining()) {
      return answer(on_route("readyz", unavailable("draining", "server is shutting down", std::chrono::seconds(1))));
    }
    return answer(reply{200, R"({"status":"ready"})", "application/json", {}, "readyz"});
  }
  if (path == "/metrics") {
    if (!cheap_method) return answer(on_route("metrics", method_not_allowed(cheap_methods)));
    // Checked before the text is rendered: a refused scrape costs nothing.
    if (protect_metrics_ && view_.authenticate) {
      auto refused = guarded(answer(reply{200, {}, "text/plain", {}, "metrics"}));
      if (refused.refuse_body) return refused;
    }
    return answer(reply{200, view_.metrics_text(), "text/plain; version=0.0.4; charset=utf-8", {}, "metrics"});
  }
  if (path == "/openapi.json") {
    if (!cheap_method) return answer(on_route("openapi", method_not_allowed(cheap_methods)));
    return answer(reply{200, openapi_, "application/json", {}, "openapi"});
  }
  if (path == "/v1/flows") {
    if (!cheap_method) return answer(on_route("flows", method_not_allowed(cheap_methods)));
    auto routed = guarded(answer(reply{200, {}, "application/json", {}, "flows"}));
    if (!routed.refuse_body) {
      auto& r = std::get<reply>(routed.next);
      r.body = view_.flows_document ? view_.flows_document() : std::string("{}");
      r.headers.emplace_back("Cache-Control", "no-store");
    }
    return routed;
  }
  if (path == "/v1/kinds") {
    if (!cheap_method) return answer(on_route("kinds", method_not_allowed(cheap_methods)));
    return answer(reply{200, kinds_document(), "application/json", {}, "kinds"});
  }

  if (ui_) {
    for (const auto& f : ui_files) {
      if (path != f.path) continue;
      if (!cheap_method) return answer(on_route("ui", method_not_allowed(cheap_methods)));
      return answer(ui_reply(f));
    }
    if (path == "/v1/stats") {
      if (!cheap_method) return answer(on_route("stats", method_not_allowed(cheap_methods)));
      auto r = reply{200, view_.live_snapshot(), "application/json", {}, "stats"};
      r.headers.emplace_back("Cache-Control", "no-store");
      return observability(answer(std::move(r)));
    }
    if (path == "/v1/events") {
      if (head.method != "GET") return answer(on_route("events", method_not_allowed("GET")));
      auto routed = observability(answer(reply{200, {}, "text/event-stream", {}, "events"}));
      routed.event_stream = !routed.refuse_body;
      return routed;
    }
  }

  std::string allowed;                   // methods of the routes whose path matches
  std::string_view matched = "unmatched";  // their metrics label
  for (const auto& [name, kind] : jobs_.kinds()) {
    for (const auto& r : kind.routes) {
      const auto segment = match_path(r.path, path);
      if (!segment) continue;
      if (head.method != r.method) {
        allowed += (allowed.empty() ? "" : ", ") + r.method;
        matched = r.name;
        continue;
      }
      const auto limit = body_limit(r);
      auto routed = head_route{route_match{&kind, &r, *segment, query}, limit, false, r.sensitive};
      if (head.content_length && *head.content_length > limit) {
        routed = answer(on_route(r.name, reply{}), limit);
      } else if (r.json_body && !names_media_type(head.content_type, "application/json")) {
        routed.next = on_route(r.name, error_reply(415, "unsupported_media_type", "Content-Type must be application/json"));
      } else if (r.file_body() && !one_of_media_types(r.media_types, head.content_type)) {
        std::string types;
        for (const auto& t : r.media_types) types += (types.empty() ? "" : ", ") + t;
        routed.next = on_route(r.name, error_reply(415, "unsupported_media_type", "Content-Type must be one of " + types));
      }
      routed.sensitive = r.sensitive;
      routed.file_body = r.file_body();
      routed.working_memory = r.working_memory_hint;
      // The key first: a client without one learns nothing of the route's limits.
      auto checked = guarded(head_route{route_match{&kind, &r, *segment, query}, limit, false});
      if (checked.refuse_body) return checked;
      routed.client = std::move(checked.client);
      return routed;
    }
  }
  if (!allowed.empty()) return answer(on_route(matched, method_not_allowed(allowed)));
  return answer(error_reply(404, "not_found", "no route for this path"));
}

std::variant<reply, job_request> router::prepare(const route_match& match, std::string_view body, job_input input) const {
  const auto& r = *match.route;
  auto timeout = default_timeout_;
  if (const auto text = query_value(match.query, "timeout_ms")) {
    const auto ms = parse_decimal(*text, 1, static_cast<std::uint64_t>(max_timeout_.count()));
    if (!ms) {
      return on_route(r.name, error_reply(400, "invalid_argument",
                                          "timeout_ms must be an integer in 1.." + std::to_string(max_timeout_.count())));
    }
    timeout = std::chrono::milliseconds(*ms);
  }
  auto args = read_arguments(r.parameters, match.path_segment, match.query,
                             r.json_body ? std::optional<std::string_view>(body) : std::nullopt);
  if (auto* invalid = std::get_if<invalid_argument>(&args)) {
    return on_route(r.name, error_reply(400, invalid->code, invalid->message));
  }
  const std::uint64_t body_bytes = input.body.size();
  auto prepared = r.prepare(std::get<job_arguments>(args), input);
  if (auto* invalid = std::get_if<invalid_argument>(&prepared)) {
    return on_route(r.name, error_reply(400, invalid->code, invalid->message));
  }
  auto& job = std::get<prepared_job>(prepared);
  // A kept body's lease holds the body and the route's working-memory hint: what the job needs
  // of it is kept, the rest given back; what it needs beyond it is taken when it is admitted.
  std::uint64_t memory = job.memory_bytes;
  if (input.body_memory) {
    const auto total = body_bytes + job.memory_bytes;
    const auto held = input.body_memory.bytes();
    if (held >= total) input.body_memory.shrink_to(total);
    memory = held >= total ? 0 : total - held;
  }
  return job_request{match.kind->name, r.name, std::move(job.run), job.cost_units, memory, timeout,
                     std::move(input.body_memory), {}, match.kind->tiny_jobs_run_inline};
}

std::vector<std::string> router::route_names() const {
  std::vector<std::string> names{"healthz", "readyz", "metrics", "kinds", "flows", "openapi", "unmatched"};
  if (ui_) names.insert(names.end(), {"ui", "stats", "events"});
  for (const auto& [name, kind] : jobs_.kinds()) {
    for (const auto& r : kind.routes) names.push_back(r.name);
  }
  return names;
}

std::string router::kinds_document() const {
  nlohmann::json kinds = nlohmann::json::array();
  for (const auto& [name, kind] : jobs_.kinds()) {
    nlohmann::json routes = nlohmann::json::array();
    for (const auto& r : kind.routes) {
      nlohmann::json parameters = nlohmann::json::array();
      for (const auto& p : r.parameters) parameters.push_back(describe(p));
      parameters.push_back({{"name", "timeout_ms"},
                            {"in", "query"},
                            {"type", "integer"},
                            {"required", false},
                            {"minimum", 1},
                            {"maximum", max_timeout_.count()},
                            {"default", default_timeout_.count()},
                            {"description", "the job's deadline in milliseconds, from when its request was read"}});
      nlohmann::json route = {{"name", r.name},
                              {"method", r.method},
                              {"path", r.path},
                              {"summary", r.summary},
                              {"parameters", std::move(parameters)}};
      if (r.json_body) {
        route["content_type"] = "application/json";
        route["max_body_bytes"] = body_limit(r);
      } else if (r.file_body()) {
        route["content_types"] = r.media_types;
        route["max_body_bytes"] = body_limit(r);
      }
      routes.push_back(std::move(route));
    }
    nlohmann::json cost = {{"unit", kind.cost_unit}, {"model", kind.cost_model}};
    const auto rate = view_.rate ? view_.rate(name) : std::nullopt;
    cost["ns_per_unit"] = rate ? nlohmann::json(*rate) : nlohmann::json(nullptr);
    kinds.push_back({{"name", name}, {"cost", std::move(cost)}, {"routes", std::move(routes)}});
  }
  const nlohmann::json doc = {{"kinds", std::move(kinds)}, {"memory_budget_bytes", memory_budget_}};
  return doc.dump();
}

}  // namespace crunch
