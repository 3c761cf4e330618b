// The Redis link against a real redis-server (Debian's), started on a free loopback port.
#include "server/redis_jobs.hpp"
#include "server/redis_link.hpp"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

extern char** environ;

namespace crunch {
namespace {

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A redis-server of the test's own, without persistence; killed and reaped by the destructor.
// start() returns once it says it accepts connections (its log, read through a pipe).
class redis_server {
 public:
  explicit redis_server(std::uint16_t port) : port_(port) { start(); }
  ~redis_server() { stop(); }
  bool start() {
    const std::string p = std::to_string(port_);
    std::vector<std::string> args = {"redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                     "--daemonize", "no", "--loglevel", "notice"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2];
    if (::pipe(out) != 0) return false;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    const int spawned = posix_spawnp(&pid_, "redis-server", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    std::string log;
    char chunk[512];
    while (spawned == 0 && log.find("Ready to accept connections") == std::string::npos) {
      const auto n = ::read(out[0], chunk, sizeof chunk);  // ends when redis-server exits
      if (n <= 0) break;
      log.append(chunk, static_cast<std::size_t>(n));
    }
    ::close(out[0]);  // what it logs later goes nowhere (SIGPIPE is its own to ignore: it does)
    return log.find("Ready to accept connections") != std::string::npos;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  std::uint16_t port_;
  pid_t pid_ = -1;
};

// Runs `words` on `link` and the io_context until the reply comes.
redis_reply ask(net::io_context& io, redis_link& link, std::vector<std::string> words) {
  redis_reply out;
  bool done = false;
  link.send(std::move(words), [&](redis_reply r) {
    out = std::move(r);
    done = true;
  });
  // The reply is posted from the link's thread: until then the io_context has no work of its
  // own, and would stop.
  auto work = net::make_work_guard(io);
  io.restart();
  while (!done) io.run_one();
  return out;
}

bool wait_ready(net::io_context& io, redis_link& link) { return ask(io, link, {"PING"}).text == "PONG"; }

TEST(redis_link, urls_name_a_host_a_port_and_a_database) {
  auto a = std::get<redis_address>(parse_redis_url("redis://redis:6380/2"));
  EXPECT_EQ(a.host, "redis");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(a.db, 2);
  a = std::get<redis_address>(parse_redis_url("redis://10.0.0.5"));
  EXPECT_EQ(a.port, 6379);
  EXPECT_EQ(a.db, 0);
  for (const auto* bad : {"http://x", "redis://", "redis://x:0", "redis://x:99999", "redis://x/16", "redis://x/a",
                          "redis://us er@x"}) {
    EXPECT_TRUE(std::holds_alternative<std::string>(parse_redis_url(bad))) << bad;
  }
}

TEST(redis_link, commands_are_binary_safe_and_a_stream_group_hands_out_and_reclaims_entries) {
  const auto port = free_port();
  redis_server server(port);
  net::io_context io;
  redis_link link(io.get_executor(), {"127.0.0.1", port, 1});
  ASSERT_TRUE(wait_ready(io, link));
  const std::string binary("a\0b\r\n\xff", 6);
  EXPECT_EQ(ask(io, link, {"SET", "k", binary}).text, "OK");
  EXPECT_EQ(ask(io, link, {"GET", "k"}).text, binary);
  EXPECT_EQ(ask(io, link, {"GET", "absent"}).kind, redis_reply::type::nil);
  EXPECT_EQ(ask(io, link, {"NOSUCHCOMMAND"}).kind, redis_reply::type::error);

  // What the job store does with a stream: a group, a read that takes an entry, and another
  // consumer claiming it once it has been idle (the replica that took it died).
  EXPECT_TRUE(ask(io, link, {"XGROUP", "CREATE", "jobs", "replicas", "$", "MKSTREAM"}).ok());
  EXPECT_EQ(ask(io, link, {"XADD", "jobs", "*", "id", "job-1"}).kind, redis_reply::type::string);
  const auto read = ask(io, link, {"XREADGROUP", "GROUP", "replicas", "a", "COUNT", "1", "STREAMS", "jobs", ">"});
  ASSERT_EQ(read.kind, redis_reply::type::array);
  const auto& entry = read.elements.at(0).elements.at(1).elements.at(0);
  EXPECT_EQ(entry.elements.at(1).elements.at(1).text, "job-1");
  const auto claimed = ask(io, link, {"XAUTOCLAIM", "jobs", "replicas", "b", "0", "0-0", "COUNT", "10"});
  ASSERT_EQ(claimed.kind, redis_reply::type::array);
  EXPECT_EQ(claimed.elements.at(1).elements.at(0).elements.at(0).text, entry.elements.at(0).text);
  EXPECT_EQ(ask(io, link, {"XACK", "jobs", "replicas", entry.elements.at(0).text}).integer, 1);
}

TEST(redis_link, a_lost_server_is_an_error_and_the_link_reconnects_when_it_is_back) {
  const auto port = free_port();
  redis_server server(port);
  net::io_context io;
  redis_link link(io.get_executor(), {"127.0.0.1", port, 0}, std::chrono::milliseconds(500));
  ASSERT_TRUE(wait_ready(io, link));
  server.stop();
  const auto lost = ask(io, link, {"PING"});
  EXPECT_EQ(lost.kind, redis_reply::type::error);
  ASSERT_TRUE(server.start());
  EXPECT_TRUE(wait_ready(io, link));  // the link connects again by itself
}

// Runs the io_context until `done` is true (a reply posted from the link's thread).
void until(net::io_context& io, const bool& done) {
  auto work = net::make_work_guard(io);
  io.restart();
  while (!done) io.run_one();
}

// Calls `start` with a callback and runs the io_context until it has been called: its value.
template <typename T, typename Start>
T ask(net::io_context& io, Start start) {
  T value{};
  bool done = false;
  start([&](T v) {
    value = std::move(v);
    done = true;
  });
  until(io, done);
  return value;
}

// A redis-server of the test's own, and two replicas' views of the job store on one link.
// Two replicas of the job store on one Redis, linked once it answers.
class two_replicas : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(wait_ready(io, link)); }

  std::uint16_t port = free_port();
  redis_server server{port};
  net::io_context io;
  redis_link link{io.get_executor(), {"127.0.0.1", port, 0}};
  redis_jobs a{link, "replica-a"};
  redis_jobs b{link, "replica-b"};
};

TEST_F(two_replicas, replicas_share_a_queue_take_over_a_dead_ones_jobs_and_the_first_answer_wins) {
  bool done = false;
  a.prepare([&](bool ok, std::string error) {
    EXPECT_TRUE(ok) << error;
    done = true;
  });
  until(io, done);
  done = false;
  b.prepare([&](bool ok, std::string) {  // a second replica finds the group there: no error
    EXPECT_TRUE(ok);
    done = true;
  });
  until(io, done);

  for (const auto* id : {"j1", "j2", "j3"}) {
    done = false;
    a.enqueue(id, {{"status", "queued"}, {"route", "work"}, {"target", "/work/30"}}, [&](bool ok) {
      EXPECT_TRUE(ok);
      done = true;
    });
    until(io, done);
  }
  const auto queued = ask<std::optional<redis_backlog>>(io, [&](auto reply_to) { a.backlog(std::move(reply_to)); });
  ASSERT_TRUE(queued);
  EXPECT_EQ(queued->waiting, 3);
  EXPECT_EQ(queued->pending, 0);
  ASSERT_TRUE(queued->oldest_ms);

  // Replica a has room for two, b for one: each takes only what it can run.
  std::vector<redis_entry> taken_by_a;
  std::vector<redis_entry> taken_by_b;
  done = false;
  a.take(2, [&](std::vector<redis_entry> e) {
    taken_by_a = std::move(e);
    done = true;
  });
  until(io, done);
  done = false;
  b.take(5, [&](std::vector<redis_entry> e) {
    taken_by_b = std::move(e);
    done = true;
  });
  until(io, done);
  ASSERT_EQ(taken_by_a.size(), 2u);
  ASSERT_EQ(taken_by_b.size(), 1u);
  EXPECT_EQ(taken_by_a[0].job, "j1");
  EXPECT_EQ(taken_by_b[0].job, "j3");

  // a starts j1 and keeps it claimed; it "dies" with j2 taken. b takes over what has been idle:
  // with a minimum idle time of 0, both of a's entries; with an hour, none.
  bool started = false;
  done = false;
  a.start("j1", [&](bool running) {
    started = running;
    done = true;
  });
  until(io, done);
  EXPECT_TRUE(started);
  done = false;
  a.heartbeat({taken_by_a[0].entry}, [&](bool ok) {
    EXPECT_TRUE(ok);
    done = true;
  });
  until(io, done);
  std::vector<redis_entry> claimed;
  done = false;
  b.claim_stale(std::chrono::hours(1), 10, [&](std::vector<redis_entry> e) {
    claimed = std::move(e);
    done = true;
  });
  until(io, done);
  EXPECT_TRUE(claimed.empty());
  done = false;
  b.claim_stale(std::chrono::milliseconds(0), 10, [&](std::vector<redis_entry> e) {
    claimed = std::move(e);
    done = true;
  });
  until(io, done);
  ASSERT_EQ(claimed.size(), 3u);  // a's two and b's own, none acknowledged yet

  // j1 runs twice (a was not dead after all): the first end is stored, the second is not.
  bool stored = false;
  done = false;
  a.finish("j1", taken_by_a[0].entry, {{"status", "succeeded"}, {"result_body", "first"}}, std::chrono::seconds(60),
           [&](bool s) {
             stored = s;
             done = true;
           });
  until(io, done);
  EXPECT_TRUE(stored);
  done = false;
  b.finish("j1", taken_by_a[0].entry, {{"status", "succeeded"}, {"result_body", "second"}}, std::chrono::seconds(60),
           [&](bool s) {
             stored = s;
             done = true;
           });
  until(io, done);
  EXPECT_FALSE(stored);
  redis_job_fields fields;
  done = false;
  b.read("j1", [&](redis_job_fields f) {
    fields = std::move(f);
    done = true;
  });
  until(io, done);
  EXPECT_EQ(fields["result_body"], "first");
  EXPECT_EQ(fields["status"], "succeeded");
  EXPECT_EQ(fields["route"], "work");
  done = false;
  a.start("j1", [&](bool running) {  // an ended job is not started again
    started = running;
    done = true;
  });
  until(io, done);
  EXPECT_FALSE(started);

  // Taken and running: the backlog has none waiting, two pending (j1 acknowledged, j2 and j3 not).
  const auto running = ask<std::optional<redis_backlog>>(io, [&](auto reply_to) { a.backlog(std::move(reply_to)); });
  ASSERT_TRUE(running);
  EXPECT_EQ(running->waiting, 0);
  EXPECT_EQ(running->pending, 2);
  EXPECT_FALSE(running->oldest_ms);
}

TEST_F(two_replicas, an_idempotency_key_is_taken_with_its_job_and_delete_ends_a_queued_job_or_flags_a_running_one) {
  EXPECT_TRUE(ask<bool>(io, [&](auto reply_to) { a.prepare([reply_to](bool ok, std::string) { reply_to(ok); }); }));

  // The fingerprint key: the first replica's is kept, the second gets it.
  EXPECT_EQ(ask<std::optional<std::string>>(io, [&](auto reply_to) { a.shared_secret("aaaa", std::move(reply_to)); }), "aaaa");
  EXPECT_EQ(ask<std::optional<std::string>>(io, [&](auto reply_to) { b.shared_secret("bbbb", std::move(reply_to)); }), "aaaa");

  // A key is taken with its job; the same key again queues nothing and gives what it holds, for
  // the same owner only.
  const redis_job_fields fields = {{"status", "queued"}, {"owner", "alice"}, {"body", "{}"}};
  auto first = ask<redis_enqueued>(io, [&](auto reply_to) {
    a.enqueue("j1", fields, redis_key_claim{"alice", "k", "fp\nj1", std::chrono::seconds(60)}, std::move(reply_to));
  });
  EXPECT_TRUE(first.ok);
  EXPECT_FALSE(first.held);
  auto again = ask<redis_enqueued>(io, [&](auto reply_to) {
    b.enqueue("j2", fields, redis_key_claim{"alice", "k", "fp\nj2", std::chrono::seconds(60)}, std::move(reply_to));
  });
  EXPECT_TRUE(again.ok);
  EXPECT_EQ(again.held, "fp\nj1");
  auto other_owner = ask<redis_enqueued>(io, [&](auto reply_to) {
    b.enqueue("j3", {{"status", "queued"}, {"owner", "bob"}}, redis_key_claim{"bob", "k", "fp\nj3", std::chrono::seconds(60)},
              std::move(reply_to));
  });
  EXPECT_FALSE(other_owner.held);
  auto waiting = ask<std::optional<redis_backlog>>(io, [&](auto reply_to) { a.backlog(std::move(reply_to)); });
  ASSERT_TRUE(waiting);
  EXPECT_EQ(waiting->waiting, 2);  // j1 and j3: j2 was never queued

  // DELETE: another owner's job is missing; a queued job ends at once and leaves the stream, its
  // body dropped; a second DELETE finds it ended.
  const redis_job_fields end = {{"status", "cancelled"}, {"result_status", "409"}};
  EXPECT_EQ(ask<redis_cancel>(io, [&](auto reply_to) { a.cancel("bob", "j1", end, std::chrono::seconds(60), std::move(reply_to)); }),
            redis_cancel::missing);
  EXPECT_EQ(ask<redis_cancel>(io, [&](auto reply_to) { a.cancel("alice", "j1", end, std::chrono::seconds(60), std::move(reply_to)); }),
            redis_cancel::cancelled);
  EXPECT_EQ(ask<redis_cancel>(io, [&](auto reply_to) { a.cancel("alice", "j1", end, std::chrono::seconds(60), std::move(reply_to)); }),
            redis_cancel::ended);
  auto j1 = ask<redis_job_fields>(io, [&](auto reply_to) { a.read("j1", std::move(reply_to)); });
  EXPECT_EQ(j1["status"], "cancelled");
  EXPECT_FALSE(j1.contains("body"));
  waiting = ask<std::optional<redis_backlog>>(io, [&](auto reply_to) { a.backlog(std::move(reply_to)); });
  ASSERT_TRUE(waiting);
  EXPECT_EQ(waiting->waiting, 1);

  // A running job is flagged; its replica finds the flag among the jobs it runs.
  const auto taken = ask<std::vector<redis_entry>>(io, [&](auto reply_to) { b.take(5, std::move(reply_to)); });
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken[0].job, "j3");  // j1's entry was deleted with its DELETE
  EXPECT_TRUE(ask<bool>(io, [&](auto reply_to) { b.start("j3", std::move(reply_to)); }));
  EXPECT_TRUE(ask<std::vector<std::string>>(io, [&](auto reply_to) { b.cancel_requests({"j3"}, std::move(reply_to)); }).empty());
  EXPECT_EQ(ask<redis_cancel>(io, [&](auto reply_to) { a.cancel("bob", "j3", end, std::chrono::seconds(60), std::move(reply_to)); }),
            redis_cancel::flagged);
  EXPECT_EQ(ask<std::vector<std::string>>(io, [&](auto reply_to) { b.cancel_requests({"j3", "j9"}, std::move(reply_to)); }),
            std::vector<std::string>{"j3"});
  const auto only = std::vector<std::string>{"status", "owner", "nothing"};
  const auto some = ask<redis_job_fields>(io, [&](auto reply_to) { a.read("j3", only, std::move(reply_to)); });
  EXPECT_EQ(some, (redis_job_fields{{"owner", "bob"}, {"status", "running"}}));
}

}  // namespace
}  // namespace crunch
