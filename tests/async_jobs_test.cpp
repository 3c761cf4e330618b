// Asynchronous jobs (Prefer: respond-async), their status, result and cancellation, and
// idempotency keys: the memory store, through the real server.
#include "server/async_jobs.hpp"
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>

namespace crunch::testing {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

const std::string respond_async = "Prefer: respond-async\r\n";

std::string id_of(const http_reply& r) { return json_of(r).at("id").get<std::string>(); }

// Asks for job `id`'s status until it has ended, each time waiting up to 10 s for it to end
// (Prefer: wait=10, a long poll), `attempts` times. The last status document, or null.
nlohmann::json wait_ended(http_connection& c, const std::string& id, const std::string& extra = {},
                          int attempts = 6) {
  for (int i = 0; i < attempts; ++i) {
    const auto r = c.get("/v1/jobs/" + id, "Prefer: wait=10\r\n" + extra);
    if (!r || r->status != 200) return nullptr;
    auto doc = json_of(*r);
    if (doc.at("status") != "queued" && doc.at("status") != "running") return doc;
  }
  return nullptr;
}

std::optional<http_reply> send_example(http_connection& c, const job_route& route, const route_example& ex,
                                       const std::string& extra) {
  if (route.method == "GET") return c.get(ex.target, extra);
  std::string body;
  for (std::size_t i = 0; i < ex.repeat; ++i) body += ex.body;
  const auto type = ex.content_type.empty() ? std::string("application/json") : ex.content_type;
  return c.post(ex.target, type, body, extra);
}

TEST(async_jobs, prefer_is_parsed_as_rfc_7240_writes_it) {
  auto p = parse_prefer({"respond-async, wait=10"});
  EXPECT_TRUE(p.respond_async);
  ASSERT_TRUE(p.wait);
  EXPECT_EQ(p.wait->count(), 10);
  p = parse_prefer({"handling=lenient", " RESPOND-ASYNC ;foo=bar", "wait=\"3\"", "wait=9"});
  EXPECT_TRUE(p.respond_async);
  EXPECT_EQ(p.wait->count(), 3);  // the first wait counts
  p = parse_prefer({"respond-async=no", "wait=-1", "wait=1e3", "wait="});
  EXPECT_FALSE(p.respond_async);
  EXPECT_FALSE(p.wait);
  EXPECT_FALSE(parse_prefer({""}).respond_async);
}

TEST(async_jobs, idempotency_keys_are_strings_of_printable_ascii) {
  EXPECT_EQ(parse_idempotency_key("\"8e03978e-40d5-43e8-bc93-6894a57f9324\""), "8e03978e-40d5-43e8-bc93-6894a57f9324");
  EXPECT_EQ(parse_idempotency_key("plain-token"), "plain-token");
  EXPECT_FALSE(parse_idempotency_key(""));
  EXPECT_FALSE(parse_idempotency_key("\"\""));
  EXPECT_FALSE(parse_idempotency_key("has space"));
  EXPECT_FALSE(parse_idempotency_key("\"esc\\\"aped\""));
  EXPECT_FALSE(parse_idempotency_key(std::string(256, 'k')));
  EXPECT_TRUE(parse_idempotency_key(std::string(255, 'k')));
}

TEST(async_jobs, every_kinds_asynchronous_result_is_its_synchronous_answer) {
  auto cfg = test_config(2);
  cfg.max_body_bytes = 1 << 20;
  running_server s(cfg);
  http_connection c(s.port(), 60s);
  int compared = 0;
  const auto registry = default_jobs(cfg);
  for (const auto& [name, kind] : registry.kinds()) {
    for (const auto& route : kind.routes) {
      for (const auto& ex : route.examples) {
        if (ex.status != 200) continue;
        SCOPED_TRACE(route.name + " " + ex.name);
        const auto sync = send_example(c, route, ex, {});
        const auto again = send_example(c, route, ex, {});
        const auto accepted = send_example(c, route, ex, respond_async);
        ASSERT_TRUE(sync && again && accepted);
        ASSERT_EQ(sync->status, 200u) << sync->body;
        ASSERT_EQ(accepted->status, 202u) << accepted->body;
        EXPECT_EQ(accepted->header("preference-applied"), "respond-async");
        EXPECT_NE(accepted->header("vary").find("Prefer"), std::string::npos);
        const auto id = id_of(*accepted);
        EXPECT_EQ(accepted->header("location"), "/v1/jobs/" + id);
        EXPECT_EQ(id.size(), 22u);  // 128 random bits, base64url
        const auto status = wait_ended(c, id);
        ASSERT_FALSE(status.is_null());
        EXPECT_EQ(status.at("status"), "succeeded") << status.dump();
        const auto result = c.get("/v1/jobs/" + id + "/result");
        ASSERT_TRUE(result);
        EXPECT_EQ(result->status, 200u);
        EXPECT_EQ(result->header("content-type"), sync->header("content-type"));
        if (sync->body == again->body) {
          EXPECT_EQ(result->body, sync->body);  // a deterministic job: the same bytes
        } else {
          // A salted hash: the same shape, not the same bytes.
          EXPECT_EQ(json_of(*result).size(), json_of(*sync).size()) << result->body;
        }
        ++compared;
      }
    }
  }
  EXPECT_GE(compared, 4);
}

TEST(async_jobs, wait_answers_a_short_job_as_the_synchronous_request_would) {
  running_server s(test_config(1));
  http_connection c(s.port());
  const auto r = c.get("/work/1", "Prefer: respond-async, wait=30\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(json_of(*r).at("ms"), 1);
  EXPECT_NE(r->header("vary").find("Prefer"), std::string::npos);
}

TEST(async_jobs, wait_that_runs_out_answers_202) {
  auto probe = std::make_shared<job_probe>();
  auto cfg = test_config(1);
  cfg.drain_timeout = 100ms;
  running_server s(cfg, test_jobs(probe));
  http_connection c(s.port());
  const auto start = clock::now();
  const auto r = c.get("/opaque/20000", "Prefer: respond-async, wait=1\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202u);
  EXPECT_GE(clock::now() - start, 1s);
  EXPECT_EQ(json_of(*r).at("status"), "running");
  EXPECT_FALSE(r->header("retry-after").empty());
}

std::optional<http_reply> delete_job(http_connection& c, const std::string& id, const std::string& extra = {}) {
  c.send("DELETE /v1/jobs/" + id + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n");
  return c.read();
}

TEST(async_jobs, delete_stops_a_running_job_within_100_ms_and_frees_its_worker) {
  auto probe = std::make_shared<job_probe>();
  running_server s(test_config(1), test_jobs(probe));
  http_connection c(s.port());
  http_connection observer(s.port());
  const auto accepted = c.get("/opaque/60000", respond_async);
  ASSERT_TRUE(accepted);
  ASSERT_EQ(accepted->status, 202u);
  const auto id = id_of(*accepted);
  ASSERT_TRUE(probe->wait_started(1));
  ASSERT_TRUE(workers_busy_within(observer, 1));
  const auto start = clock::now();
  const auto deleted = delete_job(c, id);
  const auto took = clock::now() - start;
  ASSERT_TRUE(deleted);
  EXPECT_EQ(deleted->status, 200u);
  EXPECT_EQ(json_of(*deleted).at("status"), "cancelled");
  // The DELETE is answered once the job has stopped: its worker is free by then.
  EXPECT_LT(took, 100ms * sanitizer_slack) << std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
  EXPECT_TRUE(probe->wait_stopped(1));
  const auto freed = workers_busy_within(observer, 0);
  ASSERT_TRUE(freed);
  EXPECT_LT(*freed, 100ms * sanitizer_slack);
  const auto result = c.get("/v1/jobs/" + id + "/result");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 409u);
  EXPECT_EQ(error_code_of(*result), "job_cancelled");
  // The worker takes the next job at once.
  const auto next = c.get("/work/1");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200u);
}

TEST(async_jobs, a_queued_job_cancelled_never_runs_and_the_backlog_is_taken_in_turns) {
  auto probe = std::make_shared<job_probe>();
  auto cfg = test_config(1);
  cfg.drain_timeout = 100ms;
  running_server s(cfg, test_jobs(probe));
  http_connection c(s.port());
  const auto running = c.get("/opaque/60000", respond_async);
  ASSERT_TRUE(running);
  ASSERT_TRUE(probe->wait_started(1));
  const auto queued = c.get("/work/1", respond_async);
  ASSERT_TRUE(queued);
  EXPECT_EQ(json_of(*queued).at("status"), "queued");
  const auto metrics = c.get("/metrics")->body;
  EXPECT_EQ(sample(metrics, "crunch_async_backlog_jobs"), 1);
  EXPECT_GT(sample(metrics, "crunch_async_backlog_seconds"), 0);
  const auto deleted = delete_job(c, id_of(*queued));
  ASSERT_TRUE(deleted);
  EXPECT_EQ(json_of(*deleted).at("status"), "cancelled");
  EXPECT_FALSE(json_of(*deleted).contains("started_at"));
  EXPECT_EQ(sample(c.get("/metrics")->body, "crunch_async_backlog_jobs"), 0);
  ASSERT_EQ(delete_job(c, id_of(*running))->status, 200u);
  EXPECT_EQ(probe->started(), 1);  // the cancelled queued job never ran
}

TEST(async_jobs, unknown_ids_are_404_and_a_result_before_the_end_is_409) {
  auto probe = std::make_shared<job_probe>();
  auto cfg = test_config(1);
  cfg.drain_timeout = 100ms;
  running_server s(cfg, test_jobs(probe));
  http_connection c(s.port());
  for (const auto* target : {"/v1/jobs/nope", "/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA", "/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA/result"}) {
    const auto r = c.get(target);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404u) << target;
    EXPECT_EQ(error_code_of(*r), "not_found");
  }
  EXPECT_EQ(delete_job(c, "AAAAAAAAAAAAAAAAAAAAAA")->status, 404u);
  const auto wrong = c.post("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA", "application/json", "{}");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 405u);
  EXPECT_EQ(wrong->header("allow"), "GET, HEAD, DELETE");
  const auto accepted = c.get("/opaque/60000", respond_async);
  ASSERT_TRUE(probe->wait_started(1));
  const auto early = c.get("/v1/jobs/" + id_of(*accepted) + "/result");
  ASSERT_TRUE(early);
  EXPECT_EQ(early->status, 409u);
  EXPECT_EQ(error_code_of(*early), "job_not_finished");
  EXPECT_FALSE(early->header("retry-after").empty());
  const auto status = c.get("/v1/jobs/" + id_of(*accepted));
  EXPECT_EQ(json_of(*status).at("status"), "running");
  EXPECT_FALSE(status->header("retry-after").empty());
  // A long poll that runs out answers the status as it is.
  const auto start = clock::now();
  const auto polled = c.get("/v1/jobs/" + id_of(*accepted), "Prefer: wait=1\r\n");
  EXPECT_GE(clock::now() - start, 1s);
  EXPECT_EQ(json_of(*polled).at("status"), "running");
}

