#pragma once
/// Image thumbnails with libvips: what an image declares in its first bytes (read without a
/// decoder, so that a pixel bomb costs nothing), what a thumbnail of it will cost, and the
/// thumbnail itself. Plain functions: the image kind (image_kind.cpp) runs them on workers.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>

namespace crunch {

/// The formats crunch reads (the first four: everything else is refused before any decoder sees
/// it) and writes (jpeg, png, webp and avif).
enum class image_format { jpeg, png, webp, gif, avif };

/// "jpeg", "png", "webp", "gif", "avif".
std::string_view format_name(image_format format) noexcept;
/// "image/jpeg", ...
std::string_view media_type(image_format format) noexcept;
/// The input format a Content-Type names (parameters and case ignored), or nullopt.
std::optional<image_format> format_of_media_type(std::string_view content_type) noexcept;

/// format=auto: the output format for a client whose Accept header is `accept` (empty: none
/// sent). AVIF when it names image/avif, else WebP when it names image/webp (either with q > 0;
/// `*/*` and `image/*` name neither); else PNG for an image with alpha, JPEG for one without —
/// the other when the client refuses that one (q=0, or a list without it).
image_format negotiate_format(std::string_view accept, bool alpha) noexcept;

/// What an image says of itself before it is decoded.
struct image_header {
  image_format format = image_format::jpeg;
  std::uint32_t width = 0;   ///< as stored, before any EXIF orientation
  std::uint32_t height = 0;
  std::uint32_t bands = 3;   ///< colour channels (+ alpha) the decoder produces
  bool whole_frame = false;  ///< the decoder holds the whole frame at once: progressive JPEG,
                             ///< interlaced PNG, GIF and WebP, rather than a few rows at a time
  std::uint64_t samples = 0; ///< samples in a frame: a JPEG's per its components' subsampling,
                             ///< else width × height × bands
  /// The EXIF orientation, 1..8 (5..8 swap the axes), as a JPEG's first Exif segment gives it (1
  /// without one); 0 when the reader does not look (the other formats).
  std::uint8_t orientation = 0;

