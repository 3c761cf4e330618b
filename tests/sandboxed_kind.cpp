#include "sandboxed_kind.hpp"

#include "work_kind.hpp"

#include <crunch/isolation.hpp>

#include <chrono>
#include <csignal>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

namespace crunch::testing {

namespace {

using clock = std::chrono::steady_clock;

// The parameters crunchd hands the helper: "MS MIB TAKE".
struct order {
  std::uint64_t ms = 0;
  std::uint64_t mib = 0;
  std::uint64_t take = 0;
};

order read_order(std::string_view params) {
  order o;
  const std::string text(params);
  std::sscanf(text.c_str(), "%lu %lu %lu", &o.ms, &o.mib, &o.take);
  return o;
}

isolated_output text(std::string body) { return {200, std::move(body)}; }

// A real SIGSEGV that no sanitizer catches first (UBSan's null check would abort, and its report
// would make system calls a helper's sandbox refuses): a write to a page mapped without access.
void fault() {
  void* page = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  *static_cast<volatile char*>(page) = 1;
}

kind_isolation sandboxed_functions() {
  kind_isolation isolation;
  auto& f = isolation.functions;
  f["echo"] = [](std::string_view, std::string_view body, std::stop_token) -> std::optional<isolated_output> {
    return text(std::string(body));
  };
  f["pid"] = [](std::string_view, std::string_view, std::stop_token) -> std::optional<isolated_output> {
    return text(std::to_string(getpid()));
  };
  f["sleep"] = [](std::string_view params, std::string_view, std::stop_token stop) -> std::optional<isolated_output> {
    const auto until = clock::now() + std::chrono::milliseconds(read_order(params).ms);
    while (clock::now() < until) {
      if (stop.stop_requested()) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return text("slept");
  };
  f["spin"] = [](std::string_view params, std::string_view, std::stop_token) -> std::optional<isolated_output> {
    const auto until = clock::now() + std::chrono::milliseconds(read_order(params).ms);
    volatile std::uint64_t sum = 0;
    while (clock::now() < until) {
      for (int i = 0; i < 10000; ++i) sum = sum + static_cast<std::uint64_t>(i);
    }
    return text("spun");
  };
  f["crash"] = [](std::string_view, std::string_view, std::stop_token) -> std::optional<isolated_output> {
    fault();
    return text("unreachable");
  };
  f["open"] = [](std::string_view, std::string_view, std::stop_token) -> std::optional<isolated_output> {
    const int fd = ::open("/etc/hostname", O_RDONLY);
    return text("opened " + std::to_string(fd));
  };
  f["socket"] = [](std::string_view, std::string_view, std::stop_token) -> std::optional<isolated_output> {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    return text("socket " + std::to_string(fd));
  };
  f["fork"] = [](std::string_view, std::string_view, std::stop_token) -> std::optional<isolated_output> {
    const pid_t child = ::fork();
    if (child == 0) _exit(0);
    return text("forked " + std::to_string(child));
  };
  f["allocate"] = [](std::string_view params, std::string_view, std::stop_token) -> std::optional<isolated_output> {
    const auto o = read_order(params);
    std::vector<std::vector<char>> held;
    for (std::uint64_t i = 0; i < o.take; ++i) held.emplace_back(std::size_t{1} << 20, 'x');
    return text("allocated " + std::to_string(held.size()) + " MiB");
  };
  return isolation;
}

job_kind build_sandboxed() {
  job_route route;
  route.name = "sandboxed";
  route.method = "POST";
  route.path = "/sandboxed/{function}";
  route.summary = "runs a test function in a helper process";
  route.media_types = {"application/octet-stream"};
  route.max_body_bytes = 64 << 20;
  route.parameters = {
      {"function", parameter_source::path, parameter_type::string, 1, 16, std::nullopt, "what the helper does",
       {"echo", "pid", "sleep", "spin", "crash", "open", "socket", "fork", "allocate"}},
      {"ms", parameter_source::query, parameter_type::integer, 0, 600'000, 0, "its cost, and how long it sleeps or spins"},
      {"mib", parameter_source::query, parameter_type::integer, 0, 4096, 0, "its memory model, in MiB"},
      {"take", parameter_source::query, parameter_type::integer, 0, 4096, 0, "what allocate takes, in MiB"},
  };
  route.answer = {"What the function answered.", nullptr, {"application/octet-stream"}};
  route.examples = {{"echo", "/sandboxed/echo", "hello", 1, "application/octet-stream"}};
  route.prepare = [](const job_arguments& args, job_input& input) -> std::variant<prepared_job, invalid_argument> {
    const std::string function(args.string("function").view());
    const auto ms = args.integer("ms");
    const auto mib = args.integer("mib");
    const auto take = args.integer("take");
    const std::uint64_t memory = mib << 20;
    auto run = [function, body = std::move(input.body), ms, mib, take, memory](std::stop_token stop) -> std::optional<job_output> {
      const std::string params = std::to_string(ms) + " " + std::to_string(mib) + " " + std::to_string(take);
      auto out = run_isolated("sandboxed", function, params, body, {memory}, std::move(stop));
      if (!out) return std::nullopt;
      return job_output{std::move(out->body), "application/octet-stream", out->status};
    };
    return prepared_job{std::move(run), static_cast<double>(ms), memory};
  };
  job_kind kind;
  kind.name = "sandboxed";
  kind.cost_unit = "ms";
  kind.cost_model = "ms";
  kind.calibrate = [] { return 1e6; };  // a unit is a millisecond
  kind.routes.push_back(std::move(route));
  return kind;
}

job_kind build_crashing() {
  job_route route;
  route.name = "crashing";
  route.method = "GET";
  route.path = "/crashing/{where}";
  route.summary = "a job that ends crunchd with a fatal signal, for its report";
  route.parameters = {{"where", parameter_source::path, parameter_type::string, 1, 16, std::nullopt, "where",
                       {"worker"}}};
  route.answer = {"Nothing: the process ends.", {{"type", "object"}}};
  route.examples = {};
  route.prepare = [](const job_arguments&, job_input&) -> std::variant<prepared_job, invalid_argument> {
    auto run = [](std::stop_token) -> std::optional<job_output> {
      fault();
      return job_output::json({});
    };
    return prepared_job{std::move(run), 0, 0};
  };
  job_kind kind;
  kind.name = "crashing";
  kind.routes.push_back(std::move(route));
  return kind;
}

}  // namespace

kind_declaration sandboxed_kind() {
  kind_declaration kind{"sandboxed", {}, {}, [](const config&) { return build_sandboxed(); }};
  kind.isolation = sandboxed_functions();
  return kind;
}

kind_declaration crashing_kind() { return {"crashing", {}, {}, [](const config&) { return build_crashing(); }}; }

std::vector<kind_declaration> kinds_for_tests() {
  auto kinds = builtin_kinds();
  kinds.push_back(sandboxed_kind());
  kinds.push_back(crashing_kind());
  kinds.push_back(work_kind());
  return kinds;
}

}  // namespace crunch::testing
