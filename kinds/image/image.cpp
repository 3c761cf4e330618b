#include "image.hpp"

#include <crunch/cpu_pacer.hpp>
#include "server/media_type.hpp"
#include "workers/worker_pool.hpp"

#include "image_library.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <vector>

namespace crunch {

namespace {

std::uint32_t be16(std::string_view b, std::size_t at) {
  return (std::uint32_t{static_cast<unsigned char>(b[at])} << 8) | static_cast<unsigned char>(b[at + 1]);
}
std::uint32_t le16(std::string_view b, std::size_t at) {
  return (std::uint32_t{static_cast<unsigned char>(b[at + 1])} << 8) | static_cast<unsigned char>(b[at]);
}
std::uint32_t le24(std::string_view b, std::size_t at) {
  return le16(b, at) | (std::uint32_t{static_cast<unsigned char>(b[at + 2])} << 16);
}
std::uint32_t be32(std::string_view b, std::size_t at) { return (be16(b, at) << 16) | be16(b, at + 2); }
std::uint32_t le32(std::string_view b, std::size_t at) { return le16(b, at) | (le16(b, at + 2) << 16); }

using sniffed = std::variant<image_header, std::string>;

// Markers up to the frame header: each segment is skipped by its length, so a file of any size
// costs at most this many steps.
constexpr int max_jpeg_segments = 1000;

// The Orientation tag (0x0112) of IFD0 in an APP1 segment's payload, "Exif\0\0" and a TIFF
// structure; 1 when it has none, or none that is valid. Reads at most IFD0's entries, each
// within the segment.
std::uint8_t exif_orientation(std::string_view app1) {
  if (app1.size() < 14 || app1.substr(0, 6) != std::string_view("Exif\0\0", 6)) return 1;
  const auto tiff = app1.substr(6);
  const bool little = tiff.substr(0, 2) == "II";
  if (!little && tiff.substr(0, 2) != "MM") return 1;
  auto u16 = [&](std::size_t at) { return little ? le16(tiff, at) : be16(tiff, at); };
  auto u32 = [&](std::size_t at) { return little ? le32(tiff, at) : be32(tiff, at); };
  if (u16(2) != 42) return 1;
  const std::uint64_t ifd = u32(4);
  if (ifd + 2 > tiff.size()) return 1;
  const auto entries = u16(static_cast<std::size_t>(ifd));
  for (std::uint32_t i = 0; i < entries; ++i) {
    const auto entry = ifd + 2 + 12ULL * i;
    if (entry + 12 > tiff.size()) return 1;
    const auto e = static_cast<std::size_t>(entry);
    if (u16(e) != 0x0112) continue;
    // A SHORT (or a LONG, which libexif reads too), count 1: at the start of the value field.
    const auto type = u16(e + 2);
    const std::uint64_t value = type == 3 ? u16(e + 8) : type == 4 ? u32(e + 8) : 0;
    return value >= 1 && value <= 8 ? static_cast<std::uint8_t>(value) : 1;
  }
  return 1;
}

sniffed sniff_jpeg(std::string_view b) {
  std::size_t at = 2;  // after FF D8
  std::uint8_t orientation = 0;  // the first Exif segment's, as libjpeg's reader in libvips takes it
  for (int segments = 0; segments < max_jpeg_segments; ++segments) {
    // Fill bytes: any number of FF before a marker.
    while (at < b.size() && static_cast<unsigned char>(b[at]) == 0xFF && at + 1 < b.size() &&
           static_cast<unsigned char>(b[at + 1]) == 0xFF) {
      ++at;
    }
    if (at + 4 > b.size()) return "JPEG ends before its frame header";
    if (static_cast<unsigned char>(b[at]) != 0xFF) return "malformed JPEG: expected a marker";
    const auto marker = static_cast<unsigned char>(b[at + 1]);
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {  // no length
      at += 2;
      continue;
    }
    if (marker == 0xD9 || marker == 0xDA) return "malformed JPEG: no frame header before the image data";
    const auto length = be16(b, at + 2);
    if (length < 2) return "malformed JPEG: segment shorter than its length field";
    const bool frame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (frame) {
      if (length < 8 || at + 10 > b.size()) return "JPEG ends inside its frame header";
      image_header h;
      h.format = image_format::jpeg;
      h.height = be16(b, at + 5);
      h.width = be16(b, at + 7);
      const auto components = static_cast<unsigned char>(b[at + 9]);
      h.bands = components == 1 ? 1 : (components == 4 ? 4 : 3);
      // Each component: id, sampling factors (h << 4 | v), table. Its samples are the image's
      // scaled by its factors over the largest ones (4:2:0 chroma: a quarter each).
      if (components == 0 || length < 8u + 3u * components || at + 10 + 3u * components > b.size()) {
        return "malformed JPEG: frame header too short for its components";
      }
      std::uint32_t h_max = 1, v_max = 1;
      for (std::size_t c = 0; c < components; ++c) {
        const auto factors = static_cast<unsigned char>(b[at + 11 + 3 * c]);
        h_max = std::max<std::uint32_t>(h_max, factors >> 4);
        v_max = std::max<std::uint32_t>(v_max, factors & 15u);
      }
      for (std::size_t c = 0; c < components; ++c) {
        const auto factors = static_cast<unsigned char>(b[at + 11 + 3 * c]);
        const std::uint64_t cw = (std::uint64_t{h.width} * std::max<std::uint64_t>(1u, factors >> 4u) + h_max - 1) / h_max;
        const std::uint64_t ch = (std::uint64_t{h.height} * std::max<std::uint64_t>(1u, factors & 15u) + v_max - 1) / v_max;
        h.samples += cw * ch;
      }
      // Baseline and extended sequential decode a few rows at a time; progressive (C2, C6, CA,
      // CE), lossless and arithmetic-coded files are held whole as coefficients.
      h.whole_frame = !(marker == 0xC0 || marker == 0xC1);
      if (h.height == 0) return "JPEG declares no height (DNL is not supported)";
      h.orientation = orientation == 0 ? 1 : orientation;
      return h;
    }
    if (marker == 0xE1 && orientation == 0 && at + 2 + length <= b.size()) {
      const auto payload = b.substr(at + 4, length - 2);
      if (payload.substr(0, 6) == std::string_view("Exif\0\0", 6)) orientation = exif_orientation(payload);
    }
    at += 2 + length;
  }
  return "malformed JPEG: too many segments before the frame header";
}

sniffed sniff_png(std::string_view b) {
  // Signature, then IHDR: length, "IHDR", width, height, depth, colour type, ..., interlace.
  if (b.size() < 33) return "PNG ends before its header";
  if (b.substr(12, 4) != "IHDR") return "malformed PNG: the first chunk is not IHDR";
  image_header h;
  h.format = image_format::png;
  h.width = be32(b, 16);
  h.height = be32(b, 20);
  const auto depth = static_cast<unsigned char>(b[24]);
  const auto colour = static_cast<unsigned char>(b[25]);
  const std::array<std::uint32_t, 7> bands_of{1, 0, 3, 3, 2, 0, 4};  // grey, -, RGB, palette, grey+alpha, -, RGBA
  if (colour >= bands_of.size() || bands_of[colour] == 0) return "malformed PNG: unknown colour type";
  h.bands = bands_of[colour] * (depth == 16 ? 2u : 1u);  // 16-bit samples take two bytes
  h.whole_frame = b[28] != 0;                             // Adam7 interlacing
  h.samples = h.pixels() * h.bands;
  return h;
}

sniffed sniff_gif(std::string_view b) {
  if (b.size() < 10) return "GIF ends before its screen descriptor";
  image_header h;
  h.format = image_format::gif;
  h.width = le16(b, 6);
  h.height = le16(b, 8);
  h.bands = 4;  // decoded to RGBA, a whole frame at a time
  h.whole_frame = true;
  h.samples = h.pixels() * h.bands;
  return h;
}

sniffed sniff_webp(std::string_view b) {
  if (b.size() < 30) return "WebP ends before its header";
  const auto chunk = b.substr(12, 4);
  image_header h;
  h.format = image_format::webp;
  h.whole_frame = true;  // libwebp decodes the whole (scaled) frame at once
  h.bands = 4;
  if (chunk == "VP8 ") {
    if (b.substr(23, 3) != "\x9d\x01\x2a") return "malformed WebP: no VP8 start code";
    h.width = le16(b, 26) & 0x3FFF;
    h.height = le16(b, 28) & 0x3FFF;
  } else if (chunk == "VP8L") {
    if (static_cast<unsigned char>(b[20]) != 0x2F) return "malformed WebP: no VP8L signature";
    const auto bits = le32(b, 21);
    h.width = (bits & 0x3FFF) + 1;
    h.height = ((bits >> 14) & 0x3FFF) + 1;
  } else if (chunk == "VP8X") {
    h.width = le24(b, 24) + 1;
    h.height = le24(b, 27) + 1;
  } else {
    return "malformed WebP: unknown first chunk";
  }
  h.samples = h.pixels() * h.bands;
  return h;
}


// ---- what a decoder would do beyond the pixels: walked here, on the worker, before it starts ----

// The scans of a JPEG: its SOS markers, each followed by entropy-coded data that runs to the next
// marker (FF 00 is a stuffed byte and FF D0..D7 a restart, not markers). One pass, O(size).
std::size_t count_jpeg_scans(std::string_view b) {
  std::size_t scans = 0;
  std::size_t at = 2;
  while (at + 4 <= b.size()) {
    if (static_cast<unsigned char>(b[at]) != 0xFF) return scans;  // malformed: the decoder will say so
    const auto marker = static_cast<unsigned char>(b[at + 1]);
    if (marker == 0xFF) {
      ++at;  // fill byte
      continue;
    }
    if (marker == 0xD9) return scans;
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {
      at += 2;
      continue;
    }
    at += 2 + be16(b, at + 2);
    if (marker != 0xDA) continue;
    ++scans;
    while (at + 1 < b.size() && !(static_cast<unsigned char>(b[at]) == 0xFF && b[at + 1] != 0 &&
                                  !(static_cast<unsigned char>(b[at + 1]) >= 0xD0 && static_cast<unsigned char>(b[at + 1]) <= 0xD7))) {
      ++at;
    }
  }
  return scans;
}

// A PNG's chunks: 4-byte big-endian length, 4-byte type, the data, a 4-byte CRC. Calls
// `each(type, whole chunk)` for every chunk up to IEND; stops early on a malformed length.
template <typename Each>
void for_each_png_chunk(std::string_view b, Each each) {
  for (std::size_t at = 8; at + 12 <= b.size();) {
    const std::size_t length = be32(b, at);
    if (length > b.size() - at - 12) return;
    const auto type = b.substr(at + 4, 4);
    each(type, at, 12 + length);
    if (type == "IEND") return;
    at += 12 + length;
  }
}

// Text chunks: tEXt, and zTXt and iTXt, which libpng inflates as it reads them — 200 KB of zTXt
// became 200 MB and 1.4 s of CPU on a 64x64 image priced at microseconds. A thumbnail never
// carries them.
bool is_png_text(std::string_view type) { return type == "tEXt" || type == "zTXt" || type == "iTXt"; }


}  // namespace

std::string_view format_name(image_format format) noexcept {
  switch (format) {
    case image_format::jpeg: return "jpeg";
    case image_format::png: return "png";
    case image_format::webp: return "webp";
    case image_format::gif: return "gif";
    case image_format::avif: return "avif";
  }
  return "?";
}

std::string_view media_type(image_format format) noexcept {
  switch (format) {
    case image_format::jpeg: return "image/jpeg";
    case image_format::png: return "image/png";
    case image_format::webp: return "image/webp";
    case image_format::gif: return "image/gif";
    case image_format::avif: return "image/avif";
  }
  return "application/octet-stream";
}

std::optional<image_format> format_of_media_type(std::string_view content_type) noexcept {
  for (const auto f : {image_format::jpeg, image_format::png, image_format::webp, image_format::gif}) {
    if (names_media_type(content_type, media_type(f))) return f;
  }
  return std::nullopt;
}

namespace {

// The q a client's Accept gives `type` ("image/webp"): its own entry's, else image/*'s, else
// */*'s; 0 when none names it. `named` says whether its own entry did.
double accept_q(std::string_view accept, std::string_view type, bool& named) {
  double own = -1, group = -1, any = -1;
  while (!accept.empty()) {
    const auto comma = accept.find(',');
    const auto item = accept.substr(0, comma);
    accept.remove_prefix(comma == std::string_view::npos ? accept.size() : comma + 1);
    double q = 1;
    for (auto at = item.find(';'); at != std::string_view::npos; at = item.find(';', at + 1)) {
      auto param = media_type_of(item.substr(at + 1));  // trimmed, up to the next ';'
      if (param.size() > 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
        q = std::clamp(std::strtod(std::string(param.substr(2)).c_str(), nullptr), 0.0, 1.0);
      }
    }
    if (names_media_type(item, type)) {
      own = std::max(own, q);
    } else if (names_media_type(item, "image/*")) {
      group = std::max(group, q);
    } else if (names_media_type(item, "*/*")) {
      any = std::max(any, q);
    }
  }
  named = own >= 0;
  if (own >= 0) return own;
  if (group >= 0) return group;
  return std::max(any, 0.0);
}

}  // namespace

image_format negotiate_format(std::string_view accept, bool alpha) noexcept {
  if (media_type_of(accept).empty() && accept.find(',') == std::string_view::npos) accept = "*/*";
  bool named = false;
  if (accept_q(accept, "image/avif", named) > 0 && named) return image_format::avif;
  if (accept_q(accept, "image/webp", named) > 0 && named) return image_format::webp;
  const auto first = alpha ? image_format::png : image_format::jpeg;
  const auto second = alpha ? image_format::jpeg : image_format::png;
  if (accept_q(accept, media_type(first), named) > 0) return first;
  if (accept_q(accept, media_type(second), named) > 0) return second;
  return first;  // the client takes none of them: the usual one, rather than nothing
}

std::size_t png_text_bytes(std::string_view png) {
  std::size_t bytes = 0;
  for_each_png_chunk(png, [&](std::string_view type, std::size_t, std::size_t whole) {
    if (is_png_text(type)) bytes += whole;
  });
  return bytes;
}

void drop_png_text(std::string& png) {
  if (png.size() < 8 || png.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0 || png_text_bytes(png) == 0) return;
  std::size_t kept = 8;
  for_each_png_chunk(png, [&](std::string_view type, std::size_t at, std::size_t whole) {
    if (is_png_text(type)) return;
    if (kept != at) std::memmove(png.data() + kept, png.data() + at, whole);  // down: the chunks ahead stay put
    kept += whole;
  });
  png.resize(kept);
}

std::size_t jpeg_scans(std::string_view jpeg) { return count_jpeg_scans(jpeg); }

std::variant<image_header, std::string> sniff_image(std::string_view b) {
  if (b.size() >= 3 && b.substr(0, 3) == "\xFF\xD8\xFF") return sniff_jpeg(b);
  if (b.size() >= 8 && b.substr(0, 8) == "\x89PNG\r\n\x1a\n") return sniff_png(b);
  if (b.size() >= 6 && (b.substr(0, 6) == "GIF87a" || b.substr(0, 6) == "GIF89a")) return sniff_gif(b);
  if (b.size() >= 12 && b.substr(0, 4) == "RIFF" && b.substr(8, 4) == "WEBP") return sniff_webp(b);
  return std::string("not a JPEG, PNG, WebP or GIF image");
}

namespace {

// What encoding one output pixel costs, in the kind's unit. JPEG, WebP and PNG: 8, as calibrated
// (a WebP pixel takes ~90 ns here, a JPEG's 8).
//
// AVIF (libaom through libheif, on one CPU: image_vips.cpp) is far from linear in output pixels
// and not even monotonic: measured by bench/avif_cost.py (a photo-like 4000x3000 JPEG, widths 400
// to 4000, efforts 0..6, the fastest of two, 2-core EPYC, 2026-12-07), an effort-6 pixel weighs
// 85 units at 400 px wide, 439 at 2000 and 335 at 4000. No power law fits that (61 % off at
// effort 6), so the model is the measurements themselves, interpolated in log(pixels) and held
// at the ends. Efforts 7..9, which --max-image-effort allows but nobody should want, are effort
// 6's times how much longer libaom took at 400 px (1.4, 1.9 and 3.3 times), not measured here.
constexpr std::array<double, 7> avif_pixels{120000, 270000, 750000, 1687500, 3000000, 6750000, 12000000};
constexpr std::array<std::array<double, 7>, 7> avif_weight{{
    {12.5, 11.5, 10.4, 10.7, 11.0, 11.4, 11.1},
    {13.0, 12.4, 10.7, 11.2, 11.5, 11.5, 11.4},
    {16.8, 15.2, 14.7, 17.0, 19.1, 21.7, 25.6},
    {17.8, 17.1, 24.4, 33.3, 42.9, 40.2, 39.4},
    {46.6, 41.1, 65.2, 94.3, 103.5, 91.1, 91.5},
    {60.7, 52.2, 79.5, 115.9, 134.0, 108.7, 112.7},
    {85.3, 71.7, 144.3, 279.9, 439.3, 367.2, 334.8},
}};
constexpr std::array<double, 3> avif_beyond_effort_6{1.4, 1.9, 3.3};

double avif_weight_at(std::uint32_t effort, double pixels) {
  const auto& row = avif_weight[std::min<std::size_t>(effort, 6)];
  double w = row.back();
  if (pixels <= avif_pixels.front()) {
    w = row.front();
  } else if (pixels < avif_pixels.back()) {
    std::size_t i = 0;
    while (pixels > avif_pixels[i + 1]) ++i;
    const double t = std::log(pixels / avif_pixels[i]) / std::log(avif_pixels[i + 1] / avif_pixels[i]);
    w = row[i] + (row[i + 1] - row[i]) * t;
  }
  return effort > 6 ? w * avif_beyond_effort_6[std::min<std::size_t>(effort - 7, 2)] : w;
}

double encode_weight(const thumbnail_spec& spec, double output_pixels) {
  if (spec.format != image_format::avif) return 8;
  return avif_weight_at(spec.effort, output_pixels);
}

}  // namespace

namespace {

// The decoder's own shrink for an image scaled by `scale`: JPEG by 2, 4 or 8 while the result
// stays at or above the thumbnail in both axes (sharp's choice: 18 % less time than
// vips_thumbnail's own, for the same output), which the worker asks libjpeg for; WebP by any
// factor, as libvips picks it.
std::uint32_t shrink_on_load(image_format format, double scale) noexcept {
  if (scale >= 1) return 1;
  const double wanted = 1.0 / scale;
  if (format == image_format::jpeg) {
    for (const std::uint32_t s : {8u, 4u, 2u}) {
      if (wanted >= s) return s;
    }
  } else if (format == image_format::webp) {
    return static_cast<std::uint32_t>(std::max(1.0, std::floor(wanted)));
  }
  return 1;
}

}  // namespace

thumbnail_plan plan_thumbnail(const image_header& header, const thumbnail_spec& spec) noexcept {
  thumbnail_plan plan;
  const double w = header.width;
  const double h = header.height;
  // The scale in either orientation (EXIF may swap the axes), the larger: estimates, not promises.
  auto scale_for = [&](double iw, double ih) {
    const double sx = spec.width != 0 ? spec.width / iw : 0;
    const double sy = spec.height != 0 ? spec.height / ih : 0;
    if (spec.width == 0) return std::pair{sy, sy};
    if (spec.height == 0) return std::pair{sx, sx};
    switch (spec.fit) {
      case image_fit::inside: return std::pair{std::min(sx, sy), std::min(sx, sy)};
      case image_fit::cover:
      case image_fit::outside: return std::pair{std::max(sx, sy), std::max(sx, sy)};
      case image_fit::fill: return std::pair{sx, sy};
    }
    return std::pair{sx, sy};
  };
  // Without enlarge, an image smaller than the box keeps its size (fill stretches regardless).
  auto bounded = [&](std::pair<double, double> scale) {
    if (spec.enlarge || spec.fit == image_fit::fill) return scale;
    return std::pair{std::min(scale.first, 1.0), std::min(scale.second, 1.0)};
  };
  double out = 0;
  double largest_scale = 0;
  // The orientation it is shown in, when the header gives it; else both, the costlier taken.
  std::vector<std::pair<double, double>> shown;
  if (header.orientation == 0 || header.orientation < 5) shown.emplace_back(w, h);
  if (header.orientation == 0 || header.orientation >= 5) shown.emplace_back(h, w);
  for (const auto& [iw, ih] : shown) {
    const auto [sx, sy] = bounded(scale_for(iw, ih));
    double ow = std::max(1.0, std::round(iw * sx));
    double oh = std::max(1.0, std::round(ih * sy));
    if (spec.fit == image_fit::cover && spec.width != 0 && spec.height != 0) {
      ow = std::min<double>(ow, spec.width);
      oh = std::min<double>(oh, spec.height);
    }
    out = std::max(out, ow * oh);
    largest_scale = std::max({largest_scale, sx, sy});
  }
  plan.output_pixels = static_cast<std::uint64_t>(out);

  const auto shrink = shrink_on_load(header.format, largest_scale);
  plan.shrink_on_load = shrink;
  const double loaded_w = std::ceil(w / shrink);
  const double loaded_h = std::ceil(h / shrink);
  plan.loaded_pixels = static_cast<std::uint64_t>(loaded_w * loaded_h);

  // Cost: what the decoder reads (every input pixel, at a fraction of a decoded one's cost when
  // it shrinks on load), what it produces, and what is resized and encoded.
  const double input = static_cast<double>(header.pixels());
  plan.cost_units = input / 4 + static_cast<double>(plan.loaded_pixels) + encode_weight(spec, out) * out;

  // Memory: a decoder that holds the whole frame holds it (JPEG's coefficients at 2 bytes a
  // sample, the others' pixels); one that streams holds a band of rows. Then the resize's row
  // buffers, and the thumbnail a few times over (orientation, crop, colour conversion, encoder).
  const double bands = header.bands;
  double decoder = 0;
  if (header.whole_frame) {
    decoder = header.format == image_format::jpeg ? static_cast<double>(header.samples) * 2  // 16-bit coefficients
              : header.format == image_format::webp ? loaded_w * loaded_h * 4
                                                     : input * bands;
  } else {
    decoder = w * bands * 64;
  }
  const double resize_rows = loaded_w * 4 * 64;
  const double thumbnail = out * 4 * 4;
  constexpr double fixed = 4.0 * 1024 * 1024;  // libvips's and the codecs' own state
  // libaom's encoder: 8 MiB and 28 bytes an output pixel (12 MB for 400x300, 121 MB for 2000x2000).
  const double encoder = spec.format == image_format::avif ? 8.0 * 1024 * 1024 + 28 * out : 0;
  plan.memory_bytes = static_cast<std::uint64_t>(fixed + decoder + resize_rows + thumbnail + encoder);
  return plan;
}

// ---- the libvips side: libcrunch_vips.so, loaded on first use (image_library.hpp) ----

namespace {

// The directory of this process's executable; empty when /proc is not there to say.
std::string executable_directory() {
  std::string path(4096, '\0');
  const auto n = readlink("/proc/self/exe", path.data(), path.size());
  if (n <= 0 || static_cast<std::size_t>(n) >= path.size()) return {};
  path.resize(static_cast<std::size_t>(n));
  const auto slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);  // "/crunchd" (a container's root) is in "/"
}

// Where the module may be, in the order tried: named by the environment; beside the executable
// (a build tree, a container's root); where `cmake --install` puts it, relative to the
// executable, then under the configured prefix (a service of its own, built on an installed
// crunch, runs from anywhere); where this build made it (the tests and tools of a build tree).
std::vector<std::string> image_library_places() {
  if (const char* named = std::getenv("CRUNCH_IMAGE_LIBRARY"); named != nullptr && *named != '\0') return {named};
  std::vector<std::string> places;
  if (auto dir = executable_directory(); !dir.empty()) {
    if (dir.back() != '/') dir += '/';
    places.push_back(dir + image_library::file_name);
#ifdef CRUNCH_IMAGE_LIBRARY_INSTALLED
    places.push_back(dir + CRUNCH_IMAGE_LIBRARY_INSTALLED "/" + image_library::file_name);
#endif
  }
#ifdef CRUNCH_IMAGE_LIBRARY_PREFIX
  places.push_back(CRUNCH_IMAGE_LIBRARY_PREFIX "/" + std::string(image_library::file_name));
#endif
#ifdef CRUNCH_IMAGE_LIBRARY_BUILT
  places.emplace_back(CRUNCH_IMAGE_LIBRARY_BUILT);
#endif
  return places;
}

std::atomic<const image_library::functions*> loaded_library{nullptr};

const image_library::functions* load_image_library() {
  const auto path = find_image_library();
  // Never closed: glib, under libvips, cannot be unloaded.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (handle == nullptr) throw std::runtime_error("cannot load the image kind's module: " + std::string(dlerror()));
  void* entry = dlsym(handle, image_library::entry_point);
  if (entry == nullptr) throw std::runtime_error(path + " is not crunch's image module");
  static const image_library::host host{
      &job_checkpoint, &adopt_worker_priority_on_this_thread, [] { return static_cast<void*>(new confined_to_one_cpu); },
      [](void* token) { delete static_cast<confined_to_one_cpu*>(token); }};
  const auto* table = reinterpret_cast<image_library::entry_function>(entry)(&host);
  if (table == nullptr || table->abi != image_library::abi) {
    throw std::runtime_error(path + " was built for another version of crunch");
  }
  table->start();
  return table;
}

// Loaded once, by the first caller; a load that throws is tried again by the next one.
const image_library::functions& image_library_table() {
  static const image_library::functions* const table = load_image_library();
  loaded_library.store(table, std::memory_order_release);
  return *table;
}

}  // namespace

