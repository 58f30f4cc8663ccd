/* stat family hooks, statx, and syscall(SYS_statx / SYS_close) as libuv makes them; remote memfds report the remote file's stat. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

void dp_fill_stat(struct stat *st, const struct dp_stat *r) {
  memset(st, 0, sizeof *st);
  st->st_dev = r->dev;
  st->st_ino = r->ino;
  st->st_mode = (mode_t)r->mode;
  st->st_nlink = r->nlink;
  st->st_uid = (uid_t)r->uid;
  st->st_gid = (gid_t)r->gid;
  st->st_rdev = r->rdev;
  st->st_size = (off_t)r->size;
  st->st_blksize = (blksize_t)r->blksize;
  st->st_blocks = (blkcnt_t)r->blocks;
  st->st_atim.tv_sec = r->atime_sec;
  st->st_atim.tv_nsec = r->atime_nsec;
  st->st_mtim.tv_sec = r->mtime_sec;
  st->st_mtim.tv_nsec = r->mtime_nsec;
  st->st_ctim.tv_sec = r->ctime_sec;
  st->st_ctim.tv_nsec = r->ctime_nsec;
}

void dp_fill_statx(struct statx *x, const struct dp_stat *r) {
  memset(x, 0, sizeof *x);
  x->stx_mask = STATX_BASIC_STATS;
  x->stx_blksize = (uint32_t)r->blksize;
  x->stx_nlink = (uint32_t)r->nlink;
  x->stx_uid = (uint32_t)r->uid;
  x->stx_gid = (uint32_t)r->gid;
  x->stx_mode = (uint16_t)r->mode;
  x->stx_ino = r->ino;
  x->stx_size = r->size;
  x->stx_blocks = r->blocks;
  x->stx_atime.tv_sec = r->atime_sec;
  x->stx_atime.tv_nsec = (uint32_t)r->atime_nsec;
  x->stx_mtime.tv_sec = r->mtime_sec;
  x->stx_mtime.tv_nsec = (uint32_t)r->mtime_nsec;
  x->stx_ctime.tv_sec = r->ctime_sec;
  x->stx_ctime.tv_nsec = (uint32_t)r->ctime_nsec;
  x->stx_rdev_major = major(r->rdev);
  x->stx_rdev_minor = minor(r->rdev);
  x->stx_dev_major = major(r->dev);
  x->stx_dev_minor = minor(r->dev);
}

/* A stat of a path the rules call remote, in the target's root: 1 (*out), -1 (errno: ENOENT, ENOTDIR), 0 to ask. */
static int stat_in_root(const char *abs, int nofollow, struct dp_stat *out) {
  uint64_t since = dp_trace_clock();
  int fd = dp_openat_in_root(abs, O_PATH | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0));
  if (fd < 0 && errno != ENOENT && errno != ENOTDIR) return 0;
  dp_log("stat of %s: in the target's root%s", abs, fd < 0 ? ", not there" : "");
  if (fd < 0) {
    dp_traced("stat", abs, since);
    return -1;
  }
  struct stat st;
  int ok = dp_local_fstatat(fd, "", &st, AT_EMPTY_PATH) == 0;
  REAL(close)(fd);
  if (!ok) return 0;
  *out = (struct dp_stat){.dev = st.st_dev, .ino = st.st_ino, .mode = st.st_mode, .nlink = st.st_nlink, .uid = st.st_uid, .gid = st.st_gid, .rdev = st.st_rdev,
                          .size = (uint64_t)st.st_size, .blksize = (uint64_t)st.st_blksize, .blocks = (uint64_t)st.st_blocks,
                          .atime_sec = st.st_atim.tv_sec, .atime_nsec = st.st_atim.tv_nsec, .mtime_sec = st.st_mtim.tv_sec,
                          .mtime_nsec = st.st_mtim.tv_nsec, .ctime_sec = st.st_ctim.tv_sec, .ctime_nsec = st.st_ctim.tv_nsec};
  dp_traced("stat", abs, since);
  return 1;
}

