#include "work_kind.hpp"

#include <crunch/cpu_pacer.hpp>

#include <algorithm>
#include <cctype>
#include <string>
#include <utility>

namespace crunch::testing {

void job_probe::note_started() {
  std::lock_guard lock(mutex_);
  ++started_;
  changed_.notify_all();
}

void job_probe::note_stopped() {
  std::lock_guard lock(mutex_);
  ++stopped_;
  changed_.notify_all();
}

bool job_probe::wait_started(int n, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return started_ >= n; });
}

bool job_probe::wait_stopped(int n, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return stopped_ >= n; });
}

int job_probe::started() {
  std::lock_guard lock(mutex_);
  return started_;
}

int job_probe::stopped() {
  std::lock_guard lock(mutex_);
  return stopped_;
}

void job_probe::open_gate() {
  std::lock_guard lock(mutex_);
  open_ = true;
  changed_.notify_all();
}

bool job_probe::wait_gate(const std::stop_token& stop) {
  std::unique_lock lock(mutex_);
  return changed_.wait(lock, stop, [this] { return open_; });
}

namespace {

using clock = std::chrono::steady_clock;

// Burns CPU for `ms`, looking at its token (and the pacer) every few microseconds; false if told
// to stop first.
bool burn(std::uint64_t ms, const std::stop_token& stop) {
  const auto end = clock::now() + std::chrono::milliseconds(ms);
  volatile std::uint64_t sink = 0;
  while (clock::now() < end) {
    for (int i = 0; i < 1000; ++i) sink = sink + 1;
    if (job_checkpoint(stop)) return false;
  }
  return true;
}

struct work_order {
  std::uint64_t ms = 0;
  bool held = false;
};

// The job: waits for the gate if held, burns, answers `answer`.
job_function worker(std::shared_ptr<job_probe> probe, work_order order, job_output answer) {
  return [probe = std::move(probe), order, answer = std::move(answer)](std::stop_token stop) -> std::optional<job_output> {
    probe->note_started();
    if ((order.held && !probe->wait_gate(stop)) || !burn(order.ms, stop)) {
      probe->note_stopped();
      return std::nullopt;
    }
    return answer;
  };
}

// The job with its cost (its milliseconds) and memory, for admission.
prepared_job prepared(std::shared_ptr<job_probe> probe, work_order order, job_output answer, std::uint64_t memory = 0) {
  return prepared_job{worker(std::move(probe), order, std::move(answer)), static_cast<double>(order.ms), memory};
}

}  // namespace

job_function burning(std::shared_ptr<job_probe> probe, std::uint64_t ms) {
  return worker(std::move(probe), {ms, false}, job_output::json({{"ms", ms}}));
}

