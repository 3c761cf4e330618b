// The zstd kind's routes over HTTP, on a real server.
#include "zstd_test_support.hpp"

#include "test_support.hpp"

#include <gtest/gtest.h>
#include <zstd.h>

#include <memory>

namespace crunch {
namespace {

namespace http = crunch::testing;

TEST(zstd_kind, compresses_and_decompresses_over_http) {
  http::running_server s(http::test_config());
  http::http_connection c(s.port());
  const auto text = zstd_sample(200'000);
  const auto packed = c.post("/v1/zstd/compress?level=6", "text/plain", text);
  ASSERT_TRUE(packed);
  ASSERT_EQ(packed->status, 200u) << packed->body;
  EXPECT_EQ(packed->header("content-type"), "application/zstd");
  EXPECT_LT(packed->body.size(), text.size() / 2);
  const auto unpacked = c.post("/v1/zstd/decompress", "application/zstd", packed->body);
  ASSERT_TRUE(unpacked);
  ASSERT_EQ(unpacked->status, 200u) << unpacked->body;
  EXPECT_EQ(unpacked->header("content-type"), "application/octet-stream");
  EXPECT_TRUE(unpacked->body == text);

  // After the first job the kind is priced by what this machine measured.
  const auto kinds = http::json_of(*c.get("/v1/kinds"));
  for (const auto& k : kinds.at("kinds")) {
    if (k.at("name") == "zstd") {
      EXPECT_GT(k.at("cost").at("ns_per_unit").get<double>(), 0);
    }
  }
}

TEST(zstd_kind, refuses_bombs_by_declared_and_by_actual_size) {
  auto cfg = http::test_config();
  cfg.settings["zstd-max-output-bytes"] = 1 << 20;
  http::running_server s(cfg);
  http::http_connection c(s.port());
  // Declared: refused from the header, before any work.
  const auto declared = c.post("/v1/zstd/decompress", "application/zstd", *zstd_compress(std::string(2 << 20, 'a'), 3, 23, {}));
  ASSERT_TRUE(declared);
  EXPECT_EQ(declared->status, 400u);
  EXPECT_EQ(http::error_code_of(*declared), "output_too_large");
  // Undeclared: refused once the output passes the limit.
  const auto actual = c.post("/v1/zstd/decompress", "application/zstd", frame_without_size(std::string(4 << 20, '\0')));
  ASSERT_TRUE(actual);
  EXPECT_EQ(actual->status, 400u) << actual->body;
  EXPECT_EQ(http::error_code_of(*actual), "output_too_large");
  // Not zstd at all, and above the level's bound.
  const auto junk = c.post("/v1/zstd/decompress", "application/zstd", "hello");
  EXPECT_EQ(http::error_code_of(*junk), "invalid_zstd");
  EXPECT_EQ(c.post("/v1/zstd/compress?level=20", "text/plain", "x")->status, 400u);
  EXPECT_EQ(c.post("/v1/zstd/compress", "image/png", "x")->status, 415u);
}

TEST(zstd_kind, its_examples_are_real_frames_and_later_frames_fit_in_what_the_first_declares) {
  http::running_server s(http::test_config());
  http::http_connection c(s.port());
  const auto jobs = build_jobs({builtin_kind("zstd")}, http::test_config());
  const auto& decompress = jobs.find("zstd")->routes.at(1);
  // The slow example, given time, is 24 MiB of zeros; the first is the sentence.
  const auto& slow = decompress.examples.at(2);
  ASSERT_EQ(slow.status, 504u);
  const auto zeros = decompressed(slow.body, 24 << 20, 23);
  EXPECT_EQ(zeros.size(), 24u << 20);
  EXPECT_EQ(zeros.find_first_not_of('\0'), std::string::npos);
  const auto sentence = c.post("/v1/zstd/decompress", "application/zstd", decompress.examples.at(0).body);
  ASSERT_TRUE(sentence);
  EXPECT_EQ(sentence->body, jobs.find("zstd")->routes.at(0).examples.at(0).body);

  // Two frames whose second does not fit in what the first declared: refused, the memory the job
  // was charged is never passed.
  const auto a = *zstd_compress(zstd_sample(1000, 1), 3, 23, {});
  const auto b = *zstd_compress(zstd_sample(5000, 2), 3, 23, {});
  const auto both = c.post("/v1/zstd/decompress", "application/zstd", a + b);
  ASSERT_TRUE(both);
  EXPECT_EQ(both->status, 400u);
  EXPECT_EQ(http::error_code_of(*both), "output_too_large");
  // Frames that declare nothing may fill the server's limit, and are priced so: 64 KiB here (the
  // default 32 MiB would be priced, under TSan, beyond any deadline, and refused at once).
  auto cfg = http::test_config();
  cfg.settings["zstd-max-output-bytes"] = 64 << 10;
  http::running_server small(cfg);
  http::http_connection to_small(small.port());
  const auto open = to_small.post("/v1/zstd/decompress", "application/zstd",
                                  frame_without_size(zstd_sample(1000, 1)) + frame_without_size(zstd_sample(5000, 2)));
  ASSERT_TRUE(open);
  EXPECT_EQ(open->status, 200u);
  EXPECT_EQ(open->body.size(), 6000u);
}

// Every kind stops within 100 ms of its deadline, or of its client leaving (issue 31): zstd in its
// helper looks at its token between 256 KiB pieces. Priced a millionth of its cost, 16 MiB at
// level 19 (seconds) is let in with 300 ms.
TEST(zstd_kind, stops_within_100_ms_of_its_deadline_or_of_its_client_leaving) {
  const auto cfg = testing::test_config(1);
  testing::running_server s(cfg, testing::underpriced_jobs({builtin_kind("zstd")}, cfg));
  const auto body = zstd_sample(16 << 20);
  auto request = [&](int timeout_ms) {
    return "POST /v1/zstd/compress?level=19&timeout_ms=" + std::to_string(timeout_ms) +
           " HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  };
  testing::expect_stops_within_100_ms(s.port(), request, 300);
}

}  // namespace
}  // namespace crunch
