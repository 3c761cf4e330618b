#include "server/api_keys.hpp"

#include <gtest/gtest.h>

#include <string>

namespace crunch {
namespace {

const std::string alice_key = "k3y-for-alice-0123456789";
const std::string bob_key = "Zm9yIGJvYi0xMjM0NTY3ODkw==";

TEST(api_keys, finds_a_key_by_its_name_and_nothing_else) {
  const auto keys = api_keys::parse("# keys\n\nalice:" + alice_key + "\r\n  bob : " + bob_key + "\n");
  EXPECT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys.find(alice_key), "alice");
  EXPECT_EQ(keys.find(bob_key), "bob");
  EXPECT_EQ(keys.find(""), std::nullopt);
  EXPECT_EQ(keys.find(alice_key.substr(0, alice_key.size() - 1)), std::nullopt);  // a prefix
  EXPECT_EQ(keys.find(alice_key + "x"), std::nullopt);
  EXPECT_EQ(keys.find("alice"), std::nullopt);  // a name is not a key
}

TEST(api_keys, an_empty_file_has_no_keys_and_lets_no_one_in) {
  const auto keys = api_keys::parse("# nobody yet\n");
  EXPECT_EQ(keys.size(), 0u);
  EXPECT_EQ(keys.find(alice_key), std::nullopt);
}

void expect_refused(const std::string& text, const std::string& says) {
  try {
    api_keys::parse(text);
    ADD_FAILURE() << "accepted: " << text;
  } catch (const api_keys_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(says), std::string::npos) << what;
    EXPECT_EQ(what.find(alice_key), std::string::npos) << "the error shows the key: " << what;
    EXPECT_EQ(what.find("short-key"), std::string::npos) << "the error shows the key: " << what;
  }
}

TEST(api_keys, refuses_a_file_it_cannot_trust_and_names_the_line_not_the_key) {
  expect_refused("alice " + alice_key, "line 1: expected name:key");
  expect_refused("\nalice:short-key", "line 2");
  expect_refused("alice:" + alice_key + " with spaces", "line 1");
  expect_refused("al ice:" + alice_key, "line 1: a name");
  expect_refused("alice:" + alice_key + "\nalice:" + bob_key, "line 2: the name 'alice' is used twice");
  expect_refused("alice:" + alice_key + "\nbob:" + alice_key, "line 2: the key of 'bob' is also another name's key");
  expect_refused(":" + alice_key, "line 1: a name");
}

TEST(api_keys, load_reads_a_file_and_says_when_it_cannot) {
  EXPECT_THROW(api_keys::load("/nonexistent/crunch-keys"), api_keys_error);
}

TEST(api_keys, bearer_credentials_are_read_from_the_header) {
  EXPECT_EQ(bearer_token("Bearer abc"), "abc");
  EXPECT_EQ(bearer_token("bearer   abc  "), "abc");  // the scheme is case-insensitive
  EXPECT_EQ(bearer_token("BEARER abc"), "abc");
  EXPECT_EQ(bearer_token("Basic YWxpY2U6"), std::nullopt);
  EXPECT_EQ(bearer_token("Bearer"), std::nullopt);
  EXPECT_EQ(bearer_token("Bearer "), std::nullopt);
  EXPECT_EQ(bearer_token("Bearerabc"), std::nullopt);
  EXPECT_EQ(bearer_token(""), std::nullopt);
}

}  // namespace
}  // namespace crunch
