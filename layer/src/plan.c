/* The planned start (doppel-launch.h): in bin/doppel's trampoline, when no warm session host took the request, the
 * CLI's plan for this program (the same directory, environment and arguments up to the program's word, but the agent
 * bin/doppel just started; the program's own arguments are this request's) starts the program now, before the CLI's
 * Node.js has loaded. Every check of the plan must hold; then this makes the session's directory, the proxy's listening
 * socket and the rules file the layer reads at load, forks the program with the plan's environment, and returns: env
 * then runs the CLI, the program's parent, which takes the socket, decides the session again and stops the program if
 * its decision differs (src/cli/exec/launch-plan.ts). Anything unexpected returns before the fork, and the CLI starts
 * as it would have. */
#define _GNU_SOURCE
#include "doppel-launch.h"
#include "doppel-wire.h"
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

static uint64_t fnv(uint64_t hash, const char *s) {
  for (size_t i = 0, n = strlen(s) + 1; i < n; i++) hash = (hash ^ (unsigned char)s[i]) * 0x100000001b3ull;
  return hash;
}

/* The options of `doppel exec` that take a value (EXEC_VALUE_OPTIONS, src/cli/exec/program-word.ts). */
static const char *const value_options[] = {
    "-t", "--target", "-n", "--target-namespace", "-a", "--agent-namespace", "-i", "--agent-image", "--agent-ttl", "--agent-startup-timeout",
    "--agent-log-level", "--fs-mode", "-x", "--env-exclude", "-s", "--env-include", "--env-file", "-f", "--config-file", "--context",
};

static int takes_value(const char *option) {
  for (size_t i = 0; i < sizeof value_options / sizeof value_options[0]; i++)
    if (strcmp(option, value_options[i]) == 0) return 1;
  return 0;
}

/* Where the program's word is (`env NODE FLAGS ENTRY exec [OPTIONS] [--] PROGRAM ARGS...`): after exec's options, or
 * after `--`; 0 if none. What the CLI decides does not depend on the program's arguments, so a plan serves every start
 * of that program. */
static int program_word(int argc, char **argv) {
  int i = 1;
  while (i < argc && strcmp(argv[i], "exec") != 0) i++;
  for (i++; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) return i + 1 < argc ? i + 1 : 0;
    if (argv[i][0] != '-') return i;
    if (strchr(argv[i], '=') == NULL && takes_value(argv[i])) i++;
  }
  return 0;
}

/* The request's key: FNV-1a (64 bits) of its directory, the trampoline's arguments up to the program's word and the
 * environment, each with its NUL, but the agent's variable (each start has another agent). */
static int request_key(int word, char **argv, uint64_t *key) {
  char cwd[4096];
  if (getcwd(cwd, sizeof cwd) == NULL) return -1;
  uint64_t hash = fnv(0xcbf29ce484222325ull, cwd);
  for (int i = 1; i <= word; i++) hash = fnv(hash, argv[i]);
  size_t skip = strlen(DP_ENV_EARLY_AGENT);
  for (char **e = environ; *e != NULL; e++)
    if (strncmp(*e, DP_ENV_EARLY_AGENT, skip) != 0 || (*e)[skip] != '=') hash = fnv(hash, *e);
  *key = hash;
  return 0;
}

/* Up to `max` bytes of the file at `path` (a /proc file tells no size): the count read, or -1. A link is followed, as
 * the CLI's reads follow it (a configuration file linked from a dotfiles repository). */
static ssize_t read_upto(const char *path, char *buf, size_t max) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t got = 0;
  while (got < max) {
    ssize_t n = read(fd, buf + got, max - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) got = (size_t)-1;
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fd);
  return (ssize_t)got;
}

static int holds(uint32_t kind, const char *subject, const char *want, uint32_t len) {
  char text[128];
  int n = -1;
  struct stat st;
  switch (kind) {
  case DP_CHECK_CONTENT: {
    /* One byte more than it must hold tells a longer file. */
    char *got = malloc((size_t)len + 1);
    int same = got != NULL && read_upto(subject, got, (size_t)len + 1) == (ssize_t)len && memcmp(got, want, len) == 0;
    free(got);
    return same;
  }
  case DP_CHECK_ABSENT:
    return stat(subject, &st) != 0 && (errno == ENOENT || errno == ENOTDIR);
  case DP_CHECK_IDENTITY:
    if (stat(subject, &st) == 0)
      n = snprintf(text, sizeof text, "%ju %ju %jd %jd %ld", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino, (intmax_t)st.st_size, (intmax_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    break;
  case DP_CHECK_START: {
    uint64_t start = dp_start_time((uint32_t)strtoul(subject, NULL, 10));
    if (start != 0) n = snprintf(text, sizeof text, "%" PRIu64, start);
    break;
  }
  }
  return n >= 0 && (uint32_t)n == len && memcmp(text, want, len) == 0;
}

/* Only a file of ours, in a directory nobody else can write, is a plan: it becomes the program's environment. */
static char *read_plan(const char *dir, uint64_t key, size_t *len) {
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0) return NULL;
  char path[4096];
  if (snprintf(path, sizeof path, "%s/%016" PRIx64, dir, key) >= (int)sizeof path) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return NULL;
  char *buf = NULL;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() && (st.st_mode & 077) == 0 && st.st_size >= (off_t)sizeof(struct dp_plan_hdr) &&
      st.st_size <= (off_t)DP_LAUNCH_MAX && (buf = malloc((size_t)st.st_size)) != NULL) {
    *len = 0;
    while (*len < (size_t)st.st_size) {
      ssize_t n = read(fd, buf + *len, (size_t)st.st_size - *len);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      *len += (size_t)n;
    }
    if (*len != (size_t)st.st_size) {
      free(buf);
      buf = NULL;
    }
  }
  close(fd);
  return buf;
}

