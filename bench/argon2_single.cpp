// The physical limit of password hashing: the very Argon2id call the server's workers make
// (crunch::argon2id_hash, libsodium), outside any server, on one thread — or on THREADS at once,
// which shows what running hashes side by side costs the machine itself (they share the memory
// bus, the last-level cache and the process's page tables).
// usage: argon2_single [M_COST_KIB=19456] [T_COST=2] [SECONDS=3] [THREADS=1]
//   → one JSON line: hashes per second in all, and the median time of one hash.
#include <crunch/password.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  using clock = std::chrono::steady_clock;
  const auto m = static_cast<std::uint32_t>(argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 19456);
  const auto t = static_cast<std::uint32_t>(argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 2);
  const double seconds = argc > 3 ? std::atof(argv[3]) : 3;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 1;
  if (m < 8 || t < 1 || seconds <= 0 || threads < 1) {
    std::fprintf(stderr, "usage: argon2_single [M_COST_KIB>=8] [T_COST>=1] [SECONDS>0] [THREADS>=1]\n");
    return 2;
  }
  crunch::init_sodium();
  const auto start = clock::now();
  const auto end = start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::vector<double>> times(static_cast<std::size_t>(threads));
  std::vector<std::thread> pool;
  for (auto& mine : times) {
    pool.emplace_back([&mine, m, t, end] {
      while (clock::now() < end) {
        const auto t0 = clock::now();
        crunch::argon2id_hash("correct horse battery staple", m, t);
        mine.push_back(std::chrono::duration<double>(clock::now() - t0).count());
      }
    });
  }
  for (auto& th : pool) th.join();
  const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
  std::vector<double> all;
  for (const auto& mine : times) all.insert(all.end(), mine.begin(), mine.end());
  std::sort(all.begin(), all.end());
  std::printf("{\"m_cost_kib\":%u,\"t_cost\":%u,\"threads\":%d,\"hashes\":%zu,\"hashes_per_s\":%.2f,\"median_s\":%.6f}\n", m,
              t, threads, all.size(), static_cast<double>(all.size()) / elapsed, all[all.size() / 2]);
  return 0;
}
