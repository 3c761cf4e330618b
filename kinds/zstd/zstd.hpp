#pragma once
/// zstd compression and decompression of a whole upload, bounded: a window of at most
/// 2^window_log bytes either way, and an output of at most max_output bytes when decompressing,
/// whatever the frames declare. Plain functions over libzstd (Debian's libzstd1): the zstd kind
/// (zstd_kind.cpp) runs them on workers and prices them with zstd_calibrate().

#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <variant>

namespace crunch {

/// The first frame's header, read without decoding anything (a few bytes).
struct zstd_header {
  std::optional<std::uint64_t> content_size;  ///< what the frame declares it holds; nullopt when it does not say
  std::uint64_t window_bytes = 0;             ///< the window its decoder must keep
};

/// The header of the first frame in `frames`, or why `frames` does not begin with a zstd frame.
std::variant<zstd_header, std::string> zstd_read_header(std::string_view frames);

/// `input` as one zstd frame at `level` (1..22) with a window of at most 2^window_log bytes; the
/// frame declares its size and carries a checksum. nullopt when `stop` asked (checked between
/// 256 KiB pieces of the input). Throws std::runtime_error on a libzstd failure.
std::optional<std::string> zstd_compress(std::string_view input, int level, int window_log, const std::stop_token& stop);

/// Why decompression refused its input.
struct zstd_refusal {
  std::string why;
  bool too_large = false;  ///< the output would exceed max_output (a decompression bomb), else corrupt
};

/// Every frame in `input` decompressed, at most `max_output` bytes, with a window of at most
/// 2^window_log: the refusal says why not (corrupt, a window too large, truncated, or more output
/// than max_output, which is found as it is produced, never believed from a header). nullopt when
/// `stop` asked (checked every MiB of output).
std::optional<std::variant<std::string, zstd_refusal>> zstd_decompress(std::string_view input, std::uint64_t max_output,
                                                                       int window_log, const std::stop_token& stop);

/// Memory a compression holds beyond its input: libzstd's context for that level, size and
/// window, and the output.
std::uint64_t zstd_compress_memory(std::uint64_t input_bytes, int level, int window_log);
/// Memory a decompression holds beyond its input: the context with its window, and the output.
std::uint64_t zstd_decompress_memory(std::uint64_t output_bytes, std::uint64_t window_bytes);

/// Cost weights measured on this machine: nanoseconds per input byte at level 1, and each level's
/// and decompression's cost relative to it (per input byte compressed, per output byte
/// decompressed).
struct zstd_costs {
  double ns_per_byte = 0;   ///< level 1 compression
  double level[23] = {};    ///< level[l] / level[1] = 1
  double decompress = 0;    ///< per output byte, relative to level 1 per input byte
};

/// Measures zstd_costs on a 64 KiB sample of text-like bytes, each level up to `max_level` once
/// (about 0.1 s in all at level 19).
zstd_costs zstd_calibrate(int max_level);

/// Bytes of text-like data, the same for the same `size` and `seed` (for calibration, examples and tests).
std::string zstd_sample(std::size_t size, unsigned seed = 1);

}  // namespace crunch
