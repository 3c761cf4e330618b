#include <crunch/image.hpp>

#include <crunch/cpu_pacer.hpp>

#include <vips/vips.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>

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

sniffed sniff_jpeg(std::string_view b) {
  std::size_t at = 2;  // after FF D8
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
      return h;
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

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// An owning handle for a GObject.
struct unref {
  void operator()(void* object) const { g_object_unref(object); }
};
using image_ptr = std::unique_ptr<VipsImage, unref>;

std::string vips_failure() {
  // Copied and cleared in one step: the buffer is libvips's, shared by every thread.
  char* copy = vips_error_buffer_copy();
  std::string message = copy != nullptr ? copy : "";
  g_free(copy);
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  // libvips's messages name the operation and what went wrong; keep the first line.
  if (const auto newline = message.find('\n'); newline != std::string::npos) message.resize(newline);
  return message.empty() ? std::string("the image could not be decoded") : message;
}

// Removes the EXIF, XMP and ICC chunks of a WebP file and clears their flags. libvips 8.14.1's
// webpsave ignores `strip` and always writes an EXIF chunk (rebuilt from the image's fields; the
// fields are gone by then, so it holds only a default orientation and resolution — but a chunk
// nonetheless). Chunks are a four-byte tag, a little-endian length and the data, padded to even.
void strip_webp_chunks(std::string& webp) {
  if (webp.size() < 30 || webp.compare(12, 4, "VP8X") != 0) return;  // simple format: no metadata
  std::string out = webp.substr(0, 12);
  for (std::size_t at = 12; at + 8 <= webp.size();) {
    const auto tag = std::string_view(webp).substr(at, 4);
    const std::size_t length = le32(webp, at + 4);
    const std::size_t whole = 8 + length + (length & 1);
    if (at + whole > webp.size()) return;  // not what libvips writes: leave it alone
    if (tag != "EXIF" && tag != "XMP " && tag != "ICCP") out.append(webp, at, whole);
    at += whole;
  }
  out[20] = static_cast<char>(static_cast<unsigned char>(out[20]) & ~0x2Cu);  // VP8X flags: ICC, EXIF, XMP
  const auto riff = static_cast<std::uint32_t>(out.size() - 8);
  for (std::size_t i = 0; i < 4; ++i) out[4 + i] = static_cast<char>(riff >> (8 * i));
  webp = std::move(out);
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

// Called by libvips while it evaluates, on whichever thread runs the pipeline.
void on_eval(VipsImage* image, VipsProgress*, void* stop) {
  if (job_checkpoint(*static_cast<std::stop_token*>(stop))) vips_image_set_kill(image, TRUE);
}

}  // namespace

std::string_view format_name(image_format format) noexcept {
  switch (format) {
    case image_format::jpeg: return "jpeg";
    case image_format::png: return "png";
    case image_format::webp: return "webp";
    case image_format::gif: return "gif";
  }
  return "?";
}

std::string_view media_type(image_format format) noexcept {
  switch (format) {
    case image_format::jpeg: return "image/jpeg";
    case image_format::png: return "image/png";
    case image_format::webp: return "image/webp";
    case image_format::gif: return "image/gif";
  }
  return "application/octet-stream";
}

std::optional<image_format> format_of_media_type(std::string_view content_type) noexcept {
  auto media = content_type.substr(0, content_type.find(';'));
  while (!media.empty() && (media.front() == ' ' || media.front() == '\t')) media.remove_prefix(1);
  while (!media.empty() && (media.back() == ' ' || media.back() == '\t')) media.remove_suffix(1);
  for (const auto f : {image_format::jpeg, image_format::png, image_format::webp, image_format::gif}) {
    if (iequal(media, media_type(f))) return f;
  }
  return std::nullopt;
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
      case image_fit::cover: return std::pair{std::max(sx, sy), std::max(sx, sy)};
      case image_fit::fill: return std::pair{sx, sy};
    }
    return std::pair{sx, sy};
  };
  double out = 0;
  double largest_scale = 0;
  for (const auto& [iw, ih] : {std::pair{w, h}, std::pair{h, w}}) {
    const auto [sx, sy] = scale_for(iw, ih);
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

  // The decoder's own shrink, as make_thumbnail picks it: JPEG by 2, 4 or 8 while the result
  // stays at or above the thumbnail in both axes; WebP by any factor. The orientation is not
  // known here: the estimate takes the one that shrinks least.
  std::uint32_t shrink = 1;
  if (largest_scale < 1) {
    const double wanted = 1.0 / largest_scale;
    if (header.format == image_format::jpeg) {
      for (const std::uint32_t s : {8u, 4u, 2u}) {
        if (wanted >= s) {
          shrink = s;
          break;
        }
      }
    } else if (header.format == image_format::webp) {
      shrink = static_cast<std::uint32_t>(std::max(1.0, std::floor(wanted)));
    }
  }
  plan.shrink_on_load = shrink;
  const double loaded_w = std::ceil(w / shrink);
  const double loaded_h = std::ceil(h / shrink);
  plan.loaded_pixels = static_cast<std::uint64_t>(loaded_w * loaded_h);

  // Cost: what the decoder reads (every input pixel, at a fraction of a decoded one's cost when
  // it shrinks on load), what it produces, and what is resized and encoded.
  const double input = static_cast<double>(header.pixels());
  plan.cost_units = input / 4 + static_cast<double>(plan.loaded_pixels) + 8 * out;

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
  plan.memory_bytes = static_cast<std::uint64_t>(fixed + decoder + resize_rows + thumbnail);
  return plan;
}