TEST(async_jobs, an_asynchronous_deadline_may_be_longer_than_a_synchronous_one) {
  auto cfg = test_config(1);
  cfg.max_timeout = 1s;
  cfg.default_timeout = 1s;
  cfg.async_max_timeout = 5s;
  running_server s(cfg);
  http_connection c(s.port());
  EXPECT_EQ(c.get("/work/1?timeout_ms=5000")->status, 400u);
  const auto accepted = c.get("/work/1?timeout_ms=5000", respond_async);
  ASSERT_TRUE(accepted);
  EXPECT_EQ(accepted->status, 202u);
  const auto refused = c.get("/work/1?timeout_ms=5001", respond_async);
  EXPECT_EQ(refused->status, 400u);
  EXPECT_NE(refused->body.find("1..5000"), std::string::npos) << refused->body;
}

TEST(async_jobs, the_same_key_twice_is_one_job_a_different_request_422_and_a_running_one_409) {
  auto probe = std::make_shared<job_probe>();
  auto cfg = test_config(1);
  cfg.drain_timeout = 100ms;
  running_server s(cfg, test_jobs(probe));
  http_connection c(s.port());
  const std::string key = "Idempotency-Key: \"album-1\"\r\n";
  const auto first = c.get("/work/5", respond_async + key);
  const auto second = c.get("/work/5", respond_async + key);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->status, 202u);
  EXPECT_EQ(second->status, 202u);
  EXPECT_EQ(id_of(*first), id_of(*second));
  // A synchronous retry of the same request gets the same job too.
  EXPECT_EQ(id_of(*c.get("/work/5", key)), id_of(*first));
  const auto metrics = c.get("/metrics")->body;
  EXPECT_EQ(sample(metrics, "crunch_async_jobs_accepted_total"), 1);
  EXPECT_EQ(sample(metrics, "crunch_idempotent_replays_total"), 2);
  const auto other = c.get("/work/6", respond_async + key);
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 422u);
  EXPECT_EQ(error_code_of(*other), "idempotency_key_reused");

  // A synchronous request holds its key while it runs: a parallel one with the key gets 409, and
  // once it has been answered, a retry gets the stored answer without running again.
  const std::string sync_key = "Idempotency-Key: sync-1\r\n";
  http_connection slow(s.port());
  slow.send_get("/opaque/300", sync_key);
  ASSERT_TRUE(probe->wait_started(2));
  const auto parallel = c.get("/opaque/300", sync_key);
  ASSERT_TRUE(parallel);
  EXPECT_EQ(parallel->status, 409u);
  EXPECT_EQ(error_code_of(*parallel), "idempotency_key_in_use");
  const auto answered = slow.read();
  ASSERT_TRUE(answered);
  EXPECT_EQ(answered->status, 200u);
  const auto replayed = c.get("/opaque/300", sync_key);
  ASSERT_TRUE(replayed);
  EXPECT_EQ(replayed->status, 200u);
  EXPECT_EQ(replayed->body, answered->body);
  EXPECT_EQ(replayed->header("idempotent-replayed"), "true");
  EXPECT_EQ(probe->started(), 2);  // nothing ran a second time
  // A bad key is a bad request.
  EXPECT_EQ(c.get("/work/1", "Idempotency-Key: a b\r\n")->status, 400u);
  EXPECT_EQ(c.get("/work/1", "Idempotency-Key: a\r\nIdempotency-Key: b\r\n")->status, 400u);
}

