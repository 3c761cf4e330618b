// libcrunch_vips.so: everything crunch does with libvips, in a module of its own that the first
// image job loads (image_library.hpp says why). It calls nothing of crunch's but what the host
// table hands it.
#include "image_library.hpp"

#include <vips/vips.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace crunch {

namespace {

const image_library::host* the_host = nullptr;

std::uint32_t le32(std::string_view b, std::size_t at) {
  std::uint32_t v = 0;
  for (std::size_t i = 4; i-- > 0;) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
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
void strip_webp_chunks(std::string& webp, bool keep_icc, bool keep_exif) {
  if (webp.size() < 30 || webp.compare(12, 4, "VP8X") != 0) return;  // simple format: no metadata
  std::string out = webp.substr(0, 12);
  for (std::size_t at = 12; at + 8 <= webp.size();) {
    const auto tag = std::string_view(webp).substr(at, 4);
    const std::size_t length = le32(webp, at + 4);
    const std::size_t whole = 8 + length + (length & 1);
    if (at + whole > webp.size()) return;  // not what libvips writes: leave it alone
    const bool kept = (tag == "ICCP" && keep_icc) || (tag == "EXIF" && keep_exif);
    if (kept || (tag != "EXIF" && tag != "XMP " && tag != "ICCP")) out.append(webp, at, whole);
    at += whole;
  }
  // VP8X flags: ICC 0x20, EXIF 0x08, XMP 0x04
  const unsigned cleared = 0x04u | (keep_icc ? 0u : 0x20u) | (keep_exif ? 0u : 0x08u);
  out[20] = static_cast<char>(static_cast<unsigned char>(out[20]) & ~cleared);
  const auto riff = static_cast<std::uint32_t>(out.size() - 8);
  for (std::size_t i = 0; i < 4; ++i) out[4 + i] = static_cast<char>(riff >> (8 * i));
  webp = std::move(out);
}

// Called by libvips while it evaluates, on whichever thread runs the pipeline.
void on_eval(VipsImage* image, VipsProgress*, void* stop) {
  the_host->adopt_priority();
  if (the_host->checkpoint(*static_cast<std::stop_token*>(stop))) vips_image_set_kill(image, TRUE);
}

void start() {
  static std::once_flag once;
  static bool started = false;
  std::call_once(once, [] {
    if (VIPS_INIT("crunchd") != 0) return;
    // libvips's warnings ("error in tile 0 x 40", "read gave 1 warnings") would go to stderr in
    // glib's format, beside crunch's own log lines; what matters of them reaches the client as
    // the 400's message, from libvips's error buffer.
    g_log_set_handler("VIPS", static_cast<GLogLevelFlags>(G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO),
                      [](const gchar*, GLogLevelFlags, const gchar*, gpointer) {}, nullptr);
    // glib seeds its global random generator from /dev/urandom on first use (vips_gaussnoise
    // asks it for a seed): done now, while a helper may still open files.
    (void)g_random_int();
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

std::string version() {
  return std::to_string(::vips_version(0)) + "." + std::to_string(::vips_version(1)) + "." + std::to_string(::vips_version(2));
}

void release_thread_buffers() { vips_thread_shutdown(); }

// The decoder's own header first: what it would decode must be what the sniffer read (and
// admission priced), the orientation included, on which the plan's shrink-on-load rests. Returns
// the orientation it is shown in.
int checked_orientation(std::string_view bytes, const image_header& expected) {
  image_ptr header(vips_image_new_from_buffer(bytes.data(), bytes.size(), "", "access", VIPS_ACCESS_SEQUENTIAL,
                                              "fail_on", VIPS_FAIL_ON_ERROR, nullptr));
  if (!header) throw image_error(vips_failure());
  if (static_cast<std::uint32_t>(header->Xsize) != expected.width ||
      static_cast<std::uint32_t>(header->Ysize) != expected.height) {
    throw image_error("the image's dimensions differ from its header's");
  }
  const int shown_orientation = vips_image_get_orientation(header.get());
  if (expected.orientation != 0 && shown_orientation != expected.orientation) {
    throw image_error("the image's EXIF orientation differs from its header's");
  }
  return shown_orientation;
}

// The image shrunk (or enlarged) to the spec's box, in the orientation it is shown in.
image_ptr resized(std::string_view bytes, const image_header& expected, const thumbnail_spec& spec,
                  const thumbnail_plan& plan, int shown_orientation) {
  // Only width: any height; only height: any width. VIPS_MAX_COORD is libvips's "unbounded".
  int width = spec.width != 0 ? static_cast<int>(spec.width) : VIPS_MAX_COORD;
  int height = spec.height != 0 ? static_cast<int>(spec.height) : VIPS_MAX_COORD;
  const bool box = spec.width != 0 && spec.height != 0;
  const VipsSize size = box && spec.fit == image_fit::fill ? VIPS_SIZE_FORCE
                        : spec.enlarge                      ? VIPS_SIZE_BOTH
                                                            : VIPS_SIZE_DOWN;
  VipsInteresting crop = VIPS_INTERESTING_NONE;
  if (box && spec.fit == image_fit::cover) {
    crop = spec.crop == image_crop::attention ? VIPS_INTERESTING_ATTENTION
           : spec.crop == image_crop::entropy ? VIPS_INTERESTING_ENTROPY
                                              : VIPS_INTERESTING_CENTRE;
  }
  if (box && spec.fit == image_fit::outside) {
    // As small as covers the box: the larger scale, as a width alone, in the orientation shown.
    const bool swapped = shown_orientation >= 5;
    const double shown_w = swapped ? expected.height : expected.width;
    const double shown_h = swapped ? expected.width : expected.height;
    double scale = std::max(spec.width / shown_w, spec.height / shown_h);
    if (!spec.enlarge) scale = std::min(scale, 1.0);
    width = std::max(1, static_cast<int>(std::lround(shown_w * scale)));
    height = VIPS_MAX_COORD;
  }
  VipsImage* raw = nullptr;
  if (expected.format == image_format::jpeg) {
    // A JPEG decodes at 1/2, 1/4 or 1/8 scale for almost nothing: the plan's shrink, the largest
    // that stays at or above the thumbnail in the orientation the image is shown in.
    image_ptr loaded(vips_image_new_from_buffer(bytes.data(), bytes.size(), "", "access", VIPS_ACCESS_SEQUENTIAL,
                                                "shrink", static_cast<int>(plan.shrink_on_load), "fail_on",
                                                VIPS_FAIL_ON_ERROR, nullptr));
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
  return image_ptr(raw);
}

// sRGB out, whatever came in (grey, CMYK, 16-bit); JPEG has no alpha: flatten onto white.
void to_srgb(image_ptr& image, image_format format) {
  if (vips_image_guess_interpretation(image.get()) != VIPS_INTERPRETATION_sRGB) {
    VipsImage* converted = nullptr;
    if (vips_colourspace(image.get(), &converted, VIPS_INTERPRETATION_sRGB, nullptr) != 0) {
      throw image_error(vips_failure());
    }
    image.reset(converted);
  }
  if (format == image_format::jpeg && vips_image_hasalpha(image.get())) {
    VipsArrayDouble* white = vips_array_double_newv(1, 255.0);
    VipsImage* flat = nullptr;
    const int failed = vips_flatten(image.get(), &flat, "background", white, nullptr);
    vips_area_unref(VIPS_AREA(white));
    if (failed != 0) throw image_error(vips_failure());
    image.reset(flat);
  }
}

// Every metadata block removed here, not only by the savers' strip flag: libvips 8.14.1's
// webpsave ignores that flag and would write the input's EXIF — GPS position included. What
// the request keeps goes back alone: the ICC profile as it was, and EXIF's Copyright and
// Artist as fields, from which the saver builds a fresh EXIF block holding only them (and
// libvips's own orientation and resolution tags).
void strip_metadata(image_ptr& image, const thumbnail_spec& spec) {
  VipsImage* copy = nullptr;
  if (vips_copy(image.get(), &copy, nullptr) != 0) throw image_error(vips_failure());
  image.reset(copy);
  std::vector<std::pair<std::string, std::string>> credits;
  if (spec.keep_copyright) {
    for (const char* field : {"exif-ifd0-Copyright", "exif-ifd0-Artist"}) {
      const char* value = nullptr;
      if (vips_image_get_typeof(image.get(), field) != 0 && vips_image_get_string(image.get(), field, &value) == 0) {
        credits.emplace_back(field, value);
      }
    }
  }
  gchar** fields = vips_image_get_fields(image.get());
  for (gchar** field = fields; *field != nullptr; ++field) {
    if (spec.keep_icc && std::strcmp(*field, VIPS_META_ICC_NAME) == 0) continue;
    vips_image_remove(image.get(), *field);
  }
  g_strfreev(fields);
  for (const auto& [field, value] : credits) vips_image_set_string(image.get(), field.c_str(), value.c_str());
}

// The image encoded as the spec asks; nullopt when `stop` ended the evaluation.
std::optional<std::string> encoded(image_ptr& image, const thumbnail_spec& spec, const std::stop_token& stop) {
  const bool keep = spec.keep_icc || spec.keep_copyright;
  void* out = nullptr;
  std::size_t length = 0;
  const int quality = static_cast<int>(spec.quality);
  int failed = 0;
  const gboolean strip = keep ? FALSE : TRUE;
  switch (spec.format) {
    case image_format::jpeg:
      failed = vips_jpegsave_buffer(image.get(), &out, &length, "Q", quality, "strip", strip, nullptr);
      break;
    case image_format::webp:
      failed = vips_webpsave_buffer(image.get(), &out, &length, "Q", quality, "strip", strip, nullptr);
      break;
    case image_format::png:
      failed = vips_pngsave_buffer(image.get(), &out, &length, "strip", strip, nullptr);
      break;
    case image_format::avif: {
      // libheif runs libaom with four threads of its own (its default: libvips 8.14 cannot set
      // it), which would take more than this job's one CPU from the other workers' jobs. They are
      // started within the save, from this thread: kept on its CPU, they take that CPU alone.
      void* confined = the_host->confine_to_one_cpu();
      failed = vips_heifsave_buffer(image.get(), &out, &length, "compression", VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "Q",
                                    quality, "effort", static_cast<int>(spec.effort), "strip", strip, nullptr);
      the_host->release_cpu(confined);
      break;
    }
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
  std::string bytes(static_cast<const char*>(out), length);
  g_free(out);
  if (spec.format == image_format::webp) strip_webp_chunks(bytes, spec.keep_icc, spec.keep_copyright);
  return bytes;
}

std::optional<std::string> thumbnail(std::string_view bytes, const image_header& expected, const thumbnail_spec& spec,
                                     const thumbnail_plan& plan, std::stop_token stop) {
  const int shown_orientation = checked_orientation(bytes, expected);
  if (stop.stop_requested()) return std::nullopt;
  auto image = resized(bytes, expected, spec, plan, shown_orientation);
  to_srgb(image, spec.format);
  strip_metadata(image, spec);
  // Stop between strips when the token fires: libvips checks the kill flag as it evaluates.
  vips_image_set_progress(image.get(), TRUE);
  g_signal_connect(image.get(), "eval", G_CALLBACK(on_eval), &stop);
  return encoded(image, spec, stop);
}

std::string synthetic(std::uint32_t width, std::uint32_t height, image_format format, int quality, int orientation) {
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
    case image_format::avif:
      check(vips_heifsave_buffer(out.get(), &buffer, &length, "compression", VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "Q",
                                 quality, nullptr));
      break;
  }
  std::string encoded(static_cast<const char*>(buffer), length);
  g_free(buffer);
  return encoded;
}

image_info info(std::string_view bytes) {
  image_ptr header(vips_image_new_from_buffer(bytes.data(), bytes.size(), "", "access", VIPS_ACCESS_SEQUENTIAL,
                                              "fail_on", VIPS_FAIL_ON_ERROR, nullptr));
  if (!header) throw image_error(vips_failure());
  image_info out;
  const char* loader = nullptr;
  if (vips_image_get_string(header.get(), "vips-loader", &loader) != 0) loader = "";
  const std::string_view name(loader);
  out.format = name.starts_with("png") ? image_format::png
               : name.starts_with("webp") ? image_format::webp
               : name.starts_with("gif")  ? image_format::gif
                                          : image_format::jpeg;
  out.width = static_cast<std::uint32_t>(header->Xsize);
  out.height = static_cast<std::uint32_t>(header->Ysize);
  out.orientation = static_cast<std::uint32_t>(vips_image_get_orientation(header.get()));
  out.alpha = vips_image_hasalpha(header.get()) != 0;
  out.frames = static_cast<std::uint32_t>(std::max(1, vips_image_get_n_pages(header.get())));
  // libvips 8.14's GIF loader stops walking frames at 4,097 (GIFs of 5,000, 20,000 and 300,000
  // frames all say 4,097): from there the count is a lower bound.
  out.frames_at_least = out.format == image_format::gif && out.frames >= gif_frames_counted;
  const char* space = vips_enum_nick(VIPS_TYPE_INTERPRETATION, vips_image_guess_interpretation(header.get()));
  out.colour_space = space != nullptr ? space : "unknown";
  out.icc_profile = vips_image_get_typeof(header.get(), VIPS_META_ICC_NAME) != 0;
  return out;
}

const image_library::functions table{image_library::abi, start, version, release_thread_buffers, thumbnail, synthetic,
                                     info};

}  // namespace

}  // namespace crunch

extern "C" __attribute__((visibility("default"))) const crunch::image_library::functions* crunch_image_library(
    const crunch::image_library::host* host) {
  crunch::the_host = host;
  return &crunch::table;
}
