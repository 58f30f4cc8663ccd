/* Directory hooks: a remote directory opens as its local stand-in (see DP_STANDIN_DIR in doppel-wire.h), which libc
 * and the kernel then list as any directory; opendir, scandir and chdir only swap the path, closedir forgets. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>

/* Copies into dir the path libc should list for path: the stand-in of a remote directory, or the local path.
 * Returns 1 for a stand-in (*remote then holds the remote directory's stat), 0 for local, -1 with errno. */
static int dir_path(const char *path, char *dir, struct dp_stat *remote) {
  struct dp_open_req head = {.flags = O_RDONLY | O_DIRECTORY};
  char *reply;
  uint32_t len;
  const char *local;
  int status = dp_ask_path(DP_OP_OPEN, &head, sizeof head, AT_FDCWD, path, &reply, &len, &local);
  int r = -1;
  if (status == DP_LOCAL) r = 0;
  else if (status < 0) errno = -status;
  else if (status != DP_DIRECTORY || len <= sizeof *remote || reply[len - 1] != '\0') errno = EIO;
  else {
    memcpy(remote, reply, sizeof *remote);
    local = reply + sizeof *remote;
    r = 1;
  }
  if (r >= 0 && strlen(local) >= PATH_MAX) {
    errno = ENAMETOOLONG;
    r = -1;
  }
  if (r >= 0) strcpy(dir, local);
  dp_free(reply);
  return r;
}

DIR *opendir(const char *path) {
  dp_init();
  if (!dp_enter()) return REAL(opendir)(path);
  char dir[PATH_MAX];
  struct dp_stat remote;
  int r = dir_path(path, dir, &remote);
  DIR *result = r < 0 ? NULL : REAL(opendir)(dir);
  if (result != NULL && r == 1) {
    /* fstat(dirfd(d)) reports the remote directory, as for open. */
    struct dp_fdinfo info = {.has_stat = 1, .stat = remote};
    dp_fd_set(dirfd(result), &info);
  }
  int saved = errno;
  dp_leave();
  errno = saved;
  return result;
}

/* cd into a remote directory goes to its stand-in, as fchdir of an opened one does: relative paths then map back to
 * the remote directory (mkdir -p and rm -r chdir into each level they make or walk). */
int chdir(const char *path) {
  dp_init();
  if (!dp_enter()) return dp_cwd_moved(REAL(chdir)(path));
  char dir[PATH_MAX];
  struct dp_stat remote;
  int r = dir_path(path, dir, &remote);
  if (r >= 0) r = REAL(chdir)(dir);
  int saved = errno;
  dp_leave();
  errno = saved;
  return dp_cwd_moved(r);
}

/* libc closes a DIR's descriptor itself, out of reach of the close hook (write.c does the same for fclose). */
int closedir(DIR *dir) {
  dp_init();
  dp_fd_forget(dirfd(dir));
  return REAL(closedir)(dir);
}

/* The program's filter and compare run outside the guard, so a stat they make is answered as the program's own. */
#define DP_SCANDIR(real, path, out, filter, compar)             \
  do {                                                          \
    dp_init();                                                  \
    if (!dp_enter()) return real(path, out, filter, compar); \
    char dir[PATH_MAX];                                         \
    struct dp_stat remote;                                      \
    int r = dir_path(path, dir, &remote);                       \
    int saved = errno;                                          \
    dp_leave();                                                 \
    errno = saved;                                              \
    return r < 0 ? -1 : real(dir, out, filter, compar);         \
  } while (0)

int scandir(const char *path, struct dirent ***out, int (*filter)(const struct dirent *), int (*compar)(const struct dirent **, const struct dirent **)) {
  DP_SCANDIR(REAL(scandir), path, out, filter, compar);
}

int scandir64(const char *path, struct dirent64 ***out, int (*filter)(const struct dirent64 *), int (*compar)(const struct dirent64 **, const struct dirent64 **)) {
  DP_SCANDIR(REAL(scandir64), path, out, filter, compar);
}
