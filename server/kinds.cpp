#include <crunch/kinds.hpp>

namespace crunch {

job_registry default_jobs(const config& cfg) {
  job_registry jobs;
  jobs.add(fib_kind());
  jobs.add(password_kind(cfg));
  jobs.add(image_kind(cfg));
  return jobs;
}

}  // namespace crunch
