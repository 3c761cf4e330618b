// The hashes teams already store: read, priced, bounded and verified (crypt_hash.hpp).
#include "crypt_hash.hpp"
#include "password.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace crunch {
namespace {

// Each fixture is the password "migrate me 2019" hashed by the command beside it (Debian 12).
constexpr std::string_view fixture_password = "migrate me 2019";

struct fixture {
  const char* command;
  crypt_scheme scheme;
  const char* hash;
};

constexpr fixture fixtures[] = {
    {"htpasswd -nbB -C 5 alice 'migrate me 2019'", crypt_scheme::bcrypt,
     "$2y$05$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqwa"},
    {"mkpasswd -m bcrypt-a -R 5 'migrate me 2019'", crypt_scheme::bcrypt,
     "$2a$05$DXFShmnH.puG6tlqLf1LjO2g3MKC65/N8oi/lq5Zju.ZH0ACVS/wK"},
    {"python3 -c \"import crypt; print(crypt.crypt('migrate me 2019', crypt.mksalt(crypt.METHOD_BLOWFISH, "
     "rounds=32)))\"",
     crypt_scheme::bcrypt, "$2b$05$xaHgdB48DbZWIj6k.kI2x.s.3jDGxOcvf0v/us6Wy5mK2KCDTyMA."},
    {"mkpasswd -m sha-512 'migrate me 2019'", crypt_scheme::sha512_crypt,
     "$6$aXAwFAdpikrzFYL9$7Qbn4BSRXUfeHT61aMfVvjerNNFbAnI0/HCeC.qQOKXttHRXHiKEm2I8tJIR8rnGa1KHy.HNMxIxgCunln2Tf1"},
    {"mkpasswd -m sha-512 -R 20000 'migrate me 2019'", crypt_scheme::sha512_crypt,
     "$6$rounds=20000$kkFEmuLStLKvf6ZY$43b276jTMxyOKncdRSbK5Ph0MyLEG0UNXmE/P0KHTfaWrCUwhbUJs.916.8I2BZNPGPDV83rqvpwdufOzt1Ck/"},
    {"mkpasswd -m sha-256 'migrate me 2019'", crypt_scheme::sha256_crypt,
     "$5$f9PDSRRw6v7QtFSo$jGN8aJmMZUcArSXqydCT9WmVZRwQsV7nlpeyrdSBcJ9"},
    {"mkpasswd -m yescrypt 'migrate me 2019'", crypt_scheme::yescrypt,
     "$y$j9T$L5rsUNur89L3i5yOXRu/m.$62UJDY0dLl1Ta4wtKCWWUpcu2P8IhyoIrStpGoGuny4"},
    {"mkpasswd -m scrypt 'migrate me 2019'", crypt_scheme::scrypt,
     "$7$CU..../..../fBCO6cU3Z6bc8tL7BQiO/$T7HJ.iPVg/Nlcu6OAkn.NwHvAkcQZkQ.JhkzQuxubmA"},
};

const crypt_bounds defaults{};

crypt_hash parsed(std::string_view text) {
  auto result = parse_crypt(text, defaults, fixture_password.size());
  if (auto* why = std::get_if<std::string>(&result)) ADD_FAILURE() << text << ": " << *why;
  return std::get<crypt_hash>(std::move(result));
}

TEST(crypt_hash, hashes_made_by_the_usual_tools_verify_with_their_password_and_no_other) {
  for (const auto& f : fixtures) {
    SCOPED_TRACE(f.command);
    const auto hash = parsed(f.hash);
    EXPECT_EQ(hash.scheme, f.scheme);
    EXPECT_TRUE(crypt_verify(hash, fixture_password));
    EXPECT_FALSE(crypt_verify(hash, "migrate me 2020"));
    EXPECT_FALSE(crypt_verify(hash, ""));
  }
}

TEST(crypt_hash, a_password_with_a_nul_never_matches_what_crypt_would_read_of_it) {
  // crypt(3) reads a C string: it would take "migrate me 2019\0junk" for the fixture's password.
  const std::string with_nul = std::string(fixture_password) + std::string("\0junk", 5);
  for (const auto& f : fixtures) EXPECT_FALSE(crypt_verify(parsed(f.hash), with_nul)) << f.command;
}

TEST(crypt_hash, argon2i_and_argon2d_from_the_reference_tool_verify_and_need_a_rehash) {
  // echo -n 'migrate me 2019' | argon2 saltsaltsalt -i -m 10 -t 2 -e   (and -d)
  for (const auto* text : {"$argon2i$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$oLZ1bykyJAq2wavPaA+I3frbec4jmDwMgos6pX8Q64c",
                           "$argon2d$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$BysOwqMmN8TQIDdIwulu9TfWCr8a5joqmZS24LjQ+2s"}) {
    SCOPED_TRACE(text);
    auto read = parse_phc(text);
    ASSERT_TRUE(std::holds_alternative<phc_hash>(read)) << std::get<std::string>(read);
    const auto& hash = std::get<phc_hash>(read);
    EXPECT_TRUE(argon2_verify(hash, fixture_password));
    EXPECT_FALSE(argon2_verify(hash, "migrate me 2020"));
    EXPECT_TRUE(needs_rehash(hash, {1024, 2, 1}));  // weaker than Argon2id at the same costs
  }
}

TEST(crypt_hash, hostile_costs_are_refused_from_the_string_alone) {
  // Each would take hours or terabytes; parse_crypt reads a few bytes and refuses.
  const auto started = std::chrono::steady_clock::now();
  const std::pair<const char*, const char*> hostile[] = {
      {"$2b$31$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqwa", "bcrypt cost=31"},
      {"$6$rounds=999999999$kkFEmuLStLKvf6ZY$43b276jTMxyOKncdRSbK5Ph0MyLEG0UNXmE/P0KHTfaWrCUwhbUJs.916.8I2BZNPGPDV83rqvpwdufOzt1Ck/",
       "rounds=999999999"},
      {"$5$rounds=999999999$f9PDSRRw6v7QtFSo$jGN8aJmMZUcArSXqydCT9WmVZRwQsV7nlpeyrdSBcJ9", "rounds=999999999"},
      // N = 2^40 (the character for 40 is 'c'), r = 8, p = 1
      {"$7$c6..../....fBCO6cU3Z6bc8tL7BQiO/$T7HJ.iPVg/Nlcu6OAkn.NwHvAkcQZkQ.JhkzQuxubmA", "scrypt memory 128·r·N"},
      // N = 2^14, r = 32 (64 MiB, within bounds) but p = 36 (Y): 72 passes over it
      {"$7$CU....Y....fBCO6cU3Z6bc8tL7BQiO/$T7HJ.iPVg/Nlcu6OAkn.NwHvAkcQZkQ.JhkzQuxubmA", "scrypt work"},
      // yescrypt with N = 2^31 (its encoding of 31 is 'S'), r = 32
      {"$y$jST$L5rsUNur89L3i5yOXRu/m.$62UJDY0dLl1Ta4wtKCWWUpcu2P8IhyoIrStpGoGuny4", "yescrypt memory 128·r·N"},
  };
  for (const auto& [text, says] : hostile) {
    SCOPED_TRACE(text);
    auto result = parse_crypt(text, defaults, fixture_password.size());
    ASSERT_TRUE(std::holds_alternative<std::string>(result));
    const auto& why = std::get<std::string>(result);
    EXPECT_NE(why.find(says), std::string::npos) << why;
    EXPECT_NE(why.find("above this server's bound"), std::string::npos) << why;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1));
}

