#pragma once
/// How the OS schedules crunch's threads, as the configuration names it: a header of its own, so
/// that config.hpp, and the kinds that read it, name it without compiling the worker pool and Asio
/// (worker_pool.hpp has the functions that apply it).

namespace crunch {

/// OS scheduling class of the worker threads, so that the I/O thread wins the CPU.
enum class worker_priority {
  normal,  ///< same as the I/O thread
  batch,   ///< SCHED_BATCH and nice +19
  idle,    ///< SCHED_IDLE: runs only when nothing else wants the CPU
};

/// OS scheduling of the I/O thread.
enum class io_priority {
  automatic,  ///< real-time (SCHED_FIFO 1) when the OS allows it, else normal
  realtime,   ///< real-time, or crunchd refuses to start
  normal,     ///< SCHED_OTHER, nice 0, like any thread
};

}  // namespace crunch
