// RFC 9106 §5.3: the Argon2id test vector, run through the Argon2 core of the libsodium crunch
// links. The vector uses a secret and associated data, which libsodium's public API has no place
// for, so this calls the core's own entry point (argon2_ctx, a global symbol of libsodium.a),
// declared below from libsodium 1.0.18's argon2.h. The test is its own executable, linked with the
// static library, so that no other crunch code shares its symbols. crunch's own path through the
// public API is tested in password_test.cpp against the reference implementation's vectors.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstring>

extern "C" {

// libsodium 1.0.18, src/libsodium/crypto_pwhash/argon2/argon2.h: Argon2_Context, in its order.
struct libsodium_argon2_context {
  std::uint8_t* out;
  std::uint32_t outlen;
  std::uint8_t* pwd;
  std::uint32_t pwdlen;
  std::uint8_t* salt;
  std::uint32_t saltlen;
  std::uint8_t* secret;
  std::uint32_t secretlen;
  std::uint8_t* ad;
  std::uint32_t adlen;
  std::uint32_t t_cost;
  std::uint32_t m_cost;
  std::uint32_t lanes;
  std::uint32_t threads;
  std::uint32_t flags;
};

// Argon2_type: Argon2_d = 0, Argon2_i = 1, Argon2_id = 2. Returns ARGON2_OK (0) on success.
int argon2_ctx(libsodium_argon2_context* context, int type);
}

namespace {

TEST(argon2id, rfc9106_test_vector) {
  std::array<std::uint8_t, 32> password;
  std::array<std::uint8_t, 16> salt;
  std::array<std::uint8_t, 8> secret;
  std::array<std::uint8_t, 12> associated;
  password.fill(0x01);
  salt.fill(0x02);
  secret.fill(0x03);
  associated.fill(0x04);
  std::array<std::uint8_t, 32> tag{};
  libsodium_argon2_context ctx{tag.data(),    tag.size(),    password.data(),   password.size(),
                               salt.data(),   salt.size(),   secret.data(),     secret.size(),
                               associated.data(), associated.size(), 3, 32, 4, 4, 0};
  ASSERT_EQ(argon2_ctx(&ctx, 2), 0);
  const std::array<std::uint8_t, 32> expected{0x0d, 0x64, 0x0d, 0xf5, 0x8d, 0x78, 0x76, 0x6c, 0x08, 0xc0, 0x37,
                                              0xa3, 0x4a, 0x8b, 0x53, 0xc9, 0xd0, 0x1e, 0xf0, 0x45, 0x2d, 0x75,
                                              0xb6, 0x5e, 0xb5, 0x25, 0x20, 0xe9, 0x6b, 0x01, 0xe6, 0x59};
  EXPECT_EQ(tag, expected);
}

}  // namespace