TEST(async_jobs, a_request_that_failed_for_load_releases_its_key) {
  auto probe = std::make_shared<job_probe>();
  auto cfg = test_config(1);
  cfg.queue_limit = 1;
  cfg.drain_timeout = 100ms;
  running_server s(cfg, test_jobs(probe));
  http_connection running(s.port());
  running.send_get("/opaque/20000");
  ASSERT_TRUE(probe->wait_started(1));
  http_connection queued(s.port());
  queued.send_get("/opaque/1");
  http_connection c(s.port());
  ASSERT_TRUE(wait_for_metric(c, "\ncrunch_job_queue_depth 1\n"));
  const std::string key = "Idempotency-Key: retry-me\r\n";
  const auto refused = c.get("/opaque/1", key);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503u);
  // Not replayed: the 503 was not kept, and the retry is tried again (and refused again, for load).
  const auto retried = c.get("/opaque/1", key);
  EXPECT_EQ(retried->status, 503u);
  EXPECT_TRUE(retried->header("idempotent-replayed").empty());
}

TEST(async_jobs, jobs_results_and_keys_are_seen_only_by_the_api_key_that_made_them) {
  const std::string alice = "Authorization: Bearer alice-0123456789abcdef\r\n";
  const std::string bob = "Authorization: Bearer bob-0123456789abcdef00\r\n";
  temp_file keys("crunch-keys-", "alice:alice-0123456789abcdef\nbob:bob-0123456789abcdef00\n");
  auto cfg = test_config(1);
  cfg.api_keys = keys.path();
  running_server s(cfg);
  http_connection c(s.port());
  const auto accepted = c.get("/work/1", respond_async + alice + "Idempotency-Key: k\r\n");
  ASSERT_TRUE(accepted);
  ASSERT_EQ(accepted->status, 202u);
  const auto id = id_of(*accepted);
  ASSERT_FALSE(wait_ended(c, id, alice).is_null());
  EXPECT_EQ(c.get("/v1/jobs/" + id + "/result", alice)->status, 200u);
  EXPECT_EQ(c.get("/v1/jobs/" + id, bob)->status, 404u);
  EXPECT_EQ(c.get("/v1/jobs/" + id + "/result", bob)->status, 404u);
  EXPECT_EQ(delete_job(c, id, bob)->status, 404u);
  EXPECT_EQ(http_connection(s.port()).get("/v1/jobs/" + id)->status, 401u);
  // The same key under another API key is another key: a job of bob's own.
  const auto bobs = c.get("/work/1", respond_async + bob + "Idempotency-Key: k\r\n");
  ASSERT_EQ(bobs->status, 202u);
  EXPECT_NE(id_of(*bobs), id);
}

