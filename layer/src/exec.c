/* exec hooks: a program that clears its environment (env -i, launchers) still passes the layer on; static binaries are named. */
#define _GNU_SOURCE
#include "layer.h"
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* The variables that must reach every child, captured at load (before the program can change them). */
static const char *carried[] = {DP_ENV_SOCKET, DP_ENV_HOSTNAME, DP_ENV_UNIX_STREAMS, DP_ENV_SKIP_PROCESSES, "DOPPEL_LAYER_LOG", "UV_USE_IO_URING"};
#define DP_CARRIED (sizeof carried / sizeof carried[0])
static char *captured[DP_CARRIED];
static size_t carried_len[DP_CARRIED];
/* The loader's own name for us (its link map's), which lives as long as the preloaded library. */
static const char *layer_path = "";

__attribute__((constructor)) static void capture(void) {
  for (size_t i = 0; i < DP_CARRIED; i++) {
    carried_len[i] = strlen(carried[i]);
    const char *value = getenv(carried[i]);
    if (value == NULL) continue;
    size_t n = carried_len[i] + strlen(value) + 2;
    captured[i] = malloc(n);
    if (captured[i]) {
      strcpy(captured[i], carried[i]);
      strcat(captured[i], "=");
      strcat(captured[i], value);
    }
  }
  Dl_info info;
  if (dladdr((void *)capture, &info) && info.dli_fname) layer_path = info.dli_fname;
}

/* The first byte first: it rules out nearly every entry without a call (a strncmp for each name and entry took 4 us of
 * a forked child's exec). */
static int has_name_of(const char *entry, const char *name, size_t n) { return entry[0] == name[0] && strncmp(entry, name, n) == 0 && entry[n] == '='; }
static int has_name(const char *entry, const char *name) { return has_name_of(entry, name, strlen(name)); }

/* Which carried variable entry sets, or DP_CARRIED. */
static size_t carried_index(const char *entry) {
  for (size_t c = 0; c < DP_CARRIED; c++)
    if (has_name_of(entry, carried[c], carried_len[c])) return c;
  return DP_CARRIED;
}

/* envp with the carried variables and LD_PRELOAD restored, built in the caller's scratch space:
 * no allocation, so it is safe between vfork and exec. */
static char *const *dp_fix_env(char *const envp[], char **scratch, size_t scratch_len, char *preload_buf, size_t preload_len) {
  if (envp == NULL || captured[0] == NULL || layer_path[0] == '\0') return envp;
  size_t n = 0, out = 0;
  while (envp[n] != NULL) n++;
  if (n + DP_CARRIED + 2 > scratch_len) return envp;
  int preload_ok = 0;
  int present[DP_CARRIED] = {0};
  for (size_t i = 0; i < n; i++) {
    const char *e = envp[i];
    size_t carries = carried_index(e);
    if (carries < DP_CARRIED) present[carries] = 1;
    if (has_name(e, "LD_PRELOAD")) {
      if (strstr(e, layer_path) != NULL) {
        preload_ok = 1;
        scratch[out++] = (char *)e;
      } else if (strlen(e) + strlen(layer_path) + 2 < preload_len) {
        strcpy(preload_buf, e);
        strcat(preload_buf, e[11] == '\0' ? "" : ":");
        strcat(preload_buf, layer_path);
        scratch[out++] = preload_buf;
        preload_ok = 1;
      }
      continue;
    }
    scratch[out++] = (char *)e;
  }
  if (!preload_ok && strlen("LD_PRELOAD=") + strlen(layer_path) < preload_len) {
    strcpy(preload_buf, "LD_PRELOAD=");
    strcat(preload_buf, layer_path);
    scratch[out++] = preload_buf;
  }
  for (size_t c = 0; c < DP_CARRIED; c++)
    if (captured[c] != NULL && !present[c]) scratch[out++] = captured[c];
  scratch[out] = NULL;
  return scratch;
}

