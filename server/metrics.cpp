#include "server/metrics.hpp"

#include <crunch/config.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <sys/resource.h>
#include <unistd.h>

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
    case job_outcome::rejected_memory: return "rejected_memory";
    case job_outcome::helper_crashed: return "helper_crashed";
  }
  return "unknown";
}

histogram::histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}

void histogram::observe(double seconds) {
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), seconds);  // first bound >= value
  ++counts_[static_cast<std::size_t>(it - bounds_.begin())];
  ++count_;
  sum_ += seconds;
}

std::uint64_t histogram::cumulative(std::size_t i) const {
  std::uint64_t total = 0;
  for (std::size_t b = 0; b <= i && b < counts_.size(); ++b) total += counts_[b];
  return total;
}

std::vector<double> duration_buckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

std::vector<double> lag_buckets() {
  return {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
          0.25,    0.5,      1};
}

std::string label(std::string_view name, std::string_view value) {
  std::string out(name);
  out += "=\"";
  for (const char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  out += '"';
  return out;
}

namespace {

// Shortest text that reads back as the same double; Prometheus' own spellings for the rest.
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Counts are whole numbers: print them whole (200, not 2e+02) while a double holds them exactly.
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    char whole[32];
    std::snprintf(whole, sizeof whole, "%.0f", v);
    return whole;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", v);
  for (int precision = 1; precision < 17; ++precision) {
    char shorter[32];
    std::snprintf(shorter, sizeof shorter, "%.*g", precision, v);
    if (std::strtod(shorter, nullptr) == v) return shorter;
  }
  return text;
}

std::string join(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  return std::string(a) + "," + std::string(b);
}

}  // namespace

void exposition::single(std::string_view name, std::string_view type, std::string_view help, double value) {
  header(name, type, help);
  sample(name, "", value);
}

void exposition::header(std::string_view name, std::string_view type, std::string_view help) {
  out_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
}

void exposition::sample(std::string_view name, std::string_view labels, double value) {
  out_ << name;
  if (!labels.empty()) out_ << '{' << labels << '}';
  out_ << ' ' << number(value) << '\n';
}

void exposition::histogram_samples(std::string_view name, std::string_view labels, const histogram& h) {
  const std::string bucket = std::string(name) + "_bucket";
  for (std::size_t i = 0; i < h.bounds().size(); ++i) {
    sample(bucket, join(labels, label("le", number(h.bounds()[i]))), static_cast<double>(h.cumulative(i)));
  }
  sample(bucket, join(labels, label("le", "+Inf")), static_cast<double>(h.count()));
  sample(std::string(name) + "_sum", labels, h.sum());
  sample(std::string(name) + "_count", labels, static_cast<double>(h.count()));
}

process_stats read_process_stats() {
  process_stats p;
  const long ticks = sysconf(_SC_CLK_TCK);
  const long page = sysconf(_SC_PAGESIZE);

  // /proc/self/stat: the command may hold spaces and parentheses, so split after the last ')'.
  std::ifstream stat("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close != std::string::npos && ticks > 0) {
    std::istringstream fields(text.substr(close + 2));
    std::vector<std::string> f;
    for (std::string x; fields >> x;) f.push_back(x);
    // Fields from 3 (state) on: utime is 14, stime 15, starttime 22, vsize 23, rss 24.
    auto field = [&](std::size_t n) { return n - 3 < f.size() ? std::strtod(f[n - 3].c_str(), nullptr) : 0.0; };
    p.cpu_seconds = (field(14) + field(15)) / static_cast<double>(ticks);
    p.virtual_bytes = field(23);
    p.resident_bytes = field(24) * static_cast<double>(page);
    std::ifstream uptime_boot("/proc/stat");
    for (std::string line; std::getline(uptime_boot, line);) {
      if (line.rfind("btime ", 0) == 0) {
        p.start_time_seconds = std::strtod(line.c_str() + 6, nullptr) + field(22) / static_cast<double>(ticks);
        break;
      }
    }
  }
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::end(it);
       it.increment(ec)) {
    p.open_fds += 1;
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) p.max_fds = static_cast<double>(limit.rlim_cur);
  return p;
}

void metrics::add_route(std::string_view route) { routes_.try_emplace(std::string(route)); }

void metrics::add_kind(std::string_view kind) { kinds_.try_emplace(std::string(kind)); }

void metrics::count_request(std::string_view route, unsigned status, std::chrono::steady_clock::duration took) {
  auto it = routes_.find(route);
  if (it == routes_.end()) it = routes_.try_emplace(std::string(route)).first;
  ++it->second.by_code[status];
  it->second.duration.observe(took);
}

void metrics::observe_job(std::string_view kind, std::chrono::steady_clock::duration queued,
                          std::chrono::steady_clock::duration computing) {
  auto it = kinds_.find(kind);
  if (it == kinds_.end()) it = kinds_.try_emplace(std::string(kind)).first;
  it->second.queued.observe(queued);
  it->second.computing.observe(computing);
}

