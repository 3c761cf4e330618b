// The image kind's declaration: POST /v1/image/thumbnail over image.cpp.
#include "image.hpp"

#include <crunch/isolation.hpp>
#include <crunch/kinds.hpp>

#include <cstring>
#include <string>
#include <type_traits>

namespace crunch {

namespace {

constexpr std::uint64_t max_side = 8192;

image_fit fit_of(std::string_view name) {
  if (name == "cover") return image_fit::cover;
  if (name == "fill") return image_fit::fill;
  if (name == "outside") return image_fit::outside;
  return image_fit::inside;
}

image_crop crop_of(std::string_view name) {
  if (name == "attention") return image_crop::attention;
  if (name == "entropy") return image_crop::entropy;
  return image_crop::centre;
}

image_format output_format_of(std::string_view name) {
  if (name == "webp") return image_format::webp;
  if (name == "png") return image_format::png;
  if (name == "avif") return image_format::avif;
  return image_format::jpeg;
}

invalid_argument bad_image(std::string message) { return {std::move(message), "invalid_image"}; }

// The header of a body, read here on the I/O thread: a few bytes (a JPEG's markers up to its
// frame header), never a decoder. Its format must be the one the Content-Type names.
std::variant<image_header, invalid_argument> header_of(const job_input& input) {
  if (input.body.empty()) return bad_image("the body is empty: send the image's bytes");
  auto sniffed = sniff_image(input.body);
  if (auto* why = std::get_if<std::string>(&sniffed)) return bad_image(*why);
  const auto header = std::get<image_header>(sniffed);
  if (format_of_media_type(input.content_type) != header.format) {
    return bad_image("Content-Type says " + std::string(input.content_type) + " but the body is a " +
                     std::string(format_name(header.format)) + " image");
  }
  return header;
}

// The examples' bodies: a 4x4 PNG with alpha (110 bytes), and a PNG of 65 bytes that declares
// 200000 x 50000 pixels (30 GB decoded). They make the contract test's and the fuzzer's calls.
const std::string tiny_png(
    "\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x04\x00\x00\x00\x04\x08\x06"
    "\x00\x00\x00\xa9\xf1\x9e\x7e\x00\x00\x00\x35\x49\x44\x41\x54\x78\xda\x15\xc8\x41\x01\xc0\x30\x00\x02\x31"
    "\x84\x21\x0c\x07\x95\xb3\x0f\x22\x70\x30\x39\xdb\x35\xcf\x68\xd2\x37\xeb\x5d\xf4\xac\x3a\x9a\x4c\x98\x30"
    "\xe1\x1b\x21\x42\x84\xc8\x8d\x12\x25\x4a\xf4\xfc\x70\xe8\x23\xf1\x42\xd3\xd7\x7d\x00\x00\x00\x00\x49\x45"
    "\x4e\x44\xae\x42\x60\x82",
    110);
const std::string bomb_png(
    "\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x03\x0d\x40\x00\x00\xc3\x50\x08\x02"
    "\x00\x00\x00\x67\x22\xfe\xf3\x00\x00\x00\x08\x49\x44\x41\x54\x78\x9c\x03\x00\x00\x00\x00\x01\x48\x06\x89"
    "\xd2\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82",
    65);

// ---- what the image kind's helper processes run (include/crunch/isolation.hpp) ----
// libvips and every codec it drives run there, never in crunchd: a thumbnail job on crunchd's
// worker hands the helper the body and a thumbnail_order, and gets the encoded image back.

// What a thumbnail job tells its helper: all of it worked out on the I/O thread, from the header.
struct thumbnail_order {
  image_header header;
  thumbnail_spec spec;
  thumbnail_plan plan;
};

// Every field of an order, in one list for both directions. It goes field by field, never as the
// structs' bytes: their padding holds whatever crunchd's memory held there before, which must not
// reach a helper (valgrind: "sendmsg points to uninitialised bytes").
template <typename Order, typename Visit>
void each_field(Order& o, Visit&& visit) {
  visit(o.header.format), visit(o.header.width), visit(o.header.height), visit(o.header.bands);
  visit(o.header.whole_frame), visit(o.header.samples), visit(o.header.orientation);
  visit(o.spec.width), visit(o.spec.height), visit(o.spec.fit), visit(o.spec.format), visit(o.spec.quality);
  visit(o.spec.crop), visit(o.spec.enlarge), visit(o.spec.effort), visit(o.spec.keep_icc), visit(o.spec.keep_copyright);
  visit(o.plan.shrink_on_load), visit(o.plan.loaded_pixels), visit(o.plan.output_pixels), visit(o.plan.cost_units);
  visit(o.plan.memory_bytes);
}

std::string encode(const thumbnail_order& order) {
  std::string bytes;
  each_field(order, [&](const auto& field) {
    static_assert(std::is_scalar_v<std::remove_cvref_t<decltype(field)>>);
    bytes.append(reinterpret_cast<const char*>(&field), sizeof field);
  });
  return bytes;
}

thumbnail_order decode(std::string_view params) {
  thumbnail_order order;
  each_field(order, [&](auto& field) {
    if (params.size() < sizeof field) throw std::invalid_argument("a thumbnail order cut short");
    std::memcpy(&field, params.data(), sizeof field);
    params.remove_prefix(sizeof field);
  });
  if (!params.empty()) throw std::invalid_argument("a thumbnail order too long");
  return order;
}

// The body as the decoder may see it: a PNG's text chunks dropped, in a copy (the body is
// shared memory, read only), so that the decoder never inflates them; anything else as it is.
std::string_view without_png_text(std::string_view body, std::string& copy) {
  if (png_text_bytes(body) == 0) return body;
  copy.assign(body);
  drop_png_text(copy);
  return copy;
}

std::optional<isolated_output> thumbnail_in_helper(std::string_view params, std::string_view body, std::stop_token stop) {
  const auto order = decode(params);
  struct release {
    ~release() { release_vips_thread_buffers(); }
  } at_exit;
  try {
    std::string copy;
    auto encoded = make_thumbnail(without_png_text(body, copy), order.header, order.spec, order.plan, std::move(stop));
    if (!encoded) return std::nullopt;
    return isolated_output{200, std::move(*encoded)};
  } catch (const image_error& e) {
    return isolated_output{400, error_body("invalid_image", e.what())};
  }
}

std::optional<isolated_output> info_in_helper(std::string_view, std::string_view body, std::stop_token) {
  struct release {
    ~release() { release_vips_thread_buffers(); }
  } at_exit;
  try {
    std::string copy;
    const auto i = read_image_info(without_png_text(body, copy));
    const nlohmann::json answer = {{"format", format_name(i.format)}, {"width", i.width},
                                   {"height", i.height},              {"orientation", i.orientation},
                                   {"alpha", i.alpha},                {"frames", i.frames},
                                   {"frames_at_least", i.frames_at_least},
                                   {"colour_space", i.colour_space},  {"icc_profile", i.icc_profile}};
    return isolated_output{200, answer.dump()};
  } catch (const image_error& e) {
    return isolated_output{400, error_body("invalid_image", e.what())};
  }
}

// The kind's rate on this machine, in ns a cost unit: the fastest of three thumbnails of a
// generated 800x600 JPEG to a 200 px wide WebP (~3 ms each), enough to find the machine's speed;
// completed jobs refine it.
std::optional<isolated_output> calibrate_in_helper(std::string_view, std::string_view, std::stop_token) {
  const auto jpeg = synthetic_image(800, 600, image_format::jpeg);
  const auto header = std::get<image_header>(sniff_image(jpeg));
  thumbnail_spec spec;
  spec.width = 200;
  spec.format = image_format::webp;
  const double best = fastest_ns(3, [&] { (void)make_thumbnail(jpeg, header, spec, {}); });
  release_vips_thread_buffers();
  return isolated_output{200, std::to_string(best / plan_thumbnail(header, spec).cost_units)};
}

kind_isolation image_isolation() {
  kind_isolation isolation;
  // libvips, its ~100 libraries and its loaders, before the sandbox closes: nothing is opened after.
  isolation.start = [] { init_vips(); };
  isolation.functions = {{"thumbnail", thumbnail_in_helper}, {"info", info_in_helper}, {"calibrate", calibrate_in_helper}};
  return isolation;
}

// A job's answer from its helper's: a thumbnail in `media_type`, or the 400 the helper found.
job_output answer_of(isolated_output out, std::string_view media) {
  if (out.status != 200) return job_output{std::move(out.body), "application/json", out.status};
  return job_output{std::move(out.body), media, 200};
}

std::vector<kind_setting> image_settings() {
  return {
      {"max-image-pixels", "N",
       "pixels an image may declare (width x height), read from its header before decoding; beyond: 400 "
       "(default 40000000)",
       40'000'000, 1, 1ULL << 32},
      {"max-image-bytes", "SIZE", "an image upload, at most; beyond: 413 (default 25MiB)", 25ULL << 20, 1024,
       1ULL << 40, true},
      {"max-image-effort", "N",
       "highest AVIF encoder effort a request may ask for, 0..9 (default 6; 9 takes ~10x 4's time for ~1 % smaller)",
       6, 0, 9},
  };
}

// The thumbnail route's parameters: a table.
std::vector<parameter> thumbnail_parameters(std::uint64_t max_effort) {
  return {
      {"width", parameter_source::query, parameter_type::integer, 1, max_side, std::nullopt,
       "width of the box, in pixels; at least one of width and height", {}, true},
      {"height", parameter_source::query, parameter_type::integer, 1, max_side, std::nullopt,
       "height of the box, in pixels", {}, true},
      {"fit", parameter_source::query, parameter_type::string, 1, 7, std::nullopt,
       "inside (default): the whole image within the box; cover: fill the box, crop the rest; fill: stretch; "
       "outside: as small as covers the box, nothing cropped",
       {"inside", "cover", "fill", "outside"}, true},
      {"crop", parameter_source::query, parameter_type::string, 1, 9, std::nullopt,
       "for fit=cover: what to keep; centre (default), attention (what draws the eye) or entropy (the most detail)",
       {"centre", "attention", "entropy"}, true},
      {"enlarge", parameter_source::query, parameter_type::string, 4, 5, std::nullopt,
       "false (default): an image smaller than the box keeps its size; true: it is scaled up",
       {"false", "true"}, true},
      {"format", parameter_source::query, parameter_type::string, 1, 4, std::nullopt,
       "output format; auto: from the Accept header (AVIF, then WebP, then JPEG, or PNG for an image with alpha; "
       "the answer carries Vary: Accept); default: the input's (png for a GIF)",
       {"jpeg", "webp", "png", "avif", "auto"}, true},
      {"quality", parameter_source::query, parameter_type::integer, 1, 100, std::nullopt,
       "for jpeg, webp and avif (default 80, and 50 for avif: the same look at AVIF's scale)", {}, true},
      {"effort", parameter_source::query, parameter_type::integer, 0, max_effort, 4,
       "AVIF encoder effort: higher is smaller and slower (up to --max-image-effort)"},
      {"keep", parameter_source::query, parameter_type::string, 3, 13, std::nullopt,
       "metadata to keep, all else stripped (GPS always): icc (the colour profile), copyright (EXIF's Copyright and "
       "Artist), or both",
       {"icc", "copyright", "icc,copyright", "copyright,icc"}, true},
  };
}

// What the query asks of the thumbnail, before the image is known (its format and quality wait
// for the header).
std::variant<thumbnail_spec, invalid_argument> spec_of(const job_arguments& args) {
  thumbnail_spec spec;
  if (args.has("width")) spec.width = static_cast<std::uint32_t>(args.integer("width"));
  if (args.has("height")) spec.height = static_cast<std::uint32_t>(args.integer("height"));
  if (spec.width == 0 && spec.height == 0) return invalid_argument{"give width, height or both: integers in 1..8192"};
  spec.fit = args.has("fit") ? fit_of(args.string("fit").view()) : image_fit::inside;
  if (args.has("crop")) {
    if (spec.fit != image_fit::cover || spec.width == 0 || spec.height == 0) {
      return invalid_argument{"crop is for fit=cover with both width and height"};
    }
    spec.crop = crop_of(args.string("crop").view());
  }
  spec.enlarge = args.has("enlarge") && args.string("enlarge").view() == "true";
  spec.effort = static_cast<std::uint32_t>(args.integer("effort"));
  if (args.has("keep")) {
    const auto keep = args.string("keep").view();
    spec.keep_icc = keep.find("icc") != std::string_view::npos;
    spec.keep_copyright = keep.find("copyright") != std::string_view::npos;
  }
  return spec;
}

// A thumbnail job: the header read and checked against the limits, the format settled, the
// work planned and priced.
std::variant<prepared_job, invalid_argument> prepare_thumbnail(std::uint64_t max_pixels, const job_arguments& args,
                                                               job_input& input) {
  auto asked = spec_of(args);
  if (auto* bad = std::get_if<invalid_argument>(&asked)) return *bad;
  auto spec = std::get<thumbnail_spec>(asked);
  // The header, read here on the I/O thread: a few bytes (a JPEG's markers up to its frame
  // header), never a decoder. What it declares prices the job, and a bomb costs nothing.
  auto sniffed = header_of(input);
  if (auto* bad = std::get_if<invalid_argument>(&sniffed)) return *bad;
  const auto header = std::get<image_header>(sniffed);
  if (header.width == 0 || header.height == 0) return bad_image("the image declares no pixels");
  if (header.pixels() > max_pixels) {
    return bad_image("the image declares " + std::to_string(header.width) + "x" + std::to_string(header.height) +
                     " pixels, more than this server's limit of " + std::to_string(max_pixels));
  }
  const bool negotiated = args.has("format") && args.string("format").view() == "auto";
  if (negotiated) {
    spec.format = negotiate_format(input.accept, header.bands == 2 || header.bands == 4);
  } else if (args.has("format")) {
    spec.format = output_format_of(args.string("format").view());
  } else {
    spec.format = header.format == image_format::gif ? image_format::png : header.format;
  }
  spec.quality = args.has("quality") ? static_cast<std::uint32_t>(args.integer("quality"))
                 : spec.format == image_format::avif ? 50
                                                     : 80;
  const auto plan = plan_thumbnail(header, spec);
  if (plan.output_pixels > max_pixels) {
    return invalid_argument{"the thumbnail would have " + std::to_string(plan.output_pixels) +
                            " pixels, more than this server's limit of " + std::to_string(max_pixels)};
  }

  auto run = [bytes = std::move(input.body), order = encode({header, spec, plan}), media = media_type(spec.format),
              negotiated, memory = plan.memory_bytes](std::stop_token stop) -> std::optional<job_output> {
    auto out = run_isolated("image", "thumbnail", order, bytes, {memory}, std::move(stop));
    if (!out) return std::nullopt;
    auto answer = answer_of(std::move(*out), media);
    if (negotiated && answer.status == 200) answer.headers.emplace_back("Vary", "Accept");  // one answer per Accept
    return answer;
  };
  return prepared_job{std::move(run), plan.cost_units, plan.memory_bytes};
}

// An info job: priced by its bytes (the loader reads the header, and walks a GIF's frames).
std::variant<prepared_job, invalid_argument> prepare_info(job_input& input) {
  auto sniffed = header_of(input);
  if (auto* bad = std::get_if<invalid_argument>(&sniffed)) return *bad;
  const auto header = std::get<image_header>(sniffed);
  // The loader reads the header, and walks a GIF's frames: linear in the bytes, never in the
  // pixels. A GIF's walk is the dear one: 4.5 MB of 1x1 frames took 0.4 s here (~9 units a byte).
  const double per_byte = header.format == image_format::gif ? 10.0 : 1.0 / 64;
  const double units = 1000.0 + static_cast<double>(input.body.size()) * per_byte;
  auto run = [bytes = std::move(input.body)](std::stop_token stop) -> std::optional<job_output> {
    auto out = run_isolated("image", "info", {}, bytes, {4u << 20}, std::move(stop));
    if (!out) return std::nullopt;
    return answer_of(std::move(*out), "application/json");
  };
  return prepared_job{std::move(run), units, 4u << 20};
}

job_route thumbnail_route(const config& cfg) {
  const std::uint64_t max_pixels = cfg.setting("max-image-pixels");
  job_route thumbnail;
  thumbnail.name = "image_thumbnail";
  thumbnail.method = "POST";
  thumbnail.path = "/v1/image/thumbnail";
  thumbnail.summary =
      "a thumbnail of the image in the body (JPEG, PNG, WebP or GIF): EXIF orientation applied, sRGB, "
      "metadata stripped";
  thumbnail.media_types = {"image/jpeg", "image/png", "image/webp", "image/gif"};
  thumbnail.max_body_bytes = static_cast<std::size_t>(cfg.setting("max-image-bytes"));
  // A 12-megapixel photo to a 400 px thumbnail plans ~8.6 MB (plan_thumbnail), with room to spare.
  thumbnail.working_memory_hint = 12u << 20;
  thumbnail.parameters = thumbnail_parameters(cfg.setting("max-image-effort"));
  thumbnail.description =
      "The image's header is read before anything is decoded: its format must match the Content-Type, and more "
      "pixels than --max-image-pixels (default 40 megapixels) is a 400 at once. The thumbnail is made with "
      "libvips's shrink-on-load path, the EXIF orientation applied, converted to sRGB, every metadata block "
      "stripped (no EXIF, no GPS, no ICC profile leaves crunch). The body counts against the memory budget from "
      "its head: when the budget is taken by jobs and uploads in flight, the answer is a 503 with Retry-After "
      "before the body is read (a client that sent `Expect: 100-continue` is told before it sends). Every decoder "
      "and encoder runs in a sandboxed helper process: a deadline or a client that leaves stops the job between "
      "strips, or kills its helper 50 ms later (an AVIF encode), and a helper that dies fails this job alone with "
      "a 502.";
  thumbnail.error_codes = {{"invalid_image",
                            "the body is not an image of its Content-Type, is damaged, or declares more pixels than "
                            "--max-image-pixels"}};
  thumbnail.answer = {"The thumbnail, in the format asked for.",
                      nullptr,
                      {"image/jpeg", "image/webp", "image/png", "image/avif"},
                      {{"Vary", "Accept, when format=auto chose the format from it"}}};
  thumbnail.request_headers = {{"Accept", "with format=auto, the formats the client takes: image/avif, then "
                                          "image/webp, then JPEG (PNG for an image with alpha)"}};
  // Photos are the contract test's own (scripts/contract_check.sh); these tiny ones put every
  // parameter in the contract test's calls and the fuzzer's seeds.
  thumbnail.examples = {
      {"a 4x4 PNG with alpha to AVIF", "/v1/image/thumbnail?width=2&format=avif&effort=0", tiny_png, 1, "image/png"},
      {"a smart crop, enlarged, with its colour profile kept",
       "/v1/image/thumbnail?width=8&height=6&fit=cover&crop=attention&enlarge=true&keep=icc,copyright&quality=70",
       tiny_png, 1, "image/png"},
      {"as small as covers the box, in the format the client's Accept prefers",
       "/v1/image/thumbnail?width=3&height=1&fit=outside&format=auto", tiny_png, 1, "image/png"},
      {"a pixel bomb, refused from its header", "/v1/image/thumbnail?width=100", bomb_png, 1, "image/png", 400}};
  thumbnail.prepare = [max_pixels](const job_arguments& args, job_input& input) {
    return prepare_thumbnail(max_pixels, args, input);
  };
  return thumbnail;
}

job_route info_route(const job_route& thumbnail) {
  job_route info;
  info.name = "image_info";
  info.method = "POST";
  info.path = "/v1/image/info";
  info.summary = "what the image in the body says of itself, read from its header: no pixel is decoded";
  info.description =
      "Width and height as stored, the EXIF orientation (5..8 show it turned a quarter), alpha, the number of "
      "frames (an animated GIF or WebP; for a GIF of 4,097 frames or more, a lower bound, and frames_at_least says "
      "so), libvips's colour space and whether an ICC profile is embedded. Only the "
      "header is read (a GIF's frames are walked, not decoded), so it answers for an image far over "
      "--max-image-pixels — a pixel bomb's claim is reported, not refused. The body is refused like a thumbnail's: "
      "over --max-image-bytes, not an image of its Content-Type, or damaged before its header ends.";
  info.media_types = thumbnail.media_types;
  info.max_body_bytes = thumbnail.max_body_bytes;
  info.working_memory_hint = 4u << 20;
  info.error_codes = {{"invalid_image", "the body is not an image of its Content-Type, or its header is damaged"}};
  info.answer = {"The header's facts.",
                 {{"type", "object"},
                  {"additionalProperties", false},
                  {"required", {"format", "width", "height", "orientation", "alpha", "frames", "frames_at_least",
                                "colour_space", "icc_profile"}},
                  {"properties",
                   {{"format", {{"type", "string"}, {"enum", {"jpeg", "png", "webp", "gif"}}}},
                    {"width", {{"type", "integer"}, {"minimum", 1}}},
                    {"height", {{"type", "integer"}, {"minimum", 1}}},
                    {"orientation", {{"type", "integer"}, {"minimum", 1}, {"maximum", 8}}},
                    {"alpha", {{"type", "boolean"}}},
                    {"frames", {{"type", "integer"}, {"minimum", 1}}},
                    {"frames_at_least",
                     {{"type", "boolean"},
                      {"description",
                       "true when frames is where the loader stopped counting (a GIF's walk stops at 4,097 frames): "
                       "the image has at least that many"}}},
                    {"colour_space", {{"type", "string"}}},
                    {"icc_profile", {{"type", "boolean"}}}}}}};
  info.examples = {{"a 4x4 PNG with alpha", "/v1/image/info", tiny_png, 1, "image/png"},
                   {"a 30 GB pixel bomb's claim, read without decoding", "/v1/image/info", bomb_png, 1, "image/png"}};
  info.prepare = [](const job_arguments&, job_input& input) { return prepare_info(input); };
  return info;
}

job_kind build_image(const config& cfg) {
  // libvips is loaded by the first image job, on its worker; that it can be is checked now, so
  // that a crunchd installed without its image module does not start.
  find_image_library();
  auto thumbnail = thumbnail_route(cfg);
  auto info = info_route(thumbnail);

  job_kind kind;
  kind.name = "image";
  kind.cost_unit = "pixel-equivalents";
  kind.cost_model = "input_pixels/4 + decoded_pixels + w*output_pixels; w = 8 for JPEG, WebP and PNG, and for AVIF a measured table by effort and output size (11 to 440)";
  // On the first image job's worker, in its helper, once it has loaded libvips: at start it
  // would start a helper in a server that may never make a thumbnail.
  kind.calibrate = [] {
    const auto out = run_isolated("image", "calibrate", {}, {}, {64u << 20}, {});
    return out ? std::stod(out->body) : 0.0;
  };
  kind.calibrate_on_first_job = true;
  kind.routes = {std::move(thumbnail), std::move(info)};
  return kind;
}

}  // namespace

kind_declaration image_kind() {
  kind_declaration kind{"image", image_settings(), {}, build_image};
  kind.isolation = image_isolation();
  return kind;
}

}  // namespace crunch
