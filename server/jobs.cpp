#include <crunch/jobs.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>

namespace crunch {

std::string error_body(std::string_view code, std::string_view message) {
  const nlohmann::json body = {{"error", {{"code", code}, {"message", message}}}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

job_output job_output::refused(std::string_view code, std::string_view message) {
  return {error_body(code, message), "application/json", 400};
}

double fastest_ns(int runs, const std::function<void()>& work) {
  double best = 0;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    work();
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    if (i == 0 || ns < best) best = ns;
  }
  return best;
}

job_kind calibrating_on_first_job(job_kind kind) {
  struct first_job {
    std::function<double()> calibrate;
    std::once_flag once;
    std::atomic<bool> done{false};
  };
  auto shared = std::make_shared<first_job>();
  shared->calibrate = std::move(kind.calibrate);
  kind.calibrate = nullptr;
  for (auto& route : kind.routes) {
    route.prepare = [prepare = std::move(route.prepare), shared](const job_arguments& args, job_input& input)
        -> std::variant<prepared_job, invalid_argument> {
      auto prepared = prepare(args, input);
      if (auto* job = std::get_if<prepared_job>(&prepared)) {
        job->run = [run = std::move(job->run), shared](std::stop_token stop) -> std::optional<job_output> {
          std::optional<double> rate;
          // A job that finds the calibration not yet done waits for it (or makes it): its time
          // is not the kind's.
          const bool setup = !shared->done.load(std::memory_order_acquire);
          if (setup) {
            std::call_once(shared->once, [&] {
              try {
                rate = shared->calibrate();
              } catch (const std::exception&) {
                // The job below meets the same failure and answers it; the kind learns its rate
                // from its first completed job instead.
              }
              shared->done.store(true, std::memory_order_release);
            });
          }
          auto out = run(std::move(stop));
          if (out) {
            out->calibrated_ns_per_unit = rate;
            out->representative = !setup;
          }
          return out;
        };
      }
      return prepared;
    };
  }
  return kind;
}

void job_registry::add(job_kind kind) {
  auto name = kind.name;
  kinds_.insert_or_assign(std::move(name), std::move(kind));
}

const job_kind* job_registry::find(std::string_view name) const {
  const auto it = kinds_.find(name);
  return it == kinds_.end() ? nullptr : &it->second;
}

}  // namespace crunch
