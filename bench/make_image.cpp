// Writes a photo-like test image (smooth colour gradients under fine noise, as crunch's tests use)
// for the benchmarks and the container check: no photo needs to be downloaded or committed.
// usage: make_image WIDTH HEIGHT FORMAT(jpeg|png|webp) QUALITY OUT
#include <image/image.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: make_image WIDTH HEIGHT jpeg|png|webp QUALITY OUT\n");
    return 2;
  }
  const std::string format = argv[3];
  const auto f = format == "png" ? crunch::image_format::png
                 : format == "webp" ? crunch::image_format::webp
                                    : crunch::image_format::jpeg;
  const auto bytes = crunch::synthetic_image(static_cast<std::uint32_t>(std::strtoul(argv[1], nullptr, 10)),
                                             static_cast<std::uint32_t>(std::strtoul(argv[2], nullptr, 10)), f,
                                             std::atoi(argv[4]));
  std::ofstream(argv[5], std::ios::binary) << bytes;
  std::printf("%s: %zu bytes\n", argv[5], bytes.size());
  return 0;
}