void init_vips() {
  static std::once_flag once;
  static bool started = false;
  std::call_once(once, [] {
    if (VIPS_INIT("crunchd") != 0) return;
    // libvips's warnings ("error in tile 0 x 40", "read gave 1 warnings") would go to stderr in
    // glib's format, beside crunch's own log lines; what matters of them reaches the client as
    // the 400's message, from libvips's error buffer.
    g_log_set_handler("VIPS", static_cast<GLogLevelFlags>(G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO),
                      [](const gchar*, GLogLevelFlags, const gchar*, gpointer) {}, nullptr);
    vips_concurrency_set(1);
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    vips_cache_set_max_files(0);
    vips_block_untrusted_set(TRUE);
    // Every loader blocked, then the four formats' loaders let back in.
    vips_operation_block_set("VipsForeignLoad", TRUE);
    for (const char* loader : {"VipsForeignLoadJpeg", "VipsForeignLoadPng", "VipsForeignLoadWebp",
                               "VipsForeignLoadNsgif"}) {
      vips_operation_block_set(loader, FALSE);
    }
    started = true;
  });
  if (!started) throw std::runtime_error("libvips failed to start: " + vips_failure());
}

std::string libvips_version() {
  return std::to_string(::vips_version(0)) + "." + std::to_string(::vips_version(1)) + "." + std::to_string(::vips_version(2));
}

void release_vips_thread_buffers() { vips_thread_shutdown(); }