std::vector<std::pair<std::string_view, std::uint64_t>> metrics::jobs_run_by_kind() const {
  std::vector<std::pair<std::string_view, std::uint64_t>> run;
  run.reserve(kinds_.size());
  for (const auto& [kind, m] : kinds_) run.emplace_back(kind, m.computing.count());
  return run;
}

std::uint64_t metrics::requests() const {
  std::uint64_t n = 0;
  for (const auto& [route, m] : routes_) n += m.duration.count();
  return n;
}

namespace {

// The helper processes of the isolated kinds, by kind.
void render_helpers(exposition& out, const metrics_gauges& gauges) {
  out.header("crunch_helpers", "gauge", "Sandboxed helper processes running now, by isolated job kind.");
  for (const auto& h : gauges.helper_processes) out.sample("crunch_helpers", label("kind", h.kind), static_cast<double>(h.alive));
  out.header("crunch_helpers_started_total", "counter", "Helper processes started, by isolated job kind.");
  for (const auto& h : gauges.helper_processes) {
    out.sample("crunch_helpers_started_total", label("kind", h.kind), static_cast<double>(h.started));
  }
  out.header("crunch_helpers_crashed_total", "counter",
             "Helper processes that died by themselves (a fatal signal, their sandbox, a limit, a kill from outside), by kind.");
  for (const auto& h : gauges.helper_processes) {
    out.sample("crunch_helpers_crashed_total", label("kind", h.kind), static_cast<double>(h.crashed));
  }
  out.header("crunch_helpers_killed_total", "counter",
             "Helper processes crunchd killed because their job did not stop within 50 ms of being asked (its deadline, its client gone, the drain), by kind.");
  for (const auto& h : gauges.helper_processes) {
    out.sample("crunch_helpers_killed_total", label("kind", h.kind), static_cast<double>(h.killed));
  }
}

// The process collector of the Prometheus client libraries, by its names and help texts.
void render_process(exposition& out, const process_stats& process) {
  const struct {
    const char* name;
    const char* type;
    const char* help;
    double value;
  } process_metrics[] = {
      {"process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", process.cpu_seconds},
      {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", process.resident_bytes},
      {"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", process.virtual_bytes},
      {"process_open_fds", "gauge", "Number of open file descriptors.", process.open_fds},
      {"process_max_fds", "gauge", "Maximum number of open file descriptors.", process.max_fds},
      {"process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
       process.start_time_seconds},
  };
  for (const auto& m : process_metrics) {
    out.header(m.name, m.type, m.help);
    out.sample(m.name, "", m.value);
  }
}

}  // namespace

void metrics::render_traffic(exposition& out) const {
  out.header("crunch_http_requests_total", "counter", "HTTP requests answered, by route and status code.");
  for (const auto& [route, m] : routes_) {
    for (const auto& [code, n] : m.by_code) {
      out.sample("crunch_http_requests_total", join(label("route", route), label("code", std::to_string(code))),
                 static_cast<double>(n));
    }
  }
  out.header("crunch_http_request_duration_seconds", "histogram",
             "From a request's last byte read to its answer being ready, by route.");
  for (const auto& [route, m] : routes_) {
    out.histogram_samples("crunch_http_request_duration_seconds", label("route", route), m.duration);
  }
  out.header("crunch_job_queue_wait_seconds", "histogram", "Time jobs waited for a worker, by job kind.");
  for (const auto& [kind, m] : kinds_) out.histogram_samples("crunch_job_queue_wait_seconds", label("kind", kind), m.queued);
  out.header("crunch_job_run_seconds", "histogram", "Time jobs ran on a worker, by job kind.");
  for (const auto& [kind, m] : kinds_) out.histogram_samples("crunch_job_run_seconds", label("kind", kind), m.computing);
  out.header("crunch_jobs_total", "counter", "CPU jobs by how they ended.");
  for (std::size_t i = 0; i < job_outcome_count; ++i) {
    out.sample("crunch_jobs_total", label("outcome", to_string(static_cast<job_outcome>(i))),
               static_cast<double>(jobs_[i]));
  }
  out.header("crunch_event_loop_lag_seconds", "histogram",
             "How late a periodic timer on the I/O thread fires: time the loop was kept from its work.");
  out.histogram_samples("crunch_event_loop_lag_seconds", "", loop_lag_);

}

void metrics::render_state(exposition& out, const metrics_gauges& gauges) const {
  out.single("crunch_job_queue_depth", "gauge", "Jobs waiting for a worker.",
             static_cast<double>(gauges.queue_depth));
  out.single("crunch_job_queue_limit", "gauge", "Jobs that may wait for a worker, at most.",
             static_cast<double>(gauges.queue_limit));
  out.single("crunch_workers", "gauge", "Worker threads in the pool.",
             static_cast<double>(gauges.workers));
  out.single("crunch_workers_busy", "gauge", "Worker threads running a job now.",
             static_cast<double>(gauges.workers_busy));
  out.single("crunch_memory_budget_bytes", "gauge", "Memory that running jobs and request bodies in flight may hold together.",
             static_cast<double>(gauges.memory_budget));
  out.single("crunch_job_memory_bytes", "gauge", "Memory held now: what running jobs declared, the uploads and queued jobs that keep a body, and what idle workers keep.",
             static_cast<double>(gauges.memory_in_use));
  out.single("crunch_job_memory_kept_bytes", "gauge", "Of that, working memory idle workers keep for their next job (given back after 10 s idle).",
             static_cast<double>(gauges.memory_kept));
  out.single("crunch_connections_total", "counter", "TCP connections accepted.",
             static_cast<double>(connections_));
  out.single("crunch_connections_refused_total", "counter", "TCP connections refused: max-connections were open.",
             static_cast<double>(refused_connections_));
  out.single("crunch_connections_open", "gauge", "TCP connections open now.",
             static_cast<double>(gauges.connections_open));
  out.single("crunch_event_streams_open", "gauge", "Live-view streams (/v1/events) open now.",
             static_cast<double>(gauges.event_streams_open));
  out.single("crunch_event_streams_slow_total", "counter", "Live-view streams closed because their reader fell behind.",
             static_cast<double>(slow_streams_));
  out.single("crunch_flows_active", "gauge", "Flows (clients, by --fair-key) with jobs in flight now.",
             static_cast<double>(gauges.flows_active));
  out.single("crunch_flows_tracked", "gauge", "Flows the fair queue knows now, idle ones included (at most --max-flows).",
             static_cast<double>(gauges.flows_tracked));
  out.single("crunch_flows_overflowed_total", "counter", "Jobs of a new flow that found the flow table full of active flows and shared the overflow flow.",
             static_cast<double>(gauges.flows_overflowed));
  out.single("crunch_jobs_inline_total", "counter",
             "Jobs run on the I/O thread: their kind's cost model put them under --inline-max-us, below the cost of the trip to a worker.",
             static_cast<double>(inline_jobs_));
  out.single("crunch_jobs_pushed_out_total", "counter", "Queued jobs refused (as queue_full) to make room for a job of a flow under its fair share.",
             static_cast<double>(pushed_out_));
}

void metrics::render_rest(exposition& out, const metrics_gauges& gauges) const {
  out.header("crunch_auth_failures_total", "counter", "Requests refused 401, by reason: no API key, or one that is not valid.");
  out.sample("crunch_auth_failures_total", label("reason", "missing"), static_cast<double>(auth_failures_[0]));
  out.sample("crunch_auth_failures_total", label("reason", "invalid"), static_cast<double>(auth_failures_[1]));
  out.header("crunch_draining", "gauge", "1 while the server is shutting down.");
  out.sample("crunch_draining", "", gauges.draining ? 1 : 0);
  out.single("crunch_log_lines_dropped_total", "counter", "Log lines dropped because the log writer fell behind.",
             static_cast<double>(gauges.log_lines_dropped));
  // The CFS bandwidth controller stops every thread of a cgroup that used its quota, the I/O
  // thread too, until the next period: shown next to the loop lag, it says why the loop was late.
  out.single("crunch_cpu_quota_periods_total", "counter", "CFS periods in which the cgroup that sets crunchd's CPU quota had work to run (0 without a quota).",
             static_cast<double>(gauges.cpu_quota.periods));
  out.single("crunch_cpu_quota_throttled_periods_total", "counter", "Of those, periods that ran out of quota: every thread of the cgroup, the I/O thread too, stopped until the next.",
             static_cast<double>(gauges.cpu_quota.throttled_periods));
  out.header("crunch_cpu_quota_throttled_seconds_total", "counter",
             "Time the cgroup's threads spent stopped by the CPU quota.");
  out.sample("crunch_cpu_quota_throttled_seconds_total", "", static_cast<double>(gauges.cpu_quota.throttled_ns) / 1e9);
  out.header("crunch_workers_paced_seconds_total", "counter",
             "Time the workers were held back to leave the I/O thread its share of the CPU quota (--cpu-reserve).");
  out.sample("crunch_workers_paced_seconds_total", "", gauges.workers_paced_seconds);
  out.header("crunch_build_info", "gauge", "Build information; the value is always 1.");
  out.sample("crunch_build_info", label("version", version()), 1);

}

std::string metrics::render(const metrics_gauges& gauges, const process_stats& process) const {
  std::ostringstream text;
  exposition out(text);
  render_traffic(out);
  render_state(out, gauges);
  render_helpers(out, gauges);
  render_rest(out, gauges);
  render_process(out, process);
  return text.str();
}

}  // namespace crunch
