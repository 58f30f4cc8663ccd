/* Session state: one-time init (the proxy's address captured at load), the thread-local in-hook guard, and debug logging. */
#define _GNU_SOURCE
#include "layer.h"
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int enabled;
static int debug;
static __thread int in_hook __attribute__((tls_model("initial-exec")));
/* The frame of the hook that set the guard: a later hook at or above it means a siglongjmp left that hook. */
static __thread uintptr_t guard_frame __attribute__((tls_model("initial-exec")));
/* Read once at load: a program may clear its environment before its threads first call a hook. */
static char socket_path[108];
static char standin_root[128];
static char agent_dns_path[108];
static size_t standin_len;

static const char *bypass_names[] = {"disabled", "reentrant", "policy", "not-inet", "numeric", "not-ours", "any-port"};

/* out = the socket's directory (its first dir_len bytes), "/" and name; its length, or 0 (out "") when too long. */
static size_t next_to_socket(char *out, size_t size, size_t dir_len, const char *name) {
  size_t name_len = strlen(name);
  if (dir_len + 1 + name_len >= size) {
    out[0] = '\0';
    return 0;
  }
  memcpy(out, socket_path, dir_len);
  out[dir_len] = '/';
  memcpy(out + dir_len + 1, name, name_len + 1);
  return dir_len + 1 + name_len;
}

static void init(void) {
  const char *log = getenv("DOPPEL_LAYER_LOG");
  debug = log != NULL && strcmp(log, "debug") == 0;
  const char *socket = getenv(DP_ENV_SOCKET);
  enabled = socket != NULL && socket[0] != '\0' && strlen(socket) < sizeof socket_path && !dp_skipped_process();
  if (enabled) {
    dp_reserve_own_fds();
    strcpy(socket_path, socket);
    /* The session's other files live next to the socket (see doppel-wire.h); joined without printf, whose code a
     * process that never prints would page in for this alone. */
    const char *slash = strrchr(socket_path, '/');
    size_t dir_len = slash ? (size_t)(slash - socket_path) : 0;
    standin_len = next_to_socket(standin_root, sizeof standin_root, dir_len, DP_STANDIN_DIR);
    next_to_socket(agent_dns_path, sizeof agent_dns_path, dir_len, DP_AGENT_DNS_SOCKET);
    char fast_path[sizeof socket_path + sizeof DP_FAST_PATH_FILE];
    if (next_to_socket(fast_path, sizeof fast_path, dir_len, DP_FAST_PATH_FILE) > 0) dp_rules_from_file(fast_path);
  }
}

void dp_init(void) { pthread_once(&once, init); }

int dp_active(void) {
  dp_init();
  return enabled;
}

__attribute__((constructor)) static void load(void) { dp_init(); }

const char *dp_socket_path(void) { return socket_path; }
const char *dp_agent_dns_path(void) { return agent_dns_path; }

int dp_unstand(char *path) {
  if (standin_len == 0 || strncmp(path, standin_root, standin_len) != 0) return 0;
  const char *rest = path + standin_len;
  if (*rest != '/' && *rest != '\0') return 0;
  if (*rest == '\0') strcpy(path, "/");
  else memmove(path, rest, strlen(rest) + 1);
  return 1;
}

/* A handler running on its alternate stack is nested in whatever the thread was doing, wherever that stack is. */
static int on_alt_stack(void) {
  stack_t ss;
  return sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_ONSTACK);
}

int dp_enter(void) {
  dp_init();
  if (!enabled) return 0;
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
  /* Nested calls (the layer's own libc calls, a signal handler) run deeper on the stack than the hook that set the
   * guard. A hook entered at or above that frame means the program jumped out of it (siglongjmp from a handler):
   * the guard is stale, and the connection's state is settled by dp_call. */
  if (in_hook && (frame < guard_frame || on_alt_stack())) return 0;
  in_hook = 1;
  guard_frame = frame;
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
