/* Write mode: a remote file opened for writing is a memfd whose content goes back to the target on fsync/fdatasync,
 * on the last close in this process (dup2 onto it included) and at exit; mkdir, rmdir, unlink, rename and chmod
 * are asked of the proxy like any path call. The memfd's name carries the proxy's handle, so a program started by
 * exec with such a descriptor (a shell's `cmd > file`) still writes it back. */
#define _GNU_SOURCE
#include "layer.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DP_MEMFD_NAME "doppel-w:"
#define DP_MEMFD_LINK "/memfd:" DP_MEMFD_NAME

static int reopen(int fd, int flags) {
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  return REAL(open)(link, flags);
}

int dp_written_open(const char *reply, uint32_t len, int flags) {
  if (len < sizeof(struct dp_open_write) + sizeof(struct dp_stat)) {
    errno = EIO;
    return -1;
  }
  struct dp_open_write head;
  memcpy(&head, reply, sizeof head);
  char name[64];
  snprintf(name, sizeof name, DP_MEMFD_NAME "%" PRIu64, head.handle);
  int mem = memfd_create(name, MFD_CLOEXEC);
  if (mem < 0) return -1;
  const char *data = reply + sizeof head + sizeof(struct dp_stat);
  size_t left = len - sizeof head - sizeof(struct dp_stat);
  int fd = -1;
  while (left > 0) {
    ssize_t n = write(mem, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) goto done;
    data += n;
    left -= (size_t)n;
  }
  /* A descriptor of its own with the program's access mode and O_APPEND, at offset 0, as open(2) gives. */
  fd = reopen(mem, flags & (O_ACCMODE | O_APPEND | O_CLOEXEC | O_NONBLOCK));
  if (fd >= 0) {
    struct dp_fdinfo info = {.handle = head.handle};
    dp_fd_set(fd, &info);
  }
done:;
  int saved = errno;
  REAL(close)(mem);
  errno = saved;
  return fd;
}

/* The handle of a written file from its memfd's name, 0 for any other descriptor. */
static uint64_t handle_of_link(int fd) {
  char link[64], target[128];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = REAL(readlink)(link, target, sizeof target - 1);
  if (n <= 0) return 0;
  target[n] = '\0';
  uint64_t handle = 0;
  return sscanf(target, DP_MEMFD_LINK "%" SCNu64, &handle) == 1 ? handle : 0;
}

/* Calls `each` for every descriptor of this process that holds a written file; stops when it returns nonzero. */
static int scan_written(int (*each)(int fd, uint64_t handle, void *ctx), void *ctx) {
  DIR *dir = REAL(opendir)("/proc/self/fd");
  if (dir == NULL) return 0;
  int self = dirfd(dir), stop = 0;
  struct dirent *entry;
  while (!stop && (entry = readdir(dir)) != NULL) {
    int fd = atoi(entry->d_name);
    if (entry->d_name[0] == '.' || fd == self) continue;
    uint64_t handle = handle_of_link(fd);
    if (handle != 0) stop = each(fd, handle, ctx);
  }
  REAL(closedir)(dir);
  return stop;
}

struct holder { int except; uint64_t handle; };

static int holds(int fd, uint64_t handle, void *ctx) {
  const struct holder *h = ctx;
  return fd != h->except && handle == h->handle;
}

/* Sends the file's content to the proxy, which writes it to the target; 0 or -errno (the target's). */
static int write_back(int fd, uint64_t handle) {
  int rd = reopen(fd, O_RDONLY | O_CLOEXEC);
  if (rd < 0) return -errno;
  off_t size = lseek(rd, 0, SEEK_END);
  struct dp_writeback_req req = {handle, size < 0 ? 0 : (uint64_t)size};
  char *reply;
  uint32_t len;
  int status = dp_call(DP_OP_WRITEBACK, &req, sizeof req, NULL, 0, &reply, &len);
  struct dp_writeback_resp resp = {0, 0};
  if (status == DP_OK && len >= sizeof resp) memcpy(&resp, reply, sizeof resp);
  else if (status == DP_OK) status = -EIO;
  dp_free(reply);
  char *buf = status == DP_OK ? malloc(DP_WRITEBACK_CHUNK) : NULL;
  if (status == DP_OK && buf == NULL) status = -ENOMEM;
  for (uint64_t offset = resp.from; status == DP_OK;) {
    ssize_t n = pread(rd, buf, DP_WRITEBACK_CHUNK, (off_t)offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) n = 0; /* ends the write-back with what was read; the proxy checks the offsets */
    int last = (size_t)n < DP_WRITEBACK_CHUNK;
    struct dp_writeback_data piece = {resp.token, offset, last ? DP_WRITEBACK_LAST : 0, 0};
    status = dp_call(DP_OP_WRITEBACK_DATA, &piece, sizeof piece, buf, (size_t)n, &reply, &len);
    dp_free(reply);
    offset += (uint64_t)n;
    if (last) break;
  }
  free(buf);
  REAL(close)(rd);
  return status < 0 ? status : 0;
}