std::optional<std::string> make_thumbnail(std::string_view bytes, const image_header& expected,
                                          const thumbnail_spec& spec, std::stop_token stop) {
  init_vips();
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
  // The decoder's own header first: what it would decode must be what the sniffer read (and
  // admission priced). It also gives the EXIF orientation, which decides the shrink-on-load.
  int orientation = 1;
  {
    image_ptr header(vips_image_new_from_buffer(bytes.data(), bytes.size(), "", "access", VIPS_ACCESS_SEQUENTIAL,
                                                "fail_on", VIPS_FAIL_ON_ERROR, nullptr));
    if (!header) throw image_error(vips_failure());
    if (static_cast<std::uint32_t>(header->Xsize) != expected.width ||
        static_cast<std::uint32_t>(header->Ysize) != expected.height) {
      throw image_error("the image's dimensions differ from its header's");
    }
    orientation = vips_image_get_orientation(header.get());
  }
  if (stop.stop_requested()) return std::nullopt;

  // Only width: any height; only height: any width. VIPS_MAX_COORD is libvips's "unbounded".
  const int width = spec.width != 0 ? static_cast<int>(spec.width) : VIPS_MAX_COORD;
  const int height = spec.height != 0 ? static_cast<int>(spec.height) : VIPS_MAX_COORD;
  const bool box = spec.width != 0 && spec.height != 0;
  const VipsSize size = box && spec.fit == image_fit::fill ? VIPS_SIZE_FORCE : VIPS_SIZE_BOTH;
  const VipsInteresting crop = box && spec.fit == image_fit::cover ? VIPS_INTERESTING_CENTRE : VIPS_INTERESTING_NONE;
  VipsImage* raw = nullptr;
  if (expected.format == image_format::jpeg) {
    // A JPEG decodes at 1/2, 1/4 or 1/8 scale for almost nothing. vips_thumbnail keeps a factor
    // of two for its own resize (4000 px to 400 decodes 1000 px wide); sharp, by default, shrinks
    // on load as far as the thumbnail allows (500 px), which here costs 18 % less time for the
    // same output size. crunch does as sharp does: the largest shrink that stays at or above the
    // thumbnail's size in both axes, in the orientation the image is shown in.
    const bool swap = orientation >= 5;
    const double shown_w = swap ? expected.height : expected.width;
    const double shown_h = swap ? expected.width : expected.height;
    const double sx = spec.width != 0 ? spec.width / shown_w : 0;
    const double sy = spec.height != 0 ? spec.height / shown_h : 0;
    double scale = 0;
    if (!box) {
      scale = std::max(sx, sy);
    } else if (spec.fit == image_fit::inside) {
      scale = std::min(sx, sy);
    } else {
      scale = std::max(sx, sy);  // cover fills the box; fill stretches to it: the larger scale
    }
    int shrink = 1;
    for (const int s : {8, 4, 2}) {
      if (scale * s <= 1.0) {
        shrink = s;
        break;
      }
    }
    image_ptr loaded(vips_image_new_from_buffer(bytes.data(), bytes.size(), "", "access", VIPS_ACCESS_SEQUENTIAL,
                                                "shrink", shrink, "fail_on", VIPS_FAIL_ON_ERROR, nullptr));
    if (!loaded) throw image_error(vips_failure());
    if (vips_thumbnail_image(loaded.get(), &raw, width, "height", height, "size", size, "crop", crop, nullptr) != 0) {
      throw image_error(vips_failure());
    }
  } else if (vips_thumbnail_buffer(const_cast<char*>(bytes.data()), bytes.size(), &raw, width, "height", height,
                                   "size", size, "crop", crop,
                                   // libvips 8.14 forgets to pass fail_on to a buffer's loader, so
                                   // it goes in the loader's own options as well.
                                   "fail_on", VIPS_FAIL_ON_ERROR, "option_string", "fail_on=error", nullptr) != 0) {
    throw image_error(vips_failure());
  }
  image_ptr image(raw);

  // sRGB out, whatever came in (grey, CMYK, 16-bit); JPEG has no alpha: flatten onto white.
  if (vips_image_guess_interpretation(image.get()) != VIPS_INTERPRETATION_sRGB) {
    VipsImage* converted = nullptr;
    if (vips_colourspace(image.get(), &converted, VIPS_INTERPRETATION_sRGB, nullptr) != 0) {
      throw image_error(vips_failure());
    }
    image.reset(converted);
  }
  if (spec.format == image_format::jpeg && vips_image_hasalpha(image.get())) {
    VipsArrayDouble* white = vips_array_double_newv(1, 255.0);
    VipsImage* flat = nullptr;
    const int failed = vips_flatten(image.get(), &flat, "background", white, nullptr);
    vips_area_unref(VIPS_AREA(white));
    if (failed != 0) throw image_error(vips_failure());
    image.reset(flat);
  }

  // Every metadata block removed here, not only by the savers' strip flag: libvips 8.14.1's
  // webpsave ignores that flag and would write the input's EXIF — GPS position included.
  {
    VipsImage* copy = nullptr;
    if (vips_copy(image.get(), &copy, nullptr) != 0) throw image_error(vips_failure());
    image.reset(copy);
    gchar** fields = vips_image_get_fields(image.get());
    for (gchar** field = fields; *field != nullptr; ++field) vips_image_remove(image.get(), *field);
    g_strfreev(fields);
  }

  // Stop between strips when the token fires: libvips checks the kill flag as it evaluates.
  vips_image_set_progress(image.get(), TRUE);
  g_signal_connect(image.get(), "eval", G_CALLBACK(on_eval), &stop);

  void* out = nullptr;
  std::size_t length = 0;
  const int quality = static_cast<int>(spec.quality);
  int failed = 0;
  switch (spec.format) {
    case image_format::jpeg:
      failed = vips_jpegsave_buffer(image.get(), &out, &length, "Q", quality, "strip", TRUE, nullptr);
      break;
    case image_format::webp:
      failed = vips_webpsave_buffer(image.get(), &out, &length, "Q", quality, "strip", TRUE, nullptr);
      break;
    case image_format::png:
      failed = vips_pngsave_buffer(image.get(), &out, &length, "strip", TRUE, nullptr);
      break;
    case image_format::gif:
      throw std::logic_error("gif is not an output format");
  }
  if (failed != 0) {
    if (stop.stop_requested()) {
      g_free(vips_error_buffer_copy());
      return std::nullopt;
    }
    throw image_error(vips_failure());
  }
  std::string encoded(static_cast<const char*>(out), length);
  g_free(out);
  if (spec.format == image_format::webp) strip_webp_chunks(encoded);
  return encoded;
}

}  // namespace crunch