/* The answer for one stat-like call: 1 = filled from remote, 0 = do it locally (on *local), -1 = failed (errno set). */
static int remote_stat(int dirfd, const char *path, int flags, struct dp_stat *out, char **reply, const char **local) {
  *reply = NULL;
  *local = path;
  if ((flags & AT_EMPTY_PATH) && path != NULL && path[0] == '\0') {
    struct dp_fdinfo info;
    if (dirfd >= 0 && dp_fd_get(dirfd, &info) && info.has_stat) {
      *out = info.stat;
      return 1;
    }
    return 0;
  }
  char abs[PATH_MAX];
  int verdict = dp_path_to_ask(dirfd, path, abs, local);
  if (verdict == 0) return 0;
  int nofollow = (flags & AT_SYMLINK_NOFOLLOW) != 0;
  int known = dp_cache_get(abs, nofollow, out);
  if (known != 1) {
    dp_log("stat of %s: answered from the last %s", abs, known == 0 ? "stat" : "error");
    if (known == 0) return 1;
    errno = -known;
    return -1;
  }
  unsigned epoch = dp_cache_epoch();
  /* Kept as an answer of the proxy's is: a repeated stat (a watcher, a build) then costs no system call. */
  int direct = verdict == DP_RULE_REMOTE ? stat_in_root(abs, nofollow, out) : 0;
  if (direct != 0) {
    int saved = errno;
    dp_cache_put(abs, nofollow, direct < 0 ? -saved : 0, direct < 0 ? NULL : out, epoch);
    errno = saved;
    return direct;
  }
  uint32_t head = nofollow ? DP_STAT_NOFOLLOW : 0;
  uint32_t len;
  int status = dp_ask_abs(DP_OP_STAT, &head, sizeof head, abs, reply, &len, local);
  if (status == DP_LOCAL) return 0;
  if (status < 0) {
    dp_cache_put(abs, nofollow, status, NULL, epoch);
    errno = -status;
    return -1;
  }
  if (len < sizeof *out) {
    errno = EIO;
    return -1;
  }
  memcpy(out, *reply, sizeof *out);
  dp_cache_put(abs, nofollow, 0, out, epoch);
  return 1;
}

/* Every stat variant funnels here; `local` performs the libc call on the (possibly rewritten) path. */
#define DP_STAT_BODY(dirfd, path, flags, fill, local_call) \
  do {                                                     \
    if (!dp_enter()) return local_call(path);              \
    struct dp_stat remote;                                 \
    char *reply;                                           \
    const char *use;                                       \
    int r = remote_stat(dirfd, path, flags, &remote, &reply, &use); \
    if (r == 0) r = local_call(use);                       \
    else if (r == 1) {                                     \
      fill;                                                \
      r = 0;                                               \
    }                                                      \
    int saved = errno;                                     \
    dp_free(reply);                                           \
    dp_leave();                                            \
    errno = saved;                                         \
    return r;                                              \
  } while (0)

int dp_local_fstatat(int dirfd, const char *path, struct stat *st, int flags) {
  if (REAL(fstatat)) return REAL(fstatat)(dirfd, path, st, flags);
  return (int)REAL(syscall)(SYS_newfstatat, (long)dirfd, (long)path, (long)st, (long)flags);
}

static int at_call(int dirfd, const char *orig, const char *use, struct stat *st, int flags) {
  return dp_local_fstatat(use == orig ? dirfd : AT_FDCWD, use, st, flags);
}

static int stat_at(int dirfd, const char *path, struct stat *st, int flags) {
#define LOCAL(p) at_call(dirfd, path, p, st, flags)
  DP_STAT_BODY(dirfd, path, flags, dp_fill_stat(st, &remote), LOCAL);
#undef LOCAL
}

