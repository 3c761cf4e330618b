// The zstd kind's declaration: POST /v1/zstd/compress and /v1/zstd/decompress over zstd.cpp.
#include "zstd.hpp"

#include <crunch/isolation.hpp>
#include <crunch/kinds.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <memory>

namespace crunch {

namespace {

// What prices the jobs until the first one has measured this machine (zstd_calibrate on its
// worker): every level as dear as level 1, decompression a third of it. The first job's time is
// not learnt from; the measured weights replace these before the second is priced.
struct weights {
  std::array<std::atomic<double>, 23> level;
  std::atomic<double> decompress{0.3};
  weights() {
    for (auto& l : level) l.store(1.0, std::memory_order_relaxed);
  }
};

// The examples: a short text, the same as one frame (zstd -3, with a checksum), and a frame that
// declares 1 GiB in 17 bytes.
constexpr std::string_view paragraph =
    "crunch compresses and decompresses with zstd on its workers, while its one I/O thread keeps answering.";
constexpr char paragraph_frame[] =
    "\x28\xb5\x2f\xfd\x24\x66\x8d\x02\x00\x22\xc5\x10\x16\xa0\x27\x6d\x20\xf8\x72\x57\x8b\xfc\x74\xe2"
    "\x43\x42\x6a\x1f\xab\x8e\x2d\x22\x55\xb1\x06\x81\x82\x15\x7e\xb3\xf8\x8b\x67\x1c\x49\x4d\x10\x0c"
    "\x7c\xbb\x1b\x8a\xd6\x80\xc4\x17\xbc\x75\x6a\xd9\xce\xa3\x99\x30\x69\xed\xc7\x63\xc3\xf9\xcc\x63"
    "\x71\x38\x62\x22\x86\x40\x12\x03\x00\x9b\x10\x61\x9b\x37\x43\xc6\xc4\x03\x17\x0d\xcb\xa4";
constexpr char gigabyte_bomb[] = "\x28\xb5\x2f\xfd\xc0\x68\x00\x00\x00\x40\x00\x00\x00\x00\x01\x00\x00";

// A frame of `size` zero bytes in RLE blocks of 128 KiB (four bytes each) that declares its size,
// with an 8 MiB window: 24 MiB in 800 bytes, more work than a 1 ms deadline allows.
std::string zeros_frame(std::uint64_t size) {
  std::string f("\x28\xb5\x2f\xfd\xc0\x68", 6);  // magic; 8-byte content size; window 2^23
  for (int i = 0; i < 8; ++i) f += static_cast<char>((size >> (8 * i)) & 0xff);
  constexpr std::uint64_t block = 128 << 10;
  for (std::uint64_t left = size; left > 0;) {
    const auto n = std::min(left, block);
    left -= n;
    const std::uint32_t head = (left == 0 ? 1u : 0u) | (1u << 1) | static_cast<std::uint32_t>(n << 3);  // last, RLE, size
    f += static_cast<char>(head & 0xff);
    f += static_cast<char>((head >> 8) & 0xff);
    f += static_cast<char>((head >> 16) & 0xff);
    f += '\0';  // the byte repeated
  }
  return f;
}

// ---- what the zstd kind's helper processes run (include/crunch/isolation.hpp) ----
// Decompression parses strangers' frames with a C library, and compression feeds strangers'
// bytes to one: both run in a helper, where a fault in libzstd takes nothing else with it. The
// parameters are the job's numbers, as text.

std::optional<isolated_output> compress_in_helper(std::string_view params, std::string_view body, std::stop_token stop) {
  int level = 3, window_log = 23;
  if (std::sscanf(std::string(params).c_str(), "%d %d", &level, &window_log) != 2) throw std::invalid_argument(std::string(params));
  auto frame = zstd_compress(body, level, window_log, stop);
  if (!frame) return std::nullopt;
  return isolated_output{200, std::move(*frame)};
}

std::optional<isolated_output> decompress_in_helper(std::string_view params, std::string_view body, std::stop_token stop) {
  unsigned long long output = 0;
  int window_log = 23, declared = 0;
  if (std::sscanf(std::string(params).c_str(), "%llu %d %d", &output, &window_log, &declared) != 3) {
    throw std::invalid_argument(std::string(params));
  }
  auto result = zstd_decompress(body, output, window_log, stop);
  if (!result) return std::nullopt;
  if (auto* no = std::get_if<zstd_refusal>(&*result)) {
    if (!no->too_large) return isolated_output{400, error_body("invalid_zstd", no->why)};
    return isolated_output{400, error_body("output_too_large",
                                           no->why + (declared != 0 ? ", what the first frame declares" : ", this server's limit"))};
  }
  return isolated_output{200, std::get<std::string>(std::move(*result))};
}

kind_isolation zstd_isolation() {
  kind_isolation isolation;
  isolation.functions = {{"compress", compress_in_helper}, {"decompress", decompress_in_helper}};
  return isolation;
}

// Runs `function` in a helper, and answers its bytes as `media`, or the 400 it found.
std::optional<job_output> in_helper(std::string_view function, const std::string& params, const std::string& body,
                                    std::uint64_t memory, std::string_view media, std::stop_token stop) {
  auto out = run_isolated("zstd", function, params, body, {memory}, std::move(stop));
  if (!out) return std::nullopt;
  return job_output{std::move(out->body), out->status == 200 ? media : std::string_view("application/json"), out->status};
}

std::vector<kind_setting> zstd_settings() {
  return {
      {"zstd-max-level", "N", "highest compression level a request may ask for (default 19; 20..22 need far more memory)",
       19, 1, 22},
      {"zstd-max-window-log", "N",
       "largest window, 2^N bytes, to compress with or to decompress a frame that asks for (default 23: 8 MiB)", 23,
       10, 30},
      {"zstd-max-output-bytes", "SIZE", "most bytes a decompression may produce, declared or not; beyond: 400 (default 32MiB)",
       32ULL << 20, 1024, 1ULL << 36, true},
      {"zstd-max-input-bytes", "SIZE", "an upload to compress or decompress, at most; beyond: 413 (default 16MiB)",
       16ULL << 20, 1024, 1ULL << 32, true},
  };
}

// What every route of the kind is bounded by (its flags), and the weights its calibration measured.
struct zstd_limits {
  int max_level;
  int window_log;
  std::uint64_t max_output;
  std::size_t max_input;
  std::shared_ptr<weights> measured;
};

job_route compress_route(const zstd_limits& limits) {
  const auto max_level = limits.max_level;
  const auto window_log = limits.window_log;
  const auto measured = limits.measured;
  job_route compress;
  compress.name = "zstd_compress";
  compress.method = "POST";
  compress.path = "/v1/zstd/compress";
  compress.summary = "the body as one zstd frame (RFC 8878), at the level asked for";
  compress.description =
      "The frame declares its size and carries a checksum; its window is the level's, at most "
      "2^--zstd-max-window-log bytes. A deadline or a client that leaves stops the work between 256 KiB pieces.";
  compress.parameters = {{"level", parameter_source::query, parameter_type::integer, 1,
                          static_cast<std::uint64_t>(max_level), static_cast<std::uint64_t>(std::min(3, max_level)),
                          "compression level: 1 fastest, 19 smallest"}};
  compress.media_types = {"application/octet-stream", "text/plain", "application/json"};
  compress.max_body_bytes = limits.max_input;
  compress.working_memory_hint = zstd_compress_memory(1 << 20, 3, window_log);
  compress.answer = {"The frame.", nullptr, {"application/zstd"}};
  compress.examples = {
      {"a sentence", "/v1/zstd/compress", std::string(paragraph), 1, "text/plain"},
      {"4 MiB at level 19 in 1 ms", "/v1/zstd/compress?level=19&timeout_ms=1", zstd_sample(4096), 1024,
       "application/octet-stream", 504},
  };
  compress.prepare = [measured, window_log](const job_arguments& args,
                                            job_input& input) -> std::variant<prepared_job, invalid_argument> {
    const auto level = static_cast<int>(args.integer("level"));
    const auto bytes = input.body.size();
    const auto memory = zstd_compress_memory(bytes, level, window_log);
    auto run = [body = std::move(input.body), params = std::to_string(level) + " " + std::to_string(window_log),
                memory](std::stop_token stop) { return in_helper("compress", params, body, memory, "application/zstd", stop); };
    const double weight = measured->level[static_cast<std::size_t>(level)].load(std::memory_order_relaxed);
    return prepared_job{std::move(run), static_cast<double>(bytes) * weight, memory};
  };
  return compress;
}

// A decompression: the first frame's header is read here, on the I/O thread (a few bytes, never
// the frames themselves), and the job refused or priced from it.
std::variant<prepared_job, invalid_argument> prepare_decompress(const zstd_limits& limits, job_input& input) {
  auto read = zstd_read_header(input.body);
  if (auto* why = std::get_if<std::string>(&read)) return invalid_argument{*why, "invalid_zstd"};
  const auto header = std::get<zstd_header>(read);
  if (header.window_bytes > (std::uint64_t{1} << limits.window_log)) {
    return invalid_argument{"the frame needs a window of " + std::to_string(header.window_bytes) +
                                " bytes, above this server's 2^" + std::to_string(limits.window_log),
                            "invalid_zstd"};
  }
  if (header.content_size && *header.content_size > limits.max_output) {
    return invalid_argument{"the frame declares " + std::to_string(*header.content_size) +
                                " bytes, above this server's limit of " + std::to_string(limits.max_output),
                            "output_too_large"};
  }
  // The output may be what the first frame declares, or the limit when it declares nothing; that
  // much of the budget the job holds, and its decoder stops there: frames after the first must
  // fit in what it declared (the memory charged is never exceeded, and finding where the first
  // frame ends would mean walking its blocks here, on the I/O thread).
  const std::uint64_t output = header.content_size.value_or(limits.max_output);
  const bool declared = header.content_size.has_value();
  const auto memory = zstd_decompress_memory(output, header.window_bytes);
  auto run = [body = std::move(input.body),
              params = std::to_string(output) + " " + std::to_string(limits.window_log) + " " + (declared ? "1" : "0"),
              memory](std::stop_token stop) {
    return in_helper("decompress", params, body, memory, "application/octet-stream", stop);
  };
  const double weight = limits.measured->decompress.load(std::memory_order_relaxed);
  return prepared_job{std::move(run), static_cast<double>(output) * weight, memory};
}

job_route decompress_route(const zstd_limits& limits) {
  job_route decompress;
  decompress.name = "zstd_decompress";
  decompress.method = "POST";
  decompress.path = "/v1/zstd/decompress";
  decompress.summary = "the content of the zstd frames in the body";
  decompress.description =
      "Decompression bombs are refused twice: a frame that declares more than --zstd-max-output-bytes, or needs a "
      "window above 2^--zstd-max-window-log bytes, is a 400 from its header before any work; a frame that does not "
      "declare its size, or lies about it, is stopped with a 400 as soon as its output passes the limit. Several "
      "frames are decompressed one after the other; checksums are verified.";
  decompress.media_types = {"application/zstd", "application/octet-stream"};
  decompress.max_body_bytes = limits.max_input;
  decompress.working_memory_hint = zstd_decompress_memory(4 << 20, std::uint64_t{1} << limits.window_log);
  decompress.error_codes = {{"invalid_zstd", "the body is not whole zstd frames, or needs a window above the server's"},
                            {"output_too_large", "the frames hold, or declare, more than --zstd-max-output-bytes"}};
  decompress.answer = {"The content.", nullptr, {"application/octet-stream"}};
  decompress.examples = {
      {"a frame", "/v1/zstd/decompress", std::string(paragraph_frame, sizeof paragraph_frame - 1), 1,
       "application/zstd"},
      {"a frame that declares 1 GiB", "/v1/zstd/decompress", std::string(gigabyte_bomb, sizeof gigabyte_bomb - 1), 1,
       "application/zstd", 400},
      {"24 MiB of zeros in 1 ms", "/v1/zstd/decompress?timeout_ms=1", zeros_frame(24 << 20), 1, "application/zstd",
       504},
  };
  decompress.prepare = [limits](const job_arguments&, job_input& input) { return prepare_decompress(limits, input); };
  return decompress;
}

job_kind build_zstd(const config& cfg) {
  const zstd_limits limits{static_cast<int>(cfg.setting("zstd-max-level")),
                           static_cast<int>(cfg.setting("zstd-max-window-log")), cfg.setting("zstd-max-output-bytes"),
                           static_cast<std::size_t>(cfg.setting("zstd-max-input-bytes")), std::make_shared<weights>()};
  const auto max_level = limits.max_level;
  const auto measured = limits.measured;
  job_kind kind;
  kind.name = "zstd";
  kind.cost_unit = "level-1 bytes";
  kind.cost_model = "input bytes * the level's weight (compress); output bytes * decompression's weight";
  // 19 levels at start-up would cost a server that never compresses a tenth of a second: the
  // first job measures them instead.
  kind.calibrate_on_first_job = true;
  kind.calibrate = [measured, max_level] {
    const auto costs = zstd_calibrate(max_level);
    for (int l = 1; l <= max_level; ++l) {
      measured->level[static_cast<std::size_t>(l)].store(costs.level[l], std::memory_order_relaxed);
    }
    measured->decompress.store(costs.decompress, std::memory_order_relaxed);
    return costs.ns_per_byte;
  };
  kind.routes = {compress_route(limits), decompress_route(limits)};
  return kind;
}

}  // namespace

// No check of the configuration: whatever the memory budget, small jobs fit, and one that does
// not is a 400 of its own ("this job needs ... more than the server's budget").
kind_declaration zstd_kind() {
  kind_declaration kind{"zstd", zstd_settings(), {}, build_zstd};
  kind.isolation = zstd_isolation();
  return kind;
}

}  // namespace crunch
