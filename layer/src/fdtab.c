/* The descriptors the layer made or relayed (remote files, relayed sockets), and absolute paths for *at calls. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DP_MAX_FD 65536

static struct dp_fdinfo *table[DP_MAX_FD];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* fork() holds the lock, so a child never inherits it taken by another thread: its first close would wait forever
 * (libuv's threads close through our syscall hook while the main thread forks). vfork children share the parent's. */
static void hold(void) { pthread_mutex_lock(&lock); }
static void release(void) { pthread_mutex_unlock(&lock); }
__attribute__((constructor)) static void fork_safe(void) { pthread_atfork(hold, release, release); }

void dp_fd_set(int fd, const struct dp_fdinfo *info) {
  if (fd < 0 || fd >= DP_MAX_FD) return;
  struct dp_fdinfo *copy = malloc(sizeof *copy);
  if (copy == NULL) return;
  *copy = *info;
  pthread_mutex_lock(&lock);
  free(table[fd]);
  table[fd] = copy;
  pthread_mutex_unlock(&lock);
}

int dp_fd_get(int fd, struct dp_fdinfo *out) {
  if (fd < 0 || fd >= DP_MAX_FD) return 0;
  pthread_mutex_lock(&lock);
  int found = table[fd] != NULL;
  if (found) *out = *table[fd];
  pthread_mutex_unlock(&lock);
  return found;
}

void dp_fd_forget(int fd) {
  if (fd < 0 || fd >= DP_MAX_FD) return;
  pthread_mutex_lock(&lock);
  free(table[fd]);
  table[fd] = NULL;
  pthread_mutex_unlock(&lock);
}

int dp_fd_take(int fd, struct dp_fdinfo *out) {
  if (fd < 0 || fd >= DP_MAX_FD) return 0;
  pthread_mutex_lock(&lock);
  struct dp_fdinfo *info = table[fd];
  table[fd] = NULL;
  pthread_mutex_unlock(&lock);
  if (info == NULL) return 0;
  *out = *info;
  free(info);
  return 1;
}

void dp_fd_copy(int from, int to) {
  struct dp_fdinfo info;
  if (dp_fd_get(from, &info)) dp_fd_set(to, &info);
  else dp_fd_forget(to);
}

int dp_absolute(int dirfd, const char *path, char *out, size_t size) {
  if (path == NULL) return -EFAULT;
  if (path[0] == '/') {
    if (strlen(path) >= size) return -ENAMETOOLONG;
    strcpy(out, path);
    return 0;
  }
  char base[4096];
  if (dirfd == AT_FDCWD) {
    if (getcwd(base, sizeof base) == NULL) return -errno;
  } else {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
    ssize_t n = real_readlink(link, base, sizeof base - 1);
    if (n < 0) return -EBADF;
    base[n] = '\0';
  }
  int n = snprintf(out, size, "%s/%s", strcmp(base, "/") == 0 ? "" : base, path);
  return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}
