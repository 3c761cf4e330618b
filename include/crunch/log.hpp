#pragma once
/// Lifecycle events as one JSON line each on stdout: {"time":...,"level":...,"event":...,...}.

#include <nlohmann/json.hpp>

#include <string_view>

namespace crunch {

/// Writes one event line; `fields` (an object) adds to it. Thread-safe: one write per line.
void log_event(std::string_view level, std::string_view event, const nlohmann::json& fields = nlohmann::json::object());

}  // namespace crunch