int stat(const char *path, struct stat *st) { dp_init(); return stat_at(AT_FDCWD, path, st, 0); }
int stat64(const char *path, struct stat64 *st) { dp_init(); return stat_at(AT_FDCWD, path, (struct stat *)st, 0); }
int lstat(const char *path, struct stat *st) { dp_init(); return stat_at(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW); }
int lstat64(const char *path, struct stat64 *st) { dp_init(); return stat_at(AT_FDCWD, path, (struct stat *)st, AT_SYMLINK_NOFOLLOW); }
int fstatat(int dirfd, const char *path, struct stat *st, int flags) { dp_init(); return stat_at(dirfd, path, st, flags); }
int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags) { dp_init(); return stat_at(dirfd, path, (struct stat *)st, flags); }
int __xstat(int ver, const char *path, struct stat *st) { dp_init(); (void)ver; return stat_at(AT_FDCWD, path, st, 0); }
int __xstat64(int ver, const char *path, struct stat64 *st) { dp_init(); (void)ver; return stat_at(AT_FDCWD, path, (struct stat *)st, 0); }
int __lxstat(int ver, const char *path, struct stat *st) { dp_init(); (void)ver; return stat_at(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW); }
int __lxstat64(int ver, const char *path, struct stat64 *st) { dp_init(); (void)ver; return stat_at(AT_FDCWD, path, (struct stat *)st, AT_SYMLINK_NOFOLLOW); }
int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags) { dp_init(); (void)ver; return stat_at(dirfd, path, st, flags); }
int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags) { dp_init(); (void)ver; return stat_at(dirfd, path, (struct stat *)st, flags); }

static int fstat_fd(int fd, struct stat *st) {
  dp_init();
  struct dp_fdinfo info;
  if (dp_fd_get(fd, &info) && info.has_stat) {
    dp_fill_stat(st, &info.stat);
    return 0;
  }
  return dp_local_fstatat(fd, "", st, AT_EMPTY_PATH);
}

int fstat(int fd, struct stat *st) { return fstat_fd(fd, st); }
int fstat64(int fd, struct stat64 *st) { return fstat_fd(fd, (struct stat *)st); }
int __fxstat(int ver, int fd, struct stat *st) { (void)ver; return fstat_fd(fd, st); }
int __fxstat64(int ver, int fd, struct stat64 *st) { (void)ver; return fstat_fd(fd, (struct stat *)st); }

static int statx_local(int dirfd, const char *orig, const char *use, int flags, unsigned mask, struct statx *x) {
  if (REAL(statx)) return REAL(statx)(use == orig ? dirfd : AT_FDCWD, use, flags, mask, x);
  return (int)REAL(syscall)(SYS_statx, use == orig ? dirfd : AT_FDCWD, use, flags, mask, x);
}

static int statx_hook(int dirfd, const char *path, int flags, unsigned mask, struct statx *x) {
#define LOCAL(p) statx_local(dirfd, path, p, flags, mask, x)
  DP_STAT_BODY(dirfd, path, flags, dp_fill_statx(x, &remote), LOCAL);
#undef LOCAL
}

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *x) {
  dp_init();
  return statx_hook(dirfd, path, flags, mask, x);
}

/* libuv reaches statx and close through syscall(), some runtimes close_range; every other number passes through untouched. */
long syscall(long number, ...) {
  dp_init();
  va_list ap;
  va_start(ap, number);
  long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
  long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
  va_end(ap);
  if (number == SYS_statx) return statx_hook((int)a1, (const char *)a2, (int)a3, (unsigned)a4, (struct statx *)a5);
  if (number == SYS_close) return dp_close((int)a1, 1);
  if (number == SYS_close_range) return dp_close_range((unsigned)a1, (unsigned)a2, (int)a3);
  if (number == SYS_chdir || number == SYS_fchdir) return dp_chdir_raw(number, a1);
  return REAL(syscall)(number, a1, a2, a3, a4, a5, a6);
}
