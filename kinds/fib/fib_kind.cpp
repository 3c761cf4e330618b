// The fib kind's declaration: GET /fib/{n} over fib.cpp.
#include "fib.hpp"

#include <crunch/kinds.hpp>

namespace crunch {

namespace {

job_kind build_fib() {
  job_route route;
  route.name = "fib";
  route.method = "GET";
  route.path = "/fib/{n}";
  route.summary = "F(n) by naive recursion: exponential CPU work for a tiny input";
  route.parameters = {{"n", parameter_source::path, parameter_type::integer, 0, fib_max_n, std::nullopt,
                       "which Fibonacci number; F(92) is the largest that fits in 64 bits"}};
  route.answer = {"The value, exact: `result_string` for clients whose numbers are doubles (above 2^53).",
                  {{"type", "object"},
                   {"additionalProperties", false},
                   {"required", {"n", "result", "result_string"}},
                   {"properties",
                    {{"n", {{"type", "integer"}, {"minimum", 0}, {"maximum", fib_max_n}}},
                     {"result", {{"type", "integer"}, {"minimum", 0}}},
                     {"result_string", {{"type", "string"}, {"pattern", "^[0-9]+$"}}}}}}};
  route.examples = {{"F(30)", "/fib/30"},
                    {"F(70): hours of work, stopped at its 50 ms deadline", "/fib/70?timeout_ms=50", {}, 1, {}, 504}};
  route.prepare = [](const job_arguments& args, job_input&) -> std::variant<prepared_job, invalid_argument> {
    const auto n = static_cast<unsigned>(args.integer("n"));
    auto run = [n](std::stop_token stop) -> std::optional<job_output> {
      const auto result = fib(n, std::move(stop));
      if (!result) return std::nullopt;
      // Above 2^53 JavaScript numbers lose precision: result_string is exact everywhere.
      return job_output::json({{"n", n}, {"result", *result}, {"result_string", std::to_string(*result)}});
    };
    // The recursion's own stack is all the memory it holds.
    return prepared_job{run, static_cast<double>(fib_calls(n)), 0};
  };

  job_kind kind;
  kind.tiny_jobs_run_inline = true;  // a fib(n) is a few nanoseconds per call and nothing else
  kind.name = "fib";
  kind.cost_unit = "calls";
  kind.cost_model = "2*F(n+1)-1 calls";
  kind.calibrate = [] {
    // The fastest of five fib(27) (~0.1 ms each).
    constexpr unsigned n = 27;
    return fastest_ns(5, [] { (void)fib(n); }) / static_cast<double>(fib_calls(n));
  };
  kind.routes.push_back(std::move(route));
  return kind;
}

}  // namespace

kind_declaration fib_kind() { return {"fib", {}, {}, [](const config&) { return build_fib(); }}; }

}  // namespace crunch
