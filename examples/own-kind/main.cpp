// A team's own service on crunch: crunch's built-in kinds, plus one of its own. Built against an
// installed crunch (see CMakeLists.txt beside this file):
//   cmake --install build --prefix /opt/crunch            (in crunch's checkout)
//   cmake -S examples/own-kind -B own -DCMAKE_PREFIX_PATH=/opt/crunch && cmake --build own
//   ./own/primes-service --port 8080 &  curl localhost:8080/v1/primes/1000000
// The kind gets what every crunch kind gets: admission by cost, deadlines, cancellation, fair
// shares, the memory budget, drain, metrics, /v1/kinds.
#include <crunch/kinds.hpp>
#include <crunch/service.hpp>

#include <cstdint>
#include <optional>
#include <stop_token>
#include <vector>

namespace {

// The pure function: the primes at most n, by a sieve of Eratosthenes. It checks its stop token
// once per prime it crosses out from, and returns nullopt when asked to stop.
std::optional<std::uint64_t> count_primes(std::uint64_t n, const std::stop_token& stop) {
  if (n < 2) return 0;
  std::vector<bool> composite(n + 1);
  for (std::uint64_t p = 2; p * p <= n; ++p) {
    if (composite[p]) continue;
    if (stop.stop_requested()) return std::nullopt;
    for (std::uint64_t m = p * p; m <= n; m += p) composite[m] = true;
  }
  std::uint64_t count = 0;
  for (std::uint64_t i = 2; i <= n; ++i) count += composite[i] ? 0 : 1;
  return count;
}

// Its registration: one route, its parameter with bounds, its cost and memory model.
crunch::job_kind build_primes(const crunch::config& cfg) {
  const auto max_n = cfg.setting("primes-max-n");
  crunch::job_route route;
  route.name = "primes_count";
  route.method = "GET";
  route.path = "/v1/primes/{n}";
  route.summary = "how many primes are at most n (a sieve of Eratosthenes)";
  route.parameters = {{"n", crunch::parameter_source::path, crunch::parameter_type::integer, 0, max_n, std::nullopt,
                       "the bound"}};
  route.prepare = [](const crunch::job_arguments& args,
                     crunch::job_input&) -> std::variant<crunch::prepared_job, crunch::invalid_argument> {
    const auto n = static_cast<std::uint64_t>(args.integer("n"));
    auto run = [n](std::stop_token stop) -> std::optional<crunch::job_output> {
      const auto count = count_primes(n, stop);
      if (!count) return std::nullopt;
      return crunch::job_output::json({{"n", n}, {"primes", *count}});
    };
    // Cost: n numbers sieved. Memory: the sieve, a bit a number.
    return crunch::prepared_job{std::move(run), static_cast<double>(n), n / 8 + 4096};
  };

  crunch::job_kind kind;
  kind.name = "primes";
  kind.cost_unit = "numbers";
  kind.cost_model = "n";
  kind.calibrate = [] {  // nanoseconds a number: the fastest of three sieves to a million
    return crunch::fastest_ns(3, [] { (void)count_primes(1'000'000, {}); }) / 1e6;
  };
  kind.routes = {std::move(route)};
  return kind;
}

// What the service knows of the kind before it reads its configuration: its own flag
// (--primes-max-n, CRUNCH_PRIMES_MAX_N, in --help), and how to build it.
crunch::kind_declaration primes_kind() {
  return {"primes",
          {{"primes-max-n", "N", "largest n a request may ask for (default 1000000000)", 1'000'000'000, 1,
            4'000'000'000}},
          {},
          build_primes};
}

}  // namespace

int main(int argc, char** argv) {
  auto kinds = crunch::builtin_kinds();  // crunch's kinds; start from an empty list for yours alone
  kinds.push_back(primes_kind());
  return crunch::run_service(argc, argv, kinds);  // flags, --help, --probe, serve, drain on SIGTERM
}