TEST(async_jobs, ten_thousand_queued_jobs_stay_within_the_store_and_the_next_gets_503) {
  auto probe = std::make_shared<job_probe>();
  auto cfg = test_config(1);
  cfg.drain_timeout = 100ms;
  constexpr std::uint64_t jobs = 10'000;
  cfg.jobs_store_bytes = jobs * async_jobs::record_bytes + async_jobs::record_bytes / 2;
  cfg.memory_budget = 1ULL << 30;
  running_server s(cfg, test_jobs(probe));
  http_connection c(s.port(), 60s);
  const auto blocker = c.get("/opaque/60000", respond_async);
  ASSERT_TRUE(probe->wait_started(1));
  const auto before = c.get("/metrics")->body;
  const double rss_before = sample(before, "process_resident_memory_bytes");
  // Pipelined in batches: ten thousand round trips would take most of the test's time.
  std::uint64_t accepted = 1;
  std::optional<http_reply> refused;
  const std::string request = "GET /work/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nPrefer: respond-async\r\n\r\n";
  while (!refused && accepted < jobs + 10) {
    std::string batch;
    for (int i = 0; i < 50; ++i) batch += request;
    c.send(batch);
    for (int i = 0; i < 50; ++i) {
      const auto r = c.read();
      ASSERT_TRUE(r);
      if (r->status == 202u) {
        ++accepted;
      } else if (!refused) {
        refused = r;
      }
    }
  }
  EXPECT_EQ(accepted, jobs);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503u);
  EXPECT_EQ(error_code_of(*refused), "store_full");
  EXPECT_FALSE(refused->header("retry-after").empty());
  const auto after = c.get("/metrics")->body;
  EXPECT_EQ(sample(after, "crunch_async_backlog_jobs"), static_cast<double>(jobs - 1));
  EXPECT_LE(sample(after, "crunch_async_store_bytes"), static_cast<double>(cfg.jobs_store_bytes));
  // What the store counts a job is what it costs: the process grew by no more than that.
  const double grown = sample(after, "process_resident_memory_bytes") - rss_before;
  std::cout << "[ info ] " << jobs << " queued jobs: RSS grew by " << grown / 1024 / 1024 << " MiB, "
            << grown / static_cast<double>(jobs) << " bytes a job; counted " << async_jobs::record_bytes << "\n";
  // (A sanitizer's allocator adds redzones and a quarantine to every allocation: not a measure.)
  if (sanitizer_slack == 1) {
    EXPECT_LE(grown, static_cast<double>(jobs * async_jobs::record_bytes));
  }
  EXPECT_GE(sample(after, "crunch_job_memory_bytes"), static_cast<double>(jobs * async_jobs::record_bytes));
}

