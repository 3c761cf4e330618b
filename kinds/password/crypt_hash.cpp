#include "crypt_hash.hpp"

#include "server/decimal.hpp"
#include <crunch/wiping.hpp>

#include <crypt.h>
#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <vector>

namespace crunch {

namespace {

// crypt(3)'s base64 alphabet, in its order: '.' is 0 and 'z' is 63.
constexpr std::string_view crypt64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

int crypt64_value(char c) noexcept {
  const auto at = crypt64.find(c);
  return at == std::string_view::npos ? -1 : static_cast<int>(at);
}

bool all_crypt64(std::string_view text) noexcept {
  return std::all_of(text.begin(), text.end(), [](char c) { return crypt64_value(c) >= 0; });
}

// Memory a crypt_rn call holds besides its scheme's own: its crypt_data, the strings, slack.
constexpr std::uint64_t base_memory = 64 * 1024 + sizeof(crypt_data);

using parsed = std::variant<crypt_hash, std::string>;

std::string above(std::string_view what, double value, std::uint64_t bound, std::string_view unit = {}) {
  char figure[32];
  std::snprintf(figure, sizeof figure, "%.0f", value);
  return "hash asks for " + std::string(what) + "=" + figure + std::string(unit) + ", above this server's bound of " +
         std::to_string(bound) + std::string(unit);
}

// $2a$, $2b$, $2y$: two-digit cost, 22 characters of salt and 31 of digest (60 in all).
parsed parse_bcrypt(std::string_view text, const crypt_bounds& bounds) {
  const auto bad = [](std::string why) { return parsed("hash is not a bcrypt string: " + why); };
  if (text.size() != 60 || text[6] != '$') return bad("expected $2b$NN$ and 53 characters");
  const auto cost = parse_decimal(text.substr(4, 2), 4, 31);
  if (!cost) return bad("its cost must be two digits, 04..31");
  if (!all_crypt64(text.substr(7))) return bad("its salt and digest must be in crypt's base64 alphabet");
  if (*cost > bounds.max_bcrypt_cost) return above("bcrypt cost", static_cast<double>(*cost), bounds.max_bcrypt_cost);
  return crypt_hash{crypt_scheme::bcrypt, std::string(text), std::ldexp(1.0, static_cast<int>(*cost)), base_memory + 4096};
}

// $5$ and $6$: an optional rounds=N$, a salt of up to 16 characters, and the digest.
parsed parse_sha_crypt(std::string_view text, const crypt_bounds& bounds, std::size_t password_bytes) {
  const bool sha512 = text[1] == '6';
  const std::size_t digest_chars = sha512 ? 86 : 43;
  const std::size_t block = sha512 ? 128 : 64;
  const auto bad = [sha512](std::string why) {
    return parsed(std::string("hash is not a ") + (sha512 ? "sha512" : "sha256") + "-crypt string: " + why);
  };
  auto rest = text.substr(3);
  std::uint64_t rounds = 5000;
  if (rest.starts_with("rounds=")) {
    rest.remove_prefix(7);
    const auto end = rest.find('$');
    if (end == std::string_view::npos) return bad("its rounds= must end with $");
    const auto digits = rest.substr(0, end);
    // crypt(3) writes no leading zero, and reads 1000..999999999.
    const auto value = digits.starts_with('0') ? std::nullopt : parse_decimal(digits, 1000, 999'999'999);
    if (!value) return bad("its rounds= must be a decimal in 1000..999999999");
    // crypt(3) never writes the default, and libxcrypt refuses a hash that does.
    if (*value == 5000) return bad("its rounds=5000 is the default, which crypt(3) does not write");
    rounds = *value;
    rest.remove_prefix(end + 1);
  }
  const auto end = rest.find('$');
  if (end == std::string_view::npos || end > 16) return bad("expected a salt of at most 16 characters, then $");
  const auto salt = rest.substr(0, end);
  const auto digest = rest.substr(end + 1);
  if (digest.size() != digest_chars) return bad("its digest must be " + std::to_string(digest_chars) + " characters");
  if (!all_crypt64(salt) || !all_crypt64(digest)) return bad("its salt and digest must be in crypt's base64 alphabet");
  if (rounds > bounds.max_rounds) return above("rounds", static_cast<double>(rounds), bounds.max_rounds);
  // Each round hashes the password once or twice besides a digest and the salt.
  const double blocks = 1.0 + 2.0 * static_cast<double>(password_bytes) / static_cast<double>(block);
  return crypt_hash{sha512 ? crypt_scheme::sha512_crypt : crypt_scheme::sha256_crypt, std::string(text),
                    static_cast<double>(rounds) * blocks, base_memory};
}

// Reads one of yescrypt's variable-length numbers (libxcrypt's decode64_uint32): the first
// character says how many follow. Advances `text`; nullopt when malformed.
std::optional<std::uint32_t> yescrypt_number(std::string_view& text, std::uint32_t min) {
  if (text.empty()) return std::nullopt;
  int c = crypt64_value(text.front());
  if (c < 0) return std::nullopt;
  text.remove_prefix(1);
  std::uint64_t value = min;
  std::uint32_t start = 0, end = 47, chars = 1, bits = 0;
  while (static_cast<std::uint32_t>(c) > end) {
    value += static_cast<std::uint64_t>(end + 1 - start) << bits;
    start = end + 1;
    end = start + (62 - end) / 2;
    ++chars;
    bits += 6;
  }
  value += static_cast<std::uint64_t>(static_cast<std::uint32_t>(c) - start) << bits;
  while (--chars) {
    if (text.empty() || (c = crypt64_value(text.front())) < 0) return std::nullopt;
    text.remove_prefix(1);
    bits -= 6;
    value += static_cast<std::uint64_t>(c) << bits;
  }
  if (value > UINT32_MAX) return std::nullopt;
  return static_cast<std::uint32_t>(value);
}

// A fixed-width little-endian number of `chars` crypt64 characters ($7$'s r and p).
std::optional<std::uint32_t> fixed_number(std::string_view& text, std::size_t chars) {
  if (text.size() < chars) return std::nullopt;
  std::uint32_t value = 0;
  for (std::size_t i = 0; i < chars; ++i) {
    const int c = crypt64_value(text[i]);
    if (c < 0) return std::nullopt;
    value |= static_cast<std::uint32_t>(c) << (6 * i);
  }
  text.remove_prefix(chars);
  return value;
}

// The memory-hard schemes' cost: 128·r·N bytes walked `passes` times, checked against the bounds.
parsed priced_memory_hard(crypt_scheme scheme, std::string_view text, unsigned n_log2, std::uint32_t r,
                          double passes, std::uint32_t p, const crypt_bounds& bounds) {
  const double kib = std::ldexp(static_cast<double>(r) / 8.0, static_cast<int>(n_log2));  // 128·r·N / 1024
  const std::string name(crypt_scheme_name(scheme));
  if (kib > static_cast<double>(bounds.max_memory_kib)) return above(name + " memory 128·r·N", kib, bounds.max_memory_kib, " KiB");
  const double walked = kib * passes;
  const double most = static_cast<double>(bounds.max_memory_kib) * static_cast<double>(bounds.max_memory_passes);
  if (walked > most) {
    return above(name + " work 128·r·N·passes", walked, bounds.max_memory_kib * bounds.max_memory_passes, " KiB");
  }
  // libxcrypt's own buffers besides V: B (128·r·p), XY (256·r) and yescrypt's S-boxes (12 KiB).
  const auto memory = static_cast<std::uint64_t>(kib * 1024) + 128ULL * r * p + 256ULL * r + 12 * 1024 + base_memory;
  return crypt_hash{scheme, std::string(text), walked, memory};
}

// Argon2-style digest and salt after the parameters: "$salt$digest", digest 43 characters.
bool salt_and_digest(std::string_view rest, bool salt_is_crypt64) {
  const auto end = rest.find('$');
  if (end == std::string_view::npos || end == 0 || end > 64) return false;
  const auto salt = rest.substr(0, end);
  const auto digest = rest.substr(end + 1);
  if (salt_is_crypt64 && !all_crypt64(salt)) return false;
  if (salt.find_first_of(std::string_view("\0:;*!\n", 6)) != std::string_view::npos) return false;
  return digest.size() == 43 && all_crypt64(digest);
}

// $y$: flavour, N, r and optional p and t; then salt and digest. ROMs and upgrades (g) are refused.
parsed parse_yescrypt(std::string_view text, const crypt_bounds& bounds) {
  const auto bad = [](std::string why) { return parsed("hash is not a yescrypt string: " + why); };
  auto rest = text.substr(3);
  const auto flavour = yescrypt_number(rest, 0);
  const auto n_log2 = flavour ? yescrypt_number(rest, 1) : std::nullopt;
  const auto r = n_log2 ? yescrypt_number(rest, 1) : std::nullopt;
  if (!r) return bad("its parameters are not yescrypt's encoding");
  // Flavour 0 and 1 are scrypt and yescrypt-WORM; 2 and up yescrypt-RW (libxcrypt's bound: 2 + 63).
  if (*flavour > 2 + 63) return bad("it names an unknown flavour");
  if (*n_log2 < 1 || *n_log2 > 63) return bad("its N must be 2^1..2^63");
  std::uint32_t p = 1, t = 0;
  if (!rest.empty() && rest.front() != '$') {
    const auto have = yescrypt_number(rest, 1);
    if (!have || *have > 15) return bad("its parameters are not yescrypt's encoding");
    if (*have & 4 || *have & 8) return bad("hash upgrades (g) and ROMs are not supported");
    if (*have & 1) {
      const auto value = yescrypt_number(rest, 2);
      if (!value) return bad("its p is not yescrypt's encoding");
      p = *value;
    }
    if (*have & 2) {
      const auto value = yescrypt_number(rest, 1);
      if (!value) return bad("its t is not yescrypt's encoding");
      t = *value;
    }
  }
  if (rest.empty() || rest.front() != '$' || !salt_and_digest(rest.substr(1), true)) {
    return bad("expected $salt$ and a 43-character digest after the parameters");
  }
  if (p > 64) return above("yescrypt p", p, 64);
  if (static_cast<std::uint64_t>(*r) * p >= (1U << 30)) return bad("its r·p must be under 2^30");
  // The second loop: N/3, 2N/3 or (t−1)·N for yescrypt-RW; N·(1, 1.5, t) for the others, p times.
  const bool rw = *flavour >= 2;
  double second = 0;
  if (rw) {
    second = t == 0 ? 1.0 / 3 : t == 1 ? 2.0 / 3 : static_cast<double>(t - 1);
  } else {
    second = (t == 0 ? 1.0 : t == 1 ? 1.5 : static_cast<double>(t)) * p;
  }
  return priced_memory_hard(crypt_scheme::yescrypt, text, *n_log2, *r, (rw ? 1.0 : p) + second, p, bounds);
}

// $7$: N as one character, r and p as five each (30 bits), then salt and digest.
parsed parse_scrypt(std::string_view text, const crypt_bounds& bounds) {
  const auto bad = [](std::string why) { return parsed("hash is not an scrypt ($7$) string: " + why); };
  auto rest = text.substr(3);
  if (rest.empty()) return bad("expected N, r and p");
  const int n_log2 = crypt64_value(rest.front());
  rest.remove_prefix(1);
  const auto r = fixed_number(rest, 5);
  const auto p = r ? fixed_number(rest, 5) : std::nullopt;
  if (n_log2 < 1 || !p) return bad("its N, r and p are not crypt's base64");
  if (*r < 1 || *p < 1) return bad("its r and p must be at least 1");
  // The salt is taken as written.
  if (!salt_and_digest(rest, false)) {
    return bad("expected a salt, then $ and a 43-character digest");
  }
  if (*p > 64) return above("scrypt p", *p, 64);
  if (static_cast<std::uint64_t>(*r) * *p >= (1U << 30)) return bad("its r·p must be under 2^30");
  return priced_memory_hard(crypt_scheme::scrypt, text, static_cast<unsigned>(n_log2), *r, 2.0 * *p, *p, bounds);
}

}  // namespace

std::string_view crypt_scheme_name(crypt_scheme scheme) noexcept {
  switch (scheme) {
    case crypt_scheme::bcrypt: return "bcrypt";
    case crypt_scheme::sha256_crypt: return "sha256-crypt";
    case crypt_scheme::sha512_crypt: return "sha512-crypt";
    case crypt_scheme::yescrypt: return "yescrypt";
    case crypt_scheme::scrypt: return "scrypt";
  }
  return "?";
}

bool looks_like_crypt(std::string_view text) noexcept {
  for (const std::string_view prefix : {"$2a$", "$2b$", "$2y$", "$5$", "$6$", "$y$", "$7$"}) {
    if (text.starts_with(prefix)) return true;
  }
  return false;
}

std::variant<crypt_hash, std::string> parse_crypt(std::string_view text, const crypt_bounds& bounds,
                                                  std::size_t password_bytes) {
  if (text.starts_with("$2a$") || text.starts_with("$2b$") || text.starts_with("$2y$")) return parse_bcrypt(text, bounds);
  if (text.starts_with("$5$") || text.starts_with("$6$")) return parse_sha_crypt(text, bounds, password_bytes);
  if (text.starts_with("$y$")) return parse_yescrypt(text, bounds);
  if (text.starts_with("$7$")) return parse_scrypt(text, bounds);
  return std::string("hash is not one this server reads: Argon2 ($argon2id$, $argon2i$, $argon2d$), bcrypt ($2a$, "
                     "$2b$, $2y$), sha256-crypt ($5$), sha512-crypt ($6$), yescrypt ($y$) or scrypt ($7$)");
}

namespace {

// crypt_rn's state: 32 KiB, wiped when freed (it held the password and intermediate digests).
struct wiped_crypt_data {
  crypt_data data{};
  ~wiped_crypt_data() { wipe(&data, sizeof data); }
};

// Runs crypt_rn over a NUL-terminated copy of the password, which is wiped; nullopt on refusal.
template <typename Use>
auto with_crypt(std::string_view password, std::string_view setting, Use use) {
  std::vector<char, wiping_allocator<char>> key(password.begin(), password.end());
  key.push_back('\0');
  const std::string terminated(setting);
  auto state = std::make_unique<wiped_crypt_data>();
  const char* out = crypt_rn(key.data(), terminated.c_str(), &state->data, sizeof state->data);
  // crypt_rn returns NULL on error, or a failure token starting with '*' in older builds.
  return use(out && out[0] != '*' ? std::optional<std::string_view>(out) : std::nullopt);
}

}  // namespace

bool crypt_verify(const crypt_hash& hash, std::string_view password) {
  if (password.find('\0') != std::string_view::npos) return false;
  return with_crypt(password, hash.text, [&](std::optional<std::string_view> out) {
    if (!out) throw std::runtime_error("libcrypt refused the stored " + std::string(crypt_scheme_name(hash.scheme)) + " hash");
    return out->size() == hash.text.size() && sodium_memcmp(out->data(), hash.text.data(), out->size()) == 0;
  });
}

std::string crypt_hash_with(std::string_view password, std::string_view setting) {
  return with_crypt(password, setting, [](std::optional<std::string_view> out) {
    if (!out) throw std::runtime_error("libcrypt refused the setting");
    return std::string(*out);
  });
}

}  // namespace crunch