/* The next NUL-ended string at *at within end, or NULL. */
static char *next_string(char **at, char *end) {
  char *nul = *at < end ? memchr(*at, '\0', (size_t)(end - *at)) : NULL;
  if (nul == NULL) return NULL;
  char *s = *at;
  *at = nul + 1;
  return s;
}

/* `s` with every DP_PLAN_DIR_MARK replaced by `dir` (malloc'd). */
static char *with_dir(const char *s, const char *dir) {
  size_t mark = strlen(DP_PLAN_DIR_MARK), count = 0;
  for (const char *p = s; (p = strstr(p, DP_PLAN_DIR_MARK)) != NULL; p += mark) count++;
  char *out = malloc(strlen(s) + count * strlen(dir) + 1), *o = out;
  if (out == NULL) return NULL;
  for (const char *hit; (hit = strstr(s, DP_PLAN_DIR_MARK)) != NULL; s = hit + mark) {
    memcpy(o, s, (size_t)(hit - s));
    o = stpcpy(o + (hit - s), dir);
  }
  strcpy(o, s);
  return out;
}

/* Removes what make_session made. */
static void discard_session(const char *dir) {
  char path[4096 + 64];
  snprintf(path, sizeof path, "%s/%s", dir, DP_PLAN_SOCKET);
  unlink(path);
  snprintf(path, sizeof path, "%s/%s", dir, DP_AGENT_DNS_SOCKET);
  unlink(path);
  snprintf(path, sizeof path, "%s/%s", dir, DP_FAST_PATH_FILE);
  unlink(path);
  rmdir(dir);
}

/* The session's lookups socket, a link to the one on which the agent bin/doppel started answers from its own start
 * (DP_EARLY_DNS_SUFFIX, in the warm directory `warm`): the program's first lookups need not wait for the CLI. Without
 * it, the layer asks the proxy. */
static void link_lookups(const char *dir, const char *warm, uint32_t agent_pid) {
  char target[4096 + 64], link[4096 + 64];
  if (snprintf(target, sizeof target, "%s/early-%d-%u%s", warm, (int)getpid(), agent_pid, DP_EARLY_DNS_SUFFIX) >= (int)sizeof target) return;
  snprintf(link, sizeof link, "%s/%s", dir, DP_AGENT_DNS_SOCKET);
  (void)!symlink(target, link);
}

/* The session's directory (as the CLI's own, src/proxy/proxy.ts: `doppel-<CLI pid>-` in the temporary directory), with
 * the rules file in it and the proxy's socket listening: its descriptor, or -1 with nothing left behind. */
static int make_session(char *dir, size_t size, const char *fast, uint32_t fast_len, const char *warm, uint32_t agent_pid) {
  const char *tmp = getenv("TMPDIR");
  if (tmp == NULL || tmp[0] == '\0') tmp = "/tmp";
  size_t tmp_len = strlen(tmp);
  while (tmp_len > 1 && tmp[tmp_len - 1] == '/') tmp_len--;
  if (snprintf(dir, size, "%.*s/doppel-%d-XXXXXX", (int)tmp_len, tmp, (int)getpid()) >= (int)size || mkdtemp(dir) == NULL) return -1;
  char path[4096 + 64];
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  int fd = -1, rules = -1;
  snprintf(path, sizeof path, "%s/%s", dir, DP_FAST_PATH_FILE);
  if (fast_len >= sizeof(struct dp_hello_resp) && (rules = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) >= 0) {
    struct dp_hello_resp hello;
    memcpy(&hello, fast, sizeof hello);
    hello.handover_pid = agent_pid;
    int written = write(rules, &hello, sizeof hello) == (ssize_t)sizeof hello && write(rules, fast + sizeof hello, fast_len - sizeof hello) == (ssize_t)(fast_len - sizeof hello);
    close(rules);
    if (written && snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%s", dir, DP_PLAN_SOCKET) < (int)sizeof addr.sun_path &&
        (fd = socket(AF_UNIX, SOCK_STREAM, 0)) >= 0 && (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 511) != 0)) {
      close(fd);
      fd = -1;
    }
  }
  if (fd < 0) discard_session(dir);
  else link_lookups(dir, warm, agent_pid);
  return fd;
}

/* How much lower the CLI's priority is until it has its session. */
#define CLI_YIELD 10

