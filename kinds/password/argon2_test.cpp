// crunch's Argon2 core (argon2.cpp): RFC 9106's test vectors for all three variants, in
// both forms of the compression, and the same tags as libsodium's Argon2 for random inputs.
#include "argon2.hpp"

#include <gtest/gtest.h>
#include <sodium.h>
#include <sys/mman.h>

#include <array>
#include <cstdint>
#include <random>
#include <stop_token>
#include <string>
#include <vector>

namespace crunch {
namespace {


// Memory for a computation, aligned as argon2_compute asks, and filled with junk: every block
// must be written before it is read, whatever the memory held.
struct scratch {
  explicit scratch(std::size_t bytes) : storage(bytes / 64 + 1) {
    std::mt19937_64 junk(bytes);
    for (auto& cache_line : storage) {
      for (auto& word : cache_line.words) word = junk();
    }
  }
  std::span<std::byte> bytes() { return {reinterpret_cast<std::byte*>(storage.data()), storage.size() * 64}; }
  struct alignas(64) line {
    std::uint64_t words[8];
  };
  std::vector<line> storage;
};

std::vector<std::uint8_t> tag_of(argon2_core core, const argon2_inputs& in, std::size_t tag_bytes) {
  std::vector<std::uint8_t> tag(tag_bytes);
  scratch memory(argon2_memory_bytes(in.m_cost_kib, in.lanes));
  argon2_compute_with(core, in, tag, memory.bytes());
  return tag;
}

std::vector<std::uint8_t> hex(std::string_view text) {
  std::vector<std::uint8_t> bytes;
  for (std::size_t i = 0; i + 1 < text.size(); i += 2) bytes.push_back(static_cast<std::uint8_t>(std::stoul(std::string(text.substr(i, 2)), nullptr, 16)));
  return bytes;
}

// Each form of the compression this CPU has; the others are skipped, and say so.
class argon2_forms : public ::testing::TestWithParam<argon2_core> {
 protected:
  void SetUp() override {
    if (!argon2_core_available(GetParam())) GTEST_SKIP() << "this CPU has no " << argon2_core_name(GetParam());
  }
};

// RFC 9106 §5: m=32 KiB, t=3, p=4, a 32-byte password of 0x01, a 16-byte salt of 0x02, an 8-byte
// secret of 0x03 and 12 bytes of associated data of 0x04; 32-byte tags.
TEST_P(argon2_forms, rfc9106_test_vectors) {
  const std::string password(32, '\x01'), salt(16, '\x02'), secret(8, '\x03'), associated(12, '\x04');
  const std::pair<argon2_variant, const char*> vectors[] = {
      {argon2_variant::d, "512b391b6f1162975371d30919734294f868e3be3984f3c1a13a4db9fabe4acb"},
      {argon2_variant::i, "c814d9d1dc7f37aa13f0d77f2494bda1c8de6b016dd388d29952a4c4672b6ce8"},
      {argon2_variant::id, "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"},
  };
  for (const auto& [variant, expected] : vectors) {
    const argon2_inputs in{variant, 32, 3, 4, password, salt, secret, associated};
    EXPECT_EQ(tag_of(GetParam(), in, 32), hex(expected)) << "variant " << static_cast<int>(variant);
  }
}

// libsodium's crypto_pwhash (Argon2 with p=1, a 16-byte salt) is the reference crunch used
// before: random passwords, salts and costs, with m not a multiple of 4 KiB and tags of every
// length PHC strings here allow, must give its tags.
TEST_P(argon2_forms, the_same_tags_as_libsodium) {
  ASSERT_GE(sodium_init(), 0);
  std::mt19937 random(20241205);
  for (int round = 0; round < 12; ++round) {
    std::string password(random() % 80, '\0'), salt(16, '\0');
    for (auto& c : password) c = static_cast<char>(random());
    for (auto& c : salt) c = static_cast<char>(random());
    const auto m = static_cast<std::uint32_t>(8 + random() % 700);
    const bool i = round % 3 == 2;  // libsodium's Argon2i needs t >= 3
    const auto t = static_cast<std::uint32_t>((i ? 3 : 1) + random() % 3);
    const std::size_t tag_bytes = argon2_min_tag_bytes + random() % (argon2_max_tag_bytes - argon2_min_tag_bytes + 1);
    std::vector<std::uint8_t> expected(tag_bytes);
    ASSERT_EQ(crypto_pwhash(expected.data(), expected.size(), password.data(), password.size(),
                            reinterpret_cast<const unsigned char*>(salt.data()), t, std::size_t{m} * 1024,
                            i ? crypto_pwhash_ALG_ARGON2I13 : crypto_pwhash_ALG_ARGON2ID13),
              0);
    const argon2_inputs in{i ? argon2_variant::i : argon2_variant::id, m, t, 1, password, salt, {}, {}};
    EXPECT_EQ(tag_of(GetParam(), in, tag_bytes), expected) << "m=" << m << " t=" << t << " tag " << tag_bytes;
  }
}

// More lanes than one, and segments of over 128 blocks (a second address block): every form of
// the compression gives the portable one's tags.
TEST_P(argon2_forms, agree_with_the_portable_form_on_many_lanes_and_long_segments) {
  const argon2_inputs id{argon2_variant::id, 4 * 1024 + 100, 2, 3, "password", "somesalt", {}, {}};
  EXPECT_EQ(tag_of(GetParam(), id, 32), tag_of(argon2_core::portable, id, 32));
  const argon2_inputs i{argon2_variant::i, 2048, 1, 2, "password", "somesalt", {}, {}};
  EXPECT_EQ(tag_of(GetParam(), i, 64), tag_of(argon2_core::portable, i, 64));
}

TEST(argon2, the_fastest_form_the_cpu_has_is_used) {
  const auto best = argon2_implementation();
  if (argon2_core_available(argon2_core::avx512)) {
    EXPECT_EQ(best, "avx512");
  } else if (argon2_core_available(argon2_core::avx2)) {
    EXPECT_EQ(best, "avx2");
  } else {
    EXPECT_EQ(best, "portable");
  }
}

TEST(argon2, inputs_out_of_bounds_are_refused) {
  scratch memory(64 * 1024);
  std::array<std::uint8_t, 32> tag{};
  const argon2_inputs good{argon2_variant::id, 32, 1, 1, "pw", "saltsalt", {}, {}};
  EXPECT_NO_THROW(argon2_compute(good, tag, memory.bytes()));
  auto with = [&](auto change) {
    argon2_inputs in = good;
    change(in);
    return in;
  };
  EXPECT_THROW(argon2_compute(with([](auto& in) { in.salt = "short"; }), tag, memory.bytes()), std::invalid_argument);
  EXPECT_THROW(argon2_compute(with([](auto& in) { in.t_cost = 0; }), tag, memory.bytes()), std::invalid_argument);
  EXPECT_THROW(argon2_compute(with([](auto& in) { in.lanes = 0; }), tag, memory.bytes()), std::invalid_argument);
  EXPECT_THROW(argon2_compute(with([](auto& in) { in.m_cost_kib = 7; }), tag, memory.bytes()), std::invalid_argument);
  EXPECT_THROW(argon2_compute(with([](auto& in) { in.m_cost_kib = 80; }), tag, memory.bytes()), std::invalid_argument);
  EXPECT_THROW(argon2_compute(good, std::span(tag).first(15), memory.bytes()), std::invalid_argument);
  EXPECT_THROW(argon2_compute(good, tag, memory.bytes().subspan(8)), std::invalid_argument);  // misaligned
}

TEST(argon2, memory_is_whole_segments_of_four_per_lane) {
  EXPECT_EQ(argon2_memory_bytes(19456, 1), 19456u * 1024);
  EXPECT_EQ(argon2_memory_bytes(19457, 1), 19456u * 1024);
  EXPECT_EQ(argon2_memory_bytes(100, 3), 96u * 1024);
  EXPECT_EQ(argon2_memory_bytes(1, 2), 16u * 1024);  // at least 8 KiB per lane
}

// A hash stopped in its first pass says exactly what it wrote (one lane), so that the wipe after it
// touches nothing else: zeroing the rest of its slice faulted in up to 64 MiB of fresh pages of a
// 256 MiB hash, and kept its worker 100 ms past its deadline.
TEST(argon2, a_hash_stopped_in_its_first_pass_reports_only_the_blocks_it_wrote) {
  constexpr std::size_t bytes = 64 << 20;
  void* raw = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(raw, MAP_FAILED);
  madvise(raw, bytes, MADV_NOHUGEPAGE);  // a page is 4 KiB here: its residency says what was touched
  std::stop_source stopped;
  stopped.request_stop();
  argon2_inputs in{argon2_variant::id, 64 * 1024, 3, 1, "password", "somesalt", {}, {}};
  in.stop = stopped.get_token();
  std::array<std::uint8_t, 32> tag{};
  const auto written = argon2_compute(in, tag, {static_cast<std::byte*>(raw), bytes});
  EXPECT_EQ(written.lanes, 1u);
  EXPECT_EQ(written.lane_blocks, 64u * 1024);
  EXPECT_EQ(written.blocks_per_lane, 2u);  // the two blocks made from H0, before the first segment
  std::vector<unsigned char> resident(bytes / 4096);
  ASSERT_EQ(mincore(raw, bytes, resident.data()), 0);
  std::size_t touched = 0;
  for (const auto page : resident) touched += page & 1;
  EXPECT_EQ(touched, 1u) << "pages touched beyond the blocks it wrote";
  munmap(raw, bytes);
}

INSTANTIATE_TEST_SUITE_P(compression, argon2_forms,
                         ::testing::Values(argon2_core::avx512, argon2_core::avx2, argon2_core::portable),
                         [](const auto& param) { return std::string(argon2_core_name(param.param)); });

}  // namespace
}  // namespace crunch
