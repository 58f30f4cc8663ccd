/* File hooks: open family (remote files become memfds, remote directories their stand-ins), fopen,
 * close/close_range/dup/fcntl bookkeeping, access, readlink, realpath. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A path under a stand-in that stays local is the remote path's local namesake, not the stand-in's empty entry. */
static __thread char unstood[PATH_MAX] __attribute__((tls_model("initial-exec")));

int dp_path_to_ask(int dirfd, const char *path, char *abs, const char **local_path) {
  *local_path = path;
  int mapped = path == NULL ? -1 : dp_absolute(dirfd, path, abs, PATH_MAX);
  if (mapped < 0) return 0;
  if (mapped == 1) *local_path = strcpy(unstood, abs);
  int verdict = dp_rules_verdict(abs);
  if (verdict == DP_RULE_LOCAL) {
    dp_log("local by rule: %s", abs);
    return 0;
  }
  return verdict;
}

int dp_ask_abs(uint32_t op, const void *head, size_t head_len, const char *abs, char **reply, uint32_t *reply_len, const char **local_path) {
  dp_log("ask op %u: %s", (unsigned)op, abs);
  int status = dp_call(op, head, head_len, abs, strlen(abs) + 1, reply, reply_len);
  if (status == DP_LOCAL && *reply != NULL && *reply_len > 0) *local_path = *reply;
  return status;
}

int dp_ask_path(uint32_t op, const void *head, size_t head_len, int dirfd, const char *path, char **reply, uint32_t *reply_len, const char **local_path) {
  char abs[PATH_MAX];
  *reply = NULL;
  *reply_len = 0;
  if (!dp_path_to_ask(dirfd, path, abs, local_path)) return DP_LOCAL;
  return dp_ask_abs(op, head, head_len, abs, reply, reply_len, local_path);
}

/* Set once a target's file could not be opened by its host path for lack of access: this process's opens then bring
 * the content over instead. */
static atomic_int no_host_files;

/* Set once openat2 is missing (Linux before 5.6): remote files are then always asked for. */
static atomic_int no_openat2;

int dp_openat_in_root(const char *abs, int flags) {
  uint32_t pid = dp_root_pid();
  if (pid == 0 || atomic_load(&no_openat2) || atomic_load(&no_host_files)) {
    errno = ENOSYS;
    return -1;
  }
  int rootfd = dp_target_root(pid);
  if (rootfd < 0) {
    if (errno == EACCES || errno == EPERM) atomic_store(&no_host_files, 1);
    return -1;
  }
  struct open_how how = {.flags = (uint64_t)(unsigned)flags, .resolve = RESOLVE_IN_ROOT};
  int fd = (int)REAL(syscall)(SYS_openat2, (long)rootfd, (long)abs, (long)&how, (long)sizeof how);
  if (fd < 0 && errno == ENOSYS) atomic_store(&no_openat2, 1);
  return fd;
}

int dp_open_in_root(const char *abs, int flags, int *fd) {
  /* O_TMPFILE carries O_DIRECTORY's bit. */
  if ((flags & (O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND | O_DIRECTORY | O_PATH)) != O_RDONLY) return 0;
  uint64_t since = dp_trace_clock();
  /* Non-blocking, so that a FIFO does not hang the open before it is told apart. */
  int opened = dp_openat_in_root(abs, flags | O_NONBLOCK);
  if (opened < 0) {
    /* What the target has not is settled; anything else (no access, a loop, flags openat2 refuses) the proxy answers. */
    if (errno != ENOENT && errno != ENOTDIR) return 0;
    dp_traced("open", abs, since);
    *fd = -1;
    return 1;
  }
  struct stat st;
  /* Directories get their stand-ins, special files are brought over: the proxy's. */
  /* F_SETFL changes only the status flags it can (O_NONBLOCK among the program's): the program's own, as it asked. */
  if (fstat(opened, &st) != 0 || !S_ISREG(st.st_mode) || ((flags & O_NONBLOCK) == 0 && fcntl(opened, F_SETFL, flags) != 0)) {
    REAL(close)(opened);
    return 0;
  }
  dp_log("open %s: the target's file, in its root", abs);
  dp_traced("open", abs, since);
  *fd = opened;
  return 1;
}

