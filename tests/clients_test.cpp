// Clients: API keys, and fair shares of the workers between flows, end to end.
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace crunch::testing {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

const std::string alice_key = "alice-0123456789abcdef";

std::string bearer(const std::string& key) { return "Authorization: Bearer " + key + "\r\n"; }

config with_keys(const temp_file& keys) {
  auto cfg = test_config(1);
  cfg.api_keys = keys.path();
  return cfg;
}

TEST(clients, with_api_keys_a_job_needs_a_valid_key_while_probes_stay_open) {
  temp_file keys("crunch-keys-", "alice:" + alice_key + "\n");
  running_server server(with_keys(keys));

  const auto missing = http_connection(server.port()).get("/work/1");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 401u);
  EXPECT_EQ(error_code_of(*missing), "unauthorized");
  EXPECT_EQ(missing->header("www-authenticate"), R"(Bearer realm="crunch")");

  const auto wrong = http_connection(server.port()).get("/work/1", bearer("alice-0123456789abcdeX"));
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401u);
  EXPECT_EQ(wrong->header("www-authenticate"), R"(Bearer realm="crunch", error="invalid_token")");
  const auto basic = http_connection(server.port()).get("/work/1", "Authorization: Basic YWxpY2U6\r\n");
  EXPECT_EQ(basic->status, 401u);

  http_connection c(server.port());
  const auto right = c.get("/work/2", bearer(alice_key));  // on a worker, and a flow
  ASSERT_TRUE(right);
  EXPECT_EQ(right->status, 200u) << right->body;
  EXPECT_EQ(c.get("/work/1", "authorization: bearer " + alice_key + "\r\n")->status, 200u);

  // Probes, scrapes and the live view's data are open unless --protect-metrics.
  for (const auto* open : {"/healthz", "/readyz", "/metrics", "/v1/stats", "/v1/kinds", "/openapi.json"}) {
    EXPECT_EQ(c.get(open)->status, 200u) << open;
  }
  // Who the clients are is not for anyone to read.
  EXPECT_EQ(http_connection(server.port()).get("/v1/flows")->status, 401u);
  const auto flows = c.get("/v1/flows", bearer(alice_key));
  ASSERT_EQ(flows->status, 200u);
  EXPECT_EQ(json_of(*flows).at("top")[0].at("flow"), "127.0.0.1");

  const auto metrics = c.get("/metrics")->body;
  EXPECT_NE(metrics.find("\ncrunch_auth_failures_total{reason=\"missing\"} 3\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\ncrunch_auth_failures_total{reason=\"invalid\"} 1\n"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find(alice_key), std::string::npos);
}

TEST(clients, a_request_without_a_key_is_refused_before_its_body_is_read_and_costs_no_worker) {
  temp_file keys("crunch-keys-", "alice:" + alice_key + "\n");
  auto probe = std::make_shared<job_probe>();
  running_server server(with_keys(keys), test_jobs(probe));
  // A body announced and never sent: the 401 comes from the head alone, and the connection closes.
  http_connection c(server.port(), 5s);
  c.send("POST /v1/work/echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n");
  const auto refused = c.read();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401u);
  EXPECT_FALSE(refused->keep_alive);
  EXPECT_TRUE(c.closed_by_peer());
  // Before the body's limits too: a client without a key learns nothing of the route.
  http_connection large(server.port(), 5s);
  large.send("POST /v1/work/echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 2000000\r\n\r\n");
  EXPECT_EQ(large.read()->status, 401u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(http_connection(server.port()).get("/work/50", bearer("not-a-key-of-anyone-at-all"))->status, 401u);
  }
  http_connection observer(server.port());
  const auto metrics = observer.get("/metrics")->body;
  EXPECT_EQ(probe->started(), 0);
  EXPECT_NE(metrics.find("\ncrunch_jobs_total{outcome=\"completed\"} 0\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\ncrunch_auth_failures_total{reason=\"invalid\"} 20\n"), std::string::npos) << metrics;
  // And a key lets the same job run.
  EXPECT_EQ(observer.get("/work/1", bearer(alice_key))->status, 200u);
  EXPECT_EQ(probe->started(), 1);
}

