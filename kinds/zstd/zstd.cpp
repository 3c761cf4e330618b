#include "zstd.hpp"

#include <crunch/jobs.hpp>

#define ZSTD_STATIC_LINKING_ONLY  // the size estimates and the frame header reader
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>

namespace crunch {

namespace {

constexpr std::size_t input_piece = 256 << 10;  // compression checks its stop token this often
constexpr std::size_t output_piece = 1 << 20;   // decompression likewise

struct free_cctx {
  void operator()(ZSTD_CCtx* c) const noexcept { ZSTD_freeCCtx(c); }
};
struct free_dctx {
  void operator()(ZSTD_DCtx* d) const noexcept { ZSTD_freeDCtx(d); }
};

void check(std::size_t code, const char* what) {
  if (ZSTD_isError(code)) throw std::runtime_error(std::string(what) + ": " + ZSTD_getErrorName(code));
}

// The level's parameters for an input of this size, the window capped at 2^window_log.
ZSTD_compressionParameters parameters(std::uint64_t input_bytes, int level, int window_log) {
  auto p = ZSTD_getCParams(level, input_bytes, 0);
  p.windowLog = std::min<unsigned>(p.windowLog, static_cast<unsigned>(window_log));
  // The level's chain and hash tables are sized for its own window: keep them within the new one.
  p.chainLog = std::min<unsigned>(p.chainLog, p.windowLog + 1);
  p.hashLog = std::min<unsigned>(p.hashLog, p.windowLog + 1);
  return p;
}

}  // namespace

std::variant<zstd_header, std::string> zstd_read_header(std::string_view frames) {
  ZSTD_frameHeader h{};
  const auto r = ZSTD_getFrameHeader(&h, frames.data(), frames.size());
  if (ZSTD_isError(r)) return std::string("the body is not a zstd frame (") + ZSTD_getErrorName(r) + ")";
  if (r > 0) return std::string("the body ends inside a zstd frame header");
  zstd_header header;
  if (h.frameType == ZSTD_frame && h.frameContentSize != ZSTD_CONTENTSIZE_UNKNOWN) header.content_size = h.frameContentSize;
  if (h.frameType == ZSTD_skippableFrame) header.content_size = 0;
  header.window_bytes = h.frameType == ZSTD_frame ? h.windowSize : 0;
  return header;
}

std::optional<std::string> zstd_compress(std::string_view input, int level, int window_log, const std::stop_token& stop) {
  std::unique_ptr<ZSTD_CCtx, free_cctx> c(ZSTD_createCCtx());
  if (!c) throw std::runtime_error("zstd: no memory for a compression context");
  const auto p = parameters(input.size(), level, window_log);
  check(ZSTD_CCtx_setParameter(c.get(), ZSTD_c_compressionLevel, level), "zstd level");
  check(ZSTD_CCtx_setParameter(c.get(), ZSTD_c_windowLog, static_cast<int>(p.windowLog)), "zstd window");
  check(ZSTD_CCtx_setParameter(c.get(), ZSTD_c_chainLog, static_cast<int>(p.chainLog)), "zstd chain");
  check(ZSTD_CCtx_setParameter(c.get(), ZSTD_c_hashLog, static_cast<int>(p.hashLog)), "zstd hash");
  check(ZSTD_CCtx_setParameter(c.get(), ZSTD_c_checksumFlag, 1), "zstd checksum");
  check(ZSTD_CCtx_setPledgedSrcSize(c.get(), input.size()), "zstd size");

  std::string out(ZSTD_compressBound(input.size()), '\0');
  ZSTD_inBuffer in{input.data(), 0, 0};
  ZSTD_outBuffer o{out.data(), out.size(), 0};
  for (;;) {
    if (stop.stop_requested()) return std::nullopt;
    in.size = std::min(input.size(), in.pos + input_piece);
    const auto mode = in.size == input.size() ? ZSTD_e_end : ZSTD_e_continue;
    const auto left = ZSTD_compressStream2(c.get(), &o, &in, mode);
    check(left, "zstd compression");
    if (mode == ZSTD_e_end && left == 0) break;
  }
  out.resize(o.pos);
  return out;
}

std::optional<std::variant<std::string, zstd_refusal>> zstd_decompress(std::string_view input, std::uint64_t max_output,
                                                                       int window_log, const std::stop_token& stop) {
  std::unique_ptr<ZSTD_DCtx, free_dctx> d(ZSTD_createDCtx());
  if (!d) throw std::runtime_error("zstd: no memory for a decompression context");
  check(ZSTD_DCtx_setParameter(d.get(), ZSTD_d_windowLogMax, window_log), "zstd window");

  // The output grows as it is produced, up to one byte past the limit: that byte is the proof of
  // a bomb. What the header declares only sizes the first allocation.
  const std::uint64_t cap = max_output + 1;
  std::uint64_t first = output_piece;
  if (const auto h = zstd_read_header(input); std::holds_alternative<zstd_header>(h)) {
    if (const auto declared = std::get<zstd_header>(h).content_size) first = std::max<std::uint64_t>(*declared, 1);
  }
  std::string out(static_cast<std::size_t>(std::min(cap, first)), '\0');
  std::uint64_t produced = 0;
  ZSTD_inBuffer in{input.data(), input.size(), 0};
  for (;;) {
    if (stop.stop_requested()) return std::nullopt;
    if (produced == out.size()) {
      if (out.size() >= cap) break;
      out.resize(static_cast<std::size_t>(std::min<std::uint64_t>(cap, std::max<std::uint64_t>(out.size() * 2, output_piece))));
    }
    ZSTD_outBuffer o{out.data() + produced, std::min<std::size_t>(out.size() - produced, output_piece), 0};
    const auto hint = ZSTD_decompressStream(d.get(), &o, &in);
    if (ZSTD_isError(hint)) {
      if (ZSTD_getErrorCode(hint) == ZSTD_error_frameParameter_windowTooLarge) {
        return zstd_refusal{"the frame needs a window above this server's 2^" + std::to_string(window_log) + " bytes"};
      }
      return zstd_refusal{std::string("the body is not valid zstd (") + ZSTD_getErrorName(hint) + ")"};
    }
    produced += o.pos;
    if (produced > max_output) break;
    // 0: a frame is decoded and flushed; with all input read, that was the last.
    if (hint == 0 && in.pos == in.size) {
      out.resize(static_cast<std::size_t>(produced));
      return out;
    }
    // All input read, room left, and the frame still not done: it was cut short.
    if (in.pos == in.size && o.pos < o.size) return zstd_refusal{"the body ends inside a zstd frame"};
  }
  return zstd_refusal{"the frames hold more than " + std::to_string(max_output) + " bytes", true};
}

std::uint64_t zstd_compress_memory(std::uint64_t input_bytes, int level, int window_log) {
  return ZSTD_estimateCStreamSize_usingCParams(parameters(input_bytes, level, window_log)) +
         ZSTD_compressBound(static_cast<std::size_t>(input_bytes));
}

std::uint64_t zstd_decompress_memory(std::uint64_t output_bytes, std::uint64_t window_bytes) {
  return ZSTD_estimateDStreamSize(static_cast<std::size_t>(window_bytes)) + output_bytes;
}

std::string zstd_sample(std::size_t size, unsigned seed) {
  // Words from a small vocabulary in a pseudo-random order: compresses about 3:1, as prose and
  // JSON do, and every level has work to do.
  static constexpr std::string_view words[] = {
      "crunch ", "zstd ", "the ", "frame ", "window ", "level ", "worker ", "deadline ", "queue ", "budget ",
      "{\"id\":", "42,", "\"name\":", "\"x\"}", "\n", "loop ", "never ", "blocks ", "and ", "of "};
  std::string s;
  s.reserve(size + 16);
  std::uint32_t x = seed * 2654435761u + 1;
  while (s.size() < size) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s += words[x % std::size(words)];
  }
  s.resize(size);
  return s;
}

zstd_costs zstd_calibrate(int max_level) {
  const auto sample = zstd_sample(64 << 10);
  const auto bytes = static_cast<double>(sample.size());
  zstd_costs costs;
  double level_ns[23] = {};
  for (int l = 1; l <= std::min(max_level, 22); ++l) {
    level_ns[l] = fastest_ns(l <= 12 ? 3 : 1, [&] { (void)zstd_compress(sample, l, 27, {}); }) / bytes;
  }
  costs.ns_per_byte = level_ns[1];
  for (int l = 1; l <= 22; ++l) costs.level[l] = level_ns[l] > 0 ? level_ns[l] / level_ns[1] : 0;
  const auto frame = *zstd_compress(sample, 3, 27, {});
  const double decompress_ns = fastest_ns(3, [&] { (void)zstd_decompress(frame, sample.size(), 27, {}); }) / bytes;
  costs.decompress = decompress_ns / level_ns[1];
  return costs;
}

}  // namespace crunch
