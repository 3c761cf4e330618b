// The image kind over HTTP: the real server on 127.0.0.1 port 0, images the tests generate.
#include "test_support.hpp"

#include "image.hpp"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <unistd.h>

namespace crunch::testing {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

// Width and height of an encoded image, as the sniffer reads them.
std::pair<std::uint32_t, std::uint32_t> size_of(const std::string& bytes) {
  const auto h = std::get<image_header>(sniff_image(bytes));
  return {h.width, h.height};
}

// A committed GIF (data/README.md says why): 100x50.
std::string test_gif() {
  std::ifstream in(CRUNCH_KINDS_SOURCE "/image/data/gradient-100x50.gif", std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string metrics_of(http_connection& c) { return c.get("/metrics")->body; }

TEST(image_kind, declares_its_flags_with_the_environment_names_crunchd_reads) {
  std::vector<std::string> names;
  for (const auto& s : settings_of({builtin_kind("image")})) names.push_back("--" + s.name + " " + s.env());
  EXPECT_EQ(names, (std::vector<std::string>{"--max-image-pixels CRUNCH_MAX_IMAGE_PIXELS",
                                             "--max-image-bytes CRUNCH_MAX_IMAGE_BYTES",
                                             "--max-image-effort CRUNCH_MAX_IMAGE_EFFORT"}));
  EXPECT_EQ(build_jobs({builtin_kind("image")}, config{}).find("image")->routes.at(0).max_body_bytes, 25u << 20);
}

TEST(image_kind, thumbnails_over_http_with_the_format_asked_for) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto jpeg = synthetic_image(640, 480, image_format::jpeg);
  const auto webp = c.post("/v1/image/thumbnail?width=160&format=webp", "image/jpeg", jpeg);
  ASSERT_TRUE(webp);
  ASSERT_EQ(webp->status, 200u) << webp->body;
  EXPECT_EQ(webp->header("content-type"), "image/webp");
  EXPECT_EQ(webp->body.substr(0, 4), "RIFF");
  EXPECT_EQ(size_of(webp->body), (std::pair{160u, 120u}));
  EXPECT_NE(webp->header("server-timing").find("compute;dur="), std::string::npos);
  // Without format: the input's; a GIF becomes a PNG.
  const auto same = c.post("/v1/image/thumbnail?height=60", "image/jpeg", jpeg);
  ASSERT_EQ(same->status, 200u);
  EXPECT_EQ(same->header("content-type"), "image/jpeg");
  EXPECT_EQ(size_of(same->body), (std::pair{80u, 60u}));
  const auto gif = c.post("/v1/image/thumbnail?width=64&height=64&fit=cover", "image/gif", test_gif());
  ASSERT_EQ(gif->status, 200u) << gif->body;
  EXPECT_EQ(gif->header("content-type"), "image/png");
  EXPECT_EQ(size_of(gif->body), (std::pair{64u, 50u}));  // 64x50 itself: never enlarged unless asked
  const auto enlarged = c.post("/v1/image/thumbnail?width=64&height=64&fit=cover&enlarge=true", "image/gif", test_gif());
  ASSERT_EQ(enlarged->status, 200u) << enlarged->body;
  EXPECT_EQ(size_of(enlarged->body), (std::pair{64u, 64u}));
  const auto m = metrics_of(c);
  EXPECT_EQ(sample(m, R"(crunch_http_requests_total{route="image_thumbnail",code="200"})"), 4);
  EXPECT_EQ(memory_held(m), 0);  // every body and job gave its memory back
}

TEST(image_kind, bad_arguments_are_400_naming_the_parameter) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto jpeg = synthetic_image(64, 64, image_format::jpeg);
  for (const auto* query : {"", "?width=0", "?width=8193", "?width=-5", "?width=10&fit=stretch", "?width=10&format=gif",
                            "?width=10&quality=0", "?width=10&quality=101", "?width=99999999999999999999"}) {
    const auto r = c.post(std::string("/v1/image/thumbnail") + query, "image/jpeg", jpeg);
    ASSERT_TRUE(r) << query;
    EXPECT_EQ(r->status, 400u) << query << " " << r->body;
    EXPECT_EQ(error_code_of(*r), "invalid_argument") << query;
  }
  const auto r = c.post("/v1/image/thumbnail?width=10&fit=stretch", "image/jpeg", jpeg);
  EXPECT_NE(json_of(*r).at("error").at("message").get<std::string>().find("fit must be one of inside, cover, fill"),
            std::string::npos);
}

TEST(image_kind, a_wrong_content_type_is_415_and_a_mislabelled_body_400) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto png = synthetic_image(64, 64, image_format::png);
  for (const auto* type : {"text/plain", "image/tiff", "image/svg+xml", "application/octet-stream"}) {
    const auto r = c.post("/v1/image/thumbnail?width=10", type, png);
    ASSERT_TRUE(r) << type;
    EXPECT_EQ(r->status, 415u) << type;
    EXPECT_EQ(error_code_of(*r), "unsupported_media_type");
  }
  const auto mislabelled = c.post("/v1/image/thumbnail?width=10", "image/jpeg", png);
  ASSERT_TRUE(mislabelled);  // the connection went on through the 415s
  EXPECT_EQ(mislabelled->status, 400u);
  EXPECT_EQ(error_code_of(*mislabelled), "invalid_image");
  EXPECT_NE(mislabelled->body.find("png"), std::string::npos);
  const auto svg = c.post("/v1/image/thumbnail?width=10", "image/png", "<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
  EXPECT_EQ(svg->status, 400u);
  EXPECT_EQ(error_code_of(*svg), "invalid_image");
  const auto empty = c.post("/v1/image/thumbnail?width=10", "image/png", "");
  EXPECT_EQ(empty->status, 400u);
}

TEST(image_kind, a_pixel_bomb_is_refused_before_any_work) {
  running_server s(test_config());
  http_connection c(s.port());
  // ~60 bytes declaring 100,000 x 100,000 pixels; then one just over the 40 MP default.
  for (const auto& [w, h] : {std::pair{100'000u, 100'000u}, std::pair{8000u, 5001u}}) {
    std::string png = synthetic_image(8, 8, image_format::png);
    // Rewrite IHDR's width and height (the CRC is not checked before the limit is).
    for (std::size_t i = 0; i < 4; ++i) {
      png[16 + i] = static_cast<char>(w >> (24 - 8 * i));
      png[20 + i] = static_cast<char>(h >> (24 - 8 * i));
    }
    const auto t0 = clock::now();
    const auto r = c.post("/v1/image/thumbnail?width=100", "image/png", png);
    const auto took = clock::now() - t0;
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400u);
    EXPECT_EQ(error_code_of(*r), "invalid_image");
    EXPECT_NE(r->body.find("more than this server's limit of 40000000"), std::string::npos) << r->body;
    EXPECT_LT(took, 1s);
  }
  // No job ran, none was even queued: it cost a header's read.
  const auto m = metrics_of(c);
  EXPECT_EQ(sample(m, R"(crunch_jobs_total{outcome="completed"})"), 0);
  EXPECT_EQ(sample(m, R"(crunch_job_run_seconds_count{kind="image"})"), 0);
}

