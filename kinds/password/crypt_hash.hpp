#pragma once
/// The password hashes teams already store, as crypt(3) writes them: bcrypt, sha256-crypt,
/// sha512-crypt, yescrypt and scrypt. libxcrypt (Debian's libcrypt) computes them; this reads
/// their strings strictly and prices them before any work, as parse_phc does for Argon2.

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace crunch {

enum class crypt_scheme { bcrypt, sha256_crypt, sha512_crypt, yescrypt, scrypt };

/// "bcrypt", "sha256-crypt", "sha512-crypt", "yescrypt", "scrypt".
std::string_view crypt_scheme_name(crypt_scheme scheme) noexcept;

/// The most a stored hash may ask of this server. Argon2's own bounds set the memory-hard ones:
/// no more memory than the largest Argon2 hash it accepts, and no more memory passes in all.
struct crypt_bounds {
  std::uint32_t max_bcrypt_cost = 15;           ///< bcrypt's log2 rounds (the format allows 4..31)
  std::uint64_t max_rounds = 1'000'000;         ///< sha-crypt's rounds= (the format allows up to 999999999)
  std::uint64_t max_memory_kib = 262'144;       ///< yescrypt's and scrypt's 128·r·N bytes
  std::uint64_t max_memory_passes = 6;          ///< how many times that memory may be walked in all
};

/// A stored crypt(3) hash, read and priced.
struct crypt_hash {
  crypt_scheme scheme = crypt_scheme::bcrypt;
  std::string text;               ///< the whole string, as crypt(3) writes it
  /// The scheme's own measure of work: 2^cost for bcrypt; rounds × the blocks a round hashes for
  /// sha-crypt; KiB of memory times passes over it for yescrypt and scrypt.
  double work = 0;
  std::uint64_t memory_bytes = 0;  ///< what computing it holds, the strings and libcrypt's state included
};

/// Reads a stored hash of one of the crypt_scheme formats, strictly (its alphabet, lengths and
/// parameters), and checks its cost against `bounds` before any work. `password_bytes` prices
/// sha-crypt, whose rounds hash the password again each time. On error, says what is wrong
/// without quoting the input.
std::variant<crypt_hash, std::string> parse_crypt(std::string_view text, const crypt_bounds& bounds,
                                                  std::size_t password_bytes);

/// Whether `text` starts like one of the crypt_scheme formats ($2a$, $2b$, $2y$, $5$, $6$, $y$, $7$).
bool looks_like_crypt(std::string_view text) noexcept;

/// Whether `password` matches `hash`, by libxcrypt's crypt_rn, the results compared in constant
/// time. A password holding a NUL byte never matches: crypt(3) would read only what comes before
/// it. Its state, which saw the password, is wiped.
bool crypt_verify(const crypt_hash& hash, std::string_view password);

/// Hashes `password` with `setting` (a crypt(3) setting or whole hash): for tests and calibration.
/// Throws std::runtime_error when libxcrypt refuses the setting.
std::string crypt_hash_with(std::string_view password, std::string_view setting);

}  // namespace crunch
