#pragma once
/// Media types as clients send them: "Image/JPEG; charset=x" names image/jpeg. The one reader of
/// Content-Type values, for the router (JSON bodies, a route's file types) and the kinds.

#include <algorithm>
#include <cctype>
#include <string_view>

namespace crunch {

/// The media type of a Content-Type value: what comes before any parameter, without the blanks
/// around it; case kept.
constexpr std::string_view media_type_of(std::string_view content_type) noexcept {
  auto media = content_type.substr(0, content_type.find(';'));
  while (!media.empty() && (media.front() == ' ' || media.front() == '\t')) media.remove_prefix(1);
  while (!media.empty() && (media.back() == ' ' || media.back() == '\t')) media.remove_suffix(1);
  return media;
}

/// Whether `content_type` names the media type `type`: parameters and case ignored.
inline bool names_media_type(std::string_view content_type, std::string_view type) noexcept {
  const auto media = media_type_of(content_type);
  return media.size() == type.size() && std::equal(media.begin(), media.end(), type.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
         });
}

}  // namespace crunch