// A PNG with 8 KB of text: more than make_thumbnail lets libpng read (a zTXt of that size could
// inflate 1000-fold). The kind drops text chunks on the worker first, so the upload still gets
// its thumbnail, without the text.
TEST(image_kind, a_png_with_large_text_chunks_gets_its_thumbnail_without_them) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto png = synthetic_image(64, 48, image_format::png);
  std::string text = "tEXtComment";
  text.push_back('\0');
  text.append(8000, 'x');
  std::string chunk;
  const auto length = static_cast<std::uint32_t>(text.size() - 4);
  for (int i = 0; i < 4; ++i) chunk.push_back(static_cast<char>(length >> (24 - 8 * i)));
  chunk += text;
  const auto crc = crc32(0, reinterpret_cast<const Bytef*>(text.data()), static_cast<uInt>(text.size()));
  for (int i = 0; i < 4; ++i) chunk.push_back(static_cast<char>(crc >> (24 - 8 * i)));
  const auto with_text = png.substr(0, 33) + chunk + png.substr(33);
  ASSERT_GT(png_text_bytes(with_text), max_png_text_bytes);
  const auto r = c.post("/v1/image/thumbnail?width=32&format=png", "image/png", with_text);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200u) << r->body;
  EXPECT_EQ(size_of(r->body), (std::pair{32u, 24u}));
  EXPECT_EQ(r->body.find("Comment"), std::string::npos);
}

