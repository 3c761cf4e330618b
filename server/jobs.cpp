#include <crunch/jobs.hpp>

namespace crunch {

void job_registry::add(job_kind kind) {
  auto name = kind.name;
  kinds_.insert_or_assign(std::move(name), std::move(kind));
}

const job_kind* job_registry::find(std::string_view name) const {
  const auto it = kinds_.find(name);
  return it == kinds_.end() ? nullptr : &it->second;
}

}  // namespace crunch
