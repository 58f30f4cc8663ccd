/* Session state: one-time init, the thread-local in-hook guard, and debug logging. */
#define _GNU_SOURCE
#include "layer.h"
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int enabled;
static int debug;
static __thread int in_hook __attribute__((tls_model("initial-exec")));

static const char *bypass_names[] = {"disabled", "reentrant", "policy", "not-inet", "numeric", "not-ours", "any-port"};

static void init(void) {
  dp_resolve_hooks();
  const char *socket = getenv(DP_ENV_SOCKET);
  enabled = socket != NULL && socket[0] != '\0';
  const char *log = getenv("DOPPEL_LAYER_LOG");
  debug = log != NULL && strcmp(log, "debug") == 0;
}

void dp_init(void) { pthread_once(&once, init); }

__attribute__((constructor)) static void load(void) { dp_init(); }

int dp_enter(void) {
  dp_init();
  if (!enabled) return 0;
  if (in_hook) return 0;
  in_hook = 1;
  return 1;
}

void dp_leave(void) { in_hook = 0; }

void dp_bypassed(enum dp_bypass why, const char *what) {
  if (debug && why != DP_BYPASS_REENTRANT && why != DP_BYPASS_DISABLED) dp_log("%s: bypass (%s)", what, bypass_names[why]);
}

void dp_log(const char *fmt, ...) {
  if (!debug) return;
  int saved = errno;
  char line[1024];
  int n = snprintf(line, sizeof line, "doppel-layer[%d]: ", (int)getpid());
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  (void)!write(2, line, (size_t)n);
  errno = saved;
}