TEST(crypt_hash, malformed_strings_are_refused_without_quoting_them) {
  for (const std::string text : {
           "$2b$05$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqw",     // one short
           "$2b$5$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqwaa",    // one-digit cost
           "$2b$03$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqwa",    // cost under 4
           "$2b$32$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqwa",
           "$2b$05$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jq+a",    // '+' is not crypt64
           "$6$rounds=0999$kkFEmuLStLKvf6ZY$43b276jTMxyOKncdRSbK5Ph0MyLEG0UNXmE/P0KHTfaWrCUwhbUJs.916.8I2BZNPGPDV83rqvpwdufOzt1Ck/",
           "$6$rounds=5000$kkFEmuLStLKvf6ZY$43b276jTMxyOKncdRSbK5Ph0MyLEG0UNXmE/P0KHTfaWrCUwhbUJs.916.8I2BZNPGPDV83rqvpwdufOzt1Ck/",
           "$6$rounds=999$kkFEmuLStLKvf6ZY$43b276jTMxyOKncdRSbK5Ph0MyLEG0UNXmE/P0KHTfaWrCUwhbUJs.916.8I2BZNPGPDV83rqvpwdufOzt1Ck/",
           "$6$rounds=99999999999999999999999$kkFEmuLStLKvf6ZY$43b276jTMxyOKncdRSbK5Ph0MyLEG0UNXmE/P0KHTfaWrCUwhbUJs.916.8I2BZNPGPDV83rqvpwdufOzt1Ck/",
           "$6$kkFEmuLStLKvf6ZY$43b276jTMxyOKncdRSbK5Ph0MyLEG0UNXmE",       // digest too short
           "$6$kkFEmuLStLKvf6ZYkkFEmuLStLKvf6ZY$43b276jTMxyOKncdRSbK5Ph0MyLEG0UNXmE/P0KHTfaWrCUwhbUJs.916.8I2BZNPGPDV83rqvpwdufOzt1Ck/",
           "$5$f9PDSRRw6v7QtFSo$jGN8aJmMZUcArSXqydCT9WmVZRwQsV7nlpeyrdSBcJ9x",
           "$y$j9T$L5rsUNur89L3i5yOXRu/m.$62UJDY0dLl1Ta4wtKCWWUpcu2P8IhyoIrStpGoGuny",
           "$y$$L5rsUNur89L3i5yOXRu/m.$62UJDY0dLl1Ta4wtKCWWUpcu2P8IhyoIrStpGoGuny4",
           "$y$j9T5$L5rsUNur89L3i5yOXRu/m.$62UJDY0dLl1Ta4wtKCWWUpcu2P8IhyoIrStpGoGuny4",  // g, a ROM
           "$7$CU..../....$T7HJ.iPVg/Nlcu6OAkn.NwHvAkcQZkQ.JhkzQuxubmA",  // no salt
           "$7$C.........../fBCO6cU3Z6bc8tL7BQiO/$T7HJ.iPVg/Nlcu6OAkn.NwHvAkcQZkQ.JhkzQuxubmA",  // r = 0
           "$1$saltsalt$abcdefghijklmnopqrstuv",  // md5-crypt: not read here
           "$3$unknown",
           "plain text",
       }) {
    SCOPED_TRACE(text);
    auto result = parse_crypt(text, defaults, 8);
    ASSERT_TRUE(std::holds_alternative<std::string>(result));
    EXPECT_EQ(std::get<std::string>(result).find(text), std::string::npos);
  }
}

