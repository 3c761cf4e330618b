// The zstd kind's functions (zstd.cpp); its routes over HTTP are in zstd_kind_test.cpp.
#include "zstd.hpp"
#include "zstd_test_support.hpp"

#include <gtest/gtest.h>
#include <zstd.h>

#include <memory>

namespace crunch {
namespace {

zstd_refusal refusal(const std::string& frames, std::uint64_t max_output, int window_log = 27) {
  auto r = zstd_decompress(frames, max_output, window_log, {});
  EXPECT_TRUE(r.has_value());
  if (!r || !std::holds_alternative<zstd_refusal>(*r)) {
    ADD_FAILURE() << "decompressed what should have been refused";
    return {};
  }
  return std::get<zstd_refusal>(*r);
}

TEST(zstd, round_trips_at_every_level_and_declares_its_size) {
  const auto text = zstd_sample(300'000);
  for (const int level : {1, 3, 9, 19}) {
    SCOPED_TRACE(level);
    const auto frame = zstd_compress(text, level, 23, {});
    ASSERT_TRUE(frame);
    EXPECT_LT(frame->size(), text.size() / 2);
    const auto header = std::get<zstd_header>(zstd_read_header(*frame));
    EXPECT_EQ(header.content_size, text.size());
    EXPECT_EQ(decompressed(*frame), text);
  }
  EXPECT_EQ(decompressed(*zstd_compress("", 3, 23, {})), "");
}

TEST(zstd, keeps_its_window_within_the_bound_and_refuses_frames_beyond_it) {
  const auto text = zstd_sample(2 << 20);
  const auto small = zstd_compress(text, 6, 15, {});
  ASSERT_TRUE(small);
  EXPECT_LE(std::get<zstd_header>(zstd_read_header(*small)).window_bytes, 1u << 15);
  EXPECT_EQ(decompressed(*small, 64 << 20, 15), text);

  const auto wide = zstd_compress(text, 6, 22, {});
  ASSERT_TRUE(wide);
  EXPECT_GT(std::get<zstd_header>(zstd_read_header(*wide)).window_bytes, 1u << 15);
  const auto no = refusal(*wide, 64 << 20, 15);
  EXPECT_FALSE(no.too_large);
  EXPECT_NE(no.why.find("window"), std::string::npos) << no.why;
}

TEST(zstd, stops_a_bomb_by_what_it_produces_whatever_it_declares) {
  const std::string zeros(8 << 20, '\0');
  const auto bomb = frame_without_size(zeros);
  EXPECT_LT(bomb.size(), 2048u);  // 8 MiB in a few hundred bytes
  EXPECT_FALSE(std::get<zstd_header>(zstd_read_header(bomb)).content_size);
  const auto no = refusal(bomb, 1 << 20);
  EXPECT_TRUE(no.too_large) << no.why;
  // Exactly at the limit is not a bomb.
  EXPECT_EQ(decompressed(bomb, zeros.size()).size(), zeros.size());
}

TEST(zstd, refuses_what_is_not_whole_frames) {
  const auto frame = *zstd_compress(zstd_sample(100'000), 3, 23, {});
  EXPECT_TRUE(std::holds_alternative<std::string>(zstd_read_header("not zstd at all")));
  EXPECT_TRUE(std::holds_alternative<std::string>(zstd_read_header(frame.substr(0, 3))));
  EXPECT_FALSE(refusal(frame.substr(0, frame.size() - 10), 1 << 20).too_large);
  auto flipped = frame;
  flipped[flipped.size() / 2] ^= 0x55;
  EXPECT_FALSE(refusal(flipped, 1 << 20).too_large);
  EXPECT_FALSE(refusal(frame + "trailing junk", 1 << 20).too_large);
}

TEST(zstd, decompresses_frames_one_after_the_other) {
  const auto a = zstd_sample(50'000, 1);
  const auto b = zstd_sample(70'000, 2);
  EXPECT_EQ(decompressed(*zstd_compress(a, 3, 23, {}) + frame_without_size(b)), a + b);
}

TEST(zstd, stops_when_asked) {
  std::stop_source stop;
  stop.request_stop();
  const auto text = zstd_sample(1 << 20);
  EXPECT_FALSE(zstd_compress(text, 3, 23, stop.get_token()));
  EXPECT_FALSE(zstd_decompress(*zstd_compress(text, 3, 23, {}), 2 << 20, 23, stop.get_token()));
}

TEST(zstd, calibration_weighs_higher_levels_dearer) {
  const auto costs = zstd_calibrate(19);
  EXPECT_GT(costs.ns_per_byte, 0);
  EXPECT_EQ(costs.level[1], 1.0);
  EXPECT_GT(costs.level[19], costs.level[1] * 3);  // level 19 is tens of times slower than level 1
  EXPECT_GT(costs.decompress, 0);
}

}  // namespace
}  // namespace crunch
