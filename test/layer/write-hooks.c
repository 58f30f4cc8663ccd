/* Every write-mode hook on a directory of the target (argv[1]): creat/open flags, fopen modes, write, pwrite,
 * ftruncate, fsync, fdatasync, dup/dup2/fork sharing one written file, mkdir/rmdir/unlink/rename/chmod and their
 * *at forms, and the target's errors. The test reads the result from inside the target. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[512];

static const char *at(const char *name) {
  static char paths[8][1024];
  static int next;
  char *path = paths[next++ % 8];
  snprintf(path, sizeof paths[0], "%s/%s", dir, name);
  return path;
}

#define CHECK(call)                                                             \
  do {                                                                          \
    if ((call) < 0) {                                                           \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, strerror(errno)); \
      exit(1);                                                                  \
    }                                                                           \
  } while (0)

/* The call must fail with `expected`. */
static void fails(int r, int expected, const char *what) {
  if (r >= 0 || errno != expected) {
    fprintf(stderr, "%s: expected %s, got %s\n", what, strerror(expected), r >= 0 ? "success" : strerror(errno));
    exit(1);
  }
  printf("%s: %s\n", what, strerror(expected));
}

/* A step that must hold. */
#define EXPECT(cond)                                                  \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: not so: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                        \
    }                                                                 \
  } while (0)

static void put(int fd, const char *text) { CHECK(write(fd, text, strlen(text))); }

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  snprintf(dir, sizeof dir, "%s", argv[1]);
  CHECK(mkdir(dir, 0755));

  /* open O_CREAT|O_EXCL, write, pwrite, ftruncate, fsync, close */
  int fd = open(at("plain"), O_WRONLY | O_CREAT | O_EXCL, 0644);
  CHECK(fd);
  put(fd, "hello world, to be cut\n");
  CHECK(pwrite(fd, "HELLO", 5, 0));
  CHECK(ftruncate(fd, 11));
  CHECK(fsync(fd));
  put(fd, "");
  CHECK(close(fd));
  fails(open(at("plain"), O_WRONLY | O_CREAT | O_EXCL, 0644), EEXIST, "O_EXCL on an existing file");
  fails(open(at("missing/file"), O_WRONLY | O_CREAT, 0644), ENOENT, "create in a missing directory");

  /* creat, then O_TRUNC and O_APPEND over it, fdatasync */
  fd = creat(at("created"), 0600);
  CHECK(fd);
  put(fd, "first version, longer\n");
  CHECK(close(fd));
  fd = openat(AT_FDCWD, at("created"), O_WRONLY | O_TRUNC);
  CHECK(fd);
  put(fd, "second\n");
  CHECK(fdatasync(fd));
  CHECK(close(fd));
  fd = open(at("created"), O_WRONLY | O_APPEND);
  CHECK(fd);
  CHECK(pwrite(fd, "appended\n", 9, 0)); /* O_APPEND: pwrite's offset is ignored on Linux */
  CHECK(close(fd));

  /* fopen "w", "a", "r+" */
  FILE *file = fopen(at("stdio"), "w");
  EXPECT(file != NULL);
  fprintf(file, "line one\n");
  CHECK(fclose(file));
  file = fopen(at("stdio"), "a");
  EXPECT(file != NULL);
  fprintf(file, "line two\n");
  CHECK(fclose(file));
  file = fopen(at("stdio"), "r+");
  EXPECT(file != NULL);
  char first[16] = {0};
  EXPECT(fgets(first, sizeof first, file) != NULL && strcmp(first, "line one\n") == 0);
  fseek(file, 0, SEEK_SET);
  fputs("LINE", file);
  CHECK(fclose(file));

  /* dup, dup2 and a forked child share one written file: nothing is lost whichever closes first */
  fd = open(at("shared"), O_RDWR | O_CREAT | O_TRUNC, 0644);
  CHECK(fd);
  int copy = dup(fd);
  CHECK(copy);
  put(fd, "parent 1\n");
  CHECK(close(fd));
  put(copy, "after the first close\n");
  int high = fcntl(copy, F_DUPFD_CLOEXEC, 100);
  CHECK(high);
  pid_t child = fork();
  if (child == 0) {
    put(copy, "child\n");
    _exit(close(copy) == 0 ? 0 : 1);
  }
  int status;
  waitpid(child, &status, 0);
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  put(high, "parent 2\n");
  CHECK(close(high));
  int spare = open("/dev/null", O_RDONLY);
  CHECK(spare);
  CHECK(dup2(spare, copy)); /* the file's last descriptor, closed by dup2 */
  CHECK(close(spare));
  CHECK(close(copy));

  /* mkdir/mkdirat, rmdir, unlink/unlinkat, rename/renameat/renameat2, chmod/fchmod/fchmodat */
  CHECK(mkdir(at("sub"), 0750));
  CHECK(mkdirat(AT_FDCWD, at("sub/deeper"), 0755));
  CHECK(mkdir(at("gone"), 0755));
  CHECK(rmdir(at("gone")));
  CHECK(mkdir(at("gone-at"), 0755));
  CHECK(unlinkat(AT_FDCWD, at("gone-at"), AT_REMOVEDIR));
  fails(rmdir(at("sub")), ENOTEMPTY, "rmdir of a directory with entries");
  fd = open(at("temp"), O_WRONLY | O_CREAT, 0644);
  CHECK(fd);
  CHECK(close(fd));
  CHECK(unlink(at("temp")));
  fd = open(at("temp-at"), O_WRONLY | O_CREAT, 0644);
  CHECK(fd);
  CHECK(close(fd));
  CHECK(unlinkat(AT_FDCWD, at("temp-at"), 0));
  fails(unlink(at("temp")), ENOENT, "unlink of a missing file");
  CHECK(rename(at("created"), at("sub/renamed")));
  CHECK(renameat(AT_FDCWD, at("sub/renamed"), AT_FDCWD, at("sub/deeper/renamed-at")));
  fails(renameat2(AT_FDCWD, at("plain"), AT_FDCWD, at("stdio"), RENAME_NOREPLACE), EEXIST, "RENAME_NOREPLACE onto a file");
  CHECK(renameat2(AT_FDCWD, at("plain"), AT_FDCWD, at("sub/plain"), RENAME_NOREPLACE));
  CHECK(chmod(at("stdio"), 0600));
  CHECK(fchmodat(AT_FDCWD, at("sub/plain"), 0640, 0));
  fd = open(at("shared"), O_RDWR);
  CHECK(fd);
  CHECK(fchmod(fd, 0604));
  CHECK(close(fd));

  /* Left open at exit: written back all the same */
  fd = open(at("at-exit"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CHECK(fd);
  put(fd, "never closed\n");
  printf("done\n");
  return 0;
}