TEST(crypt_hash, prices_follow_each_schemes_own_cost) {
  const auto bcrypt5 = parsed(fixtures[0].hash);
  const auto bcrypt10 = parsed("$2y$10$slwD54MgLucEriMtz7F6SubC6CppoNHHZlIVvZN5qSn0CiqT0jqwa");
  EXPECT_DOUBLE_EQ(bcrypt10.work, 32 * bcrypt5.work);
  const auto sha5000 = parsed(fixtures[3].hash);
  const auto sha20000 = parsed(fixtures[4].hash);
  EXPECT_DOUBLE_EQ(sha20000.work, 4 * sha5000.work);
  // yescrypt's default: N = 4096, r = 32, 16 MiB walked 1 + 1/3 times.
  const auto yescrypt = parsed(fixtures[6].hash);
  EXPECT_DOUBLE_EQ(yescrypt.work, 16384.0 * 4 / 3);
  EXPECT_GE(yescrypt.memory_bytes, 16u << 20);
  EXPECT_LT(yescrypt.memory_bytes, 17u << 20);
  // mkpasswd's scrypt: N = 2^14, r = 32, p = 1: 64 MiB walked twice.
  const auto scrypt = parsed(fixtures[7].hash);
  EXPECT_DOUBLE_EQ(scrypt.work, 65536.0 * 2);
  EXPECT_GE(scrypt.memory_bytes, 64u << 20);
  EXPECT_LT(bcrypt5.memory_bytes, 1u << 20);
}

}  // namespace
}  // namespace crunch
