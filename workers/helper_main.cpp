// A helper process's life (include/crunch/isolation.hpp, helper_protocol.hpp): started by
// crunchd from a clean exec, it loads its kind, closes its sandbox, says it is ready, and runs one
// job at a time until crunchd closes its socket.
#include "fatal_signals.hpp"
#include "helper_protocol.hpp"
#include "sandbox.hpp"

#include <crunch/isolation.hpp>
#include <crunch/kinds.hpp>
#include <crunch/service.hpp>
#include "workers/worker_pool.hpp"

#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace crunch {

namespace {

using namespace helper_protocol;

[[noreturn]] void give_up(const std::string& why) {
  const std::string line = "crunchd helper: " + why + "\n";
  (void)!::write(STDERR_FILENO, line.data(), line.size());
  _exit(1);
}

// A read-only or writable window onto a memfd, remapped when the file has grown past it.
class shared_window {
 public:
  shared_window(int fd, int protection) : fd_(fd), protection_(protection) {}
  // The first `bytes` of the file, mapped; the file is at least that long.
  char* at_least(std::uint64_t bytes) {
    if (bytes <= size_) return static_cast<char*>(base_);
    struct stat st{};
    if (fstat(fd_, &st) != 0) throw std::runtime_error("fstat of shared memory failed");
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (size < bytes) throw std::runtime_error("shared memory shorter than the job says");
    if (base_ != nullptr) munmap(base_, size_);
    base_ = mmap(nullptr, size, protection_, MAP_SHARED, fd_, 0);
    if (base_ == MAP_FAILED) {
      base_ = nullptr;
      size_ = 0;
      throw std::bad_alloc();
    }
    size_ = size;
    return static_cast<char*>(base_);
  }

 private:
  int fd_;
  int protection_;
  void* base_ = nullptr;
  std::uint64_t size_ = 0;
};

// The job the listener has received, handed to the runner.
struct job_order {
  std::string function;
  std::string params;
  std::uint64_t body_bytes = 0;
  std::uint64_t sequence = 0;
};

// The listener thread reads crunchd's packets — jobs, and stops for the running job — and the
// main thread runs the jobs: a job's stop token fires while it computes.
class helper_loop {
 public:
  explicit helper_loop(const kind_isolation& isolation) : isolation_(isolation) {}

  void start_listening() {
    listener_ = std::thread([this] { listen(); });
  }

  [[noreturn]] void run() {
    shared_window input(input_fd, PROT_READ);
    shared_window output(output_fd, PROT_READ | PROT_WRITE);
    for (;;) {
      job_order job;
      std::stop_source stop;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [&] { return next_.has_value(); });
        job = std::move(*next_);
        next_.reset();
        running_ = job.sequence;
        stop_ = stop;
        if (stopped_early_ == job.sequence) stop.request_stop();
      }
      answer_head head;
      head.sequence = job.sequence;
      std::string text;
      try {
        const auto f = isolation_.functions.find(job.function);
        if (f == isolation_.functions.end()) {
          head.how = outcome::no_function;
        } else {
          const char* body = input.at_least(job.body_bytes);
          auto out = f->second(job.params, std::string_view(body, job.body_bytes), stop.get_token());
          if (!out) {
            head.how = outcome::stopped;
          } else {
            head.how = outcome::output;
            head.status = out->status;
            head.body_bytes = out->body.size();
            write_output(output, out->body);
          }
        }
      } catch (const std::bad_alloc&) {
        head.how = outcome::out_of_memory;
        text = "an allocation failed";
      } catch (const std::exception& e) {
        head.how = outcome::failed;
        text = e.what();
      } catch (...) {
        head.how = outcome::failed;
        text = "unknown exception";
      }
      {
        std::lock_guard lock(mutex_);
        running_ = 0;
      }
      send_answer(head, text);
    }
  }

 private:
  void listen() {
    name_thread_for_reports("helper listener");
    std::string packet(max_packet, '\0');
    for (;;) {
      const auto got = recv(socket_fd, packet.data(), packet.size(), 0);
      // crunchd closed the socket, or is gone: nothing is left to do.
      if (got <= 0) _exit(0);
      message type{};
      if (got < static_cast<ssize_t>(sizeof type)) continue;
      std::memcpy(&type, packet.data(), sizeof type);
      if (type == message::job && got >= static_cast<ssize_t>(sizeof(job_head))) {
        job_head head{};
        std::memcpy(&head, packet.data(), sizeof head);
        const auto rest = static_cast<std::size_t>(got) - sizeof head;
        if (std::size_t{head.function_bytes} + head.params_bytes > rest) continue;
        job_order job{packet.substr(sizeof head, head.function_bytes),
                      packet.substr(sizeof head + head.function_bytes, head.params_bytes), head.body_bytes,
                      head.sequence};
        {
          std::lock_guard lock(mutex_);
          next_ = std::move(job);
        }
        ready_.notify_one();
      } else if (type == message::stop && got >= static_cast<ssize_t>(sizeof(stop_head))) {
        stop_head head{};
        std::memcpy(&head, packet.data(), sizeof head);
        std::lock_guard lock(mutex_);
        if (running_ == head.sequence) {
          stop_.request_stop();
        } else {
          stopped_early_ = head.sequence;  // it has not started yet
        }
      }
    }
  }

  void write_output(shared_window& output, const std::string& body) {
    struct stat st{};
    if (fstat(output_fd, &st) != 0) throw std::runtime_error("fstat of the output failed");
    if (body.size() > static_cast<std::size_t>(st.st_size)) {
      std::uint64_t size = 1 << 20;
      while (size < body.size()) size <<= 1;
      if (size > max_bytes) throw std::length_error("the answer is over 1 GiB");
      if (ftruncate(output_fd, static_cast<off_t>(size)) != 0) throw std::bad_alloc();
    }
    std::memcpy(output.at_least(body.size()), body.data(), body.size());
  }

  void send_answer(const answer_head& head, const std::string& text) {
    std::string packet(reinterpret_cast<const char*>(&head), sizeof head);
    packet.append(text, 0, std::min(text.size(), max_packet - sizeof head));
    if (send(socket_fd, packet.data(), packet.size(), MSG_NOSIGNAL) < 0) _exit(0);
  }

  const kind_isolation& isolation_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::optional<job_order> next_;     // guarded by mutex_
  std::uint64_t running_ = 0;         // guarded by mutex_: the running job's sequence, 0: none
  std::uint64_t stopped_early_ = 0;   // guarded by mutex_
  std::stop_source stop_;             // guarded by mutex_: the running job's
  std::thread listener_;              // never joined: the process ends with _exit
};

