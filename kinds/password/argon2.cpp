#include "argon2.hpp"

#include <crunch/wiping.hpp>

#include <sodium.h>

#include <array>
#include <bit>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace crunch {

namespace {

static_assert(std::endian::native == std::endian::little, "blocks are read as little-endian words in place");

constexpr std::uint32_t version = 0x13;
constexpr std::uint32_t sync_points = 4;  // slices per pass
constexpr std::size_t block_words = 128;
constexpr std::size_t block_bytes = block_words * 8;
constexpr std::uint32_t addresses_per_block = block_words;

struct alignas(64) block {
  std::uint64_t v[block_words];
};

void store_le32(std::uint8_t* out, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<std::uint8_t>(value >> (8 * i));
}

// BLAKE2b over the pieces, `outlen` (16..64) bytes out; its state, which saw the password, is wiped.
class blake2b {
 public:
  explicit blake2b(std::size_t outlen) : outlen_(outlen) { crypto_generichash_blake2b_init(&state_, nullptr, 0, outlen); }
  ~blake2b() { sodium_memzero(&state_, sizeof state_); }
  blake2b(const blake2b&) = delete;
  blake2b& operator=(const blake2b&) = delete;
  blake2b& bytes(const void* data, std::size_t size) {
    crypto_generichash_blake2b_update(&state_, static_cast<const unsigned char*>(data), size);
    return *this;
  }
  blake2b& le32(std::uint32_t value) {
    std::uint8_t le[4];
    store_le32(le, value);
    return bytes(le, sizeof le);
  }
  // Its length as LE32, then the bytes: how H0 takes each variable-length input.
  blake2b& sized(std::string_view text) { return le32(static_cast<std::uint32_t>(text.size())).bytes(text.data(), text.size()); }
  void final(std::uint8_t* out) { crypto_generichash_blake2b_final(&state_, out, outlen_); }

