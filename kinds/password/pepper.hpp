#pragma once
/// Pepper keys: server-side secrets mixed into every new password hash, so that a leaked database
/// of hashes cannot be attacked without the key file as well. Read from --password-pepper-file,
/// one `id:secret` a line, the first the current key; reread on SIGHUP.
///
/// The construction is Argon2's own secret input K (RFC 9106 §3.1): the key enters H0 beside the
/// password and salt, and the key's id is written in the PHC string as `keyid=ID`. See
/// docs/api.md for why this rather than a separate HMAC pre-hash or encrypting the stored hash.

#include <crunch/wiping.hpp>

#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace crunch {

/// One key: its id, written in hashes, and its secret, which never leaves the process.
struct pepper_key {
  std::string id;  ///< 1..16 of A-Z a-z 0-9 . -
  secret value;    ///< 16..1024 bytes, wiped when the last set holding it goes
};

/// Most bytes a key's secret may have, and fewest.
inline constexpr std::size_t pepper_min_bytes = 16;
inline constexpr std::size_t pepper_max_bytes = 1024;

/// A set of keys as read from one file; immutable once read.
class pepper_keys {
 public:
  /// Reads `text`: one `id:secret` a line (the secret is the rest of the line, a trailing CR
  /// dropped); blank lines and lines starting with '#' are skipped. Throws std::runtime_error
  /// naming the line, never its secret: no key, an id of another form, an id given twice, a secret
  /// shorter than 16 bytes or longer than 1024.
  static pepper_keys parse(std::string_view text);
  /// Reads the file at `path` with parse(); the bytes read are wiped.
  static pepper_keys load(const std::filesystem::path& path);

  /// The current key: the file's first.
  const pepper_key& current() const noexcept { return keys_.front(); }
  /// The key called `id`, or nullptr.
  const pepper_key* find(std::string_view id) const noexcept;
  std::size_t size() const noexcept { return keys_.size(); }

 private:
  std::vector<pepper_key> keys_;
};

/// Whether `id` has the form of a key id: 1..16 of A-Z a-z 0-9 . -
bool valid_pepper_id(std::string_view id) noexcept;

/// The keys a server uses now, replaced whole by reload(). Jobs take a snapshot, which stays
/// valid (and its secrets unwiped) while they hold it.
class pepper_store {
 public:
  /// Without a file: no keys, and reload() has nothing to do.
  pepper_store() = default;
  /// Loads `path` now; throws std::runtime_error as pepper_keys::load does.
  explicit pepper_store(std::filesystem::path path);

  /// The keys now, or nullptr without a file.
  std::shared_ptr<const pepper_keys> keys() const;
  /// Reads the file again; throws std::runtime_error and keeps the keys it had when the file
  /// cannot be used. Returns a line for the log: how many keys, and the current id.
  std::string reload();

 private:
  std::filesystem::path path_;
  mutable std::mutex mutex_;
  std::shared_ptr<const pepper_keys> keys_;
};

}  // namespace crunch
