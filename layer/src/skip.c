/* skip_processes and skip_build_tools: the layer stays inactive in a process whose name the CLI listed (it still
 * passes itself on through exec, so the process's children are served: "A starts B, only B matters"). */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

extern char *program_invocation_short_name;

static int listed(const char *list, const char *name) {
  size_t n = strlen(name);
  if (n == 0) return 0;
  for (const char *at = list; *at != '\0';) {
    const char *end = strchr(at, ':');
    size_t len = end ? (size_t)(end - at) : strlen(at);
    if (len == n && strncmp(at, name, n) == 0) return 1;
    at += len + (end != NULL);
  }
  return 0;
}

int dp_skipped_process(void) {
  const char *list = getenv(DP_ENV_SKIP_PROCESSES);
  if (list == NULL || list[0] == '\0') return 0;
  /* By the name it was started as (a symlink's, such as python3) or by its executable's file name. */
  if (listed(list, program_invocation_short_name)) return 1;
  char exe[PATH_MAX];
  int saved = errno;
  ssize_t n = real_readlink("/proc/self/exe", exe, sizeof exe - 1);
  errno = saved;
  if (n <= 0) return 0;
  exe[n] = '\0';
  const char *base = strrchr(exe, '/');
  return listed(list, base ? base + 1 : exe);
}
