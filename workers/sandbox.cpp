#include "sandbox.hpp"

#include "helper_protocol.hpp"

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>

namespace crunch {

namespace {

struct release_filter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};

void allow(scmp_filter_ctx ctx, int syscall) {
  if (const int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, syscall, 0); rc != 0) {
    throw std::runtime_error("seccomp_rule_add: " + std::string(std::strerror(-rc)));
  }
}

// Argument `index` compared by `op` with `a` (and `b`, for a mask): what libseccomp's SCMP_A*
// macros make, written without their C compound literals (clang's -Wpedantic refuses those).
constexpr scmp_arg_cmp arg(unsigned int index, scmp_compare op, scmp_datum_t a, scmp_datum_t b = 0) {
  return {index, op, a, b};
}

template <typename... Compare>
void allow_if(scmp_filter_ctx ctx, int syscall, Compare... compare) {
  if (const int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, syscall, sizeof...(Compare), compare...); rc != 0) {
    throw std::runtime_error("seccomp_rule_add: " + std::string(std::strerror(-rc)));
  }
}

}  // namespace

void close_sandbox(int own_pid) {
  // SIGSYS rather than an outright kill: the helper's fatal-signal report then names the call,
  // and the call is not made either way.
  std::unique_ptr<void, release_filter> ctx(seccomp_init(SCMP_ACT_TRAP));
  if (!ctx) throw std::runtime_error("seccomp_init failed");
  auto* f = ctx.get();
  // Every thread, the ones started before the filter too (the listener, a library's pool).
  if (seccomp_attr_set(f, SCMP_FLTATR_CTL_TSYNC, 1) != 0) throw std::runtime_error("seccomp: no TSYNC");

  // Computing, and the memory it needs.
  for (const int s : {SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(mprotect),
                      SCMP_SYS(madvise), SCMP_SYS(futex), SCMP_SYS(get_robust_list), SCMP_SYS(set_robust_list),
                      SCMP_SYS(rseq), SCMP_SYS(sched_yield), SCMP_SYS(sched_getaffinity), SCMP_SYS(getrandom),
                      SCMP_SYS(membarrier)}) {
    allow(f, s);
  }
  // Threads, not processes: clone only with CLONE_THREAD. glibc tries clone3 first, whose flags
  // live in memory a filter cannot read: it is told the kernel lacks it, and falls back to clone.
  allow_if(f, SCMP_SYS(clone), arg(0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
  if (seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) != 0) throw std::runtime_error("seccomp: clone3");
  // Ending, and signals to its own threads (raise and abort use tgkill).
  for (const int s : {SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigaction),
                      SCMP_SYS(rt_sigprocmask), SCMP_SYS(sigaltstack), SCMP_SYS(restart_syscall), SCMP_SYS(getpid),
                      SCMP_SYS(gettid), SCMP_SYS(getppid)}) {
    allow(f, s);
  }
  allow_if(f, SCMP_SYS(tgkill), arg(0, SCMP_CMP_EQ, static_cast<scmp_datum_t>(own_pid)));
  // Time.
  for (const int s : {SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres), SCMP_SYS(clock_nanosleep),
                      SCMP_SYS(nanosleep), SCMP_SYS(gettimeofday), SCMP_SYS(getrusage)}) {
    allow(f, s);
  }
  // The descriptors it was given: its socket to crunchd, the two memfds, stderr.
  for (const int s : {SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev), SCMP_SYS(pread64),
                      SCMP_SYS(pwrite64), SCMP_SYS(lseek), SCMP_SYS(close), SCMP_SYS(recvfrom), SCMP_SYS(recvmsg),
                      SCMP_SYS(sendto), SCMP_SYS(sendmsg), SCMP_SYS(fstat), SCMP_SYS(poll), SCMP_SYS(ppoll)}) {
    allow(f, s);
  }
  // fstat is newfstatat(fd, "", AT_EMPTY_PATH) in glibc: a path would look at the file system.
  allow_if(f, SCMP_SYS(newfstatat), arg(3, SCMP_CMP_EQ, AT_EMPTY_PATH));
  allow_if(f, SCMP_SYS(fcntl), arg(1, SCMP_CMP_EQ, F_GETFL));
  allow_if(f, SCMP_SYS(fcntl), arg(1, SCMP_CMP_EQ, F_GETFD));
  // Creating a file is refused, not fatal: liborc (libvips's SIMD code generator) first asks for
  // a file in /tmp to map its code from, and takes anonymous memory when refused. Any open with
  // O_CREAT is refused (with it, an existing file would open); umask is harmless without it.
  // Every other open, an existing file's, is off the list: SIGSYS.
  allow(f, SCMP_SYS(umask));
  for (const auto& [call, flags_arg] : {std::pair{SCMP_SYS(openat), 2u}, std::pair{SCMP_SYS(open), 1u}}) {
    const scmp_arg_cmp creating{flags_arg, SCMP_CMP_MASKED_EQ, O_CREAT, O_CREAT};
    if (seccomp_rule_add_array(f, SCMP_ACT_ERRNO(EACCES), call, 1, &creating) != 0) throw std::runtime_error("seccomp: open");
  }
  if (seccomp_rule_add(f, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(creat), 0) != 0) throw std::runtime_error("seccomp: creat");
  // Growing the answer's memfd.
  allow_if(f, SCMP_SYS(ftruncate), arg(0, SCMP_CMP_EQ, helper_protocol::output_fd));
  // Naming its threads, and its own threads' scheduling only (pid 0: the calling thread).
  allow_if(f, SCMP_SYS(prctl), arg(0, SCMP_CMP_EQ, PR_SET_NAME));
  allow_if(f, SCMP_SYS(prctl), arg(0, SCMP_CMP_EQ, PR_GET_NAME));
  allow_if(f, SCMP_SYS(sched_setaffinity), arg(0, SCMP_CMP_EQ, 0));
  allow(f, SCMP_SYS(getcpu));
  allow_if(f, SCMP_SYS(sched_setattr), arg(0, SCMP_CMP_EQ, 0));
  allow_if(f, SCMP_SYS(sched_getattr), arg(0, SCMP_CMP_EQ, 0));
  allow_if(f, SCMP_SYS(sched_setscheduler), arg(0, SCMP_CMP_EQ, 0));
  allow_if(f, SCMP_SYS(sched_getscheduler), arg(0, SCMP_CMP_EQ, 0));
  allow_if(f, SCMP_SYS(sched_getparam), arg(0, SCMP_CMP_EQ, 0));
  allow_if(f, SCMP_SYS(setpriority), arg(0, SCMP_CMP_EQ, PRIO_PROCESS), arg(1, SCMP_CMP_EQ, 0));
  allow_if(f, SCMP_SYS(getpriority), arg(0, SCMP_CMP_EQ, PRIO_PROCESS), arg(1, SCMP_CMP_EQ, 0));