TEST(image_kind, truncated_and_corrupt_images_are_400_quickly) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto jpeg = synthetic_image(800, 600, image_format::jpeg);
  const auto png = synthetic_image(300, 200, image_format::png);
  const auto webp = synthetic_image(300, 200, image_format::webp);
  struct bad {
    std::string type, body;
  };
  for (const auto& [type, body] : {bad{"image/jpeg", jpeg.substr(0, jpeg.size() / 2)},
                                   bad{"image/jpeg", jpeg.substr(0, 200)},
                                   bad{"image/png", png.substr(0, png.size() - 64)},
                                   bad{"image/webp", webp.substr(0, webp.size() / 2)},
                                   bad{"image/gif", std::string("GIF89a\x10\x00\x10\x00garbage", 16)}}) {
    const auto r = c.post("/v1/image/thumbnail?width=100", type, body);
    ASSERT_TRUE(r) << type;
    EXPECT_EQ(r->status, 400u) << type << " " << body.size() << " " << r->body;
    EXPECT_EQ(error_code_of(*r), "invalid_image") << r->body;
  }
  // The server is fine afterwards.
  EXPECT_EQ(c.post("/v1/image/thumbnail?width=100", "image/png", png)->status, 200u);
}

TEST(image_kind, a_body_over_the_limit_is_413_before_it_is_sent) {
  auto cfg = test_config();
  cfg.settings["max-image-bytes"] = 64 * 1024;
  running_server s(cfg);
  http_connection c(s.port());
  c.send("POST /v1/image/thumbnail?width=10 HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
         "Content-Length: 65537\r\nExpect: 100-continue\r\n\r\n");
  const auto r = c.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413u);
  EXPECT_TRUE(r->interim.empty());  // never told to go on
}

// Uploads are charged to the memory budget from their head: once it is taken, the next upload is
// refused before its body is sent, and the memory comes back when the uploads end.
TEST(image_kind, bodies_in_flight_count_against_the_memory_budget) {
  auto cfg = test_config();
  cfg.memory_budget = 48u << 20;
  running_server s(cfg);
  http_connection observer(s.port());
  const std::string head = "POST /v1/image/thumbnail?width=10 HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                           "Content-Length: 10485760\r\nExpect: 100-continue\r\n\r\n";  // 10 MiB
  std::vector<std::unique_ptr<http_connection>> uploads;
  for (int i = 0; i < 2; ++i) {
    uploads.push_back(std::make_unique<http_connection>(s.port()));
    uploads.back()->send(head);
    EXPECT_EQ(uploads.back()->read_interim(), 100u);
  }
  // Each: its body and room for its job's working memory (the route's 12 MiB hint).
  EXPECT_EQ(sample(metrics_of(observer), "crunch_job_memory_bytes"), 2 * (10u + 12u) << 20);
  http_connection third(s.port());
  third.send(head);
  const auto refused = third.read();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503u);
  EXPECT_TRUE(refused->interim.empty());
  EXPECT_EQ(refused->header("retry-after"), "1");
  EXPECT_EQ(error_code_of(*refused), "overloaded");
  EXPECT_EQ(sample(metrics_of(observer), R"(crunch_jobs_total{outcome="rejected_memory"})"), 1);
  uploads.clear();  // the clients leave mid-upload
  EXPECT_TRUE(wait_for_metric(observer, "\ncrunch_job_memory_bytes 0\n"));
}

