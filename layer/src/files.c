/* File hooks: open family (remote files become memfds), fopen, close/dup/fcntl bookkeeping, access, readlink, realpath. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int dp_ask_path(uint32_t op, const void *head, size_t head_len, int dirfd, const char *path, char **reply, uint32_t *reply_len, const char **local_path) {
  char abs[PATH_MAX];
  *local_path = path;
  *reply = NULL;
  *reply_len = 0;
  if (path == NULL || dp_absolute(dirfd, path, abs, sizeof abs) < 0) return DP_LOCAL;
  int status = dp_call(op, head, head_len, abs, strlen(abs) + 1, reply, reply_len);
  if (status == DP_LOCAL && *reply != NULL && *reply_len > 0) *local_path = *reply;
  return status;
}

/* A remote file's bytes in an anonymous in-memory file, so every later read is local. */
static int materialize(const char *path, const char *reply, uint32_t len, int flags) {
  if (len < sizeof(struct dp_stat)) {
    errno = EIO;
    return -1;
  }
  const char *name = strrchr(path, '/');
  int fd = memfd_create(name ? name + 1 : path, (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
  if (fd < 0) return -1;
  const char *data = reply + sizeof(struct dp_stat);
  size_t left = len - sizeof(struct dp_stat);
  while (left > 0) {
    ssize_t n = write(fd, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int saved = errno;
      real_close(fd);
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

static int open_at(int dirfd, const char *path, int flags, mode_t mode) {
  if (!dp_enter()) return real_openat(dirfd, path, flags, mode);
  struct { int32_t flags; uint32_t mode; } head = {flags, mode};
  char *reply;
  uint32_t len;
  const char *local;
  int status = dp_ask_path(DP_OP_OPEN, &head, sizeof head, dirfd, path, &reply, &len, &local);
  int fd;
  if (status == DP_LOCAL) {
    fd = real_openat(local == path ? dirfd : AT_FDCWD, local, flags, mode);
  } else if (status < 0) {
    errno = -status;
    fd = -1;
  } else {
    fd = status == DP_WRITABLE ? dp_written_open(reply, len, flags) : materialize(path, reply, len, flags);
  }
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
  struct { int32_t flags; uint32_t mode; } head = {flags, 0666};
  char *reply;
  uint32_t len;
  const char *local;
  int status = dp_ask_path(DP_OP_OPEN, &head, sizeof head, AT_FDCWD, path, &reply, &len, &local);
  FILE *file = NULL;
  if (status == DP_LOCAL) {
    file = real(local, mode);
  } else if (status < 0) {
    errno = -status;
  } else {
    int fd = status == DP_WRITABLE ? dp_written_open(reply, len, flags) : materialize(path, reply, len, flags);
    if (fd >= 0 && (file = fdopen(fd, mode)) == NULL) {
      int saved = errno;
      dp_fd_forget(fd);
      real_close(fd);
      errno = saved;
    }
  }
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return file;
}

FILE *fopen(const char *path, const char *mode) { dp_init(); return fopen_hook(path, mode, real_fopen); }
FILE *fopen64(const char *path, const char *mode) { dp_init(); return fopen_hook(path, mode, real_fopen64); }

int dp_close(int fd, int raw) {
  /* The layer's own proxy connection survives a program that closes every descriptor. */
  if (dp_is_own_fd(fd)) return 0;
  int written = dp_written_release(fd);
  struct dp_fdinfo info;
  int listener = dp_fd_take(fd, &info) && info.subscribed;
  int r = raw ? (int)real_syscall(SYS_close, (long)fd) : real_close(fd);
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
  int to = real_dup(fd);
  if (to >= 0) dp_fd_copy(fd, to);
  return to;
}

int dup2(int fd, int to) {
  dp_init();
  if (fd != to) dp_written_release(to);
  int r = real_dup2(fd, to);
  if (r >= 0 && fd != to) dp_fd_copy(fd, to);
  return r;
}

int dup3(int fd, int to, int flags) {
  dp_init();
  dp_written_release(to);
  int r = real_dup3(fd, to, flags);
  if (r >= 0) dp_fd_copy(fd, to);
  return r;
}

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
  return fcntl_hook(real_fcntl, fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) {
  dp_init();
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return fcntl_hook(real_fcntl64 ? real_fcntl64 : real_fcntl, fd, cmd, arg);
}

static int access_at(int dirfd, const char *path, int mode, int flags) {
  if (!dp_enter()) return real_faccessat(dirfd, path, mode, flags);
  int32_t head = mode;
  char *reply;
  uint32_t len;
  const char *local;
  int status = dp_ask_path(DP_OP_ACCESS, &head, sizeof head, dirfd, path, &reply, &len, &local);
  int r = 0;
  if (status == DP_LOCAL) r = real_faccessat(local == path ? dirfd : AT_FDCWD, local, mode, flags);
  else if (status < 0) {
    errno = -status;
    r = -1;
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

static ssize_t readlink_at(int dirfd, const char *path, char *buf, size_t size) {
  if (!dp_enter()) return real_readlinkat(dirfd, path, buf, size);
  char *reply;
  uint32_t len;
  const char *local;
  int status = dp_ask_path(DP_OP_READLINK, NULL, 0, dirfd, path, &reply, &len, &local);
  ssize_t r;
  if (status == DP_LOCAL) r = real_readlinkat(local == path ? dirfd : AT_FDCWD, local, buf, size);
  else if (status < 0) {
    errno = -status;
    r = -1;
  } else {
    r = (ssize_t)(len < size ? len : size);
    if (r > 0) memcpy(buf, reply, (size_t)r);
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
  if (!dp_enter()) return real_realpath(path, resolved);
  char *reply;
  uint32_t len;
  const char *local;
  int status = dp_ask_path(DP_OP_REALPATH, NULL, 0, AT_FDCWD, path, &reply, &len, &local);
  char *r = NULL;
  if (status == DP_LOCAL) r = real_realpath(local, resolved);
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
