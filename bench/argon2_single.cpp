// The physical limit of password hashing: the very Argon2id call the server's workers make
// (crunch::argon2id_hash: crunch's Argon2 core in each thread's kept memory), outside any server,
// on one thread — or on THREADS at once, which shows what running hashes side by side costs the
// machine itself (they share the memory bus and the last-level cache). With IMPL=libsodium, the
// same hash by libsodium's crypto_pwhash_str as shipped, which maps fresh memory for each hash.
// usage: argon2_single [M_COST_KIB=19456] [T_COST=2] [SECONDS=3] [THREADS=1] [IMPL=crunch|libsodium]
//   → one JSON line: hashes per second in all, the median time of one hash, and minor page
//     faults per hash.
#include <password/argon2.hpp>
#include <password/password.hpp>

#include <sodium.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  using clock = std::chrono::steady_clock;
  const auto m = static_cast<std::uint32_t>(argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 19456);
  const auto t = static_cast<std::uint32_t>(argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 2);
  const double seconds = argc > 3 ? std::atof(argv[3]) : 3;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 1;
  const std::string impl = argc > 5 ? argv[5] : "crunch";
  if (m < 8 || t < 1 || seconds <= 0 || threads < 1 || (impl != "crunch" && impl != "libsodium")) {
    std::fprintf(stderr, "usage: argon2_single [M_COST_KIB>=8] [T_COST>=1] [SECONDS>0] [THREADS>=1] [crunch|libsodium]\n");
    return 2;
  }
  const bool libsodium = impl == "libsodium";
  crunch::init_sodium();
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  const auto start = clock::now();
  const auto end = start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::vector<double>> times(static_cast<std::size_t>(threads));
  std::vector<std::thread> pool;
  for (auto& mine : times) {
    pool.emplace_back([&mine, m, t, end, libsodium] {
      while (clock::now() < end) {
        const auto t0 = clock::now();
        if (libsodium) {
          char out[crypto_pwhash_STRBYTES];
          if (crypto_pwhash_str_alg(out, "correct horse battery staple", 28, t, std::size_t{m} * 1024,
                                    crypto_pwhash_ALG_ARGON2ID13) != 0) {
            std::abort();
          }
        } else {
          crunch::argon2id_hash("correct horse battery staple", m, t);
        }
        mine.push_back(std::chrono::duration<double>(clock::now() - t0).count());
      }
    });
  }
  for (auto& th : pool) th.join();
  const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
  std::vector<double> all;
  for (const auto& mine : times) all.insert(all.end(), mine.begin(), mine.end());
  std::sort(all.begin(), all.end());
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  const auto faults = static_cast<double>(after.ru_minflt - before.ru_minflt);
  std::printf("{\"impl\":\"%s\",\"core\":\"%s\",\"m_cost_kib\":%u,\"t_cost\":%u,\"threads\":%d,\"hashes\":%zu,"
              "\"hashes_per_s\":%.2f,\"median_s\":%.6f,\"faults_per_hash\":%.1f}\n",
              impl.c_str(), libsodium ? "libsodium" : std::string(crunch::argon2_implementation()).c_str(), m, t, threads,
              all.size(), static_cast<double>(all.size()) / elapsed, all[all.size() / 2],
              faults / static_cast<double>(all.size()));
  return 0;
}
