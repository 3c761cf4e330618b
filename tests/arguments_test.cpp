#include <crunch/arguments.hpp>

#include <gtest/gtest.h>

namespace crunch {
namespace {

const std::vector<parameter> declared = {
    {"n", parameter_source::path, parameter_type::integer, 0, 92, std::nullopt, ""},
    {"scale", parameter_source::query, parameter_type::integer, 1, 10, 1, ""},
    {"name", parameter_source::body, parameter_type::string, 1, 8, std::nullopt, ""},
    {"count", parameter_source::body, parameter_type::integer, 0, 1000, 5, ""},
};

std::string error_of(const std::variant<job_arguments, invalid_argument>& r) {
  return std::holds_alternative<invalid_argument>(r) ? std::get<invalid_argument>(r).message : "(accepted)";
}

TEST(read_arguments, from_path_query_and_body) {
  const auto r = read_arguments(declared, "40", "x=1&scale=3", R"({"name":"abc"})");
  ASSERT_TRUE(std::holds_alternative<job_arguments>(r)) << error_of(r);
  const auto& args = std::get<job_arguments>(r);
  EXPECT_EQ(args.integer("n"), 40u);
  EXPECT_EQ(args.integer("scale"), 3u);
  EXPECT_EQ(args.string("name").view(), "abc");
  EXPECT_EQ(args.integer("count"), 5u);  // its default
  EXPECT_THROW(static_cast<void>(args.integer("name")), std::out_of_range);
  EXPECT_THROW(static_cast<void>(args.string("absent")), std::out_of_range);
}

TEST(read_arguments, defaults_and_missing) {
  EXPECT_EQ(error_of(read_arguments(declared, "1", "", R"({})")), "name is missing: must be a string of 1..8 bytes");
  EXPECT_EQ(error_of(read_arguments(declared, "1", "scale=0", R"({"name":"a"})")), "scale must be an integer in 1..10");
  EXPECT_EQ(error_of(read_arguments(declared, "", "", R"({"name":"a"})")), "n must be an integer in 0..92");
}

TEST(read_arguments, query_values_are_percent_decoded) {
  const std::vector<parameter> query = {
      {"keep", parameter_source::query, parameter_type::string, 1, 20, std::nullopt, "", {}, true},
      {"scale", parameter_source::query, parameter_type::integer, 1, 10, 1, ""},
  };
  const auto r = read_arguments(query, "", "keep=icc%2Ccopyright&scale=%34", std::nullopt);
  ASSERT_TRUE(std::holds_alternative<job_arguments>(r)) << error_of(r);
  EXPECT_EQ(std::get<job_arguments>(r).string("keep").view(), "icc,copyright");
  EXPECT_EQ(std::get<job_arguments>(r).integer("scale"), 4u);
  EXPECT_EQ(error_of(read_arguments(query, "", "keep=a%2", std::nullopt)),
            "keep has a '%' that is not followed by two hex digits");
  EXPECT_EQ(error_of(read_arguments(query, "", "keep=a%zz", std::nullopt)),
            "keep has a '%' that is not followed by two hex digits");
  EXPECT_EQ(error_of(read_arguments(query, "", "keep=%00%00", std::nullopt)), "(accepted)");  // bytes are bytes
}

// A body of nothing but brackets: refused at the first one, whatever its depth, and no recursion
// anywhere (nlohmann's parser is iterative; the reader stops it at once).
TEST(read_arguments, deep_nesting_is_refused_at_its_first_bracket) {
  const std::string deep_array(64 * 1024, '[');
  EXPECT_EQ(error_of(read_arguments(declared, "1", "", deep_array)), "the body must be a JSON object");
  const std::string deep_field = R"({"name":)" + std::string(64 * 1024, '[');
  EXPECT_EQ(error_of(read_arguments(declared, "1", "", deep_field)), "name must be a string of 1..8 bytes");
  std::string deep_objects;
  for (int i = 0; i < 10'000; ++i) deep_objects += R"({"name":)";
  EXPECT_EQ(error_of(read_arguments(declared, "1", "", deep_objects)), "name must be a string of 1..8 bytes");
  static_assert(max_json_depth == 1);
}

TEST(read_arguments, an_unknown_field_is_named_and_cut_short) {
  const std::string long_name(300, 'k');
  EXPECT_EQ(error_of(read_arguments(declared, "1", "", R"({")" + long_name + R"(":1})")),
            "unknown field '" + std::string(64, 'k') + "...'");
}

TEST(read_arguments, json_strings_are_decoded_and_measured_in_utf8_bytes) {
  const auto r = read_arguments(declared, "1", "", R"({"name":"\u00e9 \ud83d\udd11"})");
  ASSERT_TRUE(std::holds_alternative<job_arguments>(r)) << error_of(r);
  EXPECT_EQ(std::get<job_arguments>(r).string("name").view(), "é 🔑");  // 7 bytes
  EXPECT_EQ(error_of(read_arguments(declared, "1", "", R"({"name":"\u00e9t\u00e9\u00e9\u00e9"})")),
            "name must be a string of 1..8 bytes");  // 5 characters, 9 bytes
  EXPECT_EQ(error_of(read_arguments(declared, "1", "", "{\"name\":\"\xff\"}")), "the body is not valid JSON (at byte 10)");
}

TEST(query_value, finds_a_name_and_nothing_else) {
  EXPECT_EQ(query_value("a=1&timeout_ms=5", "timeout_ms"), "5");
  EXPECT_EQ(query_value("xtimeout_ms=5", "timeout_ms"), std::nullopt);
  EXPECT_EQ(query_value("timeout_ms", "timeout_ms"), "");
  EXPECT_EQ(query_value("", "timeout_ms"), std::nullopt);
}

}  // namespace
}  // namespace crunch
