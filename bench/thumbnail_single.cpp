// The physical limit of thumbnailing: the very libvips call the server's workers make
// (crunch::make_thumbnail: shrink-on-load, sRGB, metadata stripped), outside any server, on one
// thread — or on THREADS at once.
// usage: thumbnail_single FILE [WIDTH=400] [FORMAT=webp|jpeg|png|avif] [QUALITY=80] [SECONDS=3] [THREADS=1] [EFFORT=4]
//   → one JSON line: thumbnails per second in all, the median and the fastest time of one, and the
//   output size. At least one thumbnail per thread, however long it takes.
#include <image/image.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
  using clock = std::chrono::steady_clock;
  if (argc < 2) {
    std::fprintf(stderr, "usage: thumbnail_single FILE [WIDTH=400] [FORMAT=webp|jpeg|png|avif] [QUALITY=80] [SECONDS=3] [THREADS=1] [EFFORT=4]\n");
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  crunch::thumbnail_spec spec;
  spec.width = static_cast<std::uint32_t>(argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 400);
  const std::string format = argc > 3 ? argv[3] : "webp";
  spec.format = format == "jpeg"  ? crunch::image_format::jpeg
                : format == "png"  ? crunch::image_format::png
                : format == "avif" ? crunch::image_format::avif
                                   : crunch::image_format::webp;  // avif at effort 4, libvips's and the route's default
  spec.quality = static_cast<std::uint32_t>(argc > 4 ? std::strtoul(argv[4], nullptr, 10) : 80);
  const double seconds = argc > 5 ? std::atof(argv[5]) : 3;
  const int threads = argc > 6 ? std::atoi(argv[6]) : 1;
  spec.effort = static_cast<std::uint32_t>(argc > 7 ? std::strtoul(argv[7], nullptr, 10) : 4);
  const auto header = crunch::sniff_image(bytes);
  if (const auto* why = std::get_if<std::string>(&header)) {
    std::fprintf(stderr, "%s: %s\n", argv[1], why->c_str());
    return 1;
  }
  crunch::init_vips();
  const auto start = clock::now();
  const auto end = start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::vector<double>> times(static_cast<std::size_t>(threads));
  std::vector<std::size_t> sizes(static_cast<std::size_t>(threads));
  std::vector<std::thread> pool;
  for (std::size_t i = 0; i < times.size(); ++i) {
    pool.emplace_back([&, i] {
      do {
        const auto t0 = clock::now();
        const auto out = crunch::make_thumbnail(bytes, std::get<crunch::image_header>(header), spec, {});
        times[i].push_back(std::chrono::duration<double>(clock::now() - t0).count());
        sizes[i] = out ? out->size() : 0;
      } while (clock::now() < end);
      crunch::release_vips_thread_buffers();
    });
  }
  for (auto& th : pool) th.join();
  const double elapsed = std::chrono::duration<double>(clock::now() - start).count();
  std::vector<double> all;
  for (const auto& mine : times) all.insert(all.end(), mine.begin(), mine.end());
  std::sort(all.begin(), all.end());
  std::printf("{\"vips\":\"%s\",\"width\":%u,\"format\":\"%s\",\"quality\":%u,\"effort\":%u,\"threads\":%d,"
              "\"thumbnails\":%zu,\"per_s\":%.2f,\"median_s\":%.6f,\"fastest_s\":%.6f,\"output_bytes\":%zu}\n",
              crunch::libvips_version().c_str(), spec.width, format.c_str(), spec.quality, spec.effort, threads, all.size(),
              static_cast<double>(all.size()) / elapsed, all[all.size() / 2], all.front(), sizes[0]);
  return 0;
}
