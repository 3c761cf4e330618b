#include <crunch/log.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <unistd.h>

namespace crunch {
namespace {

using namespace std::chrono_literals;

// Everything a logger wrote to a temporary file, read after the logger is gone.
template <typename Body>
std::string logged(log_format format, log_level level, Body body) {
  std::FILE* file = std::tmpfile();
  {
    logger log(format, level, file);
    body(log);
  }
  std::rewind(file);
  std::string text;
  char chunk[4096];
  for (std::size_t n; (n = std::fread(chunk, 1, sizeof chunk, file)) > 0;) text.append(chunk, n);
  std::fclose(file);
  return text;
}

TEST(logger, json_lines_carry_time_level_event_and_fields) {
  const auto text = logged(log_format::json, log_level::info, [](logger& log) {
    log.write(log_level::info, "access", {{"status", 200}, {"target", "/work/\"x\""}});
  });
  const auto line = nlohmann::json::parse(text.substr(0, text.find('\n')));
  EXPECT_EQ(line.at("event"), "access");
  EXPECT_EQ(line.at("level"), "info");
  EXPECT_EQ(line.at("status"), 200);
  EXPECT_EQ(line.at("target"), "/work/\"x\"");
  EXPECT_EQ(line.at("time").get<std::string>().size(), 24u);  // 2026-11-26T05:09:49.775Z
}

TEST(logger, text_lines_quote_what_would_not_read_back) {
  const auto text = logged(log_format::text, log_level::info, [](logger& log) {
    log.write(log_level::warn, "drain_timeout", {{"connections", 3}, {"note", "two words"}});
  });
  EXPECT_NE(text.find(" warn drain_timeout connections=3 note=\"two words\"\n"), std::string::npos) << text;
}

TEST(logger, lines_below_the_level_are_not_written) {
  const auto text = logged(log_format::json, log_level::warn, [](logger& log) {
    EXPECT_FALSE(log.enabled(log_level::info));
    log.write(log_level::info, "access");
    log.write(log_level::error, "boom");
  });
  EXPECT_EQ(text.find("access"), std::string::npos);
  EXPECT_NE(text.find("boom"), std::string::npos);
}

TEST(logger, a_blocked_output_drops_and_counts_instead_of_blocking_the_caller) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::FILE* out = fdopen(fds[1], "w");
  constexpr int lines = 2000;  // 200 KB: more than a pipe holds, so the writer blocks
  std::uint64_t dropped = 0;
  std::size_t received = 0;
  std::thread reader;
  {
    logger log(log_format::text, log_level::info, out, 4);
    for (int i = 0; i < lines; ++i) log.write(log_level::info, "x", {{"pad", std::string(80, 'p')}});
    dropped = log.dropped();  // the caller was never blocked: it got here with the pipe full
    EXPECT_GT(dropped, 0u);
    reader = std::thread([&] {
      char chunk[4096];
      for (ssize_t n; (n = ::read(fds[0], chunk, sizeof chunk)) > 0;) {
        for (ssize_t i = 0; i < n; ++i) received += chunk[i] == '\n';
      }
    });
  }  // the logger writes what it kept, then joins
  std::fclose(out);
  reader.join();
  ::close(fds[0]);
  EXPECT_EQ(received + dropped, static_cast<std::size_t>(lines));  // every line written or counted
}

// Lines in a pipe: what a reader gets once the writer's end is closed.
std::size_t lines_in_pipe(int read_end) {
  std::size_t lines = 0;
  char chunk[4096];
  for (ssize_t n; (n = ::read(read_end, chunk, sizeof chunk)) > 0;) lines += static_cast<std::size_t>(std::count(chunk, chunk + n, '\n'));
  return lines;
}

// A log collector that stopped reading: the pipe is full and stays full. close() still returns
// within its flush timeout, and every line is either in the pipe or counted as dropped.
TEST(logger, a_reader_that_never_reads_holds_close_no_longer_than_the_flush_timeout) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::FILE* out = fdopen(fds[1], "w");
  constexpr int lines = 3000;  // 300 KB, more than the pipe's 64 KiB
  logger log(log_format::text, log_level::info, out, 100000, 200ms);
  for (int i = 0; i < lines; ++i) log.write(log_level::info, "x", {{"pad", std::string(80, 'p')}});
  const auto start = std::chrono::steady_clock::now();
  log.close();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 150ms);  // it did wait for the reader, about as long as it was told
  EXPECT_LT(took, 5s);
  EXPECT_GT(log.dropped(), 0u);
  log.write(log_level::info, "after close");  // counted, not queued for nobody
  std::fclose(out);
  const auto received = lines_in_pipe(fds[0]);
  ::close(fds[0]);
  EXPECT_GT(received, 0u);
  EXPECT_EQ(received + log.dropped(), static_cast<std::size_t>(lines) + 1);
}

// The reader went away (EPIPE): no SIGPIPE ends this process, lines are counted, close() is quick.
TEST(logger, a_reader_that_is_gone_costs_lines_not_the_process) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  ::close(fds[0]);
  std::FILE* out = fdopen(fds[1], "w");
  {
    logger log(log_format::json, log_level::info, out, 100000, 10s);
    for (int i = 0; i < 500; ++i) log.write(log_level::info, "x");
    const auto start = std::chrono::steady_clock::now();
    log.close();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);  // not the 10 s flush timeout
    EXPECT_EQ(log.dropped(), 500u);
  }
  std::fclose(out);
}

TEST(log_line, json_is_valid_and_escapes_hostile_bytes) {
  const auto text = logged(log_format::json, log_level::info, [](logger& log) {
    log_line line(log.format(), log_level::info, "access");
    line.field("target", std::string_view("/a\"b\\c\n\x01\xff", 9)).field("status", std::uint64_t{404}).millis("ms", 1.5);
    log.write(std::move(line));
  });
  const auto j = nlohmann::json::parse(text.substr(0, text.find('\n')));
  EXPECT_EQ(j.at("event"), "access");
  EXPECT_EQ(j.at("status"), 404);
  EXPECT_DOUBLE_EQ(j.at("ms").get<double>(), 1.5);
  // Every byte kept: 0x01 and 0xff come back as U+0001 and U+00FF (UTF-8 C3 BF).
  EXPECT_EQ(j.at("target"), std::string("/a\"b\\c\n\x01") + "\xc3\xbf");
  EXPECT_EQ(text.rfind("{\"time\":", 0), 0u);
}

TEST(log_line, text_is_key_value) {
  const auto text = logged(log_format::text, log_level::info, [](logger& log) {
    log_line line(log.format(), log_level::info, "access");
    line.field("method", "GET").field("target", "/has space").field("status", std::uint64_t{200});
    log.write(std::move(line));
  });
  EXPECT_NE(text.find(" info access method=GET target=\"/has space\" status=200\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace crunch
