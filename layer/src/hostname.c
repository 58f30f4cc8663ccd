/* feature.hostname: gethostname and uname report the target's hostname, which the CLI puts in DOPPEL_HOSTNAME. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

/* Captured at load: the program may clear its environment later. Empty: the local hostname stays. */
static char target_name[sizeof ((struct utsname *)0)->nodename];

__attribute__((constructor)) static void capture(void) {
  const char *name = getenv(DP_ENV_HOSTNAME);
  if (name != NULL && strlen(name) < sizeof target_name) strcpy(target_name, name);
}

int gethostname(char *name, size_t len) {
  if (!dp_active() || target_name[0] == '\0') return REAL(gethostname)(name, len);
  size_t n = strlen(target_name);
  /* As glibc: a buffer without room for the name and its NUL is ENAMETOOLONG. */
  if (n >= len) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(name, target_name, n + 1);
  return 0;
}

int uname(struct utsname *buf) {
  dp_init();
  int r = REAL(uname)(buf);
  if (r == 0 && target_name[0] != '\0' && dp_active()) strcpy(buf->nodename, target_name);
  return r;
}
