#pragma once
// What the image tests share: reading a header, making a thumbnail, a box to fit, and a PNG that
// declares any size.
#include "image.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <variant>

namespace crunch {

/// The header sniff_image reads; throws std::runtime_error with its reason when it reads none.
inline image_header header_of(const std::string& bytes) {
  auto sniffed = sniff_image(bytes);
  if (auto* why = std::get_if<std::string>(&sniffed)) throw std::runtime_error(*why);
  return std::get<image_header>(sniffed);
}

/// make_thumbnail of `bytes`, planned from its header; throws if it stopped.
inline std::string thumbnail(const std::string& bytes, const thumbnail_spec& spec) {
  auto out = make_thumbnail(bytes, header_of(bytes), spec, {});
  if (!out) throw std::runtime_error("stopped");
  return *out;
}

/// A spec for the box `w` × `h` (0: follows the aspect ratio).
inline thumbnail_spec box(std::uint32_t w, std::uint32_t h, image_fit fit = image_fit::inside,
                          image_format format = image_format::png) {
  thumbnail_spec spec;
  spec.width = w;
  spec.height = h;
  spec.fit = fit;
  spec.format = format;
  return spec;
}

/// A PNG that declares width × height RGB: the signature, a real IHDR (with its CRC), one tiny
/// IDAT and IEND — about 60 bytes, whatever it claims.
inline std::string png_declaring(std::uint32_t width, std::uint32_t height) {
  auto be32 = [](std::uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
  };
  auto crc = [](const std::string& data) {
    std::uint32_t c = 0xFFFFFFFFu;
    for (const char ch : data) {
      c ^= static_cast<unsigned char>(ch);
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
  };
  auto chunk = [&](const std::string& type, const std::string& data) {
    return be32(static_cast<std::uint32_t>(data.size())) + type + data + be32(crc(type + data));
  };
  return std::string("\x89PNG\r\n\x1a\n", 8) +
         chunk("IHDR", be32(width) + be32(height) + std::string("\x08\x02\x00\x00\x00", 5)) +
         chunk("IDAT", std::string("\x78\x9c\x03\x00\x00\x00\x00\x01", 8)) + chunk("IEND", "");
}

}  // namespace crunch
