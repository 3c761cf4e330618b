#include "server/openapi.hpp"

#include "server/embedded.hpp"

#include <sodium.h>

#include <algorithm>

namespace crunch {

namespace {

using document = nlohmann::ordered_json;

document response_ref(std::string_view name) { return {{"$ref", "#/components/responses/" + std::string(name)}}; }

document schema_of(const parameter& p) {
  document s;
  if (p.type == parameter_type::integer) {
    s = {{"type", "integer"}, {"minimum", p.minimum}, {"maximum", p.maximum}};
  } else {
    s = {{"type", "string"}, {"minLength", p.minimum}, {"maxLength", p.maximum}};
    if (!p.one_of.empty()) s["enum"] = p.one_of;
  }
  if (p.default_value) s["default"] = *p.default_value;
  return s;
}

// An example body goes in the document as text when it is printable ASCII (JSON, most text), as
// base64 otherwise (a compressed frame, an image).
document example_of(const route_example& e) {
  document x = {{"name", e.name}, {"target", e.target}};
  if (!e.body.empty()) {
    const bool text = std::all_of(e.body.begin(), e.body.end(), [](char c) {
      return (c >= 0x20 && c < 0x7f) || c == '\n' || c == '\t';
    });
    if (text) {
      x["body"] = e.body;
    } else {
      std::string encoded(sodium_base64_ENCODED_LEN(e.body.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
      sodium_bin2base64(encoded.data(), encoded.size(), reinterpret_cast<const unsigned char*>(e.body.data()),
                        e.body.size(), sodium_base64_VARIANT_ORIGINAL);
      encoded.resize(encoded.size() - 1);  // its terminating NUL
      x["body_base64"] = std::move(encoded);
    }
    if (e.repeat != 1) x["repeat"] = e.repeat;
    if (!e.content_type.empty()) x["content_type"] = e.content_type;
  }
  x["status"] = e.status;
  return x;
}

// A route's 400: the shared one, or, for a route with codes of its own, the same with them added.
document bad_request(const job_route& r, const document& base) {
  if (r.error_codes.empty()) return response_ref("BadRequest");
  auto response = base.at("components").at("responses").at("BadRequest");
  auto codes = base.at("components").at("schemas").at("Error400").at("properties").at("error").at("properties").at(
      "code").at("enum");
  std::string description = response.at("description").get<std::string>();
  for (const auto& [code, meaning] : r.error_codes) {
    codes.push_back(code);
    description += " `" + code + "`: " + meaning + ".";
  }
  response["description"] = description;
  response["content"]["application/json"]["schema"] = {
      {"$ref", "#/components/schemas/Error"},
      {"properties", {{"error", {{"properties", {{"code", {{"enum", std::move(codes)}}}}}}}}}};
  return response;
}

// A route's parameters other than its body's: path, query, the headers it reads, and the ones
// every job route takes.
document request_parameters(const job_route& r) {
  document parameters = document::array();
  for (const auto& p : r.parameters) {
    if (p.in == parameter_source::body) continue;
    parameters.push_back({{"name", p.name},
                          {"in", p.in == parameter_source::path ? "path" : "query"},
                          {"required", p.in == parameter_source::path || p.required()},
                          {"description", p.description},
                          {"schema", schema_of(p)}});
  }
  for (const auto& [name, description] : r.request_headers) {
    parameters.push_back({{"name", name}, {"in", "header"}, {"required", false}, {"description", description},
                          {"schema", {{"type", "string"}}}});
  }
  for (const auto* shared : {"TimeoutMs", "Prefer", "IdempotencyKey", "CallbackUrl"}) {
    parameters.push_back({{"$ref", std::string("#/components/parameters/") + shared}});
  }
  return parameters;
}

// A JSON body's object schema from the body parameters, or a file body's media types; null when
// the route takes no body.
document request_body(const job_route& r) {
  if (r.json_body) {
    document properties = document::object();
    document required = document::array();
    for (const auto& p : r.parameters) {
      if (p.in != parameter_source::body) continue;
      auto s = schema_of(p);
      s["description"] = p.description;
      properties[p.name] = std::move(s);
      if (p.required()) required.push_back(p.name);
    }
    document schema = {{"type", "object"}, {"additionalProperties", false}};
    if (!required.empty()) schema["required"] = std::move(required);
    schema["properties"] = std::move(properties);
    return {{"required", true}, {"content", {{"application/json", {{"schema", std::move(schema)}}}}}};
  }
  if (!r.file_body()) return nullptr;
  document content = document::object();
  for (const auto& t : r.media_types) content[t] = {{"schema", {{"type", "string"}, {"contentMediaType", t}}}};
  return {{"required", true}, {"content", std::move(content)}};
}

// The 200: the answer's content and the headers it carries.
document success(const job_route& r) {
  document content = document::object();
  if (r.answer.media_types.empty()) {
    content["application/json"] = {{"schema", r.answer.schema}};
  } else {
    for (const auto& t : r.answer.media_types) content[t] = {{"schema", {{"type", "string"}, {"contentMediaType", t}}}};
  }
  document headers = {{"X-Request-Id", {{"$ref", "#/components/headers/X-Request-Id"}}},
                      {"Server-Timing", {{"$ref", "#/components/headers/Server-Timing"}}}};
  std::string vary = "Always names Prefer: the same request may be answered asynchronously (202).";
  for (const auto& [name, description] : r.answer.headers) {
    if (name == "Vary") {
      vary += " " + description;
    } else {
      headers[name] = {{"description", description}, {"schema", {{"type", "string"}}}};
    }
  }
  headers["Vary"] = {{"description", vary}, {"required", true}, {"schema", {{"type", "string"}, {"pattern", "Prefer"}}}};
  headers["Idempotent-Replayed"] = {
      {"description", "true: the stored answer of an earlier request with the same Idempotency-Key"},
      {"schema", {{"const", "true"}}}};
  return {{"description", r.answer.description}, {"headers", std::move(headers)}, {"content", std::move(content)}};
}

document operation(const job_route& r, bool isolated, const document& base) {
  document op = {{"operationId", operation_id(r.name)},
                 {"security", document::array({document::object(), {{"apiKey", document::array()}}})},
                 {"summary", r.summary}};
  if (!r.description.empty()) op["description"] = r.description;
  op["parameters"] = request_parameters(r);
  if (auto body = request_body(r); !body.is_null()) op["requestBody"] = std::move(body);

  document responses = {
      {"200", success(r)},
      {"202", response_ref("JobAccepted")},
      {"400", bad_request(r, base)},
      {"401", response_ref("Unauthorized")},
      {"409", response_ref("IdempotencyKeyInUse")},
      {"413", response_ref("PayloadTooLarge")},
  };
  if (r.json_body || r.file_body()) responses["415"] = response_ref("UnsupportedMediaType");
  responses["417"] = response_ref("ExpectationFailed");
  responses["422"] = response_ref("IdempotencyKeyReused");
  responses["431"] = response_ref("HeadersTooLarge");
  if (r.may_fail) responses["500"] = response_ref("JobFailed");
  if (isolated) responses["502"] = response_ref("HelperFailed");
  responses["503"] = response_ref("Unavailable");
  responses["504"] = response_ref("DeadlineExceeded");
  op["responses"] = std::move(responses);

  if (!r.examples.empty()) {
    document examples = document::array();
    for (const auto& e : r.examples) examples.push_back(example_of(e));
    op["x-crunch-examples"] = std::move(examples);
  }
  return op;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

std::string operation_id(std::string_view route_name) {
  std::string id;
  bool upper = false;
  for (const char c : route_name) {
    if (c == '_') {
      upper = true;
      continue;
    }
    id += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    upper = false;
  }
  return id;
}

std::string openapi_document(const job_registry& jobs) {
  auto doc = document::parse(openapi_base);
  auto& paths = doc["paths"];
  for (const auto& [name, kind] : jobs.kinds()) {
    for (const auto& r : kind.routes) paths[r.path][lower(r.method)] = operation(r, kind.isolated, doc);
  }
  return doc.dump(2) + "\n";
}

}  // namespace crunch
