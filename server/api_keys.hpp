#pragma once
/// API keys: who may run jobs. A key file holds one `name:key` a line (blank lines and lines
/// that start with # are skipped). Requests present a key as `Authorization: Bearer <key>`; the
/// server knows it by its name, which is what logs, metrics and flows show — never the key.

#include <array>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace crunch {

/// A key file that cannot be used; the message names the line, never a key.
struct api_keys_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The keys a server accepts, by name.
class api_keys {
 public:
  /// Shortest key accepted: 16 characters of a random token are ~96 bits.
  static constexpr std::size_t min_key_length = 16;
  static constexpr std::size_t max_key_length = 512;
  static constexpr std::size_t max_name_length = 64;

  /// Parses a key file's text. Names are 1–64 of [A-Za-z0-9._-], keys 16–512 characters of a
  /// Bearer token (RFC 6750: token68); both unique. Throws api_keys_error.
  static api_keys parse(std::string_view text);
  /// Reads and parses `file`. Throws api_keys_error.
  static api_keys load(const std::filesystem::path& file);

  /// The name of the key `presented`. Its digest is compared with every key's in constant time,
  /// and all keys are compared whatever matches: the time taken says nothing about any key.
  std::optional<std::string_view> find(std::string_view presented) const;

  /// Number of keys.
  std::size_t size() const noexcept { return keys_.size(); }

 private:
  struct entry {
    std::string name;
    std::array<unsigned char, 32> digest{};  // BLAKE2b-256 of the key; the key itself is not kept
  };
  std::vector<entry> keys_;
};

/// Why a request was refused 401.
enum class auth_failure {
  missing,  ///< no Bearer credentials
  invalid,  ///< credentials that are no key's
};

/// The key in an Authorization header's value: the credentials of the Bearer scheme (its name
/// is case-insensitive, RFC 9110 §11.1), or nullopt when it is absent or another scheme.
std::optional<std::string_view> bearer_token(std::string_view authorization);

}  // namespace crunch
