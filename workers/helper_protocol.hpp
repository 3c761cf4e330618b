#pragma once
// What crunchd and a helper process say to each other (include/crunch/isolation.hpp). Both are
// the same executable, so the packets are plain structs. A helper is started as
//   <crunchd's executable> --crunch-helper KIND LABEL PRIORITY PARENT_PID
// with these descriptors, and no other:
//   0, 1  /dev/null
//   2     crunchd's stderr (the dynamic loader's complaints, if any)
//   3     a SOCK_SEQPACKET socket to crunchd: one packet a message
//   4     the input memfd: crunchd writes a job's bytes, the helper maps it read-only
//   5     the output memfd: the helper writes its answer's body, crunchd reads it
// Both memfds are sealed against shrinking by crunchd (F_SEAL_SHRINK | F_SEAL_SEAL), so neither
// side can pull pages from under the other's reads.

#include <cstdint>

namespace crunch::helper_protocol {

inline constexpr const char* flag = "--crunch-helper";
inline constexpr int socket_fd = 3;
inline constexpr int input_fd = 4;
inline constexpr int output_fd = 5;
/// crunchd's own program, which the helper was executed from (/proc/self/fd/6): closed at once.
inline constexpr int program_fd = 6;
/// The biggest packet: a job's head with its function's name and its parameters.
inline constexpr std::size_t max_packet = 64 * 1024;
/// Address space each side reserves for a memfd's mapping; a body or an answer is at most this.
inline constexpr std::uint64_t max_bytes = std::uint64_t{1} << 32;

enum class message : std::uint32_t {
  ready = 1,  ///< helper → crunchd: started, sandbox closed, waiting for jobs
  job,        ///< crunchd → helper: job_head, then the function's name and the parameters
  stop,       ///< crunchd → helper: stop_head: stop the job with this sequence number
  answer,     ///< helper → crunchd: answer_head, then a message (for failures)
  crash,      ///< helper → crunchd, from its fatal-signal handler: the report's text follows
};

struct job_head {
  message type = message::job;
  std::uint32_t function_bytes = 0;
  std::uint32_t params_bytes = 0;
  std::uint32_t reserved = 0;
  std::uint64_t body_bytes = 0;  ///< at the input memfd's start
  std::uint64_t sequence = 0;
};

struct stop_head {
  message type = message::stop;
  std::uint32_t reserved = 0;
  std::uint64_t sequence = 0;
};

/// How a job ended, in answer_head::outcome.
enum class outcome : std::uint32_t {
  output = 1,     ///< status and body_bytes at the output memfd's start
  stopped,        ///< its stop token fired and it stopped
  failed,         ///< it threw: the message follows
  out_of_memory,  ///< std::bad_alloc: over its memory limit
  no_function,    ///< the kind has no function of that name
};

struct answer_head {
  message type = message::answer;
  outcome how = outcome::output;
  std::uint32_t status = 0;
  std::uint32_t reserved = 0;
  std::uint64_t body_bytes = 0;
  std::uint64_t sequence = 0;
};

}  // namespace crunch::helper_protocol