// A body of known length is read straight from the socket into the job's string: in pieces, after
// 100 Continue, with the next request right behind it, or cut short by a client that leaves.
std::string upload_head(std::size_t length, const std::string& extra = {}) {
  return "POST /v1/image/thumbnail?width=40&format=png HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
         "Content-Length: " + std::to_string(length) + "\r\n" + extra + "\r\n";
}

TEST(image_kind, a_body_sent_in_pieces_after_100_continue_is_read_whole) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto jpeg = synthetic_image(640, 480, image_format::jpeg);
  c.send(upload_head(jpeg.size(), "Expect: 100-continue\r\n"));
  ASSERT_EQ(c.read_interim(), 100u);
  for (std::size_t at = 0; at < jpeg.size(); at += 997) c.send(jpeg.substr(at, 997));
  const auto r = c.read();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200u) << r->body;
  EXPECT_EQ(size_of(r->body), (std::pair{40u, 30u}));
}

TEST(image_kind, requests_behind_a_body_in_the_same_write_are_answered_in_turn) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto jpeg = synthetic_image(320, 240, image_format::jpeg);
  // Two uploads and a GET in one write: each body must end exactly where its length says.
  c.send(upload_head(jpeg.size()) + jpeg + upload_head(jpeg.size()) + jpeg +
         "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
  for (int i = 0; i < 2; ++i) {
    const auto r = c.read();
    ASSERT_TRUE(r) << i;
    ASSERT_EQ(r->status, 200u) << r->body;
    EXPECT_EQ(size_of(r->body), (std::pair{40u, 30u}));
  }
  const auto health = c.read();
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200u);
  EXPECT_EQ(health->body.substr(0, 1), "{");
}

TEST(image_kind, a_client_that_leaves_mid_body_gets_nothing_and_frees_its_share) {
  running_server s(test_config());
  http_connection observer(s.port());
  const auto jpeg = synthetic_image(640, 480, image_format::jpeg);
  {
    http_connection c(s.port());
    c.send(upload_head(jpeg.size()) + jpeg.substr(0, jpeg.size() / 2));
    // Its share is taken before the body is read: the body and the route's 12 MiB working memory.
    ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_job_memory_bytes " + std::to_string(jpeg.size() + (12u << 20)) + "\n"));
  }  // gone with half its body sent
  EXPECT_TRUE(wait_for_metric(observer, "\ncrunch_job_memory_bytes 0\n"));
  // Nothing was answered: neither a thumbnail nor a 400 for a body it never had whole.
  const auto m = metrics_of(observer);
  EXPECT_EQ(sample(m, R"(crunch_http_requests_total{route="image_thumbnail",code="200"})"), 0);
  EXPECT_EQ(sample(m, R"(crunch_http_requests_total{route="image_thumbnail",code="400"})"), 0);
  // The server goes on serving uploads.
  http_connection again(s.port());
  const auto r = again.post("/v1/image/thumbnail?width=40&format=png", "image/jpeg", jpeg);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
}

TEST(image_kind, a_chunked_body_still_works) {
  running_server s(test_config());
  http_connection c(s.port());
  const auto jpeg = synthetic_image(320, 240, image_format::jpeg);
  std::string chunked;
  for (std::size_t at = 0; at < jpeg.size(); at += 4096) {
    const auto piece = jpeg.substr(at, 4096);
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    chunked += size + piece + "\r\n";
  }
  chunked += "0\r\n\r\n";
  c.send("POST /v1/image/thumbnail?width=40&format=png HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
         "Transfer-Encoding: chunked\r\n\r\n" + chunked);
  const auto r = c.read();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200u) << r->body;
  EXPECT_EQ(size_of(r->body), (std::pair{40u, 30u}));
}

