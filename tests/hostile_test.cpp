// Hostile input, byte by byte: every raw request gets its expected status, and the connection is
// closed when it must be — or, when it stays open, it is still in sync for a next request. After
// all of them the server still answers and holds no more descriptors than before.
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <malloc.h>

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

namespace crunch::testing {
namespace {

struct hostile_case {
  std::string name;
  std::string bytes;
  unsigned status;   // expected status of the answer
  bool closes;       // the server must close the connection after answering
  bool head = false; // the answer has no body (HEAD)
};

void PrintTo(const hostile_case& c, std::ostream* out) { *out << c.name; }

std::string get(const std::string& target, const std::string& headers = "Host: x\r\n") {
  return "GET " + target + " HTTP/1.1\r\n" + headers + "\r\n";
}

std::vector<hostile_case> cases() {
  std::string many_headers = "Host: x\r\n";  // 100 fields: the default limit
  for (int i = 0; i < 99; ++i) many_headers += "X-" + std::to_string(i) + ": y\r\n";
  std::string too_many_headers = many_headers + "X-One-More: y\r\n";
  return {
      {"plain", get("/healthz"), 200, false},
      {"http10_without_keep_alive", "GET /healthz HTTP/1.0\r\n\r\n", 200, true},
      {"http10_with_keep_alive", "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, false},
      {"head_healthz", "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, false, true},
      {"head_job", "HEAD /work/5 HTTP/1.1\r\nHost: x\r\n\r\n", 405, false, true},
      {"expect_continue_with_body", get("/healthz", "Host: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n") + "abc",
       200, false},
      {"chunked_body", get("/healthz", "Host: x\r\nTransfer-Encoding: chunked\r\n") + "3\r\nabc\r\n0\r\n\r\n", 200,
       false},
      {"smuggling_cl_and_te", get("/healthz", "Host: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n") +
                                  "0\r\n\r\n",
       400, true},
      {"smuggling_conflicting_cl", get("/healthz", "Host: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n") + "abcd",
       400, true},
      {"identical_duplicate_cl", get("/healthz", "Host: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n") + "abc",
       200, false},
      {"te_not_ending_in_chunked", get("/healthz", "Host: x\r\nTransfer-Encoding: gzip\r\n"), 400, true},
      {"negative_cl", get("/healthz", "Host: x\r\nContent-Length: -1\r\n"), 400, true},
      {"plus_sign_cl", get("/healthz", "Host: x\r\nContent-Length: +3\r\n") + "abc", 400, true},
      {"overflowing_cl", get("/healthz", "Host: x\r\nContent-Length: 99999999999999999999\r\n"), 400, true},
      {"body_over_the_limit", get("/healthz", "Host: x\r\nContent-Length: 100000\r\n") + std::string(1000, 'b'), 413,
       true},
      {"chunk_size_overflow", get("/healthz", "Host: x\r\nTransfer-Encoding: chunked\r\n") + "ffffffffffffffffff\r\n",
       400, true},
      {"unknown_method_on_job", "BREW /work/5 HTTP/1.1\r\nHost: x\r\n\r\n", 405, false},
      {"unknown_method_on_healthz", "PURGE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405, false},
      {"lowercase_method", "get /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405, false},
      {"post_with_body", "POST /work/5 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", 405, false},
      {"delete_metrics", "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405, false},
      {"absolute_form", get("http://x/healthz"), 200, false},
      {"asterisk_form", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400, false},
      {"dot_segments", get("/work/../healthz"), 404, false},
      {"percent_encoded_path", get("/%77ork/5"), 404, false},
      {"double_slash", get("//work/5"), 404, false},
      {"root", get("/"), 200, false},  // the live view
      // The job store's headers and routes.
      {"prefer_wait_for_ever", get("/work/5", "Host: x\r\nPrefer: respond-async, wait=999999999\r\n"), 200, false},
      {"prefer_wait_overflowing", get("/work/5", "Host: x\r\nPrefer: wait=99999999999999999999, respond-async\r\n"), 202,
       false},
      {"prefer_junk", get("/work/5", "Host: x\r\nPrefer: ;;==,,respond-async=1, \"\r\nPrefer: ,\r\n"), 200, false},
      {"idempotency_key_too_long", get("/work/5", "Host: x\r\nIdempotency-Key: " + std::string(256, 'k') + "\r\n"), 400,
       false},
      {"idempotency_key_control_byte", get("/work/5", "Host: x\r\nIdempotency-Key: a\x01b\r\n"), 400, true},  // Beast: a malformed field
      {"idempotency_key_twice", get("/work/5", "Host: x\r\nIdempotency-Key: a\r\nIdempotency-Key: a\r\n"), 400, false},
      // A field that may be given once, given twice (RFC 9110 §5.3); a query key given twice.
      {"two_content_types", "POST /v1/work/echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\nhi", 400, true},
      {"two_hosts", get("/healthz", "Host: x\r\nHost: y\r\n"), 400, true},
      {"two_authorizations", get("/work/5", "Host: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n"), 400, true},
      {"two_request_ids", get("/healthz", "Host: x\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n"), 400, true},
      {"query_key_twice", get("/work/5?timeout_ms=60000&timeout_ms=1"), 400, false},
      {"unknown_query_key_twice", get("/work/5?x=1&x=2"), 400, false},
      {"query_with_empty_pairs", get("/work/5?&&timeout_ms=1000&&"), 200, false},
      {"callback_url_without_async", get("/work/5?callback_url=http%3A%2F%2Fexample.com%2F"), 400, false},
      {"callback_url_bad_escape", get("/work/5?callback_url=%zz", "Host: x\r\nPrefer: respond-async\r\n"), 400, false},
      {"callback_url_long", get("/work/5?callback_url=http://" + std::string(3000, 'a'), "Host: x\r\nPrefer: respond-async\r\n"),
       400, false},
      {"job_id_long", get("/v1/jobs/" + std::string(5000, 'A')), 404, false},
      {"job_id_empty", get("/v1/jobs/"), 404, false},
      {"job_result_of_nothing", get("/v1/jobs//result"), 404, false},
      {"job_delete_with_body", "DELETE /v1/jobs/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 404, false},
      {"root_with_a_dot_segment", get("/ui/../"), 404, false},
      {"events_with_a_dot_segment", get("/v1/events/.."), 404, false},
      {"long_query", get("/work/5?" + std::string(6000, 'q')), 200, false},
      {"request_line_over_the_limit", get("/work/5?" + std::string(9000, 'q')), 431, true},
      {"header_over_the_limit", get("/healthz", "Host: x\r\nX-Big: " + std::string(9000, 'h') + "\r\n"), 431, true},
      {"many_small_headers", get("/healthz", many_headers), 200, false},
      {"too_many_headers", get("/healthz", too_many_headers), 431, true},
      {"expect_unknown", get("/healthz", "Host: x\r\nExpect: 200-ok\r\nContent-Length: 3\r\n") + "abc", 417, true},
      {"expect_continue_http10", "POST /healthz HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n"
                                 "Content-Length: 3\r\n\r\nabc", 405, false},
      {"expect_continue_over_the_body_limit",
       get("/healthz", "Host: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n"), 413, true},
      {"unknown_version", "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400, true},
      {"no_version", "GET /healthz\r\n\r\n", 400, true},
      {"bare_lf_line_ends", "GET /healthz HTTP/1.1\nHost: x\n\n", 400, true},
      {"nul_in_target", std::string("GET /work/") + '\0' + "5 HTTP/1.1\r\nHost: x\r\n\r\n", 400, true},
      {"space_in_header_name", "GET /healthz HTTP/1.1\r\nHo st: x\r\n\r\n", 400, true},
      {"header_without_colon", "GET /healthz HTTP/1.1\r\nHost x\r\n\r\n", 400, true},
      {"empty_line_first", "\r\n" + get("/healthz"), 400, true},
      {"tls_client_hello", std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11), 400, true},
      {"ms_negative", get("/work/-1"), 400, false},
      {"ms_too_big", get("/work/3600001"), 400, false},
      {"ms_400_digits", get("/work/" + std::string(400, '9')), 400, false},
      {"ms_not_ascii", get("/work/\xc3\xa9"), 400, false},
      {"timeout_huge", get("/work/5?timeout_ms=99999999999999999999999"), 400, false},
      {"timeout_zero", get("/work/5?timeout_ms=0"), 400, false},
      {"hostile_request_id", get("/healthz", "Host: x\r\nX-Request-Id: <script>alert(1)</script>\r\n"), 200, false},
      {"work_through_it_all", get("/work/1"), 200, false},
  };
}

std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

class hostile : public ::testing::TestWithParam<hostile_case> {
 protected:
  static void SetUpTestSuite() {
    auto cfg = test_config(1);
    cfg.max_header_bytes = 8 * 1024;
    cfg.max_body_bytes = 64 * 1024;
    server_ = new running_server(cfg);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static running_server* server_;
};

running_server* hostile::server_ = nullptr;

TEST_P(hostile, gets_its_answer_and_the_connection_its_fate) {
  const auto& c = GetParam();
  http_connection conn(server_->port(), std::chrono::seconds(10));
  conn.send(c.bytes);
  const auto r = conn.read(c.head);
  ASSERT_TRUE(r) << "no answer";
  EXPECT_EQ(r->status, c.status);
  if (!c.head && r->status >= 400) {
    // Every error has the one JSON shape.
    const auto body = nlohmann::json::parse(r->body, nullptr, false);
    EXPECT_TRUE(body.contains("error") && body["error"].contains("code")) << r->body;
  }
  if (c.closes) {
    EXPECT_TRUE(conn.closed_by_peer()) << "the server must close after this";
  } else {
    // Still open, and still in sync: the next answer belongs to the next request.
    const auto next = conn.get("/work/6");
    ASSERT_TRUE(next) << "the connection should have stayed open";
    EXPECT_EQ(nlohmann::json::parse(next->body).at("ms"), 6);
  }
}

INSTANTIATE_TEST_SUITE_P(requests, hostile, ::testing::ValuesIn(cases()),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(expect_continue, the_server_says_go_on_before_the_body_is_sent) {
  running_server s(test_config(1));
  http_connection conn(s.port());
  // Only the head: a client that asked for 100-continue waits for it before sending the body.
  conn.send("POST /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
  const auto go_on = conn.read_interim();
  ASSERT_TRUE(go_on);
  EXPECT_EQ(*go_on, 100u);
  conn.send("hello");
  const auto r = conn.read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405u);  // /healthz is GET or HEAD; what matters is the exchange went on
}

// Heap bytes in use (all arenas). Sanitizer builds have their own allocator and report nothing
// here; LeakSanitizer checks those instead.
std::size_t heap_in_use() { return mallinfo2().uordblks; }

TEST(hostile_aftermath, server_answers_and_holds_no_extra_descriptors_or_memory) {
  running_server s(test_config(1));
  http_connection observer(s.port());
  ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_connections_open 1\n"));
  const auto send_them_all = [&] {
    for (const auto& c : cases()) {
      http_connection conn(s.port());
      conn.send(c.bytes);
      (void)conn.read(c.head);
    }  // every client gone
    ASSERT_TRUE(wait_for_metric(observer, "\ncrunch_connections_open 1\n"));
  };
  send_them_all();  // once to warm up what is made on first use (metric series, buffers)
  const auto descriptors = open_descriptors();
  const auto heap = heap_in_use();
  for (int round = 0; round < 5; ++round) send_them_all();
  EXPECT_EQ(observer.get("/healthz")->status, 200u);
  EXPECT_EQ(open_descriptors(), descriptors);
  // Five more rounds of every hostile request: what they used is given back.
  EXPECT_LT(heap_in_use(), heap + 64 * 1024) << "before " << heap << " bytes, after " << heap_in_use();
}

}  // namespace
}  // namespace crunch::testing
