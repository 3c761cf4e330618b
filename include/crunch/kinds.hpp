#pragma once
/// The job kinds crunchd serves, each registered in a file of its own (server/*_kind.cpp) over a
/// pure function in workers/.

#include <crunch/config.hpp>
#include <crunch/jobs.hpp>

namespace crunch {

/// GET /fib/{n}: naive recursive Fibonacci; its cost is the number of calls, 2·F(n+1) − 1.
job_kind fib_kind();

/// POST /v1/password/hash and /verify: Argon2id through libsodium, within the bounds of `cfg`'s
/// password settings; its cost is m_cost_kib × t_cost.
job_kind password_kind(const config& cfg);

/// POST /v1/image/thumbnail: libvips thumbnails of JPEG, PNG, WebP and GIF bodies, within
/// `cfg`'s image limits; its cost is in pixel-equivalents, from the image's header.
job_kind image_kind(const config& cfg);

/// Every kind above, configured by `cfg`.
job_registry default_jobs(const config& cfg);

}  // namespace crunch