 private:
  crypto_generichash_blake2b_state state_;
  std::size_t outlen_;
};

// H' of RFC 9106 §3.3 for outputs of 16 bytes and more: the tag, and the 1 KiB first blocks.
void blake2b_long(std::uint8_t* out, std::size_t outlen, const std::uint8_t* in, std::size_t inlen) {
  if (outlen <= 64) {
    blake2b(outlen).le32(static_cast<std::uint32_t>(outlen)).bytes(in, inlen).final(out);
    return;
  }
  std::array<std::uint8_t, 64> v{}, next{};
  blake2b(64).le32(static_cast<std::uint32_t>(outlen)).bytes(in, inlen).final(v.data());
  std::memcpy(out, v.data(), 32);
  out += 32;
  std::size_t left = outlen - 32;
  while (left > 64) {
    crypto_generichash_blake2b(next.data(), 64, v.data(), 64, nullptr, 0);
    v = next;
    std::memcpy(out, v.data(), 32);
    out += 32;
    left -= 32;
  }
  crypto_generichash_blake2b(next.data(), left, v.data(), 64, nullptr, 0);
  std::memcpy(out, next.data(), left);
  sodium_memzero(v.data(), v.size());
  sodium_memzero(next.data(), next.size());
}

// ---- the compression G: portable form ----

inline std::uint64_t blamka(std::uint64_t x, std::uint64_t y) {
  const std::uint64_t product = (x & 0xffffffffULL) * (y & 0xffffffffULL);
  return x + y + 2 * product;
}

inline void gb(std::uint64_t& a, std::uint64_t& b, std::uint64_t& c, std::uint64_t& d) {
  a = blamka(a, b);
  d = std::rotr(d ^ a, 32);
  c = blamka(c, d);
  b = std::rotr(b ^ c, 24);
  a = blamka(a, b);
  d = std::rotr(d ^ a, 16);
  c = blamka(c, d);
  b = std::rotr(b ^ c, 63);
}

// BLAKE2b's round without message on 16 words picked from the block by `at`.
template <typename At>
inline void round_portable(std::uint64_t* v, At at) {
  gb(v[at(0)], v[at(4)], v[at(8)], v[at(12)]);
  gb(v[at(1)], v[at(5)], v[at(9)], v[at(13)]);
  gb(v[at(2)], v[at(6)], v[at(10)], v[at(14)]);
  gb(v[at(3)], v[at(7)], v[at(11)], v[at(15)]);
  gb(v[at(0)], v[at(5)], v[at(10)], v[at(15)]);
  gb(v[at(1)], v[at(6)], v[at(11)], v[at(12)]);
  gb(v[at(2)], v[at(7)], v[at(8)], v[at(13)]);
  gb(v[at(3)], v[at(4)], v[at(9)], v[at(14)]);
}

// next = G(prev, ref), or next ^= G(prev, ref) on later passes.
void compress_portable(const block& prev, const block& ref, block& next, bool with_xor) {
  block r, keep;
  for (std::size_t i = 0; i < block_words; ++i) {
    r.v[i] = prev.v[i] ^ ref.v[i];
    keep.v[i] = with_xor ? r.v[i] ^ next.v[i] : r.v[i];
  }
  for (std::size_t row = 0; row < 8; ++row) {
    round_portable(r.v, [row](std::size_t k) { return 16 * row + k; });
  }
  for (std::size_t col = 0; col < 8; ++col) {
    round_portable(r.v, [col](std::size_t k) { return 2 * col + 16 * (k / 2) + (k % 2); });
  }
  for (std::size_t i = 0; i < block_words; ++i) next.v[i] = r.v[i] ^ keep.v[i];
}

// ---- the compression G: AVX2 form, four words to a register ----

#if defined(__x86_64__)

#define CRUNCH_AVX2 __attribute__((target("avx2")))

CRUNCH_AVX2 inline __m256i blamka_avx2(__m256i x, __m256i y) {
  const __m256i product = _mm256_mul_epu32(x, y);  // low halves, 64-bit products
  return _mm256_add_epi64(_mm256_add_epi64(x, y), _mm256_add_epi64(product, product));
}

CRUNCH_AVX2 inline __m256i rotr32(__m256i x) { return _mm256_shuffle_epi32(x, _MM_SHUFFLE(2, 3, 0, 1)); }
CRUNCH_AVX2 inline __m256i rotr24(__m256i x) {
  const __m256i bytes = _mm256_setr_epi8(3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10,  //
                                         3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10);
  return _mm256_shuffle_epi8(x, bytes);
}
CRUNCH_AVX2 inline __m256i rotr16(__m256i x) {
  const __m256i bytes = _mm256_setr_epi8(2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9,  //
                                         2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9);
  return _mm256_shuffle_epi8(x, bytes);
}
CRUNCH_AVX2 inline __m256i rotr63(__m256i x) { return _mm256_xor_si256(_mm256_srli_epi64(x, 63), _mm256_add_epi64(x, x)); }

CRUNCH_AVX2 inline void gb_avx2(__m256i& a, __m256i& b, __m256i& c, __m256i& d) {
  a = blamka_avx2(a, b);
  d = rotr32(_mm256_xor_si256(d, a));
  c = blamka_avx2(c, d);
  b = rotr24(_mm256_xor_si256(b, c));
  a = blamka_avx2(a, b);
  d = rotr16(_mm256_xor_si256(d, a));
  c = blamka_avx2(c, d);
  b = rotr63(_mm256_xor_si256(b, c));
}

// One round on the 4×4 words a|b|c|d: the columns, then the diagonals (turned into columns by
// rotating b, c and d by one, two and three words, and back).
CRUNCH_AVX2 inline void round_avx2(__m256i& a, __m256i& b, __m256i& c, __m256i& d) {
  gb_avx2(a, b, c, d);
  b = _mm256_permute4x64_epi64(b, _MM_SHUFFLE(0, 3, 2, 1));
  c = _mm256_permute4x64_epi64(c, _MM_SHUFFLE(1, 0, 3, 2));
  d = _mm256_permute4x64_epi64(d, _MM_SHUFFLE(2, 1, 0, 3));
  gb_avx2(a, b, c, d);
  b = _mm256_permute4x64_epi64(b, _MM_SHUFFLE(2, 1, 0, 3));
  c = _mm256_permute4x64_epi64(c, _MM_SHUFFLE(1, 0, 3, 2));
  d = _mm256_permute4x64_epi64(d, _MM_SHUFFLE(0, 3, 2, 1));
}

// Two 16-byte pieces of the block, at words `low` and `high`, as one register; and back.
CRUNCH_AVX2 inline __m256i load_pair(const std::uint64_t* v, std::size_t low, std::size_t high) {
  const __m128i lo = _mm_load_si128(reinterpret_cast<const __m128i*>(v + low));
  const __m128i hi = _mm_load_si128(reinterpret_cast<const __m128i*>(v + high));
  return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}
CRUNCH_AVX2 inline void store_pair(std::uint64_t* v, std::size_t low, std::size_t high, __m256i x) {
  _mm_store_si128(reinterpret_cast<__m128i*>(v + low), _mm256_castsi256_si128(x));
  _mm_store_si128(reinterpret_cast<__m128i*>(v + high), _mm256_extracti128_si256(x, 1));
}

CRUNCH_AVX2 void compress_avx2(const block& prev, const block& ref, block& next, bool with_xor) {
  block r;
  __m256i keep[block_words / 4];
  auto* rv = reinterpret_cast<__m256i*>(r.v);
  const auto* pv = reinterpret_cast<const __m256i*>(prev.v);
  const auto* fv = reinterpret_cast<const __m256i*>(ref.v);
  auto* nv = reinterpret_cast<__m256i*>(next.v);
  for (std::size_t i = 0; i < block_words / 4; ++i) {
    rv[i] = _mm256_xor_si256(_mm256_load_si256(pv + i), _mm256_load_si256(fv + i));
    keep[i] = with_xor ? _mm256_xor_si256(rv[i], _mm256_load_si256(nv + i)) : rv[i];
  }
  // Rows: words 16·row .. 16·row+15, four to a register.
  for (std::size_t row = 0; row < 8; ++row) {
    __m256i* q = rv + 4 * row;
    round_avx2(q[0], q[1], q[2], q[3]);
  }
  // Columns: words 2·col + 16·k and the one after it, for k = 0..7, two pairs to a register.
  for (std::size_t col = 0; col < 8; ++col) {
    const std::size_t w = 2 * col;
    __m256i a = load_pair(r.v, w, w + 16), b = load_pair(r.v, w + 32, w + 48);
    __m256i c = load_pair(r.v, w + 64, w + 80), d = load_pair(r.v, w + 96, w + 112);
    round_avx2(a, b, c, d);
    store_pair(r.v, w, w + 16, a);
    store_pair(r.v, w + 32, w + 48, b);
    store_pair(r.v, w + 64, w + 80, c);
    store_pair(r.v, w + 96, w + 112, d);
  }
  for (std::size_t i = 0; i < block_words / 4; ++i) _mm256_store_si256(nv + i, _mm256_xor_si256(rv[i], keep[i]));
}

// ---- the compression G: AVX-512 form, two rows (or two columns) to a set of registers ----

#define CRUNCH_AVX512 __attribute__((target("avx512f")))

// GCC 12's _mm512_inserti64x4 passes _mm512_undefined_epi32() as its unused mask source, which
// -Wuninitialized reports inside the header (GCC bug 105593): not a real read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

CRUNCH_AVX512 inline __m512i blamka_512(__m512i x, __m512i y) {
  const __m512i product = _mm512_mul_epu32(x, y);
  return _mm512_add_epi64(_mm512_add_epi64(x, y), _mm512_add_epi64(product, product));
}

CRUNCH_AVX512 inline void gb_512(__m512i& a, __m512i& b, __m512i& c, __m512i& d) {
  a = blamka_512(a, b);
  d = _mm512_ror_epi64(_mm512_xor_si512(d, a), 32);
  c = blamka_512(c, d);
  b = _mm512_ror_epi64(_mm512_xor_si512(b, c), 24);
  a = blamka_512(a, b);
  d = _mm512_ror_epi64(_mm512_xor_si512(d, a), 16);
  c = blamka_512(c, d);
  b = _mm512_ror_epi64(_mm512_xor_si512(b, c), 63);
}

// The AVX2 round on both 256-bit halves at once: each half is one row's (or column's) 4×4 words.
CRUNCH_AVX512 inline void round_512(__m512i& a, __m512i& b, __m512i& c, __m512i& d) {
  gb_512(a, b, c, d);
  b = _mm512_permutex_epi64(b, _MM_SHUFFLE(0, 3, 2, 1));
  c = _mm512_permutex_epi64(c, _MM_SHUFFLE(1, 0, 3, 2));
  d = _mm512_permutex_epi64(d, _MM_SHUFFLE(2, 1, 0, 3));
  gb_512(a, b, c, d);
  b = _mm512_permutex_epi64(b, _MM_SHUFFLE(2, 1, 0, 3));
  c = _mm512_permutex_epi64(c, _MM_SHUFFLE(1, 0, 3, 2));
  d = _mm512_permutex_epi64(d, _MM_SHUFFLE(0, 3, 2, 1));
}

// 32 bytes at word `low` and 32 at word `high`, as one register; and back.
CRUNCH_AVX512 inline __m512i load_halves(const std::uint64_t* v, std::size_t low, std::size_t high) {
  const __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(v + low));
  const __m256i hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(v + high));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}