/* A remote open: its answer starts with the file's stat, which answers a stat of the same path soon after. */
static int ask_open(const char *abs, int flags, mode_t mode, uint32_t options, char **reply, uint32_t *len, const char **local) {
  struct dp_open_req head = {.flags = flags, .mode = mode, .options = options};
  unsigned epoch = dp_cache_epoch();
  int status = dp_ask_abs(DP_OP_OPEN, &head, sizeof head, abs, reply, len, local);
  if ((status == DP_OK || status == DP_HOST_FILE) && *len >= sizeof(struct dp_stat)) {
    struct dp_stat stat;
    memcpy(&stat, *reply, sizeof stat);
    dp_cache_put(abs, 0, 0, &stat, epoch);
  }
  return status;
}

/* A remote file's bytes in an anonymous in-memory file, so every later read is local. */
static int materialize(const char *path, const char *reply, uint32_t len, int flags) {
  if (len < sizeof(struct dp_stat)) {
    errno = EIO;
    return -1;
  }
  const char *base = strrchr(path, '/');
  /* memfd_create takes names of at most 249 bytes; the name is only a label in /proc. */
  char name[250];
  snprintf(name, sizeof name, "%s", base ? base + 1 : path);
  int fd = memfd_create(name, (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
  if (fd < 0) return -1;
  const char *data = reply + sizeof(struct dp_stat);
  size_t left = len - sizeof(struct dp_stat);
  while (left > 0) {
    ssize_t n = write(fd, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int saved = errno;
      REAL(close)(fd);
      errno = saved;
      return -1;
    }
    data += n;
    left -= (size_t)n;
  }
  lseek(fd, 0, SEEK_SET);
  struct dp_fdinfo info = {.has_stat = 1};
  memcpy(&info.stat, reply, sizeof info.stat);
  dp_fd_set(fd, &info);
  return fd;
}

/* A remote directory opens as its local stand-in, which the kernel lists; fstat reports the remote directory. */
static int open_standin(const char *reply, uint32_t len, int flags) {
  if (len <= sizeof(struct dp_stat) || reply[len - 1] != '\0') {
    errno = EIO;
    return -1;
  }
  int fd = REAL(openat)(AT_FDCWD, reply + sizeof(struct dp_stat), flags, 0);
  if (fd < 0) return -1;
  struct dp_fdinfo info = {.has_stat = 1};
  memcpy(&info.stat, reply, sizeof info.stat);
  dp_fd_set(fd, &info);
  return fd;
}

/* The target's file itself, by the path that reaches it from here. Its links were resolved inside the target's root:
 * one swapped in since must not lead out of it (ELOOP). */
static int open_host_file(const char *reply, uint32_t len, int flags) {
  if (len <= sizeof(struct dp_stat) || reply[len - 1] != '\0') {
    errno = EIO;
    return -1;
  }
  return REAL(openat)(AT_FDCWD, reply + sizeof(struct dp_stat), flags | O_NOFOLLOW, 0);
}

/* The descriptor for a remote answer to DP_OP_OPEN. */
static int remote_fd(int status, const char *path, const char *reply, uint32_t len, int flags) {
  if (status < 0) {
    errno = -status;
    return -1;
  }
  if (status == DP_DIRECTORY) return open_standin(reply, len, flags);
  return status == DP_WRITABLE ? dp_written_open(reply, len, flags) : materialize(path, reply, len, flags);
}

/* Asks about an open and makes the descriptor of a remote answer (-1 with errno if it fails). DP_LOCAL: the caller
 * opens *local itself. */
static int ask_and_open(int dirfd, const char *path, int flags, mode_t mode, char *abs, char **reply, uint32_t *len, const char **local, int *fd) {
  *reply = NULL;
  *len = 0;
  int verdict = dp_path_to_ask(dirfd, path, abs, local);
  if (verdict == 0) return DP_LOCAL;
  if (verdict == DP_RULE_REMOTE && dp_open_in_root(abs, flags, fd)) return DP_HOST_FILE;
  uint32_t options = atomic_load(&no_host_files) ? DP_OPEN_NO_HOST_FILE : 0;
  int status = ask_open(abs, flags, mode, options, reply, len, local);
  if (status == DP_HOST_FILE) {
    *fd = open_host_file(*reply, *len, flags);
    if (*fd >= 0 || (errno != EACCES && errno != EPERM && errno != ELOOP)) return status;
    /* A process without access to the target's root (ptrace's rules: another user, capabilities dropped) keeps none. */
    if (errno != ELOOP) atomic_store(&no_host_files, 1);
    dp_log("open %s: its path on this machine could not be opened (errno %d); bringing it over", abs, errno);
    dp_free(*reply);
    status = ask_open(abs, flags, mode, DP_OPEN_NO_HOST_FILE, reply, len, local);
  }
  if (status != DP_LOCAL) *fd = remote_fd(status, path, *reply, *len, flags);
  return status;
}

static int open_at(int dirfd, const char *path, int flags, mode_t mode) {
  if (!dp_enter()) return REAL(openat)(dirfd, path, flags, mode);
  char abs[PATH_MAX];
  char *reply;
  uint32_t len;
  const char *local;
  int fd = -1;
  if (ask_and_open(dirfd, path, flags, mode, abs, &reply, &len, &local, &fd) == DP_LOCAL) fd = REAL(openat)(local == path ? dirfd : AT_FDCWD, local, flags, mode);
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

#define DP_OPEN_VARIADIC(name)                   \
  int name(const char *path, int flags, ...) {  \
    dp_init();                                   \
    va_list ap;                                  \
    va_start(ap, flags);                         \
    mode_t mode = mode_arg(flags, ap);           \
    va_end(ap);                                  \
    return open_at(AT_FDCWD, path, flags, mode); \
  }
#define DP_OPENAT_VARIADIC(name)                            \
  int name(int dirfd, const char *path, int flags, ...) {  \
    dp_init();                                              \
    va_list ap;                                             \
    va_start(ap, flags);                                    \
    mode_t mode = mode_arg(flags, ap);                      \
    va_end(ap);                                             \
    return open_at(dirfd, path, flags, mode);               \
  }
DP_OPEN_VARIADIC(open)
DP_OPEN_VARIADIC(open64)
DP_OPENAT_VARIADIC(openat)
DP_OPENAT_VARIADIC(openat64)

int __open_2(const char *path, int flags) { dp_init(); return open_at(AT_FDCWD, path, flags, 0); }
int __open64_2(const char *path, int flags) { dp_init(); return open_at(AT_FDCWD, path, flags, 0); }
int __openat_2(int dirfd, const char *path, int flags) { dp_init(); return open_at(dirfd, path, flags, 0); }
int __openat64_2(int dirfd, const char *path, int flags) { dp_init(); return open_at(dirfd, path, flags, 0); }
int creat(const char *path, mode_t mode) { dp_init(); return open_at(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
int creat64(const char *path, mode_t mode) { dp_init(); return open_at(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode); }

/* fopen's mode string as open(2) flags. */
static int fopen_flags(const char *mode) {
  int flags = mode[0] == 'r' ? O_RDONLY : mode[0] == 'w' ? O_WRONLY | O_CREAT | O_TRUNC : O_WRONLY | O_CREAT | O_APPEND;
  for (const char *m = mode + 1; *m && *m != ','; m++) {
    if (*m == '+') flags = (flags & ~O_ACCMODE) | O_RDWR;
    if (*m == 'e') flags |= O_CLOEXEC;
    if (*m == 'x') flags |= O_EXCL;
  }
  return flags;
}

static FILE *fopen_hook(const char *path, const char *mode, FILE *(*real)(const char *, const char *)) {
  dp_init();
  if (mode == NULL || !dp_enter()) return real(path, mode);
  int flags = fopen_flags(mode);
  char abs[PATH_MAX];
  char *reply;
  uint32_t len;
  const char *local;
  int fd = -1;
  FILE *file = NULL;
  if (ask_and_open(AT_FDCWD, path, flags, 0666, abs, &reply, &len, &local, &fd) == DP_LOCAL) {
    file = real(local, mode);
  } else if (fd >= 0 && (file = fdopen(fd, mode)) == NULL) {
    int saved = errno;
    dp_fd_forget(fd);
    REAL(close)(fd);
    errno = saved;
  }
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return file;
}

FILE *fopen(const char *path, const char *mode) { dp_init(); return fopen_hook(path, mode, REAL(fopen)); }
FILE *fopen64(const char *path, const char *mode) { dp_init(); return fopen_hook(path, mode, REAL(fopen64)); }

int dp_close(int fd, int raw) {
  /* The layer's own proxy connection survives a program that closes every descriptor. */
  if (dp_is_own_fd(fd)) return 0;
  int written = dp_written_release(fd);
  struct dp_fdinfo info;
  int listener = dp_fd_take(fd, &info) && info.subscribed;
  int r = raw ? (int)REAL(syscall)(SYS_close, (long)fd) : REAL(close)(fd);
  if (listener) dp_unlisten(&info);
  if (r == 0 && written < 0) {
    errno = -written;
    r = -1;
  }
  return r;
}

int close(int fd) {
  dp_init();
  return dp_close(fd, 0);
}

int dup(int fd) {
  dp_init();
  int to = REAL(dup)(fd);
  if (to >= 0) dp_fd_copy(fd, to);
  return to;
}

static void unlisten_if_subscribed(int fd, const struct dp_fdinfo *info) {
  (void)fd;
  if (info->subscribed) dp_unlisten(info);
}

static void release_written(int fd, const struct dp_fdinfo *info) {
  if (info->handle != 0) dp_written_release(fd);
}

int dp_close_range(unsigned first, unsigned last, int flags) {
  if (first > last) {
    errno = EINVAL;
    return -1;
  }
  /* Written files in the range go back to the target first, as at close; then the range is closed around the
   * layer's own sockets, in pieces. */
  if (!(flags & CLOSE_RANGE_CLOEXEC)) dp_fd_each(first, last, 0, release_written);
  unsigned from = first;
  for (unsigned fd = first, end = (unsigned)dp_own_fds_end(); fd <= last && fd < end; fd++) {
    if (!dp_is_own_fd((int)fd)) continue;
    if (fd > from && REAL(syscall)(SYS_close_range, (long)from, (long)(fd - 1), (long)flags) < 0) return -1;
    from = fd + 1;
  }
  if (from <= last && REAL(syscall)(SYS_close_range, (long)from, (long)last, (long)flags) < 0) return -1;
  if (!(flags & CLOSE_RANGE_CLOEXEC)) dp_fd_each(first, last, 1, unlisten_if_subscribed);
  return 0;
}

int close_range(unsigned first, unsigned last, int flags) {
  dp_init();
  return dp_close_range(first, last, flags);
}

void closefrom(int first) {
  dp_init();
  if (first >= 0) dp_close_range((unsigned)first, ~0u, 0);
}

/* dup2/dup3 onto a descriptor close it first: the same bookkeeping as close, and the layer's own sockets move away. */
static int dup_onto(int fd, int to, int flags, int three) {
  dp_init();
  if (fd != to) {
    dp_move_own_fd(to);
    dp_written_release(to);
  }
  struct dp_fdinfo old;
  int had = fd != to && dp_fd_get(to, &old);
  int r = three ? REAL(dup3)(fd, to, flags) : REAL(dup2)(fd, to);
  if (r >= 0 && fd != to) {
    dp_fd_copy(fd, to);
    if (had) unlisten_if_subscribed(to, &old);
  }
  return r;
}

int dup2(int fd, int to) { return dup_onto(fd, to, 0, 0); }
int dup3(int fd, int to, int flags) { return dup_onto(fd, to, flags, 1); }

static int fcntl_hook(int (*real)(int, int, ...), int fd, int cmd, void *arg) {
  int r = real(fd, cmd, arg);
  if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) dp_fd_copy(fd, r);
  return r;
}

int fcntl(int fd, int cmd, ...) {
  dp_init();
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return fcntl_hook(REAL(fcntl), fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) {
  dp_init();
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return fcntl_hook(REAL(fcntl64) ? REAL(fcntl64) : REAL(fcntl), fd, cmd, arg);
}

/* An access check of a path the rules call remote, in the target's root: 0, or -1 and errno, when settled here; 1 when
 * the proxy must answer (no root, a kernel before 5.8 without faccessat2 on a descriptor). */
static int access_in_root(const char *abs, int mode, int flags) {
  uint64_t since = dp_trace_clock();
  int fd = dp_openat_in_root(abs, O_PATH | O_CLOEXEC | ((flags & AT_SYMLINK_NOFOLLOW) ? O_NOFOLLOW : 0));
  if (fd < 0 && errno != ENOENT && errno != ENOTDIR) return 1;
  if (fd < 0) {
    dp_traced("access", abs, since);
    return -1;
  }
  int r = (int)REAL(syscall)(SYS_faccessat2, (long)fd, (long)"", (long)mode, (long)((flags & AT_EACCESS) | AT_EMPTY_PATH));
  int saved = errno;
  REAL(close)(fd);
  if (r < 0 && (saved == ENOSYS || saved == EINVAL)) return 1;
  dp_log("access of %s: in the target's root", abs);
  dp_traced("access", abs, since);
  errno = saved;
  return r;
}

static int access_at(int dirfd, const char *path, int mode, int flags) {
  if (!dp_enter()) return REAL(faccessat)(dirfd, path, mode, flags);
  int32_t head = mode;
  char abs[PATH_MAX];
  char *reply = NULL;
  uint32_t len;
  const char *local;
  int verdict = dp_path_to_ask(dirfd, path, abs, &local);
  int r = verdict == DP_RULE_REMOTE ? access_in_root(abs, mode, flags) : 1;
  if (r == 1) {
    int status = verdict == 0 ? DP_LOCAL : dp_ask_abs(DP_OP_ACCESS, &head, sizeof head, abs, &reply, &len, &local);
    if (status == DP_LOCAL) r = REAL(faccessat)(local == path ? dirfd : AT_FDCWD, local, mode, flags);
    else if (status < 0) {
      errno = -status;
      r = -1;
    } else {
      r = 0;
    }
  }
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return r;
}

int access(const char *path, int mode) { dp_init(); return access_at(AT_FDCWD, path, mode, 0); }
int faccessat(int dirfd, const char *path, int mode, int flags) { dp_init(); return access_at(dirfd, path, mode, flags); }
int euidaccess(const char *path, int mode) { dp_init(); return access_at(AT_FDCWD, path, mode, AT_EACCESS); }
int eaccess(const char *path, int mode) { dp_init(); return access_at(AT_FDCWD, path, mode, AT_EACCESS); }

/* A readlink of a path the rules call remote, in the target's root: the length, or -1 and errno, when settled here;
 * -2 when the proxy must answer (no root). */
static ssize_t readlink_in_root(const char *abs, char *buf, size_t size) {
  uint64_t since = dp_trace_clock();
  int fd = dp_openat_in_root(abs, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno != ENOENT && errno != ENOTDIR) return -2;
  if (fd < 0) {
    dp_traced("readlink", abs, since);
    return -1;
  }
  ssize_t r = REAL(readlinkat)(fd, "", buf, size);
  /* On a descriptor, what is no link is ENOENT; by its path, readlink says EINVAL. */
  int saved = r < 0 && errno == ENOENT ? EINVAL : errno;
  REAL(close)(fd);
  dp_log("readlink of %s: in the target's root", abs);
  dp_traced("readlink", abs, since);
  errno = saved;
  return r;
}

static ssize_t readlink_at(int dirfd, const char *path, char *buf, size_t size) {
  if (!dp_enter()) return REAL(readlinkat)(dirfd, path, buf, size);
  char abs[PATH_MAX];
  char *reply = NULL;
  uint32_t len;
  const char *local;
  int verdict = dp_path_to_ask(dirfd, path, abs, &local);
  ssize_t r = verdict == DP_RULE_REMOTE ? readlink_in_root(abs, buf, size) : -2;
  if (r == -2) {
    int status = verdict == 0 ? DP_LOCAL : dp_ask_abs(DP_OP_READLINK, NULL, 0, abs, &reply, &len, &local);
    if (status == DP_LOCAL) r = REAL(readlinkat)(local == path ? dirfd : AT_FDCWD, local, buf, size);
    else if (status < 0) {
      errno = -status;
      r = -1;
    } else {
      r = (ssize_t)(len < size ? len : size);
      if (r > 0) memcpy(buf, reply, (size_t)r);
    }
  }
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return r;
}

ssize_t readlink(const char *path, char *buf, size_t size) { dp_init(); return readlink_at(AT_FDCWD, path, buf, size); }
ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t size) { dp_init(); return readlink_at(dirfd, path, buf, size); }

static char *realpath_hook(const char *path, char *resolved) {
  if (!dp_enter()) return REAL(realpath)(path, resolved);
  char *reply;
  uint32_t len;
  const char *local;
  int status = dp_ask_path(DP_OP_REALPATH, NULL, 0, AT_FDCWD, path, &reply, &len, &local);
  char *r = NULL;
  if (status == DP_LOCAL) r = REAL(realpath)(local, resolved);
  else if (status < 0) errno = -status;
  else if (strlen(reply) >= PATH_MAX) errno = ENAMETOOLONG;
  else r = resolved ? strcpy(resolved, reply) : strdup(reply);
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return r;
}

char *realpath(const char *path, char *resolved) { dp_init(); return realpath_hook(path, resolved); }
char *__realpath_chk(const char *path, char *resolved, size_t size) { dp_init(); (void)size; return realpath_hook(path, resolved); }
char *canonicalize_file_name(const char *path) { dp_init(); return realpath_hook(path, NULL); }
