// The physical limit: the very fib kernel the server runs, timed on one thread, no server.
// usage: fib_single N [repeats]  → prints the median seconds of one fib(N) as JSON.
#include <fib/fib.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  const unsigned n = argc > 1 ? static_cast<unsigned>(std::strtoul(argv[1], nullptr, 10)) : 30;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 21;
  if (n > crunch::fib_max_n || repeats < 1) {
    std::fprintf(stderr, "usage: fib_single N(0..92) [repeats>=1]\n");
    return 2;
  }
  std::vector<double> seconds;
  std::uint64_t value = 0;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    value = *crunch::fib(n);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  std::printf("{\"n\":%u,\"result\":%llu,\"repeats\":%d,\"median_s\":%.6f,\"min_s\":%.6f}\n", n,
              static_cast<unsigned long long>(value), repeats, seconds[seconds.size() / 2], seconds.front());
  return 0;
}
