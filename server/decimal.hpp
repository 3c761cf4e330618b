#pragma once
/// Strict, overflow-safe reading of decimal integers from request text (path segments, query
/// values) and from flags.

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>
#include <system_error>

namespace crunch {

/// The value of `text` when it is one or more ASCII digits — leading zeros allowed; no sign, space,
/// point or exponent — and that value is in min..max; nullopt otherwise. Any length is safe: a
/// value beyond 2^64 − 1 is out of range, never wrapped around.
inline std::optional<std::uint64_t> parse_decimal(std::string_view text, std::uint64_t min, std::uint64_t max) {
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < min || value > max) return std::nullopt;
  return value;
}

}  // namespace crunch
