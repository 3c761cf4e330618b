// What reading a JSON body costs the I/O thread: crunch's own reader (read_arguments) over the
// password route's declared fields, on the worst bodies its 4 KiB limit lets in and on the 64 KiB
// that --max-body-bytes allows other routes.
// usage: json_body  → one JSON line: the fastest of many reads of each body, in microseconds.
#include <crunch/kinds.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace {

double fastest_us(const std::vector<crunch::parameter>& fields, const std::string& body, int repeats) {
  double best = 1e18;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = crunch::read_arguments(fields, {}, {}, body);
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    if (r.index() > 1) std::abort();
    best = std::min(best, us);
  }
  return best;
}

std::string filled(std::string head, std::size_t size, const std::string& unit, std::string tail) {
  while (head.size() + unit.size() + tail.size() <= size) head += unit;
  return head + tail;
}

}  // namespace

int main() {
  const auto jobs = crunch::build_jobs({crunch::builtin_kind("password")}, crunch::config{});
  const auto& fields = jobs.find("password")->routes.at(0).parameters;  // password_hash
  std::vector<std::pair<std::string, std::string>> bodies;
  bodies.emplace_back("typical", R"({"password":"correct horse battery staple","m_cost_kib":19456,"t_cost":2})");
  for (const std::size_t size : {std::size_t{4096}, std::size_t{65536}}) {
    const auto k = std::to_string(size / 1024) + "k_";
    bodies.emplace_back(k + "string", filled(R"({"password":")", size, "a", R"("})"));
    bodies.emplace_back(k + "escapes", filled(R"({"password":")", size, "\\u00e9", R"("})"));
    bodies.emplace_back(k + "whitespace", filled("{", size, " ", R"("t_cost":2})"));
    bodies.emplace_back(k + "digits", filled(R"({"m_cost_kib":)", size, "1", "}"));
    bodies.emplace_back(k + "brackets", std::string(size, '['));
  }
  std::printf("{");
  const char* separator = "";
  for (const auto& [name, body] : bodies) {
    std::printf("%s\"%s\":%.2f", separator, name.c_str(), fastest_us(fields, body, body.size() > 10000 ? 50 : 500));
    separator = ",";
  }
  std::printf("}\n");
  return 0;
}