int dp_written_release(int fd) {
  struct dp_fdinfo info;
  if (!dp_fd_get(fd, &info) || info.handle == 0 || !dp_enter()) return 0;
  struct holder others = {fd, info.handle};
  int r = scan_written(holds, &others) ? 0 : write_back(fd, info.handle);
  dp_leave();
  return r;
}

static int sync_hook(int fd, int (*real)(int)) {
  dp_init();
  struct dp_fdinfo info;
  if (!dp_fd_get(fd, &info) || info.handle == 0 || !dp_enter()) return real(fd);
  int r = write_back(fd, info.handle);
  dp_leave();
  if (r < 0) {
    errno = -r;
    return -1;
  }
  return 0;
}

int fsync(int fd) { return sync_hook(fd, REAL(fsync)); }

/* fclose closes inside libc, past our close: the stream's buffer is flushed first, then the file goes back, and
 * the descriptor's record goes with it. */
int fclose(FILE *file) {
  dp_init();
  int fd = file != NULL ? fileno(file) : -1;
  struct dp_fdinfo info;
  if (fd < 0 || !dp_fd_get(fd, &info)) return REAL(fclose)(file);
  int written = info.handle != 0 && fflush(file) == 0 ? dp_written_release(fd) : 0;
  int r = REAL(fclose)(file);
  dp_fd_forget(fd);
  if (r == 0 && written < 0) {
    errno = -written;
    r = EOF;
  }
  return r;
}
int fdatasync(int fd) { return sync_hook(fd, REAL(fdatasync)); }

/* Inherited through exec: the new image has no record of them but their memfds' names. */
static int adopt(int fd, uint64_t handle, void *ctx) {
  struct dp_fdinfo info;
  if (!dp_fd_get(fd, &info)) {
    struct dp_fdinfo written = {.handle = handle};
    dp_fd_set(fd, &written);
  }
  return 0;
}

/* A process that exits without closing its written files (most do) sends them at exit, once per file. */
struct sent { uint64_t handles[64]; size_t count; };

static int send_at_exit(int fd, uint64_t handle, void *ctx) {
  struct sent *sent = ctx;
  for (size_t i = 0; i < sent->count; i++)
    if (sent->handles[i] == handle) return 0;
  if (sent->count < sizeof sent->handles / sizeof sent->handles[0]) sent->handles[sent->count++] = handle;
  if (write_back(fd, handle) < 0) dp_log("write-back of descriptor %d at exit failed", fd);
  return 0;
}

/* Both look through /proc/self/fd, which only a session that writes to the target needs. */
__attribute__((constructor)) static void adopt_inherited(void) {
  dp_init();
  if (!dp_remote_writes() || !dp_enter()) return;
  scan_written(adopt, NULL);
  dp_leave();
}

__attribute__((destructor)) static void write_back_at_exit(void) {
  if (!dp_remote_writes() || !dp_enter()) return;
  /* libc flushes streams only after the destructors have run. */
  fflush(NULL);
  struct sent sent = {.count = 0};
  scan_written(send_at_exit, &sent);
  dp_leave();
}

static int done(int status) {
  if (status < 0) {
    errno = -status;
    return -1;
  }
  return 0;
}

/* The end of every path hook: errno survives the layer's own cleanup. */
static int finish(int r, char *reply) {
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return r;
}

#define AT(dirfd, path, local) ((local) == (path) ? (dirfd) : AT_FDCWD)

static int mkdir_at(int dirfd, const char *path, mode_t mode) {
  if (!dp_enter()) return REAL(mkdirat)(dirfd, path, mode);
  uint32_t head = mode & 07777;
  char *reply;
  uint32_t len;
  const char *local;
  int status = dp_ask_path(DP_OP_MKDIR, &head, sizeof head, dirfd, path, &reply, &len, &local);
  return finish(status == DP_LOCAL ? REAL(mkdirat)(AT(dirfd, path, local), local, mode) : done(status), reply);
}

int mkdir(const char *path, mode_t mode) { dp_init(); return mkdir_at(AT_FDCWD, path, mode); }
int mkdirat(int dirfd, const char *path, mode_t mode) { dp_init(); return mkdir_at(dirfd, path, mode); }

