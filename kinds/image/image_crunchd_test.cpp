// The image kind in crunchd itself: libvips only in its helpers, a missing module named at start.
#include "crunchd_process.hpp"

#include "image.hpp"

namespace crunch::testing {
namespace {

// libvips and its codecs never run in crunchd: the first image job starts a sandboxed helper,
// which loads them (and calibrates the kind, so that /v1/kinds has no image rate before it and
// one after). An idle crunchd has no helper.
TEST(image_crunchd, never_maps_libvips_its_first_thumbnail_starts_a_helper_that_does) {
  const auto jpeg = synthetic_image(64, 48, image_format::jpeg);
  crunchd_process p({"--address", "127.0.0.1", "--port", "0"}, {}, CRUNCHD_PATH);
  const auto port = started_port(p);
  auto image_rate = [&] {
    http_connection c(port);
    const auto doc = json_of(*c.get("/v1/kinds"));
    for (const auto& kind : doc.at("kinds")) {
      if (kind.at("name") == "image") return kind.at("cost").at("ns_per_unit");
    }
    return nlohmann::json("no image kind");
  };
  {
    http_connection c(port);
    EXPECT_EQ(c.get("/healthz")->status, 200u);
    EXPECT_EQ(c.get("/v1/kinds")->status, 200u);
  }
  EXPECT_FALSE(maps(p.pid(), "libvips"));
  EXPECT_FALSE(maps(p.pid(), "libcrunch_vips"));
  EXPECT_TRUE(children_of(p.pid()).empty());
  EXPECT_TRUE(image_rate().is_null());
  {
    http_connection c(port);
    const auto r = c.post("/v1/image/thumbnail?width=32&format=webp", "image/jpeg", jpeg);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u) << r->body;
    EXPECT_EQ(r->header("content-type"), "image/webp");
  }
  EXPECT_FALSE(maps(p.pid(), "libcrunch_vips.so"));
  EXPECT_FALSE(maps(p.pid(), "libvips"));
  const auto helpers = children_of(p.pid());
  ASSERT_FALSE(helpers.empty());
  for (const auto helper : helpers) {
    EXPECT_TRUE(maps(helper, "libvips")) << helper;
    std::ifstream cmdline("/proc/" + std::to_string(helper) + "/cmdline");
    std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    EXPECT_NE(args.find(std::string("--crunch-helper\0image", 22)), std::string::npos);
  }
  const auto rate = image_rate();
  ASSERT_TRUE(rate.is_number()) << rate;
  EXPECT_GT(rate.get<double>(), 0);
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit(), 0);
  for (const auto helper : helpers) EXPECT_FALSE(std::filesystem::exists("/proc/" + std::to_string(helper))) << helper;
}

TEST(image_crunchd, without_its_image_module_does_not_start_and_says_where_it_looked) {
  crunchd_process p({"--address", "127.0.0.1", "--port", "0"}, {"CRUNCH_IMAGE_LIBRARY=/nonexistent/libcrunch_vips.so"},
                    CRUNCHD_PATH);
  const auto err = p.all_stderr();
  EXPECT_EQ(p.wait_exit(), 1);
  EXPECT_NE(err.find("/nonexistent/libcrunch_vips.so"), std::string::npos) << err;
  EXPECT_NE(err.find("CRUNCH_IMAGE_LIBRARY"), std::string::npos) << err;
}

TEST(image_crunchd, refuses_an_image_limit_below_its_bound_at_start) {
  crunchd_process p({"--max-image-bytes", "1"}, {}, CRUNCHD_PATH);
  const auto err = p.all_stderr();
  EXPECT_EQ(p.wait_exit(), 2);
  EXPECT_NE(err.find("--max-image-bytes"), std::string::npos) << err;
}

}  // namespace
}  // namespace crunch::testing
