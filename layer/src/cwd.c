/* The working directory for relative paths, kept per thread instead of a getcwd (a system call) on every call:
 * chdir and fchdir, through libc or syscall(), move an epoch on, and a thread's copy is used only while the epoch
 * is the one it was read in. A chdir the layer cannot see (a raw system call, as Go's os.Chdir makes) leaves the
 * copies stale, so relative paths in C code after it would resolve against the old directory. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static atomic_uint epoch = 1;
static __thread unsigned seen __attribute__((tls_model("initial-exec")));
static __thread size_t cwd_len __attribute__((tls_model("initial-exec")));
/* Short: every thread's start clears its thread-local storage; a longer directory is read each time. */
static __thread char cwd[256] __attribute__((tls_model("initial-exec")));

int dp_cwd(char *out, size_t size) {
  unsigned now = atomic_load(&epoch);
  if (seen != now) {
    if (getcwd(out, size) == NULL) return errno == ERANGE ? -ENAMETOOLONG : -errno;
    size_t len = strlen(out);
    if (len < sizeof cwd) {
      memcpy(cwd, out, len + 1);
      cwd_len = len;
      seen = now;
    }
    return 0;
  }
  if (cwd_len >= size) return -ENAMETOOLONG;
  memcpy(out, cwd, cwd_len + 1);
  return 0;
}

/* After the change: a thread that read the epoch before it, and the directory during it, reads it again. */
int dp_cwd_moved(int r) {
  atomic_fetch_add(&epoch, 1);
  return r;
}

int dp_chdir_raw(long number, long arg) { return dp_cwd_moved((int)REAL(syscall)(number, arg)); }

/* chdir is dirs.c's (a remote directory's stand-in); it calls dp_cwd_moved too. */
int fchdir(int fd) {
  dp_init();
  return dp_cwd_moved(REAL(fchdir)(fd));
}