TEST(image_kind, a_client_that_leaves_stops_its_job_within_milliseconds) {
  running_server s(test_config(1));
  http_connection observer(s.port());
  const auto big = synthetic_image(3000, 3000, image_format::png);
  const std::string target = "/v1/image/thumbnail?width=2000&format=png";
  const auto t0 = clock::now();
  {
    http_connection whole(s.port(), 60s);
    ASSERT_EQ(whole.post(target, "image/png", big)->status, 200u);
  }
  const auto full = clock::now() - t0;

  auto leaving = std::make_unique<http_connection>(s.port());
  leaving->send_post(target, "image/png", big);
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_workers_busy 1\n"));
  const auto left = clock::now();
  leaving.reset();
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_workers_busy 0\n"));
  const auto stopped_after = clock::now() - left;
  RecordProperty("stopped_after_ms", static_cast<int>(std::chrono::duration<double, std::milli>(stopped_after).count()));
  RecordProperty("whole_ms", static_cast<int>(std::chrono::duration<double, std::milli>(full).count()));
  EXPECT_LT(stopped_after, full / 4) << std::chrono::duration<double, std::milli>(stopped_after).count() << " ms, "
                                     << std::chrono::duration<double, std::milli>(full).count() << " ms whole";
  const auto m = metrics_of(observer);
  EXPECT_EQ(sample(m, R"(crunch_jobs_total{outcome="cancelled_client_gone"})"), 1);
  EXPECT_EQ(memory_held(m), 0);
}

std::uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitized = true;  // their allocators keep freed memory on purpose
#else
constexpr bool sanitized = false;
#endif

TEST(image_kind, memory_comes_back_after_hundreds_of_thumbnails) {
  if (sanitized) GTEST_SKIP() << "a sanitizer's allocator holds freed memory in quarantine";
  running_server s(test_config());
  const auto jpeg = synthetic_image(1200, 900, image_format::jpeg);
  const auto png = synthetic_image(600, 450, image_format::png);
  // Two clients, so that both workers (and their libvips threads) take part.
  auto run = [&](int n) {
    auto client = [&] {
      http_connection c(s.port());
      for (int i = 0; i < n; ++i) {
        const bool odd = i % 2 != 0;
        const auto r = c.post(odd ? "/v1/image/thumbnail?width=300&format=webp" : "/v1/image/thumbnail?width=200",
                              odd ? "image/jpeg" : "image/png", odd ? jpeg : png);
        ASSERT_EQ(r->status, 200u);
      }
    };
    std::thread a(client), b(client);
    a.join();
    b.join();
  };
  run(20);  // warm: the allocator's arenas, libvips's types and threads
  const auto baseline = resident_bytes();
  run(150);  // 300 thumbnails
  const auto after = resident_bytes();
  EXPECT_LT(after, baseline + (8u << 20)) << "RSS " << (baseline >> 20) << " MiB -> " << (after >> 20) << " MiB";
}

// Every kind stops within 100 ms of its deadline, or of its client leaving (issue 31), an AVIF
// encode too, which never looks at libvips's kill flag: its helper is asked to stop, and killed
// 50 ms later. Priced a millionth of its cost, an effort-6 encode of seconds is let in with 500 ms.
TEST(image_kind, an_avif_encode_stops_within_100_ms_of_its_deadline_or_of_its_client_leaving) {
  const auto cfg = test_config(1);
  running_server s(cfg, underpriced_jobs({builtin_kind("image")}, cfg));
  const auto jpeg = synthetic_image(2000, 1500, image_format::jpeg);
  auto request = [&](int timeout_ms) {
    return "POST /v1/image/thumbnail?width=2000&format=avif&effort=6&timeout_ms=" + std::to_string(timeout_ms) +
           " HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: " + std::to_string(jpeg.size()) +
           "\r\n\r\n" + jpeg;
  };
  // No job completes first: admission would learn the kind's real rate from it and refuse these.
  expect_stops_within_100_ms(s.port(), request, 500);
}

}  // namespace
}  // namespace crunch::testing
