#pragma once
// The image kind's libvips side, behind one table of functions. It is a module of its own,
// libcrunch_vips.so, loaded by the first image job on its worker (image.cpp): an idle
// crunchd then maps neither libvips nor the ~100 libraries Debian's build of it pulls in, which
// are 21 MB resident before a single call and 30 MB after VIPS_INIT. Private to crunch: both
// sides are built together by the same compiler, so the table passes C++ types and exceptions
// (image_error, std::runtime_error). Bump `abi` whenever the table changes.

#include "image.hpp"

namespace crunch::image_library {

inline constexpr int abi = 5;

/// What the module needs of crunch.
struct host {
  bool (*checkpoint)(const std::stop_token& stop);  ///< job_checkpoint: stop, or pause for the CPU pacer
  /// adopt_worker_priority_on_this_thread: libvips's own threads take the workers' priority (their
  /// short time slice too, which a new thread does not inherit) the first time they run crunch's code.
  void (*adopt_priority)() noexcept;
  /// For a call whose library starts threads of its own (libaom): keeps the calling thread, and
  /// the threads it starts meanwhile, on its CPU until release_cpu(); returns a token for that.
  void* (*confine_to_one_cpu)();
  void (*release_cpu)(void* token);
};

/// What the module offers: the libvips halves of image.hpp's functions, same contracts.
struct functions {
  int abi;
  void (*start)();  ///< VIPS_INIT and crunch's settings, once; throws std::runtime_error
  std::string (*version)();
  void (*release_thread_buffers)();
  /// make_thumbnail after the checks that need no decoder (image.cpp makes those first).
  std::optional<std::string> (*thumbnail)(std::string_view bytes, const image_header& expected,
                                          const thumbnail_spec& spec, const thumbnail_plan& plan,
                                          std::stop_token stop);
  std::string (*synthetic)(std::uint32_t width, std::uint32_t height, image_format format, int quality,
                           int orientation);
  image_info (*info)(std::string_view bytes);
};

/// The module's file name, and its one entry point's.
inline constexpr const char* file_name = "libcrunch_vips.so";
inline constexpr const char* entry_point = "crunch_image_library";
using entry_function = const functions* (*)(const host*);

}  // namespace crunch::image_library