TEST(async_jobs, a_job_whose_deadline_passes_in_the_backlog_expires_without_running) {
  auto probe = std::make_shared<job_probe>();
  auto cfg = test_config(1);
  cfg.drain_timeout = 100ms;
  running_server s(cfg, test_jobs(probe));
  http_connection c(s.port());
  const auto blocker = c.get("/opaque/60000", respond_async);
  ASSERT_TRUE(probe->wait_started(1));
  const auto queued = c.get("/opaque/1?timeout_ms=300", respond_async);
  ASSERT_EQ(queued->status, 202u);
  const auto ended = wait_ended(c, id_of(*queued));
  ASSERT_FALSE(ended.is_null());
  EXPECT_EQ(ended.at("status"), "expired");
  EXPECT_EQ(ended.at("error").at("code"), "deadline_exceeded");
  EXPECT_EQ(probe->started(), 1);
}

TEST(async_jobs, ended_jobs_and_their_keys_are_forgotten_after_jobs_keep) {
  auto cfg = test_config(1);
  cfg.jobs_keep = 1s;
  running_server s(cfg);
  http_connection c(s.port());
  const auto accepted = c.get("/work/1", respond_async + "Idempotency-Key: short-lived\r\n");
  ASSERT_EQ(accepted->status, 202u);
  const auto id = id_of(*accepted);
  ASSERT_FALSE(wait_ended(c, id).is_null());
  EXPECT_GT(sample(c.get("/metrics")->body, "crunch_async_store_bytes"), 0);
  // Forgotten a second after it ended (its key: a second after its deadline); the store is empty again.
  ASSERT_TRUE(wait_for_metric(c, "\ncrunch_async_jobs_stored 0\n", 200000));
  EXPECT_EQ(c.get("/v1/jobs/" + id)->status, 404u);
  EXPECT_EQ(c.get("/v1/jobs/" + id + "/result")->status, 404u);
  // Its key now names a job that is gone: the same request runs again, as a new job.
  const auto again = c.get("/work/1", respond_async + "Idempotency-Key: short-lived\r\n");
  ASSERT_EQ(again->status, 202u);
  EXPECT_NE(id_of(*again), id);
}

TEST(async_jobs, the_drain_ends_with_jobs_running_and_queued) {
  auto probe = std::make_shared<job_probe>();
  auto cfg = test_config(1);
  cfg.drain_timeout = 5s;
  running_server s(cfg, test_jobs(probe));
  {
    http_connection c(s.port());
    ASSERT_EQ(c.get("/opaque/60000", respond_async)->status, 202u);
    ASSERT_EQ(c.get("/opaque/60000", respond_async)->status, 202u);
    ASSERT_TRUE(probe->wait_started(1));
  }
  const auto start = clock::now();
  s.stop();
  ASSERT_TRUE(s.wait_stopped(10s));
  EXPECT_LT(clock::now() - start, 2s);  // the store's jobs do not hold the drain
  EXPECT_TRUE(probe->wait_stopped(1));
}

}  // namespace
}  // namespace crunch::testing
