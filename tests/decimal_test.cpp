#include "server/decimal.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>

namespace crunch {
namespace {

constexpr auto u64_max = std::numeric_limits<std::uint64_t>::max();

TEST(parse_decimal, reads_plain_digits_in_range) {
  EXPECT_EQ(parse_decimal("0", 0, 92), 0u);
  EXPECT_EQ(parse_decimal("92", 0, 92), 92u);
  EXPECT_EQ(parse_decimal("0040", 0, 92), 40u);
  EXPECT_EQ(parse_decimal("18446744073709551615", 0, u64_max), u64_max);
}

TEST(parse_decimal, refuses_everything_else) {
  for (const char* text : {"", "93", "-1", "+5", " 7", "7 ", "4.0", "1e3", "0x10", "\xd9\xa3", "%37"}) {
    EXPECT_EQ(parse_decimal(text, 0, 92), std::nullopt) << text;
  }
  EXPECT_EQ(parse_decimal("5", 6, 10), std::nullopt);
}

// The defect this header exists for: 2^64 + 40 once wrapped around to 40 and answered fib(40).
TEST(parse_decimal, a_value_above_2_to_the_64_is_out_of_range_not_wrapped) {
  EXPECT_EQ(parse_decimal("18446744073709551656", 0, 92), std::nullopt);
  EXPECT_EQ(parse_decimal("18446744073709551616", 0, u64_max), std::nullopt);  // 2^64
  EXPECT_EQ(parse_decimal(std::string(400, '9'), 0, u64_max), std::nullopt);
}

// Reference that cannot overflow: compare digit strings, not numbers.
bool in_range_by_text(std::string digits, const std::string& max) {
  digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size() - 1));
  return digits.size() < max.size() || (digits.size() == max.size() && digits <= max);
}

TEST(parse_decimal, agrees_with_a_reference_on_random_digit_strings) {
  std::mt19937_64 random(20261126);
  std::uniform_int_distribution<int> length(1, 30);
  std::uniform_int_distribution<int> digit(0, 9);
  std::bernoulli_distribution leading_zeros(0.3);
  int accepted = 0;
  for (int i = 0; i < 100'000; ++i) {
    std::string text;
    const int n = length(random);
    for (int d = 0; d < n; ++d) text += static_cast<char>('0' + digit(random));
    if (leading_zeros(random)) text.insert(0, static_cast<std::size_t>(digit(random)), '0');
    for (const auto& [max, max_text] : {std::pair{std::uint64_t{92}, std::string("92")},
                                        std::pair{u64_max, std::string("18446744073709551615")}}) {
      const bool expected = in_range_by_text(text, max_text);
      const auto got = parse_decimal(text, 0, max);
      ASSERT_EQ(got.has_value(), expected) << text;
      if (got) {
        ASSERT_EQ(std::to_string(*got), text.substr(std::min(text.find_first_not_of('0'), text.size() - 1)));
        ++accepted;
      }
    }
  }
  EXPECT_GT(accepted, 1000);  // both outcomes were exercised
}

}  // namespace
}  // namespace crunch