// What the C library reads from files the first time it needs it, read now, while the helper may
// still open files: glibc's malloc reads /proc/sys/vm/overcommit_memory once, when a thread's
// arena first shrinks (check_may_shrink_heap). A thread of its own grows an arena past the trim
// threshold and frees it.
void prime_c_library() {
  std::thread([] {
    std::vector<void*> blocks;
    for (int i = 0; i < 64; ++i) blocks.push_back(std::malloc(64 * 1024));  // under the mmap threshold
    for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) std::free(*it);
  }).join();
}

worker_priority priority_named(std::string_view name) {
  if (name == "batch") return worker_priority::batch;
  if (name == "idle") return worker_priority::idle;
  return worker_priority::normal;
}

}  // namespace

bool is_helper_invocation(int argc, char** argv) noexcept {
  return argc >= 2 && std::string_view(argv[1]) == flag;
}

void run_helper(int argc, char** argv, const std::vector<kind_declaration>& kinds) {
  // <executable> --crunch-helper KIND LABEL PRIORITY PARENT_PID
  if (argc != 6) give_up("usage: --crunch-helper KIND LABEL PRIORITY PARENT_PID (crunchd starts helpers itself)");
  const std::string kind = argv[2];
  const std::string label = argv[3];
  ::close(program_fd);  // crunchd's program, which it was executed from: nothing to keep open
  // Dies with crunchd: the parent's end is what the helper serves. (And a crunchd gone before
  // this line is caught by the check after it.)
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (std::to_string(getppid()) != argv[5]) _exit(1);
  std::signal(SIGPIPE, SIG_IGN);
  const rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  install_fatal_signal_report(socket_fd, fatal_report_style::packet);
  name_thread_for_reports("helper " + kind + " (" + label + ")");
  const std::string name = ("crunch-" + kind).substr(0, 15);
  prctl(PR_SET_NAME, name.c_str());
  adopt_worker_priority(priority_named(argv[4]));

  const kind_isolation* isolation = nullptr;
  for (const auto& k : kinds) {
    if (k.name == kind && k.isolation) isolation = &*k.isolation;
  }
  if (isolation == nullptr) give_up("no isolated kind " + kind + " in this program");
  try {
    if (isolation->start) isolation->start();
  } catch (const std::exception& e) {
    give_up("the " + kind + " kind could not start: " + e.what());
  }
  prime_c_library();
  helper_loop loop(*isolation);
  loop.start_listening();
  try {
    close_sandbox(getpid());
  } catch (const std::exception& e) {
    give_up(std::string("cannot close the sandbox: ") + e.what());
  }
  const message ready = message::ready;
  if (send(socket_fd, &ready, sizeof ready, MSG_NOSIGNAL) < 0) _exit(0);
  loop.run();
}

}  // namespace crunch
