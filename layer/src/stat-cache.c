/* A short-lived memory of remote stat answers, per process: a stat, or the stat a remote open brought, answers the
 * same path's stats for DP_CACHE_TTL_NS afterwards without a round trip. Within that window a change on the target
 * is not seen; any request that may change files (anything but a read-only question) empties it. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define DP_CACHE_SLOTS 16
#define DP_CACHE_PATH 256
#define DP_CACHE_TTL_NS 100000000LL

struct slot {
  int64_t at; /* 0: empty */
  unsigned epoch;
  int nofollow;
  int status; /* 0, or a negative errno: a file that is not there is asked about as often as one that is */
  struct dp_stat stat;
  char path[DP_CACHE_PATH];
};

static struct slot slots[DP_CACHE_SLOTS];
static unsigned next_slot;
/* Taken with a try: a thread that finds it busy just asks the proxy, so no thread ever waits here. */
static atomic_flag busy = ATOMIC_FLAG_INIT;
/* Moves on at every request that may change files; an answer is kept only under the epoch its question was asked in. */
static atomic_uint epoch;

static int64_t now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A child forked while another thread held the flag starts with an empty cache. */
static void after_fork_child(void) {
  /* Written only where set: each page a forked child writes is copied for it, and most children exec at once. */
  if (next_slot != 0)
    for (int i = 0; i < DP_CACHE_SLOTS; i++)
      if (slots[i].at != 0) slots[i].at = 0;
  atomic_flag_clear(&busy);
}
__attribute__((constructor)) static void fork_safe(void) { pthread_atfork(NULL, NULL, after_fork_child); }

int dp_cache_get(const char *path, int nofollow, struct dp_stat *out) {
  if (atomic_flag_test_and_set_explicit(&busy, memory_order_acquire)) return 1;
  int64_t t = now();
  unsigned current = atomic_load(&epoch);
  int status = 1;
  for (int i = 0; i < DP_CACHE_SLOTS && status == 1; i++) {
    struct slot *s = &slots[i];
    if (s->at == 0 || s->epoch != current || t - s->at > DP_CACHE_TTL_NS || s->nofollow != nofollow || strcmp(s->path, path) != 0) continue;
    status = s->status;
    if (status == 0) *out = s->stat;
  }
  atomic_flag_clear_explicit(&busy, memory_order_release);
  return status;
}

unsigned dp_cache_epoch(void) { return atomic_load(&epoch); }

void dp_cache_put(const char *path, int nofollow, int status, const struct dp_stat *stat, unsigned asked_in) {
  if (strlen(path) >= DP_CACHE_PATH || (status != 0 && status != -ENOENT && status != -ENOTDIR) || asked_in != atomic_load(&epoch)) return;
  if (atomic_flag_test_and_set_explicit(&busy, memory_order_acquire)) return;
  struct slot *s = &slots[next_slot++ % DP_CACHE_SLOTS];
  s->at = now();
  s->epoch = asked_in;
  s->nofollow = nofollow;
  s->status = status;
  if (stat != NULL) s->stat = *stat;
  strcpy(s->path, path);
  atomic_flag_clear_explicit(&busy, memory_order_release);
}

void dp_cache_note(uint32_t op, const void *head, size_t head_len) {
  int32_t flags = 0;
  if (op == DP_OP_OPEN && head_len >= sizeof flags) memcpy(&flags, head, sizeof flags);
  int read_only = op == DP_OP_STAT || op == DP_OP_ACCESS || op == DP_OP_READLINK || op == DP_OP_REALPATH ||
                  op == DP_OP_GETADDRINFO || (op == DP_OP_OPEN && (flags & (O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND)) == O_RDONLY);
  if (!read_only) atomic_fetch_add(&epoch, 1);
}
