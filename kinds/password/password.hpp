#pragma once
/// Password hashing with Argon2id (RFC 9106) through libsodium, and the PHC strings hashes are
/// stored in. Plain functions: the password kind (password_kind.cpp) runs them on workers.

#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <variant>

namespace crunch {

/// The Argon2 variants a stored hash may use. New hashes are Argon2id; Argon2i and Argon2d hashes
/// from elsewhere verify, and always need a rehash.
enum class argon2_type { argon2id, argon2i, argon2d };

/// Argon2's cost parameters.
struct argon2_params {
  std::uint32_t m_cost_kib = 0;   ///< memory, in KiB
  std::uint32_t t_cost = 0;       ///< passes over the memory
  std::uint32_t parallelism = 1;  ///< lanes
};

/// A stored hash, read from its PHC string.
struct phc_hash {
  argon2_type type = argon2_type::argon2id;
  argon2_params params;
  std::string salt;          ///< base64 as written (standard alphabet, no padding)
  std::string digest;        ///< likewise
  std::size_t salt_bytes = 0;    ///< decoded length
  std::size_t digest_bytes = 0;  ///< decoded length
  std::string keyid;         ///< the pepper key it was made with (keyid= in the PHC string), or empty
};

/// Most bytes of salt, and of digest, a PHC string may carry here (Argon2 itself allows more).
inline constexpr std::size_t phc_max_salt_bytes = 64;
inline constexpr std::size_t phc_max_digest_bytes = 64;
/// Most lanes a stored hash may use here; libsodium computes them one after another.
inline constexpr std::uint32_t phc_max_parallelism = 64;

/// Memory one hash holds at `m_cost_kib`: Argon2's blocks in the worker's kept memory (whole
/// 2 MiB), plus its small buffers and strings.
std::uint64_t password_job_memory(std::uint64_t m_cost_kib);

/// Reads "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<digest>" — with m, t and p in any order, as
/// node-argon2 writes p before t, and an optional keyid=ID naming the pepper key (pepper.hpp) — and
/// is strict about everything else: the variant (argon2id, argon2i, argon2d), version 19, each
/// parameter once in minimal decimal, canonical unpadded base64, salt of 8..64 bytes and digest of
/// 16..64 bytes, nothing after. On error, says what is wrong without quoting the input.
std::variant<phc_hash, std::string> parse_phc(std::string_view text);

/// The same hash with its parameters in the order m, t, p: the form libsodium reads.
std::string canonical_phc(const phc_hash& hash);

/// Initialises libsodium once (thread-safe); throws std::runtime_error if it cannot.
void init_sodium();

/// A pepper key as a hash uses it: its id, written as keyid=, and its secret, Argon2's K.
struct pepper_use {
  std::string_view id;
  std::string_view secret;
};

/// Hashes `password` with Argon2id at `m_cost_kib` and `t_cost`, parallelism 1, and a fresh
/// 16-byte salt from the OS (libsodium's randombytes_buf); returns the PHC string with a 32-byte
/// digest. With `pepper`, its secret is Argon2's secret input and its id is written as keyid=.
/// The blocks are the calling thread's kept memory (worker_memory.hpp), wiped before it returns.
/// Throws std::runtime_error when that memory cannot be had.
/// When `stop` fires midway, it ends within a millisecond or two and returns something
/// meaningless: the caller checks the token (a job answers nothing then).
std::string argon2id_hash(std::string_view password, std::uint32_t m_cost_kib, std::uint32_t t_cost,
                          std::optional<pepper_use> pepper = std::nullopt, const std::stop_token& stop = {});

/// Whether `password` matches `hash` (the digests compared in constant time), with `pepper_secret`
/// as Argon2's secret input (empty: none; the caller looks up hash.keyid). Memory as for
/// argon2id_hash; throws std::runtime_error when it cannot be had.
/// `stop` as for argon2id_hash.
bool argon2_verify(const phc_hash& hash, std::string_view password, std::string_view pepper_secret = {},
                   const std::stop_token& stop = {});

/// Whether `hash` is weaker than hashes made now with `current`: another variant than Argon2id, less
/// memory or fewer passes, a salt under 16 bytes or a digest under 32, or another pepper key than
/// `current_keyid` (empty: the server has none).
bool needs_rehash(const phc_hash& hash, const argon2_params& current, std::string_view current_keyid = {});

}  // namespace crunch