/* Whether this process may raise its priority back to `nice` (the kernel's can_nice). */
static int may_renice(int nice) {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NICE, &limit) == 0 && (rlim_t)(20 - nice) <= limit.rlim_cur) return 1;
  struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3];
  return syscall(SYS_capget, &head, caps) == 0 && (caps[CAP_TO_INDEX(CAP_SYS_NICE)].effective & CAP_TO_MASK(CAP_SYS_NICE));
}

/* The CLI about to start here yields the CPU to its program and the agent until it has its session (then it takes its
 * priority back, src/cli/exec/launch-plan.ts): where cores are few, its Node.js start took a share of the program's,
 * and the program needs the CLI only for what it relays. Only when it can take it back. The priority it had. */
static int yield_cpu(void) {
  errno = 0;
  int nice = getpriority(PRIO_PROCESS, 0);
  if (errno != 0) return 0;
  if (may_renice(nice)) (void)!setpriority(PRIO_PROCESS, 0, nice + CLI_YIELD);
  return nice;
}

void dp_planned_start(int argc, char **argv, const char *plans_dir, const char *warm) {
  const char *agent = getenv(DP_ENV_EARLY_AGENT);
  uint32_t agent_pid = agent ? (uint32_t)strtoul(agent, NULL, 10) : 0;
  int word = program_word(argc, argv);
  uint64_t key;
  if (agent_pid <= 1 || word == 0 || request_key(word, argv, &key) != 0) return;
  size_t len = 0;
  char *plan = read_plan(plans_dir, key, &len);
  char *at = plan ? plan + sizeof(struct dp_plan_hdr) : NULL, *end = plan ? plan + len : NULL;
  struct dp_plan_hdr hdr;
  if (plan != NULL) memcpy(&hdr, plan, sizeof hdr);
  int usable = plan != NULL && hdr.magic == DP_PLAN_MAGIC && hdr.len == len - sizeof hdr && hdr.argc > 0 && hdr.argc < 1u << 20 && hdr.envc < 1u << 20;
  for (uint32_t i = 0; usable && i < hdr.checks; i++) {
    struct dp_plan_check check;
    char *subject = NULL;
    if ((size_t)(end - at) < sizeof check) break;
    memcpy(&check, at, sizeof check);
    at += sizeof check;
    usable = (subject = next_string(&at, end)) != NULL && check.len <= (size_t)(end - at) && holds(check.kind, subject, at, check.len);
    at += usable ? check.len : 0;
  }
  char *file = usable ? next_string(&at, end) : NULL;
  /* The plan's arguments (the program's word), then this request's. */
  int own = argc - word - 1;
  char **args = file ? calloc((size_t)hdr.argc + (size_t)own + 1, sizeof *args) : NULL;
  char **envp = args ? calloc((size_t)hdr.envc + 1, sizeof *envp) : NULL;
  for (uint32_t i = 0; envp && i < hdr.argc + hdr.envc; i++) {
    char *s = next_string(&at, end);
    if (s == NULL) usable = 0;
    else if (i < hdr.argc) args[i] = s;
    else envp[i - hdr.argc] = s;
  }
  for (int i = 0; envp && i < own; i++) args[hdr.argc + (uint32_t)i] = argv[word + 1 + i];
  char dir[4096];
  int listening = -1;
  if (envp && usable && (size_t)(end - at) == hdr.fast_len) listening = make_session(dir, sizeof dir, at, hdr.fast_len, warm, agent_pid);
  int ready = listening >= 0;
  for (uint32_t i = 0; ready && i < hdr.envc; i++) ready = (envp[i] = with_dir(envp[i], dir)) != NULL;
  pid_t parent = getpid();
  /* Ignored SIGCHLD (inherited across exec) would have the kernel reap the program before the CLI reads its status. */
  if (ready) signal(SIGCHLD, SIG_DFL);
  pid_t program = ready ? fork() : -1;
  if (program == 0) {
    /* A CLI killed before its Node.js could relay signals (its first tens of milliseconds) takes the program with it,
     * as a relayed SIGTERM would have: nothing of a session that never came to be runs on. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) _exit(143);
    close(listening);
    REAL(execve)(file, args, envp);
    int code = errno == ENOENT ? 127 : 126;
    dprintf(2, "doppel: cannot run %s: %s\n", file, strerror(errno));
    _exit(code);
  }
  if (program < 0 && listening >= 0) {
    close(listening);
    discard_session(dir);
  }
  /* The directory and the plans' directory are each shorter than 4096 bytes. */
  char told[2 * 4096 + 64];
  if (program > 0) {
    snprintf(told, sizeof told, "%d %d %d %s %s/%016" PRIx64, (int)program, listening, yield_cpu(), dir, plans_dir, key);
    setenv(DP_ENV_PLANNED, told, 1);
  } else {
    snprintf(told, sizeof told, "%s/%016" PRIx64, plans_dir, key);
    setenv(DP_ENV_PLAN_FILE, told, 1);
  }
  free(args);
  free(envp);
  free(plan);
}
