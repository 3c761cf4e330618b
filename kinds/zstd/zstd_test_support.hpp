#pragma once
// What the zstd kind's two test files share: frames made as other writers make them, and their
// content read back.
#include "zstd.hpp"

#include <gtest/gtest.h>
#include <zstd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <variant>

namespace crunch {

// `content` as a frame that does not declare its size (as a streaming writer makes them).
inline std::string frame_without_size(const std::string& content) {
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> c(ZSTD_createCCtx(), ZSTD_freeCCtx);
  ZSTD_CCtx_setParameter(c.get(), ZSTD_c_contentSizeFlag, 0);
  std::string out(ZSTD_compressBound(content.size()), '\0');
  ZSTD_inBuffer in{content.data(), content.size(), 0};
  ZSTD_outBuffer o{out.data(), out.size(), 0};
  while (ZSTD_compressStream2(c.get(), &o, &in, ZSTD_e_end) != 0) {
  }
  out.resize(o.pos);
  return out;
}

inline std::string decompressed(const std::string& frames, std::uint64_t max_output = 64 << 20, int window_log = 27) {
  auto r = zstd_decompress(frames, max_output, window_log, {});
  EXPECT_TRUE(r.has_value());
  if (!r) return {};
  if (auto* no = std::get_if<zstd_refusal>(&*r)) {
    ADD_FAILURE() << no->why;
    return {};
  }
  return std::get<std::string>(*r);
}

}  // namespace crunch