/* One line on stderr when the program about to run cannot be reached by LD_PRELOAD. */
static void dp_warn_if_static(const char *path) {
  if (path == NULL || captured[0] == NULL) return;
  int fd = REAL(openat)(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return;
  /* The header and, nearly always, the program headers in one read (a read per entry cost a shell 13 more per exec). */
  unsigned char head[2048];
  ssize_t got = pread(fd, head, sizeof head, 0);
  Elf64_Ehdr eh;
  int is_static = 0;
  if (got >= (ssize_t)sizeof eh && (memcpy(&eh, head, sizeof eh), memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0) && eh.e_ident[EI_CLASS] == ELFCLASS64 && (eh.e_type == ET_EXEC || eh.e_type == ET_DYN)) {
    is_static = 1;
    for (int i = 0; i < eh.e_phnum && is_static; i++) {
      Elf64_Phdr ph;
      Elf64_Off at = eh.e_phoff + (Elf64_Off)i * eh.e_phentsize;
      if (at + sizeof ph <= (Elf64_Off)got) memcpy(&ph, head + at, sizeof ph);
      else if (pread(fd, &ph, sizeof ph, (off_t)at) != (ssize_t)sizeof ph) break;
      if (ph.p_type == PT_INTERP) is_static = 0;
    }
  }
  REAL(close)(fd);
  if (is_static) {
    static const char a[] = "doppel: warning: ";
    static const char b[] = " is statically linked; doppel cannot follow it, so it runs with the local context only\n";
    (void)!write(2, a, sizeof a - 1);
    (void)!write(2, path, strlen(path));
    (void)!write(2, b, sizeof b - 1);
  }
}

#define DP_ENV_SLOTS 4096
#define DP_PRELOAD_MAX 8192

/* The scratch dp_fix_env needs for envp, in slots (*preload_len: bytes for the LD_PRELOAD entry), within the bounds
 * above, past which it leaves envp as it is. */
static size_t env_room(char *const envp[], size_t *preload_len) {
  size_t n = 0, layer = strlen(layer_path), need = strlen("LD_PRELOAD=") + layer + 1;
  for (; envp != NULL && envp[n] != NULL; n++)
    if (has_name(envp[n], "LD_PRELOAD") && strlen(envp[n]) + layer + 3 > need) need = strlen(envp[n]) + layer + 3;
  *preload_len = need < DP_PRELOAD_MAX ? need : DP_PRELOAD_MAX;
  return n + DP_CARRIED + 2 < DP_ENV_SLOTS ? n + DP_CARRIED + 2 : DP_ENV_SLOTS;
}

/* Sized to the environment: a fixed 40 KB frame cost a forked child's exec three fresh stack pages (3-4 us each). */
#define DP_FIXED_ENV(envp)                                 \
  size_t preload_len;                                      \
  size_t slots = env_room(envp, &preload_len);             \
  char *scratch[slots];                                    \
  char preload[preload_len];                               \
  char *const *fixed = dp_fix_env(envp, scratch, slots, preload, preload_len)

int execve(const char *path, char *const argv[], char *const envp[]) {
  dp_init();
  dp_warn_if_static(path);
  DP_FIXED_ENV(envp);
  return REAL(execve)(path, argv, fixed);
}

int execv(const char *path, char *const argv[]) { return execve(path, argv, environ); }

int execvpe(const char *file, char *const argv[], char *const envp[]) {
  dp_init();
  if (strchr(file, '/') != NULL) dp_warn_if_static(file);
  DP_FIXED_ENV(envp);
  return REAL(execvpe)(file, argv, fixed);
}

int execvp(const char *file, char *const argv[]) { return execvpe(file, argv, environ); }

int fexecve(int fd, char *const argv[], char *const envp[]) {
  dp_init();
  DP_FIXED_ENV(envp);
  return REAL(fexecve)(fd, argv, fixed);
}

int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions, const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
  dp_init();
  dp_warn_if_static(path);
  DP_FIXED_ENV(envp);
  return REAL(posix_spawn)(pid, path, actions, attr, argv, fixed);
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions, const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
  dp_init();
  if (strchr(file, '/') != NULL) dp_warn_if_static(file);
  DP_FIXED_ENV(envp);
  return REAL(posix_spawnp)(pid, file, actions, attr, argv, fixed);
}