namespace {

job_route burn_route(std::shared_ptr<job_probe> probe, std::uint64_t max_ms) {
  job_route route;
  route.name = "work";
  route.method = "GET";
  route.path = "/work/{ms}";
  route.summary = "burns CPU for {ms} milliseconds: the tests' load and clock";
  route.parameters = {
      {"ms", parameter_source::path, parameter_type::integer, 0, max_ms, std::nullopt, "milliseconds of CPU, its cost"},
      {"mib", parameter_source::query, parameter_type::integer, 0, 4096, 0, "memory it holds, in MiB"},
      {"held", parameter_source::query, parameter_type::integer, 0, 1, 0, "1: wait for the test's gate first"}};
  route.answer = {"What it did.",
                  {{"type", "object"},
                   {"required", {"ms"}},
                   {"properties", {{"ms", {{"type", "integer"}, {"minimum", 0}}}}}}};
  route.examples = {{"a millisecond", "/work/1"},
                    {"an hour, stopped at its 50 ms deadline", "/work/3600000?timeout_ms=50", {}, 1, {}, 504}};
  route.prepare = [probe = std::move(probe)](const job_arguments& args,
                                             job_input&) -> std::variant<prepared_job, invalid_argument> {
    const work_order order{args.integer("ms"), args.integer("held") == 1};
    return prepared(probe, order, job_output::json({{"ms", order.ms}}), args.integer("mib") << 20);
  };
  return route;
}

// The literal of the media type `content_type` names (the request's text does not outlive it):
// its type before any parameter, blanks around and case ignored.
std::string_view answered_type(std::string_view content_type) {
  auto type = content_type.substr(0, content_type.find(';'));
  while (!type.empty() && (type.front() == ' ' || type.front() == '\t')) type.remove_prefix(1);
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
  for (const std::string_view known : {"text/plain", "application/json"}) {
    if (std::equal(type.begin(), type.end(), known.begin(), known.end(),
                   [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; })) {
      return known;
    }
  }
  return "application/octet-stream";
}

job_route echo_route(std::shared_ptr<job_probe> probe, std::uint64_t max_ms) {
  job_route route;
  route.name = "work_echo";
  route.method = "POST";
  route.path = "/v1/work/echo";
  route.summary = "answers its body as it came, after {ms} milliseconds of CPU";
  route.media_types = {"text/plain", "application/octet-stream", "application/json"};
  route.max_body_bytes = 1 << 20;
  route.parameters = {{"ms", parameter_source::query, parameter_type::integer, 0, max_ms, 0, "milliseconds of CPU"}};
  route.answer = {"The body.", nullptr, {"text/plain", "application/octet-stream", "application/json"}};
  route.examples = {{"hello", "/v1/work/echo", "hello", 1, "text/plain"}};
  route.prepare = [probe = std::move(probe)](const job_arguments& args,
                                             job_input& input) -> std::variant<prepared_job, invalid_argument> {
    job_output answer{std::move(input.body), answered_type(input.content_type)};
    return prepared(probe, {args.integer("ms"), false}, std::move(answer));
  };
  return route;
}

job_route json_route(std::shared_ptr<job_probe> probe, std::uint64_t max_ms) {
  job_route route;
  route.name = "work_note";
  route.method = "POST";
  route.path = "/v1/work/note";
  route.summary = "answers its note after {ms} milliseconds of CPU; the note is a secret";
  route.json_body = true;
  route.sensitive = true;
  route.max_body_bytes = 4096;
  route.parameters = {
      {"note", parameter_source::body, parameter_type::string, 1, 1024, std::nullopt, "a secret, answered back"},
      {"ms", parameter_source::body, parameter_type::integer, 0, max_ms, 0, "milliseconds of CPU"},
      {"tag", parameter_source::body, parameter_type::string, 1, 16, std::nullopt, "one of a few words",
       {"red", "green"}, true}};
  route.answer = {"The note.",
                  {{"type", "object"},
                   {"required", {"note"}},
                   {"properties", {{"note", {{"type", "string"}}}}}}};
  route.examples = {{"a note", "/v1/work/note", R"({"note":"hello"})"}};
  route.prepare = [probe = std::move(probe)](const job_arguments& args,
                                             job_input&) -> std::variant<prepared_job, invalid_argument> {
    auto answer = job_output::json({{"note", std::string(args.string("note").view())}});
    return prepared(probe, {args.integer("ms"), false}, std::move(answer));
  };
  return route;
}

job_kind build_work(std::shared_ptr<job_probe> probe, std::uint64_t max_ms) {
  job_kind kind;
  kind.name = "work";
  kind.cost_unit = "ms";
  kind.cost_model = "ms";
  kind.calibrate = [] { return 1e6; };  // one unit is one millisecond, exactly
  kind.tiny_jobs_run_inline = true;     // /work/0 is nothing at all
  kind.routes.push_back(burn_route(probe, max_ms));
  kind.routes.push_back(echo_route(probe, max_ms));
  kind.routes.push_back(json_route(std::move(probe), max_ms));
  return kind;
}

}  // namespace

kind_declaration work_kind(std::shared_ptr<job_probe> probe) {
  if (!probe) probe = std::make_shared<job_probe>();
  kind_declaration kind;
  kind.name = "work";
  kind.settings = {{"work-max-ms", "MS", "the longest {ms} a work job takes (default 3600000)", 3'600'000, 0,
                    86'400'000}};
  kind.check = [](const config& cfg) -> std::optional<std::string> {
    if (cfg.setting("work-max-ms") == 0) return "invalid --work-max-ms: 0 leaves no work";
    return std::nullopt;
  };
  kind.build = [probe](const config& cfg) { return build_work(probe, cfg.setting("work-max-ms")); };
  return kind;
}

}  // namespace crunch::testing
