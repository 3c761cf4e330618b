// The image kind's declaration: POST /v1/image/thumbnail over image.cpp.
#include "image.hpp"

#include <crunch/kinds.hpp>
#include <crunch/worker_pool.hpp>

#include <string>

namespace crunch {

namespace {

constexpr std::uint64_t max_side = 8192;

image_fit fit_of(std::string_view name) {
  if (name == "cover") return image_fit::cover;
  if (name == "fill") return image_fit::fill;
  return image_fit::inside;
}

invalid_argument bad_image(std::string message) { return {std::move(message), "invalid_image"}; }

std::vector<kind_setting> image_settings() {
  return {
      {"max-image-pixels", "N",
       "pixels an image may declare (width x height), read from its header before decoding; beyond: 400 "
       "(default 40000000)",
       40'000'000, 1, 1ULL << 32},
      {"max-image-bytes", "SIZE", "an image upload, at most; beyond: 413 (default 25MiB)", 25ULL << 20, 1024,
       1ULL << 40, true},
  };
}

job_kind build_image(const config& cfg) {
  // libvips is loaded by the first image job, on its worker; that it can be is checked now, so
  // that a crunchd installed without its image module does not start.
  find_image_library();
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
  thumbnail.parameters = {
      {"width", parameter_source::query, parameter_type::integer, 1, max_side, std::nullopt,
       "width of the box, in pixels; at least one of width and height", {}, true},
      {"height", parameter_source::query, parameter_type::integer, 1, max_side, std::nullopt,
       "height of the box, in pixels", {}, true},
      {"fit", parameter_source::query, parameter_type::string, 1, 6, std::nullopt,
       "inside (default): the whole image within the box; cover: fill the box, crop the centre; fill: stretch",
       {"inside", "cover", "fill"}, true},
      {"format", parameter_source::query, parameter_type::string, 1, 4, std::nullopt,
       "output format; default: the input's (png for a GIF)", {"jpeg", "webp", "png"}, true},
      {"quality", parameter_source::query, parameter_type::integer, 1, 100, 80, "for jpeg and webp"},
  };
  thumbnail.description =
      "The image's header is read before anything is decoded: its format must match the Content-Type, and more "
      "pixels than --max-image-pixels (default 40 megapixels) is a 400 at once. The thumbnail is made with "
      "libvips's shrink-on-load path, the EXIF orientation applied, converted to sRGB, every metadata block "
      "stripped (no EXIF, no GPS, no ICC profile leaves crunch). The body counts against the memory budget from "
      "its head: when the budget is taken by jobs and uploads in flight, the answer is a 503 with Retry-After "
      "before the body is read (a client that sent `Expect: 100-continue` is told before it sends). A deadline or "
      "a client that leaves stops the decode between strips.";
  thumbnail.error_codes = {{"invalid_image",
                            "the body is not an image of its Content-Type, is damaged, or declares more pixels than "
                            "--max-image-pixels"}};
  thumbnail.answer = {"The thumbnail, in the format asked for.", nullptr, {"image/jpeg", "image/webp", "image/png"}};
  // No examples here: its bodies are photos, which the contract test brings (scripts/contract_check.sh).
  thumbnail.prepare = [max_pixels, priority = cfg.priority](const job_arguments& args,
                                   job_input& input) -> std::variant<prepared_job, invalid_argument> {
    thumbnail_spec spec;
    if (args.has("width")) spec.width = static_cast<std::uint32_t>(args.integer("width"));
    if (args.has("height")) spec.height = static_cast<std::uint32_t>(args.integer("height"));
    if (spec.width == 0 && spec.height == 0) return invalid_argument{"give width, height or both: integers in 1..8192"};
    spec.fit = args.has("fit") ? fit_of(args.string("fit").view()) : image_fit::inside;
    spec.quality = static_cast<std::uint32_t>(args.integer("quality"));

    // The header, read here on the I/O thread: a few bytes (a JPEG's markers up to its frame
    // header), never a decoder. What it declares prices the job, and a bomb costs nothing.
    if (input.body.empty()) return bad_image("the body is empty: send the image's bytes");
    auto sniffed = sniff_image(input.body);
    if (auto* why = std::get_if<std::string>(&sniffed)) return bad_image(*why);
    const auto header = std::get<image_header>(sniffed);
    const auto declared = format_of_media_type(input.content_type);
    if (declared != header.format) {
      return bad_image("Content-Type says " + std::string(input.content_type) + " but the body is a " +
                       std::string(format_name(header.format)) + " image");
    }
    if (header.width == 0 || header.height == 0) return bad_image("the image declares no pixels");
    if (header.pixels() > max_pixels) {
      return bad_image("the image declares " + std::to_string(header.width) + "x" + std::to_string(header.height) +
                       " pixels, more than this server's limit of " + std::to_string(max_pixels));
    }
    if (args.has("format")) {
      const auto f = args.string("format").view();
      spec.format = f == "jpeg" ? image_format::jpeg : f == "webp" ? image_format::webp : image_format::png;
    } else {
      spec.format = header.format == image_format::gif ? image_format::png : header.format;
    }
    const auto plan = plan_thumbnail(header, spec);
    if (plan.output_pixels > max_pixels) {
      return invalid_argument{"the thumbnail would have " + std::to_string(plan.output_pixels) +
                              " pixels, more than this server's limit of " + std::to_string(max_pixels)};
    }

    auto run = [bytes = std::move(input.body), header, spec, plan, priority](std::stop_token stop) mutable -> std::optional<job_output> {
      struct release {
        worker_priority priority;
        ~release() {
          release_vips_thread_buffers();
          // libvips evaluates on threads of its own, started from this worker: they inherit its
          // class and nice value, not its short time slice, without which a woken I/O thread
          // waited up to 1.5 ms behind them (loop lag p99 under thumbnail load).
          apply_worker_priority_to_threads("libvips worker", priority);
        }
      } at_exit{priority};
      try {
        drop_png_text(bytes);  // in place, on the worker: the decoder never inflates them
        auto encoded = make_thumbnail(bytes, header, spec, plan, std::move(stop));
        if (!encoded) return std::nullopt;
        return job_output{std::move(*encoded), media_type(spec.format), 200};
      } catch (const image_error& e) {
        return job_output::refused("invalid_image", e.what());
      }
    };
    return prepared_job{std::move(run), plan.cost_units, plan.memory_bytes};
  };

  job_kind kind;
  kind.name = "image";
  kind.cost_unit = "pixel-equivalents";
  kind.cost_model = "input_pixels/4 + decoded_pixels + 8*output_pixels";
  kind.calibrate = [] {
    // The fastest of three thumbnails of a generated 800x600 JPEG to a 200 px wide WebP (~3 ms
    // each): enough to find the machine's speed; completed jobs refine it. On the first image
    // job's worker, once it has loaded libvips: at start it would keep 30 MB of libraries
    // mapped in a server that may never make a thumbnail.
    // Made once per process and never destroyed: a worker may calibrate while the process exits.
    static const auto& jpeg = *new std::string(synthetic_image(800, 600, image_format::jpeg));
    const auto header = std::get<image_header>(sniff_image(jpeg));
    thumbnail_spec spec;
    spec.width = 200;
    spec.format = image_format::webp;
    const double best = fastest_ns(3, [&] { (void)make_thumbnail(jpeg, header, spec, {}); });
    release_vips_thread_buffers();
    return best / plan_thumbnail(header, spec).cost_units;
  };
  kind.calibrate_on_first_job = true;
  kind.routes = {std::move(thumbnail)};
  return kind;
}

}  // namespace

kind_declaration image_kind() { return {"image", image_settings(), {}, build_image}; }

}  // namespace crunch
