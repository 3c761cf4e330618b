#pragma once
// A helper process's sandbox (include/crunch/isolation.hpp): once its kind has loaded what it
// needs, the helper closes it and from then on can compute, map memory, start threads and talk to
// crunchd over the descriptors it was given — nothing else.

namespace crunch {

/// Sets no_new_privs and loads a seccomp-bpf allow-list on every thread of the calling process.
/// A system call off the list is not made: the thread gets SIGSYS (whose report names the call),
/// and the process dies of it. Off the list, among others: open, openat, socket, connect, bind,
/// execve, fork, vfork, clone without CLONE_THREAD, ptrace, kill. `own_pid` is the process's:
/// signals may go to its own threads only. Throws std::runtime_error when the kernel refuses the
/// filter (no seccomp, or a container's policy that forbids it).
void close_sandbox(int own_pid);

}  // namespace crunch
