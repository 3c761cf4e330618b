// Measurement only, never part of crunch: preloaded into bench/argon2_single's libsodium run, it
// keeps each thread's one large anonymous mapping (>= 16 MiB) instead of unmapping it, and hands
// it back at the thread's next mapping of the same size — libsodium's Argon2 with its memory kept,
// the physical limit crunch's own core is measured against (bench/argon2-node/compare.sh).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <sys/mman.h>
static __thread void* kept; static __thread size_t kept_size; static __thread void* live; static __thread size_t live_size;
void* mmap(void* a, size_t n, int prot, int flags, int fd, off_t off) {
  static void* (*real)(void*, size_t, int, int, int, off_t);
  if (!real) real = dlsym(RTLD_NEXT, "mmap");
  if (n >= (16u << 20) && fd == -1 && a == NULL && (flags & MAP_ANONYMOUS)) {
    if (kept && kept_size == n) { live = kept; live_size = n; kept = NULL; return live; }
    void* p = real(a, n, prot, flags, fd, off); live = p; live_size = n; return p;
  }
  return real(a, n, prot, flags, fd, off);
}
int munmap(void* a, size_t n) {
  static int (*real)(void*, size_t);
  if (!real) real = dlsym(RTLD_NEXT, "munmap");
  if (a == live && n == live_size && !kept) { kept = a; kept_size = n; live = NULL; return 0; }
  return real(a, n);
}
