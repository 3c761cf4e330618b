#include "pepper.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace crunch {

bool valid_pepper_id(std::string_view id) noexcept {
  return !id.empty() && id.size() <= 16 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
  });
}

pepper_keys pepper_keys::parse(std::string_view text) {
  pepper_keys out;
  std::size_t number = 0;
  while (!text.empty()) {
    const auto end = text.find('\n');
    auto line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    ++number;
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    const auto where = "line " + std::to_string(number) + ": ";
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) throw std::runtime_error(where + "expected id:secret");
    const auto id = line.substr(0, colon);
    const auto value = line.substr(colon + 1);
    if (!valid_pepper_id(id)) throw std::runtime_error(where + "the id must be 1..16 of A-Z a-z 0-9 . -");
    if (out.find(id)) throw std::runtime_error(where + "the id " + std::string(id) + " is given twice");
    if (value.size() < pepper_min_bytes || value.size() > pepper_max_bytes) {
      throw std::runtime_error(where + "the secret must be 16..1024 bytes (32 random bytes in base64 is a good one)");
    }
    out.keys_.push_back({std::string(id), secret(value)});
  }
  if (out.keys_.empty()) throw std::runtime_error("no key: expected one id:secret a line, the current key first");
  return out;
}

pepper_keys pepper_keys::load(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::vector<char, wiping_allocator<char>> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error("cannot read " + path.string());
  try {
    return parse(std::string_view(bytes.data(), bytes.size()));
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path.string() + ": " + e.what());
  }
}

const pepper_key* pepper_keys::find(std::string_view id) const noexcept {
  const auto it = std::find_if(keys_.begin(), keys_.end(), [&](const pepper_key& k) { return k.id == id; });
  return it == keys_.end() ? nullptr : &*it;
}

pepper_store::pepper_store(std::filesystem::path path)
    : path_(std::move(path)), keys_(std::make_shared<const pepper_keys>(pepper_keys::load(path_))) {}

std::shared_ptr<const pepper_keys> pepper_store::keys() const {
  std::lock_guard lock(mutex_);
  return keys_;
}

std::string pepper_store::reload() {
  if (path_.empty()) return "no --password-pepper-file";
  auto fresh = std::make_shared<const pepper_keys>(pepper_keys::load(path_));
  const auto summary = std::to_string(fresh->size()) + " pepper keys, current " + fresh->current().id;
  std::lock_guard lock(mutex_);
  keys_ = std::move(fresh);
  return summary;
}

}  // namespace crunch
