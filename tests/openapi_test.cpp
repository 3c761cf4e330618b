// The OpenAPI document and the registry say the same: every job route is in the document with its
// parameters and bounds, and every path in the document is a route that takes exactly the methods
// the document lists. (CI also lints the document and checks real answers against it:
// scripts/contract_check.sh.)
#include <crunch/kinds.hpp>
#include "server/openapi.hpp"
#include "server/router.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

namespace crunch {
namespace {

struct openapi_test : ::testing::Test {
  config cfg;
  job_registry jobs = default_jobs(cfg);
  router routes{jobs, server_view{[] { return false; }, [] { return std::string(); }, {}, [] { return std::string("{}"); }}, cfg};
  std::string served = std::get<reply>(routes.route({"GET", "/openapi.json", "", std::nullopt}).next).body;
  nlohmann::json doc = nlohmann::json::parse(served);

  // Follows a local $ref ("#/components/...").
  const nlohmann::json& resolve(const nlohmann::json& node) {
    if (!node.is_object() || !node.contains("$ref")) return node;
    const auto ref = node.at("$ref").get<std::string>();
    EXPECT_EQ(ref.rfind("#/", 0), 0u) << ref;
    return resolve(doc.at(nlohmann::json::json_pointer(ref.substr(1))));
  }
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

TEST_F(openapi_test, is_served_as_it_is_checked_in) {
  EXPECT_EQ(doc.at("openapi"), "3.1.0");
  const auto head = routes.route({"GET", "/openapi.json", "", std::nullopt});
  const auto& r = std::get<reply>(head.next);
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.route, "openapi");
  // api/openapi.json is the document of the built-in kinds at the defaults, for readers and
  // linters: a change to a kind's declaration must come with it.
  std::ifstream file(CRUNCH_OPENAPI_JSON);
  std::stringstream checked_in;
  checked_in << file.rdbuf();
  EXPECT_TRUE(r.body == checked_in.str()) << "api/openapi.json differs from the served document: "
                                             "./scripts/openapi.sh writes it again";
}

TEST_F(openapi_test, job_operations_come_from_their_declarations) {
  for (const auto& [name, kind] : jobs.kinds()) {
    for (const auto& route : kind.routes) {
      SCOPED_TRACE(route.name);
      const auto& op = doc.at("paths").at(route.path).at(lower(route.method));
      EXPECT_EQ(op.at("operationId"), operation_id(route.name));
      EXPECT_EQ(op.at("summary"), route.summary);
      EXPECT_EQ(op.at("responses").at("200").at("description"), route.answer.description);
      EXPECT_EQ(op.at("responses").contains("500"), route.may_fail);
      EXPECT_EQ(op.value("x-crunch-examples", nlohmann::json::array()).size(), route.examples.size());
      EXPECT_FALSE(route.answer.description.empty());
      EXPECT_EQ(route.answer.schema.is_null(), !route.answer.media_types.empty()) << "a JSON answer has a schema, a file answer media types";
    }
  }
  EXPECT_EQ(operation_id("work_echo"), "workEcho");
  EXPECT_EQ(operation_id("work"), "work");
}

TEST_F(openapi_test, every_job_route_is_described_with_its_parameters_and_bounds) {
  for (const auto& [name, kind] : jobs.kinds()) {
    for (const auto& route : kind.routes) {
      SCOPED_TRACE(route.name);
      ASSERT_TRUE(doc.at("paths").contains(route.path));
      const auto& op = doc.at("paths").at(route.path).at(lower(route.method));
      std::set<std::string> described;
      for (const auto& p : op.value("parameters", nlohmann::json::array())) described.insert(resolve(p).at("name"));
      EXPECT_TRUE(described.count("timeout_ms"));
      for (const auto& p : route.parameters) {
        SCOPED_TRACE(p.name);
        nlohmann::json schema;
        if (p.in == parameter_source::body) {
          EXPECT_EQ(route.json_body, true);
          const auto& body = resolve(op.at("requestBody").at("content").at("application/json").at("schema"));
          schema = body.at("properties").at(p.name);
          const auto required = body.value("required", nlohmann::json::array());
          EXPECT_EQ(std::find(required.begin(), required.end(), p.name) != required.end(), p.required());
          EXPECT_FALSE(body.value("additionalProperties", true));
        } else {
          const auto& params = op.at("parameters");
          const auto it = std::find_if(params.begin(), params.end(),
                                       [&](const nlohmann::json& x) { return resolve(x).at("name") == p.name; });
          ASSERT_NE(it, params.end());
          schema = resolve(*it).at("schema");
        }
        if (p.type == parameter_type::integer) {
          EXPECT_EQ(schema.at("type"), "integer");
          EXPECT_EQ(schema.at("minimum"), p.minimum);
          EXPECT_EQ(schema.at("maximum"), p.maximum);
          if (p.default_value) {
            EXPECT_EQ(schema.at("default"), *p.default_value);
          }
        } else {
          EXPECT_EQ(schema.at("type"), "string");
          EXPECT_EQ(schema.at("minLength"), p.minimum);
          EXPECT_EQ(schema.at("maxLength"), p.maximum);
          if (!p.one_of.empty()) {
            EXPECT_EQ(schema.at("enum"), p.one_of);
          }
        }
      }
      if (route.json_body || route.file_body()) {
        EXPECT_TRUE(op.at("responses").contains("415"));
      }
      for (const auto& type : route.media_types) {
        EXPECT_TRUE(op.at("requestBody").at("content").contains(type)) << type;
      }
    }
  }
}

TEST_F(openapi_test, every_path_is_a_route_that_takes_exactly_the_documented_methods) {
  const std::set<std::string> methods = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
  for (const auto& [path, item] : doc.at("paths").items()) {
    SCOPED_TRACE(path);
    std::string target = path;
    if (const auto brace = target.find('{'); brace != std::string::npos) {
      target = target.substr(0, brace) + "7" + target.substr(target.find('}', brace) + 1);
    }
    for (const auto& method : methods) {
      const auto head = routes.route({method, target, "application/json", std::nullopt});
      const bool documented = item.contains(lower(method));
      const auto* r = std::get_if<reply>(&head.next);
      const unsigned status = r ? r->status : 200;
      EXPECT_NE(status, 404u) << method;
      EXPECT_EQ(status != 405, documented) << method;
    }
  }
}

}  // namespace
}  // namespace crunch
