/* Descriptors: dup, dup2, dup3 and fcntl(F_DUPFD*) keep what a remote descriptor is; dup2/dup3 onto the layer's own
 * socket or its descriptor of the target's root, and close_range/closefrom over them, leave the program reaching the
 * target; a closed range forgets its descriptors; a file over 4 MiB and a file with a 254-byte name arrive whole; a
 * thread started after the program cleared its environment still reaches the target.
 * usage: descriptors SMALL_FILE SMALL_CONTENT BIG_FILE LONG_NAME_FILE COPY_OF_BIG_FILE (local) IN_ROOT_FILE
 * (IN_ROOT_FILE: SMALL_FILE spelled so that the layer opens it in the target's root itself) */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *small, *content, *in_root;
static int failed;

static void check(int ok, const char *what) {
  printf("%s: %s\n", what, ok ? "ok" : "FAILED");
  if (!ok) failed = 1;
}

/* Copies the whole file through read(2) to a local file, for the test to compare; returns its size. */
static size_t copy(int from, const char *to) {
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  char buf[65536];
  size_t size = 0;
  for (ssize_t n; (n = read(from, buf, sizeof buf)) > 0; size += (size_t)n)
    if (write(out, buf, (size_t)n) != n) return 0;
  close(out);
  return size;
}

/* Whether `path` reads as the small file's content. */
static int reads(const char *path) {
  char buf[4096];
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  return n == (ssize_t)strlen(content) && memcmp(buf, content, (size_t)n) == 0;
}

static int reads_remote(void) { return reads(small); }
static int reads_in_root(void) { return reads(in_root); }

/* The layer's descriptors of the target's root: directories opened O_PATH at 900 or above; the first, and how many. */
static int own_root(int *count) {
  int first = -1;
  *count = 0;
  for (int fd = 900; fd < 4096; fd++) {
    struct stat st;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || !(flags & O_PATH) || fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (first < 0) first = fd;
    ++*count;
  }
  return first;
}

static int reports_remote_size(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && st.st_size == (off_t)strlen(content);
}

/* The layer's socket: a Unix socket at 900 or above. */
static int own_socket(void) {
  for (int fd = 900; fd < 4096; fd++) {
    struct stat st;
    if (fcntl(fd, F_GETFD) >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) return fd;
  }
  return -1;
}

static void *read_in_thread(void *arg) {
  *(int *)arg = reads_remote();
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 7) return 2;
  small = argv[1];
  content = argv[2];
  in_root = argv[6];
  check(reads_remote(), "remote read");

  int fd = open(small, O_RDONLY);
  int a = dup(fd), b = dup2(fd, 50), c = dup3(fd, 51, O_CLOEXEC), d = fcntl(fd, F_DUPFD, 60), e = fcntl(fd, F_DUPFD_CLOEXEC, 70);
  check(reports_remote_size(a) && b == 50 && reports_remote_size(b) && c == 51 && reports_remote_size(c) && d >= 60 && reports_remote_size(d) && e >= 70 && reports_remote_size(e),
        "dup, dup2, dup3, F_DUPFD, F_DUPFD_CLOEXEC report the remote file");
  int null = open("/dev/null", O_RDONLY);
  dup2(null, 50);
  struct stat st;
  check(fstat(50, &st) == 0 && S_ISCHR(st.st_mode), "dup2 over a remote descriptor: the new file's own stat");

  int own = own_socket();
  check(own >= 900, "the layer's socket sits at 900 or above");
  check(dup2(null, own) == own && reads_remote(), "dup2 onto the layer's socket: still remote");
  own = own_socket();
  check(dup3(null, own, O_CLOEXEC) == own && reads_remote(), "dup3 onto the layer's socket: still remote");
  check(fstat(own, &st) == 0 && S_ISCHR(st.st_mode), "the program has the number it asked for");

  int ok = 1, roots;
  for (int i = 0; i < 50; i++) ok &= reads_in_root();
  int root = own_root(&roots);
  check(ok && root >= 900 && roots == 1, "opens in the target's root: one descriptor of it, at 900 or above, for them all");
  check(dup2(null, root) == root && reads_in_root() && fstat(root, &st) == 0 && S_ISCHR(st.st_mode) && own_root(&roots) != root && roots == 1,
        "dup2 onto the layer's root: the program has the number, the layer reads in the root still");

  /* Descriptors 3 and up go; the remote ones are forgotten, so new local files at their numbers are local. */
  check(close_range(3, ~0u, 0) == 0 && reads_remote() && reads_in_root(), "close_range over everything: still remote");
  int local = open("/dev/null", O_RDONLY);
  int at50 = dup2(local, 50);
  check(fstat(local, &st) == 0 && S_ISCHR(st.st_mode) && at50 == 50 && fstat(50, &st) == 0 && S_ISCHR(st.st_mode), "a closed range forgets its remote descriptors");
  fd = open(small, O_RDONLY);
  check(syscall(SYS_close_range, 3, 4000, 0) == 0 && fcntl(fd, F_GETFD) < 0 && errno == EBADF && reads_remote(), "syscall(SYS_close_range): still remote");
  closefrom(3);
  check(reads_remote() && reads_in_root(), "closefrom: still remote");

  fd = open(argv[3], O_RDONLY);
  size_t size = copy(fd, argv[5]);
  check(fstat(fd, &st) == 0 && (size_t)st.st_size == size && size > 4 * 1024 * 1024, "a file over 4 MiB arrives whole");
  close(fd);

  fd = open(argv[4], O_RDONLY);
  char buf[256] = {0};
  check(fd >= 0 && read(fd, buf, sizeof buf - 1) > 0, "a remote file with a 254-byte name");
  printf("long name: %s", buf);
  close(fd);

  clearenv();
  pthread_t thread;
  int remote = 0;
  check(pthread_create(&thread, NULL, read_in_thread, &remote) == 0 && pthread_join(thread, NULL) == 0 && remote, "a new thread after clearenv: remote");
  return failed;
}