CRUNCH_AVX512 inline void store_halves(std::uint64_t* v, std::size_t low, std::size_t high, __m512i x) {
  _mm256_store_si256(reinterpret_cast<__m256i*>(v + low), _mm512_castsi512_si256(x));
  _mm256_store_si256(reinterpret_cast<__m256i*>(v + high), _mm512_extracti64x4_epi64(x, 1));
}

// Columns c and c+1 (c even) of the 4×4 view: 16-byte pieces at words 2c + 16k. Loaded as the
// 32 bytes at 2c (c's piece, then c+1's) and at 2c+16, then the middle two 16-byte lanes swapped,
// so that the low half holds column c and the high half column c+1. The swap is its own inverse.
CRUNCH_AVX512 inline __m512i load_columns(const std::uint64_t* v, std::size_t at) {
  const __m512i x = load_halves(v, at, at + 16);
  return _mm512_shuffle_i64x2(x, x, _MM_SHUFFLE(3, 1, 2, 0));
}
CRUNCH_AVX512 inline void store_columns(std::uint64_t* v, std::size_t at, __m512i x) {
  store_halves(v, at, at + 16, _mm512_shuffle_i64x2(x, x, _MM_SHUFFLE(3, 1, 2, 0)));
}

CRUNCH_AVX512 void compress_avx512(const block& prev, const block& ref, block& next, bool with_xor) {
  block r;
  __m512i keep[block_words / 8];
  auto* rv = reinterpret_cast<__m512i*>(r.v);
  const auto* pv = reinterpret_cast<const __m512i*>(prev.v);
  const auto* fv = reinterpret_cast<const __m512i*>(ref.v);
  auto* nv = reinterpret_cast<__m512i*>(next.v);
  for (std::size_t i = 0; i < block_words / 8; ++i) {
    rv[i] = _mm512_xor_si512(_mm512_load_si512(pv + i), _mm512_load_si512(fv + i));
    keep[i] = with_xor ? _mm512_xor_si512(rv[i], _mm512_load_si512(nv + i)) : rv[i];
  }
  // Rows `row` and `row + 1`: the low halves hold the first, the high halves the second.
  for (std::size_t row = 0; row < 8; row += 2) {
    const std::size_t w = 16 * row;
    __m512i a = load_halves(r.v, w, w + 16), b = load_halves(r.v, w + 4, w + 20);
    __m512i c = load_halves(r.v, w + 8, w + 24), d = load_halves(r.v, w + 12, w + 28);
    round_512(a, b, c, d);
    store_halves(r.v, w, w + 16, a);
    store_halves(r.v, w + 4, w + 20, b);
    store_halves(r.v, w + 8, w + 24, c);
    store_halves(r.v, w + 12, w + 28, d);
  }
  for (std::size_t col = 0; col < 8; col += 2) {
    const std::size_t w = 2 * col;
    __m512i a = load_columns(r.v, w), b = load_columns(r.v, w + 32);
    __m512i c = load_columns(r.v, w + 64), d = load_columns(r.v, w + 96);
    round_512(a, b, c, d);
    store_columns(r.v, w, a);
    store_columns(r.v, w + 32, b);
    store_columns(r.v, w + 64, c);
    store_columns(r.v, w + 96, d);
  }
  for (std::size_t i = 0; i < block_words / 8; ++i) _mm512_store_si512(nv + i, _mm512_xor_si512(rv[i], keep[i]));
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

bool cpu_has_avx512() noexcept {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}

bool cpu_has_avx2() noexcept {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

#endif

using compress_fn = void (*)(const block&, const block&, block&, bool);

compress_fn compress_of(argon2_core core) noexcept {
  switch (core) {
#if defined(__x86_64__)
    case argon2_core::avx512: return cpu_has_avx512() ? compress_avx512 : nullptr;
    case argon2_core::avx2: return cpu_has_avx2() ? compress_avx2 : nullptr;
#else
    case argon2_core::avx512:
    case argon2_core::avx2: return nullptr;
#endif
    case argon2_core::portable: return compress_portable;
  }
  return nullptr;
}

argon2_core pick_core() noexcept {
  for (const auto core : {argon2_core::avx512, argon2_core::avx2}) {
    if (compress_of(core) != nullptr) return core;
  }
  return argon2_core::portable;
}

const argon2_core best_core = pick_core();

// ---- filling the memory (RFC 9106 §3.2–3.4) ----

struct geometry {
  std::uint32_t lanes;
  std::uint32_t segment;  // blocks per lane and slice
  std::uint32_t lane;     // blocks per lane
  std::uint32_t blocks;   // in all
};

geometry geometry_of(std::uint32_t m_cost_kib, std::uint32_t lanes) noexcept {
  const std::uint32_t m = std::max(m_cost_kib, 2 * sync_points * lanes);
  const std::uint32_t segment = m / (lanes * sync_points);
  return {lanes, segment, segment * sync_points, segment * sync_points * lanes};
}

class filler {
 public:
  filler(const argon2_inputs& in, const geometry& g, block* memory, compress_fn compress)
      : in_(in), g_(g), b_(memory), compress_(compress) {}

  // Returns the blocks written from each lane's start, at most: all, or fewer when the stop token
  // cut the first pass short. With one lane that is exactly where it stopped, so that whoever
  // wipes them does not fault in (a slice of 256 MiB: up to 100 ms) pages never touched; with
  // more, the lanes before the one that stopped wrote their whole slice.
  std::uint32_t fill() {
    for (std::uint32_t pass = 0; pass < in_.t_cost; ++pass) {
      for (std::uint32_t slice = 0; slice < sync_points; ++slice) {
        for (std::uint32_t lane = 0; lane < g_.lanes; ++lane) {
          if (segment(pass, slice, lane)) continue;
          if (pass != 0) return g_.lane;
          if (lane != 0) return (slice + 1) * g_.segment;
          return slice * g_.segment + std::max(stopped_at_, slice == 0 ? 2u : 0u);  // two blocks from H0
        }
      }
    }
    return g_.lane;
  }

 private:
  // The block that block `index` of the segment refers to, in `ref_lane`, from J1 (§3.4.2).
  std::uint32_t reference(std::uint32_t pass, std::uint32_t slice, std::uint32_t index, std::uint32_t j1,
                          bool same_lane) const {
    std::uint64_t area;
    if (pass == 0) {
      if (slice == 0) {
        area = index - 1;
      } else if (same_lane) {
        area = std::uint64_t{slice} * g_.segment + index - 1;
      } else {
        area = std::uint64_t{slice} * g_.segment - (index == 0 ? 1 : 0);
      }
    } else {
      // The three other slices of the lane; the block before this one too when in this lane.
      area = g_.lane - g_.segment;
      if (same_lane) {
        area = area + index - 1;
      } else if (index == 0) {
        area -= 1;
      }
    }
    std::uint64_t x = j1;
    x = (x * x) >> 32;
    const std::uint64_t relative = area - 1 - ((area * x) >> 32);
    const std::uint64_t start = pass == 0 || slice == sync_points - 1 ? 0 : std::uint64_t{slice + 1} * g_.segment;
    return static_cast<std::uint32_t>((start + relative) % g_.lane);
  }

  void next_addresses(block& input, block& addresses) {
    ++input.v[6];
    compress_(zero_, input, addresses, false);
    compress_(zero_, addresses, addresses, false);
  }

  // False when the stop token fired: it is looked at every stop_check blocks (4 MiB), a
  // millisecond or two of work, so that a hash stops at its deadline like any job.
  static constexpr std::uint32_t stop_check = 4096;

  bool segment(std::uint32_t pass, std::uint32_t slice, std::uint32_t lane) {
    stopped_at_ = 0;
    if (in_.stop.stop_requested()) return false;
    const bool independent =
        in_.variant == argon2_variant::i || (in_.variant == argon2_variant::id && pass == 0 && slice < 2);
    block input{}, addresses{};
    if (independent) {
      input.v[0] = pass;
      input.v[1] = lane;
      input.v[2] = slice;
      input.v[3] = g_.blocks;
      input.v[4] = in_.t_cost;
      input.v[5] = static_cast<std::uint64_t>(in_.variant);
    }
    std::uint32_t first = 0;
    if (pass == 0 && slice == 0) {
      first = 2;  // the two first blocks of each lane come from H0
      if (independent) next_addresses(input, addresses);
    }
    const std::uint64_t lane_start = std::uint64_t{lane} * g_.lane;
    for (std::uint32_t index = first; index < g_.segment; ++index) {
      const std::uint32_t column = slice * g_.segment + index;
      const std::uint64_t current = lane_start + column;
      const std::uint64_t previous = column == 0 ? lane_start + g_.lane - 1 : current - 1;
      std::uint64_t random;
      if (independent) {
        if (index % addresses_per_block == 0) next_addresses(input, addresses);
        random = addresses.v[index % addresses_per_block];
      } else {
        random = b_[previous].v[0];
      }
      std::uint32_t ref_lane = static_cast<std::uint32_t>((random >> 32) % g_.lanes);
      if (pass == 0 && slice == 0) ref_lane = lane;
      const auto ref = reference(pass, slice, index, static_cast<std::uint32_t>(random), ref_lane == lane);
      compress_(b_[previous], b_[std::uint64_t{ref_lane} * g_.lane + ref], b_[current], pass != 0);
      if (index % stop_check == stop_check - 1 && in_.stop.stop_requested()) {
        stopped_at_ = index + 1;
        return false;
      }
    }
    return true;
  }

  const argon2_inputs& in_;
  const geometry g_;
  block* const b_;
  const compress_fn compress_;
  const block zero_{};
  std::uint32_t stopped_at_ = 0;  // blocks of its segment written when the token stopped it
};

}  // namespace

std::size_t argon2_memory_bytes(std::uint32_t m_cost_kib, std::uint32_t lanes) noexcept {
  if (lanes == 0) return 0;
  return std::size_t{geometry_of(m_cost_kib, lanes).blocks} * block_bytes;
}

std::string_view argon2_implementation() noexcept { return argon2_core_name(best_core); }

std::string_view argon2_core_name(argon2_core core) noexcept {
  switch (core) {
    case argon2_core::avx512: return "avx512";
    case argon2_core::avx2: return "avx2";
    case argon2_core::portable: return "portable";
  }
  return "?";
}

bool argon2_core_available(argon2_core core) noexcept { return compress_of(core) != nullptr; }

namespace {

argon2_written compute_with(const argon2_inputs& in, std::span<std::uint8_t> tag, std::span<std::byte> memory,
                            compress_fn compress) {
  if (tag.size() < argon2_min_tag_bytes || tag.size() > argon2_max_tag_bytes) throw std::invalid_argument("argon2: tag length out of bounds");
  if (in.lanes < 1 || in.lanes > 0xffffff) throw std::invalid_argument("argon2: lanes out of bounds");
  if (in.t_cost < 1) throw std::invalid_argument("argon2: t_cost must be at least 1");
  if (std::uint64_t{in.m_cost_kib} < 8 * std::uint64_t{in.lanes}) throw std::invalid_argument("argon2: m_cost below 8 KiB per lane");
  if (in.salt.size() < 8) throw std::invalid_argument("argon2: salt under 8 bytes");
  const geometry g = geometry_of(in.m_cost_kib, in.lanes);
  if (memory.size() < std::size_t{g.blocks} * block_bytes || reinterpret_cast<std::uintptr_t>(memory.data()) % 64 != 0) {
    throw std::invalid_argument("argon2: memory too small or not aligned to 64 bytes");
  }
  auto* blocks = reinterpret_cast<block*>(memory.data());

  // H0, then each lane's first two blocks: H'(H0 ‖ LE32(0 or 1) ‖ LE32(lane)).
  std::array<std::uint8_t, 72> seed{};
  blake2b(64)
      .le32(in.lanes)
      .le32(static_cast<std::uint32_t>(tag.size()))
      .le32(in.m_cost_kib)
      .le32(in.t_cost)
      .le32(version)
      .le32(static_cast<std::uint32_t>(in.variant))
      .sized(in.password)
      .sized(in.salt)
      .sized(in.secret)
      .sized(in.associated)
      .final(seed.data());
  for (std::uint32_t lane = 0; lane < in.lanes; ++lane) {
    for (std::uint32_t k = 0; k < 2; ++k) {
      store_le32(seed.data() + 64, k);
      store_le32(seed.data() + 68, lane);
      blake2b_long(reinterpret_cast<std::uint8_t*>(&blocks[std::uint64_t{lane} * g.lane + k]), block_bytes, seed.data(),
                   seed.size());
    }
  }
  sodium_memzero(seed.data(), seed.size());

  const auto written = filler(in, g, blocks, compress).fill();
  if (written < g.lane) return {g.lanes, g.lane, written};  // stopped: the tag means nothing

  // The tag: H' of the XOR of every lane's last block.
  block last = blocks[g.lane - 1];
  for (std::uint32_t lane = 1; lane < in.lanes; ++lane) {
    const block& other = blocks[std::uint64_t{lane} * g.lane + g.lane - 1];
    for (std::size_t i = 0; i < block_words; ++i) last.v[i] ^= other.v[i];
  }
  blake2b_long(tag.data(), tag.size(), reinterpret_cast<const std::uint8_t*>(&last), block_bytes);
  wipe(&last, sizeof last);
  return {g.lanes, g.lane, g.lane};
}

}  // namespace

argon2_written argon2_compute(const argon2_inputs& inputs, std::span<std::uint8_t> tag, std::span<std::byte> memory) {
  return compute_with(inputs, tag, memory, compress_of(best_core));
}

argon2_written argon2_compute_with(argon2_core core, const argon2_inputs& inputs, std::span<std::uint8_t> tag,
                                  std::span<std::byte> memory) {
  const auto compress = compress_of(core);
  if (compress == nullptr) throw std::invalid_argument("argon2: this CPU has no " + std::string(argon2_core_name(core)));
  return compute_with(inputs, tag, memory, compress);
}

}  // namespace crunch
