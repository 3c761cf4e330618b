// Images as the web serves them: AVIF, format=auto from Accept, smart crops, fit=outside, what
// metadata is kept, and /v1/image/info — as functions and over HTTP.
#include "image.hpp"
#include "image_test_support.hpp"
#include "test_support.hpp"

#include <gtest/gtest.h>
#include <vips/vips.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

namespace crunch {
namespace {

using image_ptr = std::unique_ptr<VipsImage, void (*)(void*)>;

image_ptr load(const std::string& bytes) {
  init_vips();
  // The server's module lets only its four input formats in; the tests read AVIF back too.
  vips_operation_block_set("VipsForeignLoadHeif", FALSE);
  VipsImage* image = vips_image_new_from_buffer(bytes.data(), bytes.size(), "", nullptr);
  if (image == nullptr) throw std::runtime_error(vips_error_buffer());
  return {image, g_object_unref};
}

std::string encode_jpeg(VipsImage* image, bool strip = false) {
  void* out = nullptr;
  std::size_t length = 0;
  if (vips_jpegsave_buffer(image, &out, &length, "Q", 90, "strip", strip ? TRUE : FALSE, nullptr) != 0) {
    throw std::runtime_error(vips_error_buffer());
  }
  std::string bytes(static_cast<const char*>(out), length);
  g_free(out);
  return bytes;
}

TEST(negotiate_format, prefers_avif_then_webp_then_jpeg_or_png_for_alpha) {
  EXPECT_EQ(negotiate_format("image/avif,image/webp,*/*", false), image_format::avif);
  EXPECT_EQ(negotiate_format("image/avif,image/webp,image/apng,image/*,*/*;q=0.8", true), image_format::avif);
  EXPECT_EQ(negotiate_format("image/webp,*/*", false), image_format::webp);
  EXPECT_EQ(negotiate_format("image/webp,*/*", true), image_format::webp);
  EXPECT_EQ(negotiate_format("*/*", false), image_format::jpeg);
  EXPECT_EQ(negotiate_format("*/*", true), image_format::png);
  EXPECT_EQ(negotiate_format("image/*", true), image_format::png);
  EXPECT_EQ(negotiate_format("", false), image_format::jpeg);  // no Accept: anything goes
  // What a client refuses it does not get: q=0, or a list that leaves it out.
  EXPECT_EQ(negotiate_format("image/avif;q=0, image/webp", false), image_format::webp);
  EXPECT_EQ(negotiate_format("IMAGE/AVIF ; Q=0.5", false), image_format::avif);
  EXPECT_EQ(negotiate_format("image/png", false), image_format::png);
  EXPECT_EQ(negotiate_format("image/jpeg", true), image_format::jpeg);
  EXPECT_EQ(negotiate_format("*/*, image/jpeg;q=0", false), image_format::png);
  EXPECT_EQ(negotiate_format("text/html", false), image_format::jpeg);  // takes none: the usual one
}

TEST(make_thumbnail, avif_out_at_the_effort_and_quality_asked) {
  const auto source = synthetic_image(400, 300, image_format::jpeg);
  auto spec = box(200, 0, image_fit::inside, image_format::avif);
  spec.quality = 50;
  const auto avif = thumbnail(source, spec);
  EXPECT_EQ(avif.substr(4, 8), "ftypavif");
  const auto image = load(avif);
  EXPECT_EQ(image->Xsize, 200);
  EXPECT_EQ(image->Ysize, 150);
  // Lower quality is smaller; effort trades time for size, and either way it decodes the same size.
  spec.quality = 20;
  EXPECT_LT(thumbnail(source, spec).size(), avif.size());
  spec.effort = 0;
  EXPECT_EQ(load(thumbnail(source, spec))->Xsize, 200);
}

TEST(plan_thumbnail, prices_avif_far_above_webp_and_by_effort) {
  const auto header = header_of(synthetic_image(400, 300, image_format::jpeg));
  const auto webp = plan_thumbnail(header, box(400, 0, image_fit::inside, image_format::webp));
  auto avif_spec = box(400, 0, image_fit::inside, image_format::avif);
  const auto avif = plan_thumbnail(header, avif_spec);
  EXPECT_GT(avif.cost_units, 4 * webp.cost_units);
  EXPECT_GT(avif.memory_bytes, webp.memory_bytes + (8u << 20));  // libaom's own
  avif_spec.effort = 6;
  const auto effort_6 = plan_thumbnail(header, avif_spec).cost_units;
  EXPECT_GT(effort_6, 1.5 * avif.cost_units);
  avif_spec.effort = 8;
  EXPECT_GT(plan_thumbnail(header, avif_spec).cost_units, 1.5 * effort_6);
}

// A grey field with one saturated red square at (x, y), side `side`.
std::string with_salient_square(int width, int height, int x, int y, int side) {
  init_vips();
  VipsImage* grey = nullptr;
  vips_black(&grey, width, height, "bands", 3, nullptr);
  image_ptr base(grey, g_object_unref);
  VipsImage* lifted = nullptr;
  vips_linear1(base.get(), &lifted, 1.0, 128.0, "uchar", TRUE, nullptr);
  image_ptr field(lifted, g_object_unref);
  VipsImage* memory = vips_image_copy_memory(field.get());
  image_ptr canvas(memory, g_object_unref);
  double red[3] = {230, 20, 20};
  vips_draw_rect(canvas.get(), red, 3, x, y, side, side, "fill", TRUE, nullptr);
  VipsImage* srgb = nullptr;
  vips_copy(canvas.get(), &srgb, "interpretation", VIPS_INTERPRETATION_sRGB, nullptr);
  image_ptr out(srgb, g_object_unref);
  return encode_jpeg(out.get(), true);
}

// The mean of band `band` of an encoded image.
double band_mean(const std::string& bytes, int band) {
  const auto image = load(bytes);
  VipsImage* one = nullptr;
  vips_extract_band(image.get(), &one, band, nullptr);
  image_ptr owned(one, g_object_unref);
  double mean = 0;
  vips_avg(owned.get(), &mean, nullptr);
  return mean;
}

TEST(make_thumbnail, crop_attention_keeps_the_salient_region_and_centre_does_not) {
  // 600x200: the red square sits at the right end, far from the centre's 200x200.
  const auto source = with_salient_square(600, 200, 470, 60, 80);
  auto spec = box(200, 200, image_fit::cover, image_format::png);
  const auto centre = thumbnail(source, spec);
  spec.crop = image_crop::attention;
  const auto attention = thumbnail(source, spec);
  EXPECT_EQ(load(attention)->Xsize, 200);
  EXPECT_EQ(load(attention)->Ysize, 200);
  // Centre: grey through and through (red = green). Attention: the square is in it.
  EXPECT_LT(band_mean(centre, 0) - band_mean(centre, 1), 5) << "the centre crop found the square";
  EXPECT_GT(band_mean(attention, 0) - band_mean(attention, 1), 25) << "attention missed the square";
}

TEST(make_thumbnail, keep_icc_and_copyright_keeps_them_alone_and_never_gps) {
  init_vips();
  VipsImage* plain = nullptr;
  vips_black(&plain, 64, 48, "bands", 3, nullptr);
  image_ptr base(plain, g_object_unref);
  VipsImage* srgb = nullptr;
  vips_copy(base.get(), &srgb, "interpretation", VIPS_INTERPRETATION_sRGB, nullptr);
  image_ptr tagged(srgb, g_object_unref);
  vips_image_set_string(tagged.get(), "exif-ifd0-Copyright", "Jane Doe 2026");
  vips_image_set_string(tagged.get(), "exif-ifd0-Artist", "Jane Doe");
  vips_image_set_string(tagged.get(), "exif-ifd0-Make", "Camera Maker");
  vips_image_set_string(tagged.get(), "exif-ifd3-GPSLatitudeRef", "N");
  VipsBlob* profile = nullptr;
  ASSERT_EQ(vips_profile_load("srgb", &profile, nullptr), 0) << vips_error_buffer();
  std::size_t profile_bytes = 0;
  const void* profile_data = vips_blob_get(profile, &profile_bytes);
  vips_image_set_blob_copy(tagged.get(), VIPS_META_ICC_NAME, profile_data, profile_bytes);
  vips_area_unref(VIPS_AREA(profile));
  const auto source = encode_jpeg(tagged.get());
  {
    const auto in = load(source);
    ASSERT_NE(vips_image_get_typeof(in.get(), "exif-ifd3-GPSLatitudeRef"), 0u) << "the test image has no GPS";
    ASSERT_NE(vips_image_get_typeof(in.get(), VIPS_META_ICC_NAME), 0u);
  }
  auto field = [](VipsImage* image, const char* name) {
    const char* value = nullptr;
    if (vips_image_get_typeof(image, name) == 0 || vips_image_get_string(image, name, &value) != 0) return std::string();
    return std::string(value);
  };
  for (const auto format : {image_format::jpeg, image_format::webp, image_format::png, image_format::avif}) {
    SCOPED_TRACE(std::string(format_name(format)));
    auto spec = box(32, 0, image_fit::inside, format);
    const auto stripped = load(thumbnail(source, spec));
    EXPECT_EQ(vips_image_get_typeof(stripped.get(), VIPS_META_ICC_NAME), 0u);
    EXPECT_EQ(field(stripped.get(), "exif-ifd0-Copyright"), "");
    spec.keep_icc = true;
    spec.keep_copyright = true;
    const auto kept = load(thumbnail(source, spec));
    EXPECT_NE(vips_image_get_typeof(kept.get(), VIPS_META_ICC_NAME), 0u);
    if (format != image_format::png) {  // libvips 8.14 writes no EXIF into a PNG
      EXPECT_EQ(field(kept.get(), "exif-ifd0-Copyright").rfind("Jane Doe 2026", 0), 0u);
      EXPECT_EQ(field(kept.get(), "exif-ifd0-Artist").rfind("Jane Doe", 0), 0u);
    }
    EXPECT_EQ(field(kept.get(), "exif-ifd0-Make"), "");
    EXPECT_EQ(vips_image_get_typeof(kept.get(), "exif-ifd3-GPSLatitudeRef"), 0u);
    EXPECT_EQ(vips_image_get_typeof(kept.get(), VIPS_META_XMP_NAME), 0u);
  }
}

TEST(read_image_info, reads_the_header_of_a_30_gb_pixel_bomb_without_decoding_it) {
  // 200000 x 50000 RGB: 10 gigapixels, 30 GB decoded.
  const auto bomb = png_declaring(200'000, 50'000);
  const auto started = std::chrono::steady_clock::now();
  const auto info = read_image_info(bomb);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  EXPECT_EQ(info.format, image_format::png);
  EXPECT_EQ(info.width, 200'000u);
  EXPECT_EQ(info.height, 50'000u);
  EXPECT_FALSE(info.alpha);
  EXPECT_EQ(info.frames, 1u);
  EXPECT_EQ(info.colour_space, "srgb");
}

TEST(read_image_info, reads_orientation_alpha_frames_and_profile) {
  const auto rotated = read_image_info(synthetic_image(80, 40, image_format::jpeg, 85, 6));
  EXPECT_EQ(rotated.format, image_format::jpeg);
  EXPECT_EQ(rotated.width, 80u);
  EXPECT_EQ(rotated.orientation, 6u);
  const auto webp = read_image_info(synthetic_image(30, 20, image_format::webp));
  EXPECT_EQ(webp.format, image_format::webp);
  EXPECT_EQ(webp.height, 20u);
  EXPECT_THROW(read_image_info(std::string("\x89PNG\r\n\x1a\n", 8) + "junk"), image_error);
}

}  // namespace

namespace testing {
namespace {

TEST(image_kind, format_auto_follows_accept_and_says_vary) {
  running_server s(test_config());
  http_connection c(s.port(), std::chrono::seconds(30));
  const auto jpeg = synthetic_image(320, 240, image_format::jpeg);
  const std::pair<const char*, const char*> cases[] = {
      {"image/avif,image/webp,*/*", "image/avif"},
      {"image/webp,*/*", "image/webp"},
      {"*/*", "image/jpeg"},
  };
  for (const auto& [accept, expected] : cases) {
    SCOPED_TRACE(accept);
    const auto r = c.post("/v1/image/thumbnail?width=100&format=auto", "image/jpeg", jpeg,
                          std::string("Accept: ") + accept + "\r\n");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200u) << r->body;
    EXPECT_EQ(r->header("content-type"), expected);
    EXPECT_EQ(r->header("vary"), "Accept, Prefer");  // Prefer: every job route may answer asynchronously
  }
  // An image with alpha stays PNG for a client that takes nothing better.
  const auto png = synthetic_image(64, 64, image_format::png);
  const auto gif = c.post("/v1/image/thumbnail?width=50&format=auto", "image/gif",
                          [] {
                            std::ifstream in(CRUNCH_KINDS_SOURCE "/image/data/gradient-100x50.gif", std::ios::binary);
                            return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
                          }(),
                          "Accept: */*\r\n");
  ASSERT_EQ(gif->status, 200u) << gif->body;
  EXPECT_EQ(gif->header("content-type"), "image/png");  // a GIF decodes with alpha
  // Without format=auto the answer does not vary with Accept.
  const auto fixed = c.post("/v1/image/thumbnail?width=50&format=avif", "image/png", png, "Accept: */*\r\n");
  ASSERT_EQ(fixed->status, 200u) << fixed->body;
  EXPECT_EQ(fixed->header("content-type"), "image/avif");
  EXPECT_EQ(fixed->header("vary"), "Prefer");
}

TEST(image_kind, info_answers_from_the_header_and_refuses_like_a_thumbnail) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto r = c.post("/v1/image/info", "image/jpeg", synthetic_image(80, 40, image_format::jpeg, 85, 6));
  ASSERT_EQ(r->status, 200u) << r->body;
  EXPECT_EQ(json_of(*r), (nlohmann::json{{"format", "jpeg"},
                                         {"width", 80},
                                         {"height", 40},
                                         {"orientation", 6},
                                         {"alpha", false},
                                         {"frames", 1},
                                         {"frames_at_least", false},
                                         {"colour_space", "srgb"},
                                         {"icc_profile", false}}));
  // The 30 GB pixel bomb: its claim answered in milliseconds, where a thumbnail of it is refused.
  const auto bomb = png_declaring(200'000, 50'000);
  const auto started = std::chrono::steady_clock::now();
  const auto claimed = c.post("/v1/image/info", "image/png", bomb);
  ASSERT_EQ(claimed->status, 200u) << claimed->body;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  EXPECT_EQ(json_of(*claimed).at("width"), 200'000);
  EXPECT_EQ(json_of(*claimed).at("height"), 50'000);
  EXPECT_EQ(c.post("/v1/image/thumbnail?width=100", "image/png", bomb)->status, 400u);
  EXPECT_EQ(memory_held(c.get("/metrics")->body), 0);
  EXPECT_EQ(c.post("/v1/image/info", "image/png", synthetic_image(8, 8, image_format::jpeg))->status, 400u);
  EXPECT_EQ(c.post("/v1/image/info", "image/png", "")->status, 400u);
  EXPECT_EQ(c.post("/v1/image/info", "text/plain", "hello")->status, 415u);
}

TEST(image_kind, info_counts_a_gifs_frames_or_says_the_count_is_a_lower_bound) {
  running_server s(test_config());
  http_connection c(s.port());
  // A GIF of `n` one-pixel frames, each its own image block.
  auto gif = [](std::size_t n) {
    const std::string frame("\x2c\0\0\0\0\x01\0\x01\0\0\x02\x02\x44\x01\0", 15);
    std::string out("GIF89a\x01\0\x01\0\x80\0\0\0\0\0\xff\xff\xff", 19);
    for (std::size_t i = 0; i < n; ++i) out += frame;
    return out + ";";
  };
  const auto few = c.post("/v1/image/info", "image/gif", gif(100));
  ASSERT_EQ(few->status, 200u) << few->body;
  EXPECT_EQ(json_of(*few).at("frames"), 100);
  EXPECT_EQ(json_of(*few).at("frames_at_least"), false);
  const auto many = c.post("/v1/image/info?timeout_ms=60000", "image/gif", gif(20'000));
  ASSERT_EQ(many->status, 200u) << many->body;
  EXPECT_EQ(json_of(*many).at("frames"), gif_frames_counted);
  EXPECT_EQ(json_of(*many).at("frames_at_least"), true);
}

}  // namespace
}  // namespace testing
}  // namespace crunch
