#pragma once
/// The OpenAPI 3.1 document crunchd serves at GET /openapi.json: api/openapi-base.json (what every
/// crunch server answers, built into crunchd) with one operation for each route of each job kind,
/// generated from the route's declaration (jobs.hpp): its parameters and their bounds, its body,
/// its answer, the errors every job route can meet, and its examples (x-crunch-examples).
/// api/openapi.json is this document for the built-in kinds with the default configuration;
/// tests/openapi_test.cpp fails when the two differ, and `crunchd --openapi` regenerates it.

#include <crunch/jobs.hpp>

#include <string>

namespace crunch {

/// The document for `jobs`, as JSON text (two-space indent, a newline at the end).
std::string openapi_document(const job_registry& jobs);

/// A route's operationId: its name in lower camel case ("password_hash" -> "passwordHash").
std::string operation_id(std::string_view route_name);

}  // namespace crunch
