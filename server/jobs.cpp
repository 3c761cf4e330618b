#include <crunch/jobs.hpp>

#include <crunch/decimal.hpp>
#include <crunch/fib.hpp>

#include <chrono>

namespace crunch {

void job_registry::add(job_kind kind) {
  auto name = kind.name;
  kinds_.insert_or_assign(std::move(name), std::move(kind));
}

const job_kind* job_registry::find(std::string_view name) const {
  const auto it = kinds_.find(name);
  return it == kinds_.end() ? nullptr : &it->second;
}

job_kind fib_job() {
  auto prepare = [](std::string_view parameter) -> std::variant<prepared_job, invalid_argument> {
    const auto value = parse_decimal(parameter, 0, fib_max_n);
    if (!value) return invalid_argument{"n must be an integer in 0.." + std::to_string(fib_max_n)};
    const auto n = static_cast<unsigned>(*value);
    auto run = [n](std::stop_token stop) -> std::optional<nlohmann::json> {
      const auto result = fib(n, std::move(stop));
      if (!result) return std::nullopt;
      // Above 2^53 JavaScript numbers lose precision: result_string is exact everywhere.
      return nlohmann::json{{"n", n}, {"result", *result}, {"result_string", std::to_string(*result)}};
    };
    return prepared_job{run, static_cast<double>(fib_calls(n))};
  };
  auto calibrate = [] {
    // The fastest of a few fib(27) runs (~0.1 ms each): the machine's rate without interference.
    constexpr unsigned n = 27;
    double best = 0;
    for (int i = 0; i < 5; ++i) {
      const auto start = std::chrono::steady_clock::now();
      const auto result = fib(n);
      const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
      if (result && (best == 0 || ns < best)) best = ns;
    }
    return best / static_cast<double>(fib_calls(n));
  };
  return {"fib", prepare, calibrate};
}

job_registry default_jobs() {
  job_registry jobs;
  jobs.add(fib_job());
  return jobs;
}

}  // namespace crunch