static int unlink_at(int dirfd, const char *path, int flags) {
  if (!dp_enter()) return REAL(unlinkat)(dirfd, path, flags);
  char *reply;
  uint32_t len;
  const char *local;
  int status = dp_ask_path((flags & AT_REMOVEDIR) ? DP_OP_RMDIR : DP_OP_UNLINK, NULL, 0, dirfd, path, &reply, &len, &local);
  return finish(status == DP_LOCAL ? REAL(unlinkat)(AT(dirfd, path, local), local, flags) : done(status), reply);
}

int unlink(const char *path) { dp_init(); return unlink_at(AT_FDCWD, path, 0); }
int unlinkat(int dirfd, const char *path, int flags) { dp_init(); return unlink_at(dirfd, path, flags); }
int rmdir(const char *path) { dp_init(); return unlink_at(AT_FDCWD, path, AT_REMOVEDIR); }

static int chmod_at(int dirfd, const char *path, mode_t mode, int flags) {
  if (!dp_enter()) return REAL(fchmodat)(dirfd, path, mode, flags);
  uint32_t head[2] = {mode & 07777, (flags & AT_SYMLINK_NOFOLLOW) ? DP_CHMOD_NOFOLLOW : 0};
  char *reply;
  uint32_t len;
  const char *local;
  int status = dp_ask_path(DP_OP_CHMOD, head, sizeof head, dirfd, path, &reply, &len, &local);
  return finish(status == DP_LOCAL ? REAL(fchmodat)(AT(dirfd, path, local), local, mode, flags) : done(status), reply);
}

int chmod(const char *path, mode_t mode) { dp_init(); return chmod_at(AT_FDCWD, path, mode, 0); }
int fchmodat(int dirfd, const char *path, mode_t mode, int flags) { dp_init(); return chmod_at(dirfd, path, mode, flags); }

int fchmod(int fd, mode_t mode) {
  dp_init();
  struct dp_fdinfo info;
  if (!dp_fd_get(fd, &info) || info.handle == 0 || !dp_enter()) return REAL(fchmod)(fd, mode);
  struct dp_fchmod_req req = {info.handle, mode & 07777, 0};
  char *reply;
  uint32_t len;
  return finish(done(dp_call(DP_OP_FCHMOD, &req, sizeof req, NULL, 0, &reply, &len)), reply);
}

static int rename_local(int from_dir, const char *from, int to_dir, const char *to, unsigned flags) {
  if (flags == 0) return REAL(renameat)(from_dir, from, to_dir, to);
  if (REAL(renameat2) == NULL) {
    errno = ENOSYS;
    return -1;
  }
  return REAL(renameat2)(from_dir, from, to_dir, to, flags);
}

static int rename_at(int from_dir, const char *from, int to_dir, const char *to, unsigned flags) {
  /* RENAME_EXCHANGE and RENAME_WHITEOUT have no remote form: they stay local. */
  if ((flags & ~(unsigned)RENAME_NOREPLACE) != 0 || !dp_enter()) return rename_local(from_dir, from, to_dir, to, flags);
  struct { uint32_t flags; char paths[2 * PATH_MAX]; } req = {(flags & RENAME_NOREPLACE) ? DP_RENAME_NOREPLACE : 0, {0}};
  char *reply = NULL;
  if (from == NULL || to == NULL || dp_absolute(from_dir, from, req.paths, PATH_MAX) < 0 ||
      dp_absolute(to_dir, to, req.paths + strlen(req.paths) + 1, PATH_MAX) < 0)
    return finish(rename_local(from_dir, from, to_dir, to, flags), reply);
  size_t from_len = strlen(req.paths) + 1;
  size_t size = sizeof req.flags + from_len + strlen(req.paths + from_len) + 1;
  uint32_t len;
  int status = dp_call(DP_OP_RENAME, &req, size, NULL, 0, &reply, &len);
  int r;
  if (status != DP_LOCAL) r = done(status);
  else if (reply != NULL && len > 0 && memchr(reply, '\0', len) != NULL && strlen(reply) + 1 < len)
    r = rename_local(AT_FDCWD, reply, AT_FDCWD, reply + strlen(reply) + 1, flags);
  else r = rename_local(from_dir, from, to_dir, to, flags);
  return finish(r, reply);
}

int rename(const char *from, const char *to) { dp_init(); return rename_at(AT_FDCWD, from, AT_FDCWD, to, 0); }
int renameat(int from_dir, const char *from, int to_dir, const char *to) { dp_init(); return rename_at(from_dir, from, to_dir, to, 0); }
int renameat2(int from_dir, const char *from, int to_dir, const char *to, unsigned int flags) { dp_init(); return rename_at(from_dir, from, to_dir, to, flags); }
