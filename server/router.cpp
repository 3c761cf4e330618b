#include "server/router.hpp"

#include "server/decimal.hpp"
#include "server/embedded.hpp"
#include "server/media_type.hpp"
#include "server/openapi.hpp"

#include <algorithm>
#include <cctype>

namespace crunch {

namespace {

constexpr std::string_view cheap_methods = "GET, HEAD";
constexpr std::string_view job_methods = "GET, HEAD, DELETE";
constexpr std::string_view jobs_prefix = "/v1/jobs/";

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

// The live view's page and files, built into the binary, in the order of their rows in
// router::fixed_routes (answer_ui<i>). The page may load only what crunch serves and talk only to
// crunch: nothing leaves for a CDN, and an injected script could not either.
struct ui_file {
  const std::string_view* bytes;
  std::string_view content_type;
};
const ui_file ui_files[] = {
    {&live_page, "text/html; charset=utf-8"},
    {&live_script, "text/javascript; charset=utf-8"},
    {&live_style, "text/css; charset=utf-8"},
    {&uplot_script, "text/javascript; charset=utf-8"},
    {&uplot_style, "text/css; charset=utf-8"},
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

// The route's first example that succeeds, sent once: the live view starts its form from it.
const route_example* form_example(const job_route& r) {
  for (const auto& e : r.examples) {
    if (e.status == 200 && e.repeat == 1) return &e;
  }
  return nullptr;
}

// Whether a form's text box can hold `body`.
bool is_text(std::string_view body) {
  return std::all_of(body.begin(), body.end(), [](unsigned char c) { return c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7f); });
}

// Who may ask for a fixed route when the server has API keys.
enum class guard {
  open,           // anyone
  key,            // a key
  observability,  // a key with --protect-metrics, else anyone
};

bool allows(std::string_view allow, std::string_view method) {
  for (std::size_t at = 0; at < allow.size();) {
    const auto comma = allow.find(',', at);
    const auto m = allow.substr(at, comma == std::string_view::npos ? std::string_view::npos : comma - at);
    if (m == method) return true;
    if (comma == std::string_view::npos) break;
    at = comma + 2;  // ", "
  }
  return false;
}

}  // namespace

// The routes answered on the I/O thread from the server's state, without a job or a body: one
// row each, in the order they are tried. A job route is never here: the kinds' declarations are
// the rest of the table.
struct router::fixed_route {
  std::string_view path;
  std::string_view name;   // metrics label
  std::string_view allow;  // the methods it takes, as Allow says them
  guard needs;
  bool live_view;          // absent with --ui=false
  bool event_stream;       // the session streams after the 200
  reply (*answer)(const router&);
};

namespace {

reply json_ok(std::string body, std::string_view name) { return reply{200, std::move(body), "application/json", {}, name}; }

reply no_store(reply r) {
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

}  // namespace

reply router::answer_healthz(const router&) { return json_ok(R"({"status":"ok"})", "healthz"); }

reply router::answer_readyz(const router& r) {
  if (r.view_.draining()) return on_route("readyz", unavailable("draining", "server is shutting down", std::chrono::seconds(1)));
  return json_ok(R"({"status":"ready"})", "readyz");
}

reply router::answer_metrics(const router& r) {
  return reply{200, r.view_.metrics_text(), "text/plain; version=0.0.4; charset=utf-8", {}, "metrics"};
}

reply router::answer_openapi(const router& r) { return json_ok(r.openapi_, "openapi"); }

reply router::answer_flows(const router& r) {
  return no_store(json_ok(r.view_.flows_document ? r.view_.flows_document() : std::string("{}"), "flows"));
}

reply router::answer_kinds(const router& r) { return json_ok(r.kinds_document(), "kinds"); }

reply router::answer_stats(const router& r) { return no_store(json_ok(r.view_.live_snapshot(), "stats")); }

reply router::answer_events(const router&) { return reply{200, {}, "text/event-stream", {}, "events"}; }

template <std::size_t file>
reply router::answer_ui(const router&) {
  return ui_reply(ui_files[file]);
}

const router::fixed_route router::fixed_routes[] = {
    {"/healthz", "healthz", cheap_methods, guard::open, false, false, &router::answer_healthz},
    {"/readyz", "readyz", cheap_methods, guard::open, false, false, &router::answer_readyz},
    {"/metrics", "metrics", cheap_methods, guard::observability, false, false, &router::answer_metrics},
    {"/openapi.json", "openapi", cheap_methods, guard::open, false, false, &router::answer_openapi},
    {"/v1/flows", "flows", cheap_methods, guard::key, false, false, &router::answer_flows},
    {"/v1/kinds", "kinds", cheap_methods, guard::open, false, false, &router::answer_kinds},
    {"/", "ui", cheap_methods, guard::open, true, false, &router::answer_ui<0>},
    {"/ui/live.js", "ui", cheap_methods, guard::open, true, false, &router::answer_ui<1>},
    {"/ui/live.css", "ui", cheap_methods, guard::open, true, false, &router::answer_ui<2>},
    {"/ui/uPlot.iife.min.js", "ui", cheap_methods, guard::open, true, false, &router::answer_ui<3>},
    {"/ui/uPlot.min.css", "ui", cheap_methods, guard::open, true, false, &router::answer_ui<4>},
    {"/v1/stats", "stats", cheap_methods, guard::observability, true, false, &router::answer_stats},
    {"/v1/events", "events", "GET", guard::observability, true, true, &router::answer_events},
};

reply error_reply(unsigned status, std::string_view code, std::string_view message) {
  return {status, error_body(code, message), "application/json", {}};
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
      async_max_timeout_(cfg.async_max_timeout),
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

namespace {

// The path and query of a target; the absolute form (RFC 9112 §3.2.2), which servers must
// accept, is routed on its path.
std::string_view origin_form(std::string_view target) {
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (target.size() > scheme.size() && target.substr(0, scheme.size()) == scheme) {
      const auto path = target.find_first_of("/?", scheme.size());
      return path == std::string_view::npos ? std::string_view("/") : target.substr(path);
    }
  }
  return target;
}

}  // namespace

head_route router::sized(const request_head& head, reply r, std::size_t limit) const {
  if (limit == 0) limit = max_body_bytes_;
  if (head.content_length && *head.content_length > limit) {
    auto too_large = on_route(r.route, error_reply(413, "body_too_large", "request body exceeds the limit of " +
                                                                              std::to_string(limit) + " bytes"));
    return head_route{std::move(too_large), limit, true};
  }
  return head_route{std::move(r), limit, false};
}

head_route router::guarded(const request_head& head, head_route routed) const {
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
}

std::optional<head_route> router::route_fixed(const request_head& head, std::string_view path) const {
  for (const auto& f : fixed_routes) {
    if (path != f.path || (f.live_view && !ui_)) continue;
    if (!allows(f.allow, head.method)) return sized(head, on_route(f.name, method_not_allowed(f.allow)));
    // The key is checked before anything is rendered: a refused scrape costs nothing.
    std::string client;
    if (f.needs == guard::key || (f.needs == guard::observability && protect_metrics_)) {
      auto checked = guarded(head, sized(head, reply{200, {}, "application/json", {}, f.name}));
      if (checked.refuse_body) return checked;
      client = std::move(checked.client);
    }
    auto routed = sized(head, f.answer(*this));
    routed.event_stream = f.event_stream && !routed.refuse_body;
    routed.client = std::move(client);
    return routed;
  }
  return std::nullopt;
}

std::optional<head_route> router::route_stored_job(const request_head& head, std::string_view path) const {
  if (!path.starts_with(jobs_prefix)) return std::nullopt;
  auto id = path.substr(jobs_prefix.size());
  const bool result = id.ends_with("/result");
  if (result) id.remove_suffix(std::string_view("/result").size());
  if (id.empty() || id.find('/') != std::string_view::npos) return std::nullopt;
  const std::string_view name = result ? "job_result" : "job_status";
  const std::string_view allow = result ? cheap_methods : job_methods;
  if (!allows(allow, head.method)) return sized(head, on_route(name, method_not_allowed(allow)));
  const bool cancel = head.method == "DELETE";
  auto routed = sized(head, reply{200, {}, "application/json", {}, cancel ? "job_cancel" : name});
  if (routed.refuse_body) return routed;
  routed.job = job_lookup{result   ? job_lookup::action::result
                          : cancel ? job_lookup::action::cancel
                                   : job_lookup::action::status,
                          std::string(id)};
  // Without keys every job is anyone's who has its id; with keys, its key's alone.
  return guarded(head, std::move(routed));
}

head_route router::route_job(const request_head& head, const job_kind& kind, const job_route& r,
                             std::string_view segment, std::string_view query) const {
  const auto limit = body_limit(r);
  auto routed = head_route{route_match{&kind, &r, segment, query}, limit, false, r.sensitive};
  if (head.content_length && *head.content_length > limit) {
    routed = sized(head, on_route(r.name, reply{}), limit);
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
  auto checked = guarded(head, head_route{route_match{&kind, &r, segment, query}, limit, false});
  if (checked.refuse_body) return checked;
  routed.client = std::move(checked.client);
  return routed;
}

head_route router::route(const request_head& head) const {
  const auto target = origin_form(head.target);
  if (target.empty() || target.front() != '/') {
    return sized(head, error_reply(400, "invalid_target", "request target must be an absolute path"));
  }
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const std::string_view query = question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);
  if (auto fixed = route_fixed(head, path)) return std::move(*fixed);
  if (auto stored = route_stored_job(head, path)) return std::move(*stored);

  std::string allowed;                   // methods of the routes whose path matches
  std::string_view matched = "unmatched";  // their metrics label
  for (const auto& [name, kind] : jobs_.kinds()) {
    for (const auto& r : kind.routes) {
      const auto segment = match_path(r.path, path);
      if (!segment) continue;
      if (head.method == r.method) return route_job(head, kind, r, *segment, query);
      allowed += (allowed.empty() ? "" : ", ") + r.method;
      matched = r.name;
    }
  }
  if (!allowed.empty()) return sized(head, on_route(matched, method_not_allowed(allowed)));
  return sized(head, error_reply(404, "not_found", "no route for this path"));
}

std::optional<route_match> router::match_job(std::string_view method, std::string_view target) const {
  const auto question = target.find('?');
  const auto path = target.substr(0, question);
  const auto query = question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);
  for (const auto& [name, kind] : jobs_.kinds()) {
    for (const auto& r : kind.routes) {
      if (r.method != method) continue;
      if (const auto segment = match_path(r.path, path)) return route_match{&kind, &r, *segment, query};
    }
  }
  return std::nullopt;
}

std::variant<reply, job_request> router::prepare(const route_match& match, std::string_view body, job_input input,
                                                 bool async) const {
  const auto& r = *match.route;
  auto timeout = async ? async_max_timeout_ : default_timeout_;
  const auto longest = async ? async_max_timeout_ : max_timeout_;
  if (const auto twice = repeated_query_key(match.query)) {
    return on_route(r.name, error_reply(400, "invalid_argument",
                                        std::string(*twice) + " is given more than once in the query"));
  }
  if (const auto text = query_value(match.query, "timeout_ms")) {
    const auto ms = parse_decimal(*text, 1, static_cast<std::uint64_t>(longest.count()));
    if (!ms) {
      return on_route(r.name, error_reply(400, "invalid_argument",
                                          "timeout_ms must be an integer in 1.." + std::to_string(longest.count()) +
                                              (async ? " for an asynchronous job" : "")));
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
  if (input.body_memory && async) {
    input.body_memory.shrink_to(body_bytes);
  } else if (input.body_memory) {
    const auto total = body_bytes + job.memory_bytes;
    const auto held = input.body_memory.bytes();
    if (held >= total) input.body_memory.shrink_to(total);
    memory = held >= total ? 0 : total - held;
  }
  return job_request{match.kind->name, r.name, std::move(job.run), job.cost_units, memory, timeout,
                     std::move(input.body_memory), {}, match.kind->tiny_jobs_run_inline};
}

std::vector<std::string> router::route_names() const {
  std::vector<std::string> names{"unmatched"};
  for (const auto& f : fixed_routes) {
    if ((!f.live_view || ui_) && std::find(names.begin(), names.end(), f.name) == names.end()) names.emplace_back(f.name);
  }
  for (const auto& name : {"job_status", "job_result", "job_cancel"}) names.emplace_back(name);
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
        if (r.sensitive) route["sensitive"] = true;
      } else if (r.file_body()) {
        route["content_types"] = r.media_types;
        route["max_body_bytes"] = body_limit(r);
      }
      if (const auto* e = form_example(r)) {
        route["example"] = {{"target", e->target}};
        if (!e->body.empty() && is_text(e->body)) route["example"]["body"] = e->body;
        if (!e->content_type.empty()) route["example"]["content_type"] = e->content_type;
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
