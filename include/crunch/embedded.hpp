#pragma once
/// Files built into crunchd, so that it serves them with nothing beside it (cmake/embed.cmake).

#include <string_view>

namespace crunch {

/// api/openapi.json: the OpenAPI 3.1 description of every route, served at GET /openapi.json.
extern const std::string_view openapi_document;

}  // namespace crunch
