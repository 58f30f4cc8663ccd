/* skip_processes and skip_build_tools: the layer stays inactive in a process whose name the CLI listed (it still
 * passes itself on through exec, so the process's children are served: "A starts B, only B matters"). */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

extern char *program_invocation_name;
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

/* The file name at the end of path's symbolic links, into out. Hop by hop from the name the process was executed by,
 * not /proc/self/exe: a process's first /proc lookup cost 15-30 us, more than the rest of the layer's start. */
static const char *final_name(const char *path, char *out, size_t size) {
  char link[PATH_MAX];
  if (strlen(path) >= size) return NULL;
  strcpy(out, path);
  for (int hops = 0; hops < 40; hops++) {
    ssize_t n = REAL(readlink)(out, link, sizeof link - 1);
    if (n <= 0) break;
    link[n] = '\0';
    const char *slash = strrchr(out, '/');
    size_t dir = link[0] == '/' || slash == NULL ? 0 : (size_t)(slash - out) + 1;
    if (dir + (size_t)n >= size) return NULL;
    memcpy(out + dir, link, (size_t)n + 1);
  }
  const char *base = strrchr(out, '/');
  return base ? base + 1 : out;
}

int dp_skipped_process(void) {
  const char *list = getenv(DP_ENV_SKIP_PROCESSES);
  if (list == NULL || list[0] == '\0') return 0;
  /* By the name it was started as (a symlink's, such as python3) or by its executable's file name: the file it was
   * executed as, and for a script (#!) the interpreter its argv[0] names, each at the end of its symbolic links. */
  if (listed(list, program_invocation_short_name)) return 1;
  const char *executed = (const char *)getauxval(AT_EXECFN);
  char exe[PATH_MAX];
  int saved = errno;
  const char *name = executed != NULL ? final_name(executed, exe, sizeof exe) : NULL;
  int skipped = name != NULL && listed(list, name);
  if (!skipped && strchr(program_invocation_name, '/') != NULL && (executed == NULL || strcmp(executed, program_invocation_name) != 0)) {
    name = final_name(program_invocation_name, exe, sizeof exe);
    skipped = name != NULL && listed(list, name);
  }
  errno = saved;
  return skipped;
}
