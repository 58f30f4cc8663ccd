/* The warm launch (src/warm/): bin/doppel runs `/usr/bin/env NODE ... entry.js exec ...` with this layer preloaded and
 * DOPPEL_LAUNCH set. Before env's main, this asks each warm session host in that directory to start the program in its
 * session; the host decides everything and answers with the program, its arguments and its environment, which are
 * exec'd here, so the program keeps this process (the shell's child), its signals and its exit status. On any "no",
 * error or failed exec the constructor returns and env runs the CLI with the original arguments and environment, after
 * the program's start from a plan when there is one (plan.c). */
#define _GNU_SOURCE
#include "doppel-launch.h"
#include "layer.h"
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* A host answers in milliseconds; one that does not is stuck, and the CLI does the job instead. */
#define DP_LAUNCH_TIMEOUT_S 3

static int send_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

static int recv_all(int fd, char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = recv(fd, buf, len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

static size_t append(char *out, size_t at, const char *s) {
  size_t n = strlen(s) + 1;
  if (out) memcpy(out + at, s, n);
  return at + n;
}

/* The request: header, cwd, argv[1..], environ; sized in a first pass, written in a second. */
static char *build_request(int argc, char **argv, size_t *out_len) {
  char cwd[4096];
  if (getcwd(cwd, sizeof cwd) == NULL) return NULL;
  uint32_t envc = 0;
  while (environ[envc] != NULL) envc++;
  char *buf = NULL;
  size_t len = 0;
  for (int pass = 0; pass < 2; pass++) {
    len = append(buf, sizeof(struct dp_launch_req), cwd);
    for (int i = 1; i < argc; i++) len = append(buf, len, argv[i]);
    for (uint32_t i = 0; i < envc; i++) len = append(buf, len, environ[i]);
    if (pass == 0 && (len > DP_LAUNCH_MAX || (buf = malloc(len)) == NULL)) return NULL;
  }
  struct dp_launch_req req = {DP_LAUNCH_MAGIC, (uint32_t)(len - sizeof req), (int32_t)getpid(), (uint32_t)(argc - 1), envc, 0};
  memcpy(buf, &req, sizeof req);
  *out_len = len;
  return buf;
}

/* `count` NUL-terminated strings from *at (within end) into a NULL-terminated array; NULL when malformed. */
static char **split(char **at, char *end, uint32_t count) {
  char **list = calloc((size_t)count + 1, sizeof *list);
  for (uint32_t i = 0; list && i < count; i++) {
    char *nul = memchr(*at, '\0', (size_t)(end - *at));
    if (nul == NULL) {
      free(list);
      return NULL;
    }
    list[i] = *at;
    *at = nul + 1;
  }
  return list;
}

/* Asks one host. Returns 0 when it said no (or could not be asked); on a yes it execs and does not return, unless the
 * exec failed: then it returns 1 (the host was told, and the CLI runs instead). */
static int ask(const char *path, const char *req, size_t req_len) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) return 0;
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  struct timeval timeout = {DP_LAUNCH_TIMEOUT_S, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  struct dp_launch_resp resp;
  char *body = NULL;
  int result = 0;
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || send_all(fd, req, req_len) != 0 || recv_all(fd, (char *)&resp, sizeof resp) != 0) goto done;
  if (resp.status != DP_LAUNCH_RUN || resp.len == 0 || resp.len > DP_LAUNCH_MAX || (body = malloc(resp.len)) == NULL || recv_all(fd, body, resp.len) != 0) goto done;
  char *at = body, *end = body + resp.len;
  if (end[-1] != '\0') goto done;
  char *text = at;
  at += strlen(at) + 1;
  char *file = at < end ? at : NULL;
  if (file) at += strlen(at) + 1;
  char **args = file ? split(&at, end, resp.argc) : NULL;
  char **envp = args ? split(&at, end, resp.envc) : NULL;
  if (envp == NULL) goto done;
  if (*text) (void)!write(2, text, strlen(text));
  REAL(execve)(file, args, envp);
  char failed = DP_LAUNCH_EXEC_FAILED;
  (void)!send(fd, &failed, 1, MSG_NOSIGNAL);
  result = 1;
done:
  free(body);
  close(fd);
  return result;
}

