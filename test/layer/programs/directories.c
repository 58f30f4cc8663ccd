/* A remote directory as a descriptor: openat, fstatat, statx, faccessat, readlinkat with it as dirfd, fdopendir,
 * the raw getdents64 system call, fchdir, dup; and scandir whose filter and compare stat remote paths.
 * Prints what it saw, sorted, for the test to compare with the target's tree.
 * usage: directories TREE   (TREE has top.txt, a/one.txt, a/b/two.txt, a/b/c/three.txt) */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char tree[4096];

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The names in a directory, sorted and joined, without . and .. */
static void print_names(const char *label, char **names, int n) {
  qsort(names, (size_t)n, sizeof *names, by_name);
  printf("%s:", label);
  for (int i = 0; i < n; i++) {
    printf(" %s", names[i]);
    free(names[i]);
  }
  printf("\n");
}

static int keep_remote_regular(const struct dirent *e) {
  char path[8192];
  struct stat st;
  snprintf(path, sizeof path, "%s/a/%s", tree, e->d_name);
  /* Called by scandir: this stat goes to the target as the program's own call. */
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

static int by_remote_size(const struct dirent **x, const struct dirent **y) {
  char px[8192], py[8192];
  struct stat sx, sy;
  snprintf(px, sizeof px, "%s/a/%s", tree, (*x)->d_name);
  snprintf(py, sizeof py, "%s/a/%s", tree, (*y)->d_name);
  if (stat(px, &sx) != 0 || stat(py, &sy) != 0) return 0;
  return (sx.st_size > sy.st_size) - (sx.st_size < sy.st_size);
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  snprintf(tree, sizeof tree, "%s", argv[1]);
  int root = open(tree, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct stat st, st2;
  if (root < 0) return perror(tree), 1;
  printf("open dir: %s\n", fstat(root, &st) == 0 && S_ISDIR(st.st_mode) && stat(tree, &st2) == 0 && st.st_ino == st2.st_ino ? "remote directory" : "wrong");

  int a = openat(root, "a", O_RDONLY | O_DIRECTORY);
  printf("fstatat: %s\n", fstatat(a, "one.txt", &st, 0) == 0 && st.st_size == 4 ? "4 bytes" : "wrong");
  struct statx stx;
  printf("statx: %s\n", statx(a, "b/two.txt", 0, STATX_SIZE, &stx) == 0 && stx.stx_size == 4 ? "4 bytes" : "wrong");
  printf("faccessat: %s\n", faccessat(a, "one.txt", R_OK, 0) == 0 && faccessat(a, "none.txt", F_OK, 0) != 0 ? "yes, no" : "wrong");
  char link[256];
  ssize_t n = readlinkat(root, "link", link, sizeof link - 1);
  printf("readlinkat: %.*s\n", n > 0 ? (int)n : 5, n > 0 ? link : "wrong");
  int one = openat(a, "one.txt", O_RDONLY);
  char buf[64] = {0};
  printf("openat+read: %s", read(one, buf, sizeof buf - 1) > 0 ? buf : "wrong\n");
  close(one);

  /* The raw system call lists the stand-in: the names are the target's. */
  int b = openat(a, "b", O_RDONLY | O_DIRECTORY);
  char dents[4096];
  char *names[64];
  int count = 0;
  for (long got; (got = syscall(SYS_getdents64, b, dents, sizeof dents)) > 0;) {
    for (long off = 0; off < got;) {
      struct dirent64 *e = (struct dirent64 *)(dents + off);
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && count < 64) names[count++] = strdup(e->d_name);
      off += e->d_reclen;
    }
  }
  print_names("getdents64 a/b", names, count);

  int copy = dup(a);
  printf("dup of a directory: %s\n", fstat(copy, &st) == 0 && S_ISDIR(st.st_mode) && fstat(a, &st2) == 0 && st.st_ino == st2.st_ino ? "same remote directory" : "wrong");
  DIR *dir = fdopendir(copy);
  count = 0;
  for (struct dirent *e; dir != NULL && (e = readdir(dir)) != NULL;) {
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && count < 64) names[count++] = strdup(e->d_name);
  }
  print_names("fdopendir a", names, count);
  printf("fstat(dirfd): %s\n", dir != NULL && fstat(dirfd(dir), &st) == 0 && st.st_ino == st2.st_ino ? "remote directory" : "wrong");
  closedir(dir);

  /* Walk down from b with openat alone, then read the deepest file. */
  int c = openat(b, "c", O_RDONLY | O_DIRECTORY);
  int three = openat(c, "three.txt", O_RDONLY);
  memset(buf, 0, sizeof buf);
  printf("deep openat: %s", read(three, buf, sizeof buf - 1) > 0 ? buf : "wrong\n");

  /* fchdir into a remote directory: relative paths are the target's from there. */
  if (fchdir(b) != 0) return perror("fchdir"), 1;
  memset(buf, 0, sizeof buf);
  int two = open("two.txt", O_RDONLY);
  printf("fchdir+open: %s", two >= 0 && read(two, buf, sizeof buf - 1) > 0 ? buf : "wrong\n");
  printf("fchdir+stat: %s\n", stat("c/three.txt", &st) == 0 && st.st_size == 6 ? "6 bytes" : "wrong");

  struct dirent **list;
  char a_path[8192];
  snprintf(a_path, sizeof a_path, "%s/a", tree);
  int kept = scandir(a_path, &list, keep_remote_regular, by_remote_size);
  for (int i = 0; i < kept; i++) names[i] = strdup(list[i]->d_name), free(list[i]);
  if (kept >= 0) free(list);
  print_names("scandir a, regular files by a remote stat", names, kept > 0 ? kept : 0);
  return 0;
}
