// The image functions without a server: the header sniffer, the plan, and thumbnails made with
// libvips from images the tests generate.
#include "image.hpp"
#include "image_test_support.hpp"

#include <gtest/gtest.h>
#include <vips/vips.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <fstream>
#include <iterator>
#include <memory>
#include <thread>

namespace crunch {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

// What libvips reads back from an encoded image.
struct decoded {
  int width = 0;
  int height = 0;
  int bands = 0;
  VipsInterpretation interpretation = VIPS_INTERPRETATION_ERROR;
  std::string loader;
  bool exif = false;
  bool icc = false;
  int orientation = 1;
};

decoded decode(const std::string& bytes) {
  init_vips();
  VipsImage* image = vips_image_new_from_buffer(bytes.data(), bytes.size(), "", nullptr);
  if (image == nullptr) throw std::runtime_error(vips_error_buffer());
  std::unique_ptr<VipsImage, void (*)(void*)> owned(image, g_object_unref);
  decoded d;
  d.width = image->Xsize;
  d.height = image->Ysize;
  d.bands = image->Bands;
  d.interpretation = vips_image_guess_interpretation(image);
  const char* loader = nullptr;
  if (vips_image_get_string(image, VIPS_META_LOADER, &loader) == 0) d.loader = loader;
  d.exif = vips_image_get_typeof(image, VIPS_META_EXIF_NAME) != 0;
  d.icc = vips_image_get_typeof(image, VIPS_META_ICC_NAME) != 0;
  if (vips_image_get_typeof(image, VIPS_META_ORIENTATION) != 0) vips_image_get_int(image, VIPS_META_ORIENTATION, &d.orientation);
  return d;
}

// A committed GIF (data/README.md says why): 100x50.
std::string test_gif() {
  std::ifstream in(CRUNCH_KINDS_SOURCE "/image/data/gradient-100x50.gif", std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The tests' image of `format`: generated, but for a GIF, which is read from data/.
std::string test_image(std::uint32_t width, std::uint32_t height, image_format format) {
  if (format == image_format::gif) return test_gif();
  return synthetic_image(width, height, format);
}

TEST(sniff_image, reads_each_format_and_its_dimensions) {
  for (const auto format : {image_format::jpeg, image_format::png, image_format::webp, image_format::gif}) {
    SCOPED_TRACE(format_name(format));
    const auto bytes = test_image(100, 50, format);
    const auto h = header_of(bytes);
    EXPECT_EQ(h.format, format);
    EXPECT_EQ(h.width, 100u);
    EXPECT_EQ(h.height, 50u);
  }
  EXPECT_EQ(header_of(synthetic_image(16, 16, image_format::jpeg)).whole_frame, false);  // baseline
  EXPECT_EQ(header_of(synthetic_image(64, 32, image_format::jpeg)).samples, 64u * 32u * 3u / 2u);  // 4:2:0
  EXPECT_EQ(header_of(test_gif()).whole_frame, true);
}

TEST(sniff_image, reads_a_bomb_s_claim_without_decoding_it) {
  const auto bomb = png_declaring(100'000, 100'000);
  EXPECT_LT(bomb.size(), 100u);
  const auto h = header_of(bomb);
  EXPECT_EQ(h.width, 100'000u);
  EXPECT_EQ(h.pixels(), 10'000'000'000ull);
}

TEST(sniff_image, refuses_junk_and_headers_cut_short) {
  for (const std::string& junk : {std::string(), std::string("hello"), std::string("<svg xmlns='...'/>"),
                                 std::string("II*\0", 4), std::string("BM") + std::string(60, '\0'),
                                 std::string("\xFF\xD8\xFF", 3), std::string("\x89PNG\r\n\x1a\n", 8),
                                 std::string("GIF89a\x01", 7), std::string("RIFF\0\0\0\0WEBPVP8 ", 16)}) {
    EXPECT_TRUE(std::holds_alternative<std::string>(sniff_image(junk))) << junk;
  }
  // Every prefix of a real JPEG shorter than its frame header is refused, never read past its end.
  const auto jpeg = synthetic_image(40, 30, image_format::jpeg);
  std::size_t first_good = 0;
  for (std::size_t n = 0; n <= jpeg.size() && first_good == 0; ++n) {
    if (std::holds_alternative<image_header>(sniff_image(std::string_view(jpeg).substr(0, n)))) first_good = n;
  }
  EXPECT_GT(first_good, 10u);
  // A JPEG that is all markers and no frame: bounded, refused.
  std::string markers("\xFF\xD8", 2);
  for (int i = 0; i < 5000; ++i) markers += std::string("\xFF\xE1\x00\x02", 4);
  EXPECT_TRUE(std::holds_alternative<std::string>(sniff_image(markers)));
}

TEST(format_of_media_type, ignores_case_and_parameters_and_nothing_else) {
  EXPECT_EQ(format_of_media_type("image/jpeg"), image_format::jpeg);
  EXPECT_EQ(format_of_media_type(" Image/PNG ; x=1"), image_format::png);
  EXPECT_EQ(format_of_media_type("image/webp"), image_format::webp);
  EXPECT_EQ(format_of_media_type("image/gif"), image_format::gif);
  EXPECT_EQ(format_of_media_type("image/jpg"), std::nullopt);
  EXPECT_EQ(format_of_media_type("image/svg+xml"), std::nullopt);
  EXPECT_EQ(format_of_media_type(""), std::nullopt);
}

TEST(make_thumbnail, every_format_in_every_format_out) {
  for (const auto in : {image_format::jpeg, image_format::png, image_format::webp, image_format::gif}) {
    const auto source = test_image(200, 100, in);
    for (const auto out : {image_format::jpeg, image_format::webp, image_format::png}) {
      SCOPED_TRACE(std::string(format_name(in)) + " -> " + std::string(format_name(out)));
      const auto d = decode(thumbnail(source, box(50, 0, image_fit::inside, out)));
      EXPECT_EQ(d.width, 50);
      EXPECT_EQ(d.height, 25);  // 200x100 and the GIF's 100x50 alike
      EXPECT_EQ(d.interpretation, VIPS_INTERPRETATION_sRGB);
      EXPECT_EQ(d.loader, std::string(format_name(out)) + "load_buffer");
    }
  }
}

TEST(make_thumbnail, geometry_of_inside_cover_and_fill_is_exact) {
  const auto source = synthetic_image(400, 300, image_format::jpeg);
  auto size = [&](thumbnail_spec spec) {
    const auto d = decode(thumbnail(source, spec));
    return std::pair{d.width, d.height};
  };
  EXPECT_EQ(size(box(100, 100)), (std::pair{100, 75}));
  EXPECT_EQ(size(box(100, 0)), (std::pair{100, 75}));
  EXPECT_EQ(size(box(0, 150)), (std::pair{200, 150}));
  EXPECT_EQ(size(box(100, 100, image_fit::cover)), (std::pair{100, 100}));
  EXPECT_EQ(size(box(30, 90, image_fit::cover)), (std::pair{30, 90}));
  EXPECT_EQ(size(box(50, 100, image_fit::fill)), (std::pair{50, 100}));
  // With one side only, cover and fill are inside: there is no box to fill.
  EXPECT_EQ(size(box(100, 0, image_fit::cover)), (std::pair{100, 75}));
  // A smaller image is not blown up unless asked (sharp's withoutEnlargement, made the default).
  EXPECT_EQ(size(box(800, 0)), (std::pair{400, 300}));
  EXPECT_EQ(size(box(800, 800, image_fit::cover)), (std::pair{400, 300}));
  auto enlarged = box(800, 0);
  enlarged.enlarge = true;
  EXPECT_EQ(size(enlarged), (std::pair{800, 600}));
  enlarged = box(800, 800, image_fit::cover);
  enlarged.enlarge = true;
  EXPECT_EQ(size(enlarged), (std::pair{800, 800}));
  // fill stretches whatever enlarge says.
  EXPECT_EQ(size(box(800, 100, image_fit::fill)), (std::pair{800, 100}));
  // outside: as small as covers the box, nothing cropped.
  EXPECT_EQ(size(box(100, 100, image_fit::outside)), (std::pair{133, 100}));
  EXPECT_EQ(size(box(200, 50, image_fit::outside)), (std::pair{200, 150}));
  EXPECT_EQ(size(box(100, 0, image_fit::outside)), (std::pair{100, 75}));
  EXPECT_EQ(size(box(800, 100, image_fit::outside)), (std::pair{400, 300}));  // not enlarged
}

TEST(make_thumbnail, applies_the_exif_orientation_and_strips_every_metadata_block) {
  // Orientation 6: stored 80x40, shown rotated 90° clockwise, 40x80.
  const auto rotated = synthetic_image(80, 40, image_format::jpeg, 85, 6);
  const auto before = decode(rotated);
  ASSERT_TRUE(before.exif);
  ASSERT_EQ(before.orientation, 6);
  for (const auto out : {image_format::jpeg, image_format::webp, image_format::png}) {
    SCOPED_TRACE(format_name(out));
    const auto bytes = thumbnail(rotated, box(20, 0, image_fit::inside, out));
    const auto d = decode(bytes);
    EXPECT_EQ(d.width, 20);
    EXPECT_EQ(d.height, 40);
    EXPECT_FALSE(d.exif);
    EXPECT_FALSE(d.icc);
    EXPECT_EQ(bytes.find("Exif"), std::string::npos);
    EXPECT_EQ(bytes.find("EXIF"), std::string::npos);
    EXPECT_EQ(bytes.find("http://ns.adobe.com/xap"), std::string::npos);  // no XMP either
  }
}

TEST(sniff_image, reads_a_jpegs_exif_orientation_as_libvips_does) {
  for (const int orientation : {1, 3, 6, 8}) {
    SCOPED_TRACE(orientation);
    const auto jpeg = synthetic_image(80, 40, image_format::jpeg, 85, orientation);
    EXPECT_EQ(header_of(jpeg).orientation, orientation);
    EXPECT_EQ(decode(jpeg).orientation, orientation);
  }
  EXPECT_EQ(header_of(synthetic_image(80, 40, image_format::jpeg)).orientation, 1);  // no EXIF at all
  EXPECT_EQ(header_of(synthetic_image(80, 40, image_format::png)).orientation, 0);   // not looked for
}

// AVIF's encode is priced by what libaom was measured to take (bench/avif_cost.py), which is far
// from linear in output pixels: an effort-6 pixel weighs 85 units at 400 px wide, 439 at 2000 and
// 335 at 4000, and an effort-0 pixel 11 to 12 at any size.
TEST(plan_thumbnail, prices_an_avif_encode_by_its_measured_weight_at_that_size_and_effort) {
  image_header h;
  h.format = image_format::jpeg;
  h.width = 4000;
  h.height = 3000;
  h.bands = 3;
  h.samples = 4000u * 3000u * 3u / 2u;
  h.orientation = 1;
  auto weight = [&](std::uint32_t width, std::uint32_t effort) {
    thumbnail_spec spec;
    spec.width = width;
    spec.format = image_format::avif;
    spec.effort = effort;
    const auto plan = plan_thumbnail(h, spec);
    const double rest = static_cast<double>(h.pixels()) / 4 + static_cast<double>(plan.loaded_pixels);
    return (plan.cost_units - rest) / static_cast<double>(plan.output_pixels);
  };
  EXPECT_NEAR(weight(400, 6), 85.3, 0.5);
  EXPECT_NEAR(weight(2000, 6), 439.3, 0.5);
  EXPECT_NEAR(weight(4000, 6), 334.8, 0.5);
  EXPECT_NEAR(weight(4000, 0), 11.1, 0.5);
  // Between measured sizes, between their weights.
  EXPECT_GT(weight(1200, 6), 144.3);
  EXPECT_LT(weight(1200, 6), 279.9);
  // A 12-megapixel effort-6 encode costs over 4,000 times a 400 px WebP's encode.
  thumbnail_spec webp;
  webp.width = 400;
  webp.format = image_format::webp;
  EXPECT_GT(weight(4000, 6) * 12e6, 4000 * 8 * static_cast<double>(plan_thumbnail(h, webp).output_pixels));
}

TEST(plan_thumbnail, is_exact_for_a_jpeg_whose_orientation_the_header_gives) {
  // 4000x3000 shown rotated (6): 3000 wide. 400 wide is 1/7.5 of that, so 1/4 on load (1/8 would
  // be 375 wide), and the thumbnail is 400x533.
  image_header photo{image_format::jpeg, 4000, 3000, 3, false, 18'000'000, 6};
  const auto rotated = plan_thumbnail(photo, box(400, 0, image_fit::inside, image_format::webp));
  EXPECT_EQ(rotated.shrink_on_load, 4u);
  EXPECT_EQ(rotated.output_pixels, 400u * 533u);
  // As stored (1): 4000 wide, 1/10: 1/8 on load, 400x300.
  photo.orientation = 1;
  const auto upright = plan_thumbnail(photo, box(400, 0, image_fit::inside, image_format::webp));
  EXPECT_EQ(upright.shrink_on_load, 8u);
  EXPECT_EQ(upright.output_pixels, 400u * 300u);
}

TEST(make_thumbnail, a_jpeg_whose_exif_readers_disagree_is_refused_not_misplanned) {
  // The header says 1, the image 6: the plan's shrink would be for the wrong axes.
  const auto rotated = synthetic_image(80, 40, image_format::jpeg, 85, 6);
  auto header = header_of(rotated);
  header.orientation = 1;
  EXPECT_THROW(make_thumbnail(rotated, header, box(20, 0), {}), image_error);
}

TEST(make_thumbnail, a_truncated_or_corrupt_image_is_an_image_error) {
  const auto jpeg = synthetic_image(300, 200, image_format::jpeg);
  const auto cut = jpeg.substr(0, jpeg.size() / 2);
  EXPECT_THROW(thumbnail(cut, box(50, 0)), image_error);
  auto corrupt = jpeg;
  for (std::size_t i = corrupt.size() / 3; i < corrupt.size() / 3 + 200; ++i) corrupt[i] = '\x55';
  // libjpeg may decode damaged scans with a warning, or fail: it must not crash, and a result
  // that comes back is still an image of the right size.
  try {
    EXPECT_EQ(decode(thumbnail(corrupt, box(50, 0))).width, 50);
  } catch (const image_error&) {
  }
  const auto png = synthetic_image(300, 200, image_format::png);
  EXPECT_THROW(thumbnail(png.substr(0, png.size() - 100), box(50, 0)), image_error);
  // A header that lies about the size: what the decoder reads must be what was priced.
  auto header = header_of(jpeg);
  header.width += 1;
  EXPECT_THROW(make_thumbnail(jpeg, header, box(50, 0), {}), image_error);
}

TEST(make_thumbnail, stops_midway_when_its_token_fires) {
  // Large enough to take a while: a 3000x3000 PNG (no shrink-on-load) to a 2000 px PNG. What is
  // compared is CPU time, the process's (libvips's threads included), not the wall clock: a loaded
  // machine stretches the second but not the first.
  auto cpu_now = [] {
    timespec t{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec);
  };
  const auto big = synthetic_image(3000, 3000, image_format::png);
  const auto spec = box(2000, 0);
  const auto header = header_of(big);
  const auto t0 = clock::now();
  const auto cpu0 = cpu_now();
  ASSERT_TRUE(make_thumbnail(big, header, spec, {}));
  const auto whole = clock::now() - t0;
  const auto whole_cpu = cpu_now() - cpu0;

  // Asked to stop a tenth of the way in (a point in time to stop at; what is measured is the CPU
  // the job uses from the moment it was asked).
  std::stop_source stop;
  std::atomic<std::int64_t> asked_at_cpu{0};
  std::thread stopper([&] {
    std::this_thread::sleep_for(whole / 10);
    asked_at_cpu = std::chrono::duration_cast<std::chrono::nanoseconds>(cpu_now()).count();
    stop.request_stop();
  });
  const auto out = make_thumbnail(big, header, spec, stop.get_token());
  const auto ended_cpu = cpu_now();
  stopper.join();
  EXPECT_FALSE(out);
  const auto after_asked = ended_cpu - std::chrono::nanoseconds(asked_at_cpu.load());
  RecordProperty("stop_cpu_us", static_cast<int>(std::chrono::duration<double, std::micro>(after_asked).count()));
  EXPECT_LT(after_asked, whole_cpu / 4) << std::chrono::duration<double, std::milli>(after_asked).count()
                                        << " ms of CPU after it was asked to stop, "
                                        << std::chrono::duration<double, std::milli>(whole_cpu).count()
                                        << " ms for the whole thumbnail";
}

TEST(plan_thumbnail, prices_from_the_header_and_shrinks_on_load_like_libvips) {
  image_header photo{image_format::jpeg, 4000, 3000, 3, false, 18'000'000};  // 4:2:0
  // Width only: shown rotated (EXIF), the photo would be 3000 wide, and 1/8 would be too small;
  // the header reader does not know the orientation, so the estimate takes 1/4.
  const auto by_width = plan_thumbnail(photo, box(400, 0, image_fit::inside, image_format::webp));
  EXPECT_EQ(by_width.shrink_on_load, 4u);
  EXPECT_EQ(by_width.loaded_pixels, 1000u * 750u);
  EXPECT_EQ(by_width.output_pixels, 400u * 533u);  // either orientation: 400x300 or 400x533
  // A 400x400 box is 1/10 either way: 1/8 on load.
  thumbnail_spec spec = box(400, 400, image_fit::inside, image_format::webp);
  const auto plan = plan_thumbnail(photo, spec);
  EXPECT_EQ(plan.shrink_on_load, 8u);
  EXPECT_EQ(plan.loaded_pixels, 500u * 375u);
  EXPECT_GT(plan.cost_units, 0);
  // A streaming JPEG decode needs a few MiB; the same image progressive holds its coefficients.
  EXPECT_LT(plan.memory_bytes, 16u << 20);
  photo.whole_frame = true;
  EXPECT_GT(plan_thumbnail(photo, spec).memory_bytes, 36u << 20);  // 18 M coefficients of 2 bytes
  // A PNG has no shrink-on-load.
  EXPECT_EQ(plan_thumbnail({image_format::png, 4000, 3000, 3, false, 36'000'000}, spec).shrink_on_load, 1u);
}

// ---- decoder bombs: work beyond the pixels that admission priced ----

// A PNG chunk of `type` holding `data`, with its CRC.
std::string png_chunk(std::string_view type, std::string_view data) {
  std::string chunk(4, '\0');
  for (int i = 0; i < 4; ++i) chunk[static_cast<std::size_t>(i)] = static_cast<char>(data.size() >> (24 - 8 * i));
  chunk.append(type).append(data);
  auto crc = crc32(0, reinterpret_cast<const Bytef*>(chunk.data() + 4), static_cast<uInt>(chunk.size() - 4));
  for (int i = 0; i < 4; ++i) chunk.push_back(static_cast<char>(crc >> (24 - 8 * i)));
  return chunk;
}

std::string deflated(std::size_t bytes_of_a) {
  const std::string plain(bytes_of_a, 'A');
  uLongf size = compressBound(static_cast<uLong>(plain.size()));
  std::string out(size, '\0');
  EXPECT_EQ(compress2(reinterpret_cast<Bytef*>(out.data()), &size, reinterpret_cast<const Bytef*>(plain.data()),
                      static_cast<uLong>(plain.size()), 9),
            Z_OK);
  out.resize(size);
  return out;
}

// A 64x64 PNG with a zTXt chunk of 16 KB that inflates to 16 MiB, as libpng would inflate it
// while reading the header (measured with 200 MiB: 1.4 s of CPU for a 64x64 thumbnail).
TEST(image_bombs, png_text_that_inflates_is_refused_and_dropped_before_any_decoder_sees_it) {
  const auto png = synthetic_image(64, 64, image_format::png);
  const auto bomb_chunk = png_chunk("zTXt", std::string("Comment\0\0", 9) + deflated(16u << 20));
  auto bomb = png.substr(0, 33) + bomb_chunk + png.substr(33);  // after IHDR
  const auto header = std::get<image_header>(sniff_image(bomb));
  EXPECT_EQ(png_text_bytes(bomb), bomb_chunk.size());
  thumbnail_spec spec;
  spec.width = 16;
  spec.format = image_format::png;
  try {
    make_thumbnail(bomb, header, spec, {});
    ADD_FAILURE() << "a PNG with " << bomb_chunk.size() << " bytes of zTXt was decoded";
  } catch (const image_error& e) {
    EXPECT_NE(std::string(e.what()).find("text chunks"), std::string::npos) << e.what();
  }
  drop_png_text(bomb);  // what the image kind does on the worker
  EXPECT_EQ(bomb, png);
  EXPECT_EQ(png_text_bytes(bomb), 0u);
  const auto out = make_thumbnail(bomb, header, spec, {});
  ASSERT_TRUE(out);
  EXPECT_EQ(decode(*out).width, 16);
  // A little text (a comment, a title) is read as before; only the thumbnail leaves it out.
  const auto small = png.substr(0, 33) + png_chunk("tEXt", std::string("Title\0a photo", 13)) + png.substr(33);
  EXPECT_TRUE(make_thumbnail(small, header, spec, {}));
  std::string not_png = "not a png";
  drop_png_text(not_png);
  EXPECT_EQ(not_png, "not a png");
}

// A progressive JPEG is decoded one scan at a time, each a pass over all its coefficients: a
// file of many scans costs what a far larger image would. Copies of its last scan make one.
TEST(image_bombs, a_jpeg_of_too_many_scans_is_refused_before_decoding) {
  init_vips();
  const auto baseline = synthetic_image(256, 256, image_format::jpeg);
  VipsImage* image = vips_image_new_from_buffer(baseline.data(), baseline.size(), "", nullptr);
  ASSERT_NE(image, nullptr);
  void* buffer = nullptr;
  std::size_t length = 0;
  ASSERT_EQ(vips_jpegsave_buffer(image, &buffer, &length, "interlace", TRUE, nullptr), 0);
  g_object_unref(image);
  const std::string progressive(static_cast<const char*>(buffer), length);
  g_free(buffer);
  const auto scans = jpeg_scans(progressive);
  EXPECT_GE(scans, 2u);
  EXPECT_LE(scans, 20u);
  EXPECT_EQ(jpeg_scans(baseline), 1u);
  const auto header = std::get<image_header>(sniff_image(progressive));
  EXPECT_TRUE(header.whole_frame);
  thumbnail_spec spec;
  spec.width = 32;
  EXPECT_TRUE(make_thumbnail(progressive, header, spec, {}));

  const auto last = progressive.rfind("\xFF\xDA");  // no FF DA inside entropy-coded data
  const auto end = progressive.rfind("\xFF\xD9");
  ASSERT_LT(last, end);
  std::string many = progressive.substr(0, end);
  for (std::size_t i = 0; i < max_jpeg_scans; ++i) many += progressive.substr(last, end - last);
  many += "\xFF\xD9";
  EXPECT_EQ(jpeg_scans(many), scans + max_jpeg_scans);
  try {
    make_thumbnail(many, header, spec, {});
    ADD_FAILURE() << "a JPEG of " << jpeg_scans(many) << " scans was decoded";
  } catch (const image_error& e) {
    EXPECT_NE(std::string(e.what()).find("scans"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace crunch
