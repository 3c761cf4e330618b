#include "password.hpp"

#include "argon2.hpp"
#include "pepper.hpp"
#include "server/decimal.hpp"
#include <crunch/wiping.hpp>
#include <crunch/worker_memory.hpp>

#include <sodium.h>

#include <algorithm>
#include <array>
#include <new>
#include <span>
#include <stdexcept>
#include <vector>

namespace crunch {

namespace {

// Splits at every `separator`, keeping empty pieces.
std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> pieces;
  for (;;) {
    const auto at = text.find(separator);
    pieces.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return pieces;
    text.remove_prefix(at + 1);
  }
}

// A PHC decimal: digits, no leading zero (the PHC string format says so), within 32 bits.
std::optional<std::uint32_t> phc_decimal(std::string_view text) {
  if (text.size() > 1 && text.front() == '0') return std::nullopt;
  const auto value = parse_decimal(text, 0, UINT32_MAX);
  if (!value) return std::nullopt;
  return static_cast<std::uint32_t>(*value);
}

// The decoded length of canonical, unpadded standard base64 of at most `max_bytes`; nullopt otherwise.
std::optional<std::size_t> base64_length(std::string_view text, std::size_t max_bytes) {
  std::array<unsigned char, 128> bin{};
  if (text.empty() || max_bytes > bin.size()) return std::nullopt;
  std::size_t length = 0;
  const char* end = nullptr;
  if (sodium_base642bin(bin.data(), max_bytes, text.data(), text.size(), nullptr, &length, &end,
                        sodium_base64_VARIANT_ORIGINAL_NO_PADDING) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  return length;
}

struct parameters {
  argon2_params costs;
  std::string keyid;
};

std::variant<parameters, std::string> parse_parameters(std::string_view text) {
  argon2_params params;
  std::string keyid;
  bool m = false, t = false, p = false;
  for (const auto pair : split(text, ',')) {
    const auto eq = pair.find('=');
    if (eq == std::string_view::npos) return "its parameters must be m=, t= and p=";
    const auto name = pair.substr(0, eq);
    if (name == "keyid") {
      if (!keyid.empty()) return "it gives a parameter twice";
      if (!valid_pepper_id(pair.substr(eq + 1))) return "its keyid must be 1..16 of A-Z a-z 0-9 . -";
      keyid = pair.substr(eq + 1);
      continue;
    }
    const auto value = phc_decimal(pair.substr(eq + 1));
    bool* seen = name == "m" ? &m : name == "t" ? &t : name == "p" ? &p : nullptr;
    if (!seen) return "its parameters must be m=, t= and p=, and keyid= (no others)";
    if (*seen) return "it gives a parameter twice";
    if (!value) return "its parameter " + std::string(name) + " is not a minimal decimal of at most 32 bits";
    *seen = true;
    (name == "m" ? params.m_cost_kib : name == "t" ? params.t_cost : params.parallelism) = *value;
  }
  if (!m || !t || !p) return "its parameters must be m=, t= and p=";
  if (params.t_cost < 1 || params.parallelism < 1) return "its t and p must be at least 1";
  if (params.m_cost_kib < 8 * std::uint64_t{params.parallelism}) return "its m must be at least 8 KiB per lane (8 × p)";
  return parameters{params, std::move(keyid)};
}

}  // namespace

std::variant<phc_hash, std::string> parse_phc(std::string_view text) {
  auto bad = [](std::string why) { return std::variant<phc_hash, std::string>("hash is not an Argon2 PHC string: " + why); };
  const auto fields = split(text, '$');
  // "", variant, version, parameters, salt, digest
  if (fields.size() != 6 || !fields[0].empty()) return bad("expected $argon2id$v=19$m=..,t=..,p=..$salt$digest");
  phc_hash hash;
  if (fields[1] == "argon2id") {
    hash.type = argon2_type::argon2id;
  } else if (fields[1] == "argon2i") {
    hash.type = argon2_type::argon2i;
  } else if (fields[1] == "argon2d") {
    hash.type = argon2_type::argon2d;
  } else {
    return bad("its algorithm must be argon2id, argon2i or argon2d");
  }
  if (fields[2] != "v=19") return bad("only version 19 (v=19) is supported");
  auto params = parse_parameters(fields[3]);
  if (auto* why = std::get_if<std::string>(&params)) return bad(*why);
  hash.params = std::get<parameters>(params).costs;
  hash.keyid = std::move(std::get<parameters>(params).keyid);
  const auto salt = base64_length(fields[4], phc_max_salt_bytes);
  if (!salt || *salt < 8) return bad("its salt must be 8..64 bytes in unpadded base64");
  const auto digest = base64_length(fields[5], phc_max_digest_bytes);
  if (!digest || *digest < 16) return bad("its digest must be 16..64 bytes in unpadded base64");
  hash.salt = fields[4];
  hash.digest = fields[5];
  hash.salt_bytes = *salt;
  hash.digest_bytes = *digest;
  return hash;
}

namespace {

std::string_view type_name(argon2_type type) {
  switch (type) {
    case argon2_type::argon2id: return "argon2id";
    case argon2_type::argon2i: return "argon2i";
    case argon2_type::argon2d: return "argon2d";
  }
  return "?";
}

}  // namespace

std::string canonical_phc(const phc_hash& hash) {
  return "$" + std::string(type_name(hash.type)) + "$v=19$m=" + std::to_string(hash.params.m_cost_kib) +
         ",t=" + std::to_string(hash.params.t_cost) + ",p=" + std::to_string(hash.params.parallelism) +
         (hash.keyid.empty() ? "" : ",keyid=" + hash.keyid) + "$" + hash.salt + "$" + hash.digest;
}

void init_sodium() {
  // Safe to call from several threads and more than once; it picks the SIMD code for this CPU.
  if (sodium_init() < 0) throw std::runtime_error("libsodium could not be initialised");
}

namespace {

argon2_variant variant_of(argon2_type type) {
  switch (type) {
    case argon2_type::argon2id: return argon2_variant::id;
    case argon2_type::argon2i: return argon2_variant::i;
    case argon2_type::argon2d: return argon2_variant::d;
  }
  return argon2_variant::id;
}

std::string base64(const unsigned char* bytes, std::size_t size) {
  std::array<char, 2 * phc_max_digest_bytes> text{};
  sodium_bin2base64(text.data(), text.size(), bytes, size, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
  return text.data();
}

// Argon2 in the calling worker's kept memory, wiped again before it returns: the blocks are
// derived from the password.
void compute(const argon2_inputs& inputs, std::span<std::uint8_t> tag) {
  const auto bytes = argon2_memory_bytes(inputs.m_cost_kib, inputs.lanes);
  std::span<std::byte> memory;
  try {
    memory = worker_memory(bytes);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error("Argon2 could not get " + std::to_string(inputs.m_cost_kib) + " KiB of memory");
  }
  // Whatever the computation wrote is wiped, and only that: a hash stopped early in its first
  // pass would otherwise fault in, to zero them, pages it never touched (30 to 250 ms for the rest
  // of 256 MiB, measured), and keep its worker that long past its deadline.
  auto wipe_written = [&](const argon2_written& written) {
    const std::size_t lane = std::size_t{written.lane_blocks} * 1024;
    for (std::uint32_t l = 0; l < written.lanes; ++l) {
      wipe(memory.data() + l * lane, std::size_t{written.blocks_per_lane} * 1024);
    }
  };
  argon2_written written;
  try {
    written = argon2_compute(inputs, tag, memory);
  } catch (...) {
    wipe(memory.data(), bytes);
    throw;
  }
  wipe_written(written);
}

}  // namespace

std::uint64_t password_job_memory(std::uint64_t m_cost_kib) {
  const auto blocks = argon2_memory_bytes(static_cast<std::uint32_t>(std::min<std::uint64_t>(m_cost_kib, UINT32_MAX)), 1);
  return worker_memory_size(blocks) + 64 * 1024;
}

std::string argon2id_hash(std::string_view password, std::uint32_t m_cost_kib, std::uint32_t t_cost,
                          std::optional<pepper_use> pepper, const std::stop_token& stop) {
  std::array<unsigned char, 16> salt{};
  randombytes_buf(salt.data(), salt.size());
  std::array<std::uint8_t, 32> tag{};
  compute({argon2_variant::id, m_cost_kib, t_cost, 1, password,
           std::string_view(reinterpret_cast<const char*>(salt.data()), salt.size()),
           pepper ? pepper->secret : std::string_view{}, {}, stop},
          tag);
  return "$argon2id$v=19$m=" + std::to_string(m_cost_kib) + ",t=" + std::to_string(t_cost) + ",p=1" +
         (pepper ? ",keyid=" + std::string(pepper->id) : "") + "$" + base64(salt.data(), salt.size()) + "$" +
         base64(tag.data(), tag.size());
}

bool argon2_verify(const phc_hash& hash, std::string_view password, std::string_view pepper_secret,
                   const std::stop_token& stop) {
  std::array<unsigned char, phc_max_salt_bytes> salt{};
  std::array<std::uint8_t, phc_max_digest_bytes> stored{}, computed{};
  std::size_t salt_bytes = 0, digest_bytes = 0;
  // parse_phc checked both: canonical unpadded base64 of the lengths it recorded.
  sodium_base642bin(salt.data(), salt.size(), hash.salt.data(), hash.salt.size(), nullptr, &salt_bytes, nullptr,
                    sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
  sodium_base642bin(stored.data(), stored.size(), hash.digest.data(), hash.digest.size(), nullptr, &digest_bytes,
                    nullptr, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
  if (salt_bytes != hash.salt_bytes || digest_bytes != hash.digest_bytes) return false;
  const std::span<std::uint8_t> tag(computed.data(), digest_bytes);
  compute({variant_of(hash.type), hash.params.m_cost_kib, hash.params.t_cost, hash.params.parallelism, password,
           std::string_view(reinterpret_cast<const char*>(salt.data()), salt_bytes), pepper_secret, {}, stop},
          tag);
  const bool match = sodium_memcmp(computed.data(), stored.data(), digest_bytes) == 0;
  wipe(computed.data(), computed.size());
  return match;
}

bool needs_rehash(const phc_hash& hash, const argon2_params& current, std::string_view current_keyid) {
  return hash.type != argon2_type::argon2id || hash.params.m_cost_kib < current.m_cost_kib ||
         hash.params.t_cost < current.t_cost || hash.salt_bytes < 16 || hash.digest_bytes < 32 ||
         hash.keyid != current_keyid;
}

}  // namespace crunch