/* A host its CLI is starting, named by its marker (src/warm/start-host.ts): waits while the marker is there and the host
 * runs, until DP_LAUNCH_STARTING_S after the marker was made; true when its socket (written to `path`) is there to ask.
 * The very next run of a session that left a host gets it, though that session's end did not wait for the host's start.
 * The bound is the marker's age, not this wait's: a marker its host never removed (killed, its pid since reused) costs
 * nothing once it is that old. */
static int wait_started(const char *dir, const char *marker, char *path, size_t size) {
  size_t n = strlen(marker) - strlen(DP_LAUNCH_STARTING);
  const char *dash = memrchr(marker, '-', n);
  long host = dash ? strtol(dash + 1, NULL, 10) : 0;
  char marker_path[4096 + 256];
  if (host <= 1 || (size_t)snprintf(marker_path, sizeof marker_path, "%s/%s", dir, marker) >= sizeof marker_path ||
      (size_t)snprintf(path, size, "%s/%.*s", dir, (int)n, marker) >= size)
    return 0;
  struct stat st;
  struct timespec now, tick = {0, 1000000};
  while (stat(marker_path, &st) == 0 && clock_gettime(CLOCK_REALTIME, &now) == 0 && now.tv_sec - st.st_mtim.tv_sec < DP_LAUNCH_STARTING_S) {
    if (kill((pid_t)host, 0) != 0 && errno == ESRCH) return 0;
    nanosleep(&tick, NULL);
  }
  return access(path, F_OK) == 0;
}

static int ends_with(const char *name, const char *suffix) {
  size_t n = strlen(name), m = strlen(suffix);
  return n > m && strcmp(name + n - m, suffix) == 0;
}

/* Only a directory of ours that nobody else can write is asked: its sockets' answers become the program's environment. */
static int ours(const char *dir) {
  struct stat st;
  return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() && (st.st_mode & 077) == 0;
}

/* Its own frame: its 12 KB of buffers, which the stack's probes touch on the way in, are paid only by a launch. */
static __attribute__((noinline)) void launch_from(const char *from, int argc, char **argv) {
  dp_init();
  char dir[4096];
  int dir_ok = strlen(from) < sizeof dir;
  if (dir_ok) strcpy(dir, from);
  /* The environment as the user had it, for the host's request and for the CLI alike. */
  const char *preload = getenv(DP_ENV_LAUNCH_PRELOAD);
  if (preload != NULL && preload[0] != '\0') setenv("LD_PRELOAD", preload, 1);
  else unsetenv("LD_PRELOAD");
  unsetenv(DP_ENV_LAUNCH_PRELOAD);
  unsetenv(DP_ENV_LAUNCH);
  const char *plans_env = getenv(DP_ENV_LAUNCH_PLANS);
  char plans[4096];
  int plans_ok = plans_env != NULL && strlen(plans_env) < sizeof plans;
  if (plans_ok) strcpy(plans, plans_env);
  unsetenv(DP_ENV_LAUNCH_PLANS);
  if (!dir_ok || argc < 2 || !ours(dir)) return;
  size_t req_len;
  char *req = build_request(argc, argv, &req_len);
  DIR *d = req ? opendir(dir) : NULL;
  int failed = 0;
  for (struct dirent *e; d && !failed && (e = readdir(d)) != NULL;) {
    if (strncmp(e->d_name, DP_LAUNCH_PREFIX, strlen(DP_LAUNCH_PREFIX)) != 0) continue;
    char path[4096 + 256];
    if (ends_with(e->d_name, ".sock")) snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    else if (!ends_with(e->d_name, ".sock" DP_LAUNCH_STARTING) || !wait_started(dir, e->d_name, path, sizeof path)) continue;
    failed = ask(path, req, req_len);
  }
  if (d) closedir(d);
  free(req);
  if (plans_ok && !failed) dp_planned_start(argc, argv, plans, dir);
}

/* glibc passes a preloaded library's constructors the program's argc and argv. */
__attribute__((constructor)) static void launch(int argc, char **argv) {
  const char *from = getenv(DP_ENV_LAUNCH);
  if (from != NULL) launch_from(from, argc, argv);
}
