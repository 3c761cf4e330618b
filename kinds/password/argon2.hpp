#pragma once
/// Argon2 (RFC 9106, version 0x13) over memory its caller provides. libsodium's Argon2 maps fresh
/// memory for every hash and unmaps it afterwards: 19 MiB of page faults, zeroing and a TLB
/// shootdown per hash, which cost 3/4 of the machine's hashing rate (issue 24). This core takes
/// its blocks from the caller — a worker's kept memory (worker_memory.hpp) — and uses libsodium
/// for BLAKE2b only. The block compression is written for AVX-512, for AVX2 and in portable C++;
/// the fastest form the CPU has is picked at run time.

#include <cstddef>
#include <cstdint>
#include <span>
#include <stop_token>
#include <string_view>

namespace crunch {

/// The Argon2 variants, with the type codes RFC 9106 hashes into H0.
enum class argon2_variant : std::uint32_t { d = 0, i = 1, id = 2 };

/// What one Argon2 computation takes. Password, salt, secret and associated data are read only.
struct argon2_inputs {
  argon2_variant variant = argon2_variant::id;
  std::uint32_t m_cost_kib = 0;  ///< memory in KiB, at least 8 × lanes
  std::uint32_t t_cost = 0;      ///< passes, at least 1
  std::uint32_t lanes = 1;       ///< parallelism (computed one lane after another), 1..2^24-1
  std::string_view password;
  std::string_view salt;         ///< at least 8 bytes
  std::string_view secret;       ///< K, may be empty
  std::string_view associated;   ///< X, may be empty
  /// When it fires, the computation ends early (within a few MiB of blocks, ~1 ms) and the tag
  /// means nothing: whoever passed it checks it afterwards.
  std::stop_token stop = {};
};

/// Smallest and largest tag this core computes (RFC 9106 allows 4..2^32-1; PHC strings here hold 16..64).
inline constexpr std::size_t argon2_min_tag_bytes = 16;
inline constexpr std::size_t argon2_max_tag_bytes = 64;

/// Bytes of block memory a computation with these costs uses: m rounded down to a multiple of
/// 4 × lanes KiB (and at least 8 × lanes KiB).
std::size_t argon2_memory_bytes(std::uint32_t m_cost_kib, std::uint32_t lanes) noexcept;

/// What a computation wrote into its memory: in each lane, the first `blocks_per_lane` blocks
/// (of argon2_memory_bytes() / 1024 / lanes). All of them unless its stop token cut it short in
/// the first pass, before it had touched the rest — which a wipe then need not fault in.
struct argon2_written {
  std::uint32_t lanes = 0;
  std::uint32_t lane_blocks = 0;      ///< a lane's length, in 1 KiB blocks
  std::uint32_t blocks_per_lane = 0;  ///< written from each lane's start
};

/// Computes the tag (argon2_min_tag_bytes..argon2_max_tag_bytes long) into `tag`, using
/// `memory` — at least argon2_memory_bytes(), aligned to 64 bytes — for its blocks, whatever it
/// held before: every block is written before it is read. The blocks are left as they are:
/// whoever owns the memory wipes what it says it wrote. Throws std::invalid_argument for inputs
/// out of bounds.
argon2_written argon2_compute(const argon2_inputs& inputs, std::span<std::uint8_t> tag, std::span<std::byte> memory);

/// The forms of the block compression: AVX-512 (two rows to a register set, rotations in one
/// instruction), AVX2 (one row), and portable C++.
enum class argon2_core { avx512, avx2, portable };

/// Whether this CPU can run `core`.
bool argon2_core_available(argon2_core core) noexcept;

/// argon2_compute with the given form of the compression, whatever the CPU's best: for the tests
/// that check that every form agrees. Throws std::invalid_argument when the CPU lacks it.
argon2_written argon2_compute_with(argon2_core core, const argon2_inputs& inputs, std::span<std::uint8_t> tag,
                                  std::span<std::byte> memory);

/// "avx512", "avx2" or "portable".
std::string_view argon2_core_name(argon2_core core) noexcept;

/// The form argon2_compute uses on this CPU: the fastest it has.
std::string_view argon2_implementation() noexcept;

}  // namespace crunch
