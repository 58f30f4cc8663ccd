/* The descriptors the layer made or relayed (remote files and directories, relayed sockets), and absolute paths for
 * *at calls. No lock: each descriptor has a slot with a sequence counter (a seqlock). Readers copy the slot and retry
 * if a writer was in it; a writer owns the slot while the counter is odd, with signals blocked so that a handler on
 * its own thread never waits for it. So a signal handler or a forked child never waits on another thread. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DP_MAX_FD 65536
#define DP_CHUNK 256
#define DP_CHUNKS (DP_MAX_FD / DP_CHUNK)

struct slot {
  atomic_uint seq; /* odd while a writer is in the slot */
  int present;
  struct dp_fdinfo info;
};

/* Slots come in chunks mapped on first use (mmap, not malloc: a signal handler may be the first to need one). */
static _Atomic(struct slot *) chunks[DP_CHUNKS];

static struct slot *slot_of(int fd, int create) {
  if (fd < 0 || fd >= DP_MAX_FD) return NULL;
  struct slot *chunk = atomic_load_explicit(&chunks[fd / DP_CHUNK], memory_order_acquire);
  if (chunk == NULL && create) {
    void *fresh = mmap(NULL, DP_CHUNK * sizeof(struct slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fresh == MAP_FAILED) return NULL;
    struct slot *expected = NULL;
    if (atomic_compare_exchange_strong(&chunks[fd / DP_CHUNK], &expected, (struct slot *)fresh)) chunk = fresh;
    else {
      munmap(fresh, DP_CHUNK * sizeof(struct slot));
      chunk = expected;
    }
  }
  return chunk == NULL ? NULL : &chunk[fd % DP_CHUNK];
}

/* Copies the slot as one consistent version; returns whether it held a descriptor. */
static int read_slot(struct slot *s, struct dp_fdinfo *out) {
  for (unsigned spins = 0;; spins++) {
    unsigned before = atomic_load_explicit(&s->seq, memory_order_acquire);
    if (before & 1) {
      if (spins > 64) sched_yield();
      continue;
    }
    int present = s->present;
    if (present && out != NULL) memcpy(out, &s->info, sizeof *out);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&s->seq, memory_order_relaxed) == before) return present;
  }
}

/* Replaces the slot's content (info NULL: empties it); returns whether it held a descriptor, copied into *old. */
static int write_slot(struct slot *s, const struct dp_fdinfo *info, struct dp_fdinfo *old) {
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  for (unsigned spins = 0;; spins++) {
    unsigned seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
    if (!(seq & 1) && atomic_compare_exchange_weak_explicit(&s->seq, &seq, seq + 1, memory_order_acquire, memory_order_relaxed)) break;
    if (spins > 64) sched_yield();
  }
  int had = s->present;
  if (had && old != NULL) *old = s->info;
  s->present = info != NULL;
  if (info != NULL) s->info = *info;
  atomic_fetch_add_explicit(&s->seq, 1, memory_order_release);
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
  return had;
}

/* A forked child has only the forking thread: a slot another thread was writing is left half written; forget it. And
 * fork copies the descriptor table before the memory, while other threads run on: a slot of a descriptor made in
 * between names one the child has not, whose number its next open would take; forget that too. */
static void after_fork_in_child(void) {
  int saved = errno;
  for (int c = 0; c < DP_CHUNKS; c++) {
    struct slot *chunk = atomic_load(&chunks[c]);
    for (int i = 0; chunk != NULL && i < DP_CHUNK; i++) {
      struct slot *s = &chunk[i];
      if (atomic_load(&s->seq) & 1) {
        s->present = 0;
        atomic_fetch_add(&s->seq, 1);
      } else if (s->present && REAL(fcntl)(c * DP_CHUNK + i, F_GETFD) < 0) {
        s->present = 0;
      }
    }
  }
  errno = saved;
}
__attribute__((constructor)) static void fork_safe(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

void dp_fd_set(int fd, const struct dp_fdinfo *info) {
  struct slot *s = slot_of(fd, 1);
  if (s != NULL) write_slot(s, info, NULL);
}

int dp_fd_get(int fd, struct dp_fdinfo *out) {
  struct slot *s = slot_of(fd, 0);
  return s != NULL && read_slot(s, out);
}

int dp_fd_take(int fd, struct dp_fdinfo *out) {
  struct slot *s = slot_of(fd, 0);
  /* Most descriptors closed were never the layer's: a read decides that without writing. */
  if (s == NULL || !read_slot(s, NULL)) return 0;
  return write_slot(s, NULL, out);
}

void dp_fd_forget(int fd) {
  struct dp_fdinfo unused;
  dp_fd_take(fd, &unused);
}

void dp_fd_copy(int from, int to) {
  struct dp_fdinfo info;
  if (dp_fd_get(from, &info)) dp_fd_set(to, &info);
  else dp_fd_forget(to);
}

void dp_fd_each(unsigned first, unsigned last, int take, void (*each)(int fd, const struct dp_fdinfo *)) {
  for (unsigned c = first / DP_CHUNK; c < DP_CHUNKS && c <= last / DP_CHUNK; c++) {
    if (atomic_load_explicit(&chunks[c], memory_order_acquire) == NULL) continue;
    for (unsigned fd = c * DP_CHUNK; fd < (c + 1) * DP_CHUNK && fd <= last; fd++) {
      struct dp_fdinfo info;
      if (fd >= first && (take ? dp_fd_take((int)fd, &info) : dp_fd_get((int)fd, &info))) each((int)fd, &info);
    }
  }
}

int dp_absolute(int dirfd, const char *path, char *out, size_t size) {
  if (path == NULL) return -EFAULT;
  size_t path_len = strlen(path);
  if (path[0] == '/') {
    if (path_len >= size) return -ENAMETOOLONG;
    memcpy(out, path, path_len + 1);
  } else {
    /* The base goes straight into out (not snprintf: relative paths are common enough, a build's, for copies to show). */
    if (dirfd == AT_FDCWD) {
      int r = dp_cwd(out, size);
      if (r < 0) return r;
    } else {
      char link[64];
      snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
      ssize_t n = REAL(readlink)(link, out, size - 1);
      if (n < 0) return -EBADF;
      out[n] = '\0';
    }
    size_t base_len = out[0] == '/' && out[1] == '\0' ? 0 : strlen(out);
    if (base_len + 1 + path_len >= size) return -ENAMETOOLONG;
    out[base_len] = '/';
    memcpy(out + base_len + 1, path, path_len + 1);
  }
  return dp_unstand(out);
}