#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer's runtime reads /proc/self/maps as the process maps and frees memory: under it
  // (only), a helper may open files to read. It still cannot create one, make a socket or a process.
  for (const auto& [call, flags_arg] : {std::pair{SCMP_SYS(openat), 2u}, std::pair{SCMP_SYS(open), 1u}}) {
    const scmp_arg_cmp reading{flags_arg, SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT, O_RDONLY};
    if (seccomp_rule_add_array(f, SCMP_ACT_ALLOW, call, 1, &reading) != 0) throw std::runtime_error("seccomp: open");
  }
  allow_if(f, SCMP_SYS(fcntl), arg(1, SCMP_CMP_EQ, F_SETFD));  // what it opens, it marks close-on-exec
  // ... and symbolises stacks (its suppressions match symbols), looking at the libraries' files.
  for (const int s : {SCMP_SYS(newfstatat), SCMP_SYS(statx), SCMP_SYS(stat), SCMP_SYS(lstat), SCMP_SYS(readlink),
                      SCMP_SYS(readlinkat), SCMP_SYS(access), SCMP_SYS(faccessat), SCMP_SYS(getdents64)}) {
    allow(f, s);
  }
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // The sanitizers' runtimes probe whether memory is readable through a pipe (UBSan's vptr check,
  // sanitizer_common's IsAccessibleMemoryRange). A pipe reaches nothing outside the process; the
  // release build has no need of one and does not allow it.
  allow(f, SCMP_SYS(pipe));
  allow(f, SCMP_SYS(pipe2));
#endif
  // libseccomp sets no_new_privs itself (SCMP_FLTATR_CTL_NNP, on by default): set it here too, so
  // that it is so whatever that default becomes.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw std::runtime_error("prctl(PR_SET_NO_NEW_PRIVS) failed");
  if (const int rc = seccomp_load(f); rc != 0) {
    throw std::runtime_error("the kernel refused the seccomp filter: " + std::string(std::strerror(-rc)));
  }
}

}  // namespace crunch
