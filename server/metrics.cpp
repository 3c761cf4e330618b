#include <crunch/metrics.hpp>

#include <sstream>

namespace crunch {

const char* to_string(job_outcome outcome) noexcept {
  switch (outcome) {
    case job_outcome::completed: return "completed";
    case job_outcome::rejected_queue_full: return "rejected_queue_full";
    case job_outcome::rejected_would_miss_deadline: return "rejected_would_miss_deadline";
    case job_outcome::deadline_exceeded: return "deadline_exceeded";
    case job_outcome::cancelled_client_gone: return "cancelled_client_gone";
    case job_outcome::failed: return "failed";
    case job_outcome::drained: return "drained";
  }
  return "unknown";
}

std::string metrics::render(const metrics_gauges& gauges) const {
  std::ostringstream out;
  out << "# HELP crunch_http_responses_total HTTP responses sent, by status code.\n"
         "# TYPE crunch_http_responses_total counter\n";
  for (const auto& [status, n] : responses_) {
    out << "crunch_http_responses_total{code=\"" << status << "\"} " << n << '\n';
  }
  out << "# HELP crunch_jobs_total CPU jobs by how they ended.\n"
         "# TYPE crunch_jobs_total counter\n";
  for (std::size_t i = 0; i < job_outcome_count; ++i) {
    out << "crunch_jobs_total{outcome=\"" << to_string(static_cast<job_outcome>(i)) << "\"} " << jobs_[i] << '\n';
  }
  out << "# HELP crunch_connections_total TCP connections accepted.\n"
         "# TYPE crunch_connections_total counter\n"
         "crunch_connections_total " << connections_ << "\n"
         "# HELP crunch_connections_open TCP connections open now.\n"
         "# TYPE crunch_connections_open gauge\n"
         "crunch_connections_open " << gauges.connections_open << "\n"
         "# HELP crunch_workers Worker threads in the pool.\n"
         "# TYPE crunch_workers gauge\n"
         "crunch_workers " << gauges.workers << "\n"
         "# HELP crunch_workers_busy Worker threads running a job now.\n"
         "# TYPE crunch_workers_busy gauge\n"
         "crunch_workers_busy " << gauges.workers_busy << "\n"
         "# HELP crunch_queue_depth Jobs waiting for a worker.\n"
         "# TYPE crunch_queue_depth gauge\n"
         "crunch_queue_depth " << gauges.queue_depth << "\n"
         "# HELP crunch_queue_limit Jobs that may wait for a worker, at most.\n"
         "# TYPE crunch_queue_limit gauge\n"
         "crunch_queue_limit " << gauges.queue_limit << "\n"
         "# HELP crunch_draining 1 while the server is shutting down.\n"
         "# TYPE crunch_draining gauge\n"
         "crunch_draining " << (gauges.draining ? 1 : 0) << '\n';
  return out.str();
}

}  // namespace crunch