namespace crunch {

std::string synthetic_image(std::uint32_t width, std::uint32_t height, image_format format, int quality,
                            int orientation) {
  init_vips();
  const int w = static_cast<int>(width);
  const int h = static_cast<int>(height);
  auto check = [](int failed) {
    if (failed != 0) throw std::runtime_error("synthetic_image: " + vips_failure());
  };
  // Red grows to the right, green downwards, blue along the diagonal; noise on top, blurred a
  // little so that it compresses like a photo rather than like static.
  VipsImage* xy = nullptr;
  check(vips_xyz(&xy, w, h, nullptr));
  image_ptr coords(xy);
  VipsImage* parts[2] = {};
  check(vips_extract_band(coords.get(), &parts[0], 0, nullptr));
  check(vips_extract_band(coords.get(), &parts[1], 1, nullptr));
  image_ptr x(parts[0]), y(parts[1]);
  VipsImage *r = nullptr, *g = nullptr, *b = nullptr, *sum = nullptr;
  check(vips_linear1(x.get(), &r, 255.0 / std::max(1, w - 1), 0.0, nullptr));
  check(vips_linear1(y.get(), &g, 255.0 / std::max(1, h - 1), 0.0, nullptr));
  check(vips_add(x.get(), y.get(), &sum, nullptr));
  image_ptr red(r), green(g), total(sum);
  check(vips_linear1(total.get(), &b, 255.0 / std::max(1, w + h - 2), 0.0, nullptr));
  image_ptr blue(b);
  VipsImage* bands[3] = {red.get(), green.get(), blue.get()};
  VipsImage* joined = nullptr;
  check(vips_bandjoin(bands, &joined, 3, nullptr));
  image_ptr rgb(joined);
  VipsImage* noise = nullptr;
  check(vips_gaussnoise(&noise, w, h, "sigma", 24.0, "mean", 0.0, "seed", 42, nullptr));
  image_ptr grain(noise);
  VipsImage* noisy = nullptr;
  check(vips_add(rgb.get(), grain.get(), &noisy, nullptr));
  image_ptr mixed(noisy);
  VipsImage* soft = nullptr;
  check(vips_gaussblur(mixed.get(), &soft, 0.8, "precision", VIPS_PRECISION_INTEGER, nullptr));
  image_ptr blurred(soft);
  VipsImage* bytes8 = nullptr;
  check(vips_cast(blurred.get(), &bytes8, VIPS_FORMAT_UCHAR, nullptr));
  image_ptr out(bytes8);
  VipsImage* srgb = nullptr;
  check(vips_copy(out.get(), &srgb, "interpretation", VIPS_INTERPRETATION_sRGB, nullptr));
  out.reset(srgb);
  if (orientation != 1) vips_image_set_int(out.get(), VIPS_META_ORIENTATION, orientation);

  void* buffer = nullptr;
  std::size_t length = 0;
  switch (format) {
    case image_format::jpeg:
      check(vips_jpegsave_buffer(out.get(), &buffer, &length, "Q", quality, nullptr));
      break;
    case image_format::png:
      check(vips_pngsave_buffer(out.get(), &buffer, &length, "compression", 1, nullptr));
      break;
    case image_format::webp:
      check(vips_webpsave_buffer(out.get(), &buffer, &length, "Q", quality, nullptr));
      break;
    case image_format::gif:
      check(vips_gifsave_buffer(out.get(), &buffer, &length, nullptr));
      break;
  }
  std::string encoded(static_cast<const char*>(buffer), length);
  g_free(buffer);
  return encoded;
}

}  // namespace crunch