std::string find_image_library() {
  const auto places = image_library_places();
  std::string tried;
  for (const auto& place : places) {
    if (access(place.c_str(), R_OK) == 0) return place;
    tried += (tried.empty() ? "" : ", ") + place;
  }
  throw std::runtime_error(std::string("the image kind's module ") + image_library::file_name +
                           " is not where crunchd looks: " + tried + " (CRUNCH_IMAGE_LIBRARY names its path)");
}

bool image_library_loaded() noexcept { return loaded_library.load(std::memory_order_acquire) != nullptr; }

void init_vips() { image_library_table(); }

std::string libvips_version() { return image_library_table().version(); }

void release_vips_thread_buffers() {
  if (const auto* table = loaded_library.load(std::memory_order_acquire)) table->release_thread_buffers();
}

std::optional<std::string> make_thumbnail(std::string_view bytes, const image_header& expected,
                                          const thumbnail_spec& spec, std::stop_token stop) {
  return make_thumbnail(bytes, expected, spec, plan_thumbnail(expected, spec), std::move(stop));
}

std::optional<std::string> make_thumbnail(std::string_view bytes, const image_header& expected,
                                          const thumbnail_spec& spec, const thumbnail_plan& plan,
                                          std::stop_token stop) {
  // What the decoder would do beyond the pixels that admission priced, refused before it starts.
  if (expected.format == image_format::png && png_text_bytes(bytes) > max_png_text_bytes) {
    throw image_error("the PNG carries " + std::to_string(png_text_bytes(bytes)) +
                      " bytes of text chunks, more than this server reads (" + std::to_string(max_png_text_bytes) + ")");
  }
  if (expected.format == image_format::jpeg && expected.whole_frame) {
    if (const auto scans = count_jpeg_scans(bytes); scans > max_jpeg_scans) {
      throw image_error("the JPEG has " + std::to_string(scans) + " scans, more than this server decodes (" +
                        std::to_string(max_jpeg_scans) + ")");
    }
  }
  return image_library_table().thumbnail(bytes, expected, spec, plan, std::move(stop));
}

image_info read_image_info(std::string_view bytes) { return image_library_table().info(bytes); }

std::string synthetic_image(std::uint32_t width, std::uint32_t height, image_format format, int quality,
                            int orientation) {
  return image_library_table().synthetic(width, height, format, quality, orientation);
}

}  // namespace crunch
