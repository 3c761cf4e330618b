#include <crunch/jobs.hpp>

#include <crunch/fib.hpp>

#include <algorithm>
#include <cctype>

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
  return {"fib", [](std::string_view parameter) -> std::variant<job_function, invalid_argument> {
            const invalid_argument bad{"n must be an integer in 0.." + std::to_string(fib_max_n)};
            // Plain decimal digits only: no sign, no space, no exponent, and a bounded length so
            // that a 400-digit number is refused without arithmetic.
            if (parameter.empty() || parameter.size() > 20 ||
                !std::all_of(parameter.begin(), parameter.end(), [](unsigned char c) { return std::isdigit(c); })) {
              return bad;
            }
            unsigned long long n = 0;
            for (const char c : parameter) n = n * 10 + static_cast<unsigned>(c - '0');
            if (n > fib_max_n) return bad;
            return job_function([n = static_cast<unsigned>(n)](std::stop_token stop) -> std::optional<nlohmann::json> {
              const auto value = fib(n, std::move(stop));
              if (!value) return std::nullopt;
              // Integers above 2^53 lose precision as JavaScript numbers: result_string is exact everywhere.
              return nlohmann::json{{"n", n}, {"result", *value}, {"result_string", std::to_string(*value)}};
            });
          }};
}

job_registry default_jobs() {
  job_registry jobs;
  jobs.add(fib_job());
  return jobs;
}

}  // namespace crunch
