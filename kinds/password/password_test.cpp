#include "password.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>
#include <string>

namespace crunch {
namespace {

struct password_test : ::testing::Test {
  static void SetUpTestSuite() { init_sodium(); }
  static phc_hash parsed(std::string_view text) {
    auto h = parse_phc(text);
    if (auto* why = std::get_if<std::string>(&h)) ADD_FAILURE() << text << ": " << *why;
    return std::holds_alternative<phc_hash>(h) ? std::get<phc_hash>(h) : phc_hash{};
  }
};

TEST_F(password_test, a_hash_is_an_argon2id_phc_string_with_a_fresh_salt) {
  const auto a = argon2id_hash("correct horse battery staple", 1024, 2);
  const auto b = argon2id_hash("correct horse battery staple", 1024, 2);
  EXPECT_EQ(a.rfind("$argon2id$v=19$m=1024,t=2,p=1$", 0), 0u) << a;
  EXPECT_NE(a, b);  // 16 random bytes of salt each time
  const auto h = parsed(a);
  EXPECT_EQ(h.salt_bytes, 16u);
  EXPECT_EQ(h.digest_bytes, 32u);
  EXPECT_EQ(h.params.m_cost_kib, 1024u);
  EXPECT_EQ(h.params.t_cost, 2u);
  EXPECT_EQ(h.params.parallelism, 1u);
}

TEST_F(password_test, hash_then_verify) {
  const auto h = parsed(argon2id_hash("correct horse battery staple", 1024, 1));
  EXPECT_TRUE(argon2_verify(h, "correct horse battery staple"));
  EXPECT_FALSE(argon2_verify(h, "correct horse battery stapl"));
  EXPECT_FALSE(argon2_verify(h, "Correct horse battery staple"));
  EXPECT_FALSE(argon2_verify(h, ""));
}

TEST_F(password_test, bytes_are_bytes) {
  const std::string with_nul("pass\0word", 9);
  const auto h = parsed(argon2id_hash(with_nul, 1024, 1));
  EXPECT_TRUE(argon2_verify(h, with_nul));
  EXPECT_FALSE(argon2_verify(h, "pass"));
}

// Hashes made by the Argon2 reference implementation's tool and by node-argon2 (see the file for
// how): each verifies with its password and with no other. The first is the reference
// implementation's own test vector.
TEST_F(password_test, hashes_made_by_other_implementations_verify) {
  std::ifstream file(CRUNCH_KINDS_SOURCE "/password/data/argon2_hashes.json");
  ASSERT_TRUE(file) << CRUNCH_KINDS_SOURCE;
  const auto fixtures = nlohmann::json::parse(file).at("hashes");
  std::set<std::string> makers;
  for (const auto& f : fixtures) {
    const auto text = f.at("hash").get<std::string>();
    const auto password = f.at("password").get<std::string>();
    const auto h = parsed(text);
    EXPECT_TRUE(argon2_verify(h, password)) << text;
    EXPECT_FALSE(argon2_verify(h, password + "!")) << text;
    makers.insert(f.at("made_by").get<std::string>());
  }
  EXPECT_EQ(makers, (std::set<std::string>{"argon2", "node-argon2"}));
}

TEST_F(password_test, parameters_in_any_order_are_the_same_hash) {
  const auto node = parsed("$argon2id$v=19$m=19456,p=1,t=2$eeKq/CB8C7ijcK5LlCuoNw$6wfbkkWpFcov5lZV07I4IcLyofJQvlatEHbFudMILIo");
  EXPECT_EQ(canonical_phc(node),
            "$argon2id$v=19$m=19456,t=2,p=1$eeKq/CB8C7ijcK5LlCuoNw$6wfbkkWpFcov5lZV07I4IcLyofJQvlatEHbFudMILIo");
  const auto shuffled = parsed("$argon2id$v=19$t=2,p=1,m=19456$eeKq/CB8C7ijcK5LlCuoNw$6wfbkkWpFcov5lZV07I4IcLyofJQvlatEHbFudMILIo");
  EXPECT_EQ(canonical_phc(shuffled), canonical_phc(node));
  EXPECT_TRUE(argon2_verify(shuffled, "password"));
}

TEST_F(password_test, everything_else_is_read_strictly) {
  const std::string salt = "c29tZXNhbHRzb21lc2FsdA";
  const std::string digest = "Ui6aHLpJN5r4rvAhfKb3MlWOguzhHPbf40AQmuSvRYA";
  for (const std::string& text : {
           std::string(""),
           std::string("argon2id$v=19$m=32768,t=1,p=4$") + salt + "$" + digest,  // no leading $
           "$argon2id$v=19$m=32768,t=1,p=4$" + salt,                             // no digest
           "$argon2id$v=19$m=32768,t=1,p=4$" + salt + "$" + digest + "$",        // something after
           "$argon2id$v=19$m=32768,t=1,p=4$" + salt + "$" + digest + "\n",
           "$argon2$v=19$m=32768,t=1,p=4$" + salt + "$" + digest,
           "$ARGON2ID$v=19$m=32768,t=1,p=4$" + salt + "$" + digest,
           "$argon2id$v=16$m=32768,t=1,p=4$" + salt + "$" + digest,
           "$argon2id$m=32768,t=1,p=4$" + salt + "$" + digest,  // no version
           "$argon2id$v=19$m=32768,t=1$" + salt + "$" + digest,
           "$argon2id$v=19$m=32768,t=1,p=4,t=1$" + salt + "$" + digest,
           "$argon2id$v=19$m=32768,t=1,t=1$" + salt + "$" + digest,
           "$argon2id$v=19$m=32768,t=1,p=4,keyid=$" + salt + "$" + digest,          // empty key id
           "$argon2id$v=19$m=32768,t=1,p=4,keyid=a_b$" + salt + "$" + digest,       // not an id
           "$argon2id$v=19$m=32768,t=1,p=4,keyid=a,keyid=a$" + salt + "$" + digest,
           "$argon2id$v=19$m=32768,t=1,p=4,data=AAAA$" + salt + "$" + digest,
           "$argon2id$v=19$m=032768,t=1,p=4$" + salt + "$" + digest,  // leading zero
           "$argon2id$v=19$m=+32768,t=1,p=4$" + salt + "$" + digest,
           "$argon2id$v=19$m=,t=1,p=4$" + salt + "$" + digest,
           "$argon2id$v=19$m=4294967296,t=1,p=4$" + salt + "$" + digest,  // 2^32
           "$argon2id$v=19$m=32768,t=0,p=4$" + salt + "$" + digest,
           "$argon2id$v=19$m=32768,t=1,p=0$" + salt + "$" + digest,
           "$argon2id$v=19$m=31,t=1,p=4$" + salt + "$" + digest,  // under 8 KiB per lane
           "$argon2id$v=19$m=32768,t=1,p=4$" + salt + "=$" + digest,   // padding
           "$argon2id$v=19$m=32768,t=1,p=4$" + salt + "$" + digest + "=",
           "$argon2id$v=19$m=32768,t=1,p=4$c29tZXNhbHRzb21lc2FsdB$" + digest,  // non-canonical last char
           "$argon2id$v=19$m=32768,t=1,p=4$c29tZXNh-HRzb21lc2FsdA$" + digest,  // URL-safe alphabet
           "$argon2id$v=19$m=32768,t=1,p=4$c29tZXNh$" + digest,                // 6-byte salt
           "$argon2id$v=19$m=32768,t=1,p=4$" + std::string(88, 'A') + "$" + digest,  // 66-byte salt
           "$argon2id$v=19$m=32768,t=1,p=4$" + salt + "$AAAAAAAAAAAAAAAAAAAA",       // 15-byte digest
           "$argon2id$v=19$m=32768,t=1,p=4$" + salt + "$" + std::string(88, 'A'),    // 66-byte digest
       }) {
    const auto h = parse_phc(text);
    ASSERT_TRUE(std::holds_alternative<std::string>(h)) << text;
    const auto& why = std::get<std::string>(h);
    EXPECT_EQ(why.rfind("hash is not an Argon2 PHC string: ", 0), 0u) << why;
    EXPECT_EQ(why.find(salt), std::string::npos) << why;  // nothing quoted back
  }
}

TEST_F(password_test, weaker_hashes_need_a_rehash) {
  const argon2_params current{19456, 2, 1};
  auto make = [](std::string_view params, std::string_view salt = "eeKq/CB8C7ijcK5LlCuoNw",
                 std::string_view type = "argon2id") {
    return parsed("$" + std::string(type) + "$v=19$" + std::string(params) + "$" + std::string(salt) +
                  "$6wfbkkWpFcov5lZV07I4IcLyofJQvlatEHbFudMILIo");
  };
  EXPECT_FALSE(needs_rehash(make("m=19456,t=2,p=1"), current));
  EXPECT_FALSE(needs_rehash(make("m=65536,p=4,t=3"), current));  // stronger stays
  EXPECT_TRUE(needs_rehash(make("m=19455,t=2,p=1"), current));
  EXPECT_TRUE(needs_rehash(make("m=65536,t=1,p=1"), current));
  EXPECT_TRUE(needs_rehash(make("m=19456,t=2,p=1", "c29tZXNhbHQ"), current));  // 8-byte salt
  EXPECT_TRUE(needs_rehash(make("m=19456,t=2,p=1", "eeKq/CB8C7ijcK5LlCuoNw", "argon2i"), current));
  EXPECT_TRUE(needs_rehash(parsed("$argon2id$v=19$m=19456,t=2,p=1$eeKq/CB8C7ijcK5LlCuoNw$SEHyRjs/Joeg8QAfP8SYXQ"),
                           current));  // 16-byte digest
}

TEST_F(password_test, the_memory_a_hash_holds_is_its_blocks_in_whole_2_mib_and_a_little) {
  EXPECT_EQ(password_job_memory(19456), 20u * 1024 * 1024 + 64 * 1024);
  EXPECT_EQ(password_job_memory(2048), 2u * 1024 * 1024 + 64 * 1024);
  EXPECT_EQ(password_job_memory(2052), 4u * 1024 * 1024 + 64 * 1024);
}

}  // namespace
}  // namespace crunch