  std::uint64_t pixels() const noexcept { return std::uint64_t{width} * height; }
};

/// Reads the format and the declared dimensions from the first bytes of `bytes` (a JPEG's
/// markers up to its frame header, a PNG's IHDR, a GIF's screen descriptor, a WebP's first
/// chunk). Cheap and bounded: it never decodes. Returns why not when the bytes are none of the
/// four formats, or are cut short or malformed before the dimensions.
std::variant<image_header, std::string> sniff_image(std::string_view bytes);

/// How the thumbnail fits the box `width` × `height`.
enum class image_fit {
  inside,  ///< keep the aspect ratio, as large as fits in the box
  cover,   ///< keep the aspect ratio, fill the box, crop the centre
  fill,    ///< stretch to the box exactly
  outside, ///< keep the aspect ratio, as small as covers the box (nothing cropped)
};

/// What fit=cover keeps when it crops (libvips's smartcrop).
enum class image_crop {
  centre,     ///< the middle
  attention,  ///< the region most likely to draw the eye: skin tones, saturation, edges
  entropy,    ///< the region with the most detail
};

/// What to make of an image.
struct thumbnail_spec {
  std::uint32_t width = 0;   ///< 0: follows from height and the aspect ratio
  std::uint32_t height = 0;  ///< 0: follows from width; at least one is set
  image_fit fit = image_fit::inside;
  image_format format = image_format::jpeg;  ///< output: jpeg, webp, png or avif
  std::uint32_t quality = 80;                ///< 1..100, for jpeg, webp and avif
  image_crop crop = image_crop::centre;      ///< for fit=cover
  bool enlarge = false;                      ///< false: an image smaller than the box keeps its size
  std::uint32_t effort = 4;                  ///< 0..9, the encoder's effort for avif (libvips's scale)
  bool keep_icc = false;                     ///< keep the ICC profile
  bool keep_copyright = false;               ///< keep EXIF's Copyright and Artist (nothing else of EXIF)
};

/// What /v1/image/info answers: what the decoder's header says, no pixel decoded.
struct image_info {
  image_format format = image_format::jpeg;
  std::uint32_t width = 0;         ///< as stored
  std::uint32_t height = 0;
  std::uint32_t orientation = 1;   ///< EXIF, 1..8
  bool alpha = false;
  std::uint32_t frames = 1;        ///< pages of an animated GIF or WebP
  bool frames_at_least = false;    ///< `frames` is where the loader stopped counting: there may be more
  std::string colour_space;        ///< libvips's interpretation: "srgb", "b-w", "cmyk", "rgb16", ...
  bool icc_profile = false;
};

/// What a thumbnail will cost and how it is made, known from the header before anything is
/// decoded: computed once, on the I/O thread, and handed to the worker with the job.
struct thumbnail_plan {
  std::uint32_t shrink_on_load = 1;  ///< the decoder's own downscale: JPEG 1, 2, 4 or 8 (what the worker
                                     ///< asks libjpeg for); WebP any (an estimate: libvips picks it)
  std::uint64_t loaded_pixels = 0;   ///< pixels the decoder produces
  std::uint64_t output_pixels = 0;   ///< the thumbnail's, at most (either orientation)
  double cost_units = 0;             ///< the image kind's cost unit: "pixel-equivalents"
  std::uint64_t memory_bytes = 0;    ///< working memory while it runs, the body not included
};

/// The plan for `spec` on an image with `header`. Exact for a JPEG, whose orientation the header
/// gives; for the others an estimate that takes the orientation costing more.
thumbnail_plan plan_thumbnail(const image_header& header, const thumbnail_spec& spec) noexcept;

/// An image a decoder refused (corrupt, truncated, not what its header said): a 400, not a 500.
class image_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// libvips lives in a module of its own, libcrunch_vips.so, which the first call that needs it
/// loads (make_thumbnail, synthetic_image, init_vips, libvips_version): a crunchd that has made
/// no thumbnail yet maps neither libvips nor the ~100 libraries it pulls in (30 MB resident).
/// The module is looked for in $CRUNCH_IMAGE_LIBRARY, beside the executable, under the install
/// tree's lib/crunch/ relative to it, and where this build made it.

/// The module's path, without loading it; throws std::runtime_error naming every place looked
/// in when it is in none (crunchd checks this at start: a missing module is a start-up error).
std::string find_image_library();
/// Whether this process has loaded the module yet.
bool image_library_loaded() noexcept;

/// Loads the module, then sets libvips up once for crunch: one thread per operation (the worker
/// pool decides parallelism), no operation cache (memory comes back after each job), untrusted
/// loaders and every loader but the four formats' blocked. Throws std::runtime_error if the
/// module cannot be loaded or libvips cannot start; the next call tries again.
void init_vips();

/// The libvips version, "8.14.1".
std::string libvips_version();

/// Makes the thumbnail of `bytes` — whose header `expected` describes, as sniff_image read it —
/// with EXIF orientation applied, converted to sRGB, metadata stripped. Returns the encoded
/// image, or nullopt when `stop` asked it to stop (checked while libvips evaluates). Throws
/// image_error when the image cannot be decoded, is cut short, or differs from `expected`, and
/// before decoding when it would cost far more than its pixels: a PNG with more than
/// max_png_text_bytes of text (drop_png_text first), a JPEG of more than max_jpeg_scans scans.
std::optional<std::string> make_thumbnail(std::string_view bytes, const image_header& expected,
                                          const thumbnail_spec& spec, const thumbnail_plan& plan,
                                          std::stop_token stop);
/// The same with plan_thumbnail(expected, spec): for tests and the benchmark.
std::optional<std::string> make_thumbnail(std::string_view bytes, const image_header& expected,
                                          const thumbnail_spec& spec, std::stop_token stop);

/// The header of `bytes` as libvips's loader reads it, without decoding pixels (a PNG's text
/// chunks are skipped: drop_png_text first). Throws image_error when the loader refuses it.
image_info read_image_info(std::string_view bytes);

/// A photo-like image (smooth colour gradients under fine noise) of `width` × `height` encoded as
/// `format`: for calibration, tests and benchmarks. `orientation` (1..8) is written as an EXIF
/// tag, for a JPEG only.
std::string synthetic_image(std::uint32_t width, std::uint32_t height, image_format format, int quality = 85,
                            int orientation = 1);

/// Most bytes of PNG text chunks (tEXt, zTXt, iTXt) make_thumbnail lets the decoder read: libpng
/// inflates zTXt and iTXt as it reads them, 1000-fold at worst.
inline constexpr std::size_t max_png_text_bytes = 4096;
/// Most scans of a progressive JPEG make_thumbnail decodes: each scan is a pass over the whole
/// image's coefficients, so a small file of many scans costs what a huge image would. Encoders
/// write about ten (libjpeg's default progression) and rarely more than a few tens.
inline constexpr std::size_t max_jpeg_scans = 128;

/// Where libvips's GIF loader stops counting frames: a GIF that says this many may have more
/// (image_info::frames_at_least).
inline constexpr std::uint32_t gif_frames_counted = 4097;

/// Bytes of text chunks in a PNG, their headers and CRCs included; 0 for anything else.
std::size_t png_text_bytes(std::string_view png);
/// Removes a PNG's text chunks in place — a thumbnail never carries them, and the decoder then
/// never inflates them. Leaves anything that is not a PNG as it is. Linear in the size.
void drop_png_text(std::string& png);
/// The scans (SOS markers) of a JPEG, counted without decoding. Linear in the size.
std::size_t jpeg_scans(std::string_view jpeg);

/// Frees what libvips keeps per thread: called by a worker after each image job. Nothing to do
/// (and nothing loaded) before the module is.
void release_vips_thread_buffers();

}  // namespace crunch