TEST(clients, protect_metrics_puts_the_scrape_and_the_live_views_data_behind_a_key) {
  temp_file keys("crunch-keys-", "prometheus:" + alice_key + "\n");
  auto cfg = with_keys(keys);
  cfg.protect_metrics = true;
  running_server server(cfg);
  for (const auto* guarded : {"/metrics", "/v1/stats", "/v1/events", "/v1/flows"}) {
    EXPECT_EQ(http_connection(server.port()).get(guarded)->status, 401u) << guarded;
  }
  http_connection c(server.port());
  for (const auto* open : {"/healthz", "/readyz", "/", "/v1/kinds"}) EXPECT_EQ(c.get(open)->status, 200u) << open;
  EXPECT_EQ(c.get("/metrics", bearer(alice_key))->status, 200u);
  EXPECT_EQ(c.get("/v1/stats", bearer(alice_key))->status, 200u);
}

TEST(clients, fair_key_key_makes_each_api_key_a_flow_by_its_name) {
  temp_file keys("crunch-keys-", "alice:" + alice_key + "\nbob:bob-0123456789abcdefgh\n");
  auto cfg = with_keys(keys);
  cfg.fair_key_ = fair_key::key;
  running_server server(cfg);
  http_connection c(server.port());
  EXPECT_EQ(c.get("/work/1", bearer(alice_key))->status, 200u);
  EXPECT_EQ(c.get("/work/1", bearer("bob-0123456789abcdefgh"))->status, 200u);
  const auto body = c.get("/v1/flows", bearer(alice_key))->body;
  const auto doc = nlohmann::json::parse(body);
  EXPECT_EQ(doc.at("tracked"), 2);
  std::vector<std::string> names;
  for (const auto& f : doc.at("top")) names.push_back(f.at("flow"));
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(body.find(alice_key), std::string::npos);
}

// One client floods with many connections, another sends one request at a time. The bound for
// the second: its job gets the next worker that frees — at most the remaining time of a running
// flood job (100 ms) — then runs for its own 20 ms. The rest (400 ms) is allowance for a loaded
// 2-core machine under the sanitizers. Without fair queuing (--fair-key none) it would wait for
// the whole queue of 8 × 100 ms over 2 workers, or be refused with 503 when the queue is full.
TEST(clients, a_flooding_client_cannot_starve_one_that_sends_a_request_at_a_time) {
  auto cfg = test_config(2);
  cfg.queue_limit = 8;
  cfg.fair_key_ = fair_key::header;
  cfg.fair_header = "X-Client-Id";
  auto probe = std::make_shared<job_probe>();
  running_server server(cfg, test_jobs(probe));
  const auto port = server.port();

  std::atomic<bool> done{false};
  std::atomic<int> flood_served{0};
  std::atomic<int> flood_refused{0};
  std::vector<std::thread> flood;
  for (int i = 0; i < 12; ++i) {
    flood.emplace_back([&] {
      while (!done) {
        http_connection c(port, 20s);
        while (!done) {
          const auto r = c.get("/work/100", "X-Client-Id: flood\r\n");
          if (!r) break;
          (r->status == 200 ? flood_served : flood_refused)++;
          if (!r->keep_alive) break;
        }
      }
    });
  }
  http_connection observer(port);
  EXPECT_TRUE(wait_for_metric(observer, "\ncrunch_job_queue_depth 8\n")) << "the flood never filled the queue";

  const auto bound = 100ms + 20ms + 400ms;
  http_connection polite(port);
  for (int i = 0; i < 5; ++i) {
    // Each time into a full queue, so that it gets in by pushing a flood's job out: a request that
    // came just as a flood's job left (a CI machine's load slows the flood's threads) would find
    // room and show nothing of fair queuing.
    ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_job_queue_depth 8\n")) << "the flood stopped filling the queue";
    const auto start = clock::now();
    const auto r = polite.get("/work/20", "X-Client-Id: polite\r\n");
    const auto took = clock::now() - start;
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200u) << r->body;
    EXPECT_LT(took, bound) << "request " << i << " took "
                           << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  }
  const auto metrics = observer.get("/metrics")->body;
  const auto flows = json_of(*observer.get("/v1/flows"));
  done = true;
  for (auto& t : flood) t.join();

  EXPECT_GT(flood_refused.load(), 0) << "the flood was not over capacity";
  EXPECT_GT(flood_served.load(), 0);
  EXPECT_EQ(metrics.find("\ncrunch_jobs_pushed_out_total 0\n"), std::string::npos) << metrics;
  EXPECT_EQ(flows.at("top")[0].at("flow"), "h:flood");
  EXPECT_GT(flows.at("top")[0].at("refused").get<int>(), 0);
}

}  // namespace
}  // namespace crunch::testing
