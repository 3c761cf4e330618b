#include "server/api_keys.hpp"

#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

namespace crunch {

namespace {

using digest = std::array<unsigned char, 32>;

digest digest_of(std::string_view key) {
  digest d{};
  crypto_generichash(d.data(), d.size(), reinterpret_cast<const unsigned char*>(key.data()), key.size(), nullptr, 0);
  return d;
}

bool name_char(unsigned char c) { return std::isalnum(c) || c == '.' || c == '_' || c == '-'; }

// token68 (RFC 9110 §11.2): the characters a Bearer credential may hold, '=' only as padding.
bool token68(std::string_view key) {
  const auto padding = key.find_last_not_of('=');
  if (padding == std::string_view::npos) return false;
  return std::all_of(key.begin(), key.begin() + static_cast<std::ptrdiff_t>(padding + 1), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
  });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

[[noreturn]] void fail(std::size_t line, const std::string& why) {
  throw api_keys_error("API key file, line " + std::to_string(line) + ": " + why);
}

}  // namespace

api_keys api_keys::parse(std::string_view text) {
  if (sodium_init() < 0) throw api_keys_error("libsodium could not be initialised");
  api_keys keys;
  std::set<std::string, std::less<>> names;
  std::set<digest> digests;
  std::size_t number = 0;
  while (!text.empty()) {
    const auto end = text.find('\n');
    const auto line = trim(text.substr(0, end));
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++number;
    if (line.empty() || line.front() == '#') continue;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) fail(number, "expected name:key");
    const auto name = trim(line.substr(0, colon));
    const auto key = trim(line.substr(colon + 1));
    if (name.empty() || name.size() > max_name_length || !std::all_of(name.begin(), name.end(), name_char)) {
      fail(number, "a name is 1 to 64 of A-Z a-z 0-9 . _ -");
    }
    if (key.size() < min_key_length || key.size() > max_key_length || !token68(key)) {
      fail(number, "the key of '" + std::string(name) + "' must be 16 to 512 characters of A-Z a-z 0-9 - . _ ~ + / (then = padding)");
    }
    if (!names.emplace(name).second) fail(number, "the name '" + std::string(name) + "' is used twice");
    auto d = digest_of(key);
    if (!digests.insert(d).second) fail(number, "the key of '" + std::string(name) + "' is also another name's key");
    keys.keys_.push_back({std::string(name), d});
  }
  return keys;
}

api_keys api_keys::load(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw api_keys_error("cannot read the API key file " + file.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw api_keys_error("cannot read the API key file " + file.string());
  return parse(text.str());
}

std::optional<std::string_view> api_keys::find(std::string_view presented) const {
  const auto d = digest_of(presented);
  const entry* found = nullptr;
  for (const auto& k : keys_) {
    // No early exit: every key is compared, in constant time.
    if (sodium_memcmp(d.data(), k.digest.data(), d.size()) == 0) found = &k;
  }
  if (found == nullptr) return std::nullopt;
  return found->name;
}

std::optional<std::string_view> bearer_token(std::string_view authorization) {
  constexpr std::string_view scheme = "bearer";
  if (authorization.size() <= scheme.size() + 1) return std::nullopt;
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != scheme[i]) return std::nullopt;
  }
  if (authorization[scheme.size()] != ' ') return std::nullopt;
  auto token = authorization.substr(scheme.size() + 1);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  if (token.empty()) return std::nullopt;
  return token;
}

}  // namespace crunch
