#pragma once
/// `crunchd --probe`: a health check for images with no shell or curl in them. Asks the crunchd
/// listening on the configured port for /readyz and reports the answer as an exit code.

#include <crunch/config.hpp>

#include <chrono>
#include <string>

namespace crunch {

/// What a probe found.
struct probe_result {
  bool ok = false;       ///< the answer was 200
  std::string summary;   ///< one line: the status line, or what went wrong
};

/// GET `path` from the server `cfg` describes (its address, or loopback when it listens on all
/// addresses), within `timeout`; plain sockets, one request, connection closed after it.
probe_result probe(const config& cfg, const std::string& path = "/readyz",
                   std::chrono::milliseconds timeout = std::chrono::seconds(2));

}  // namespace crunch
