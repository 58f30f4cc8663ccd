/* A fork while another thread makes remote calls: fork copies the descriptor table before the memory, and that thread
 * runs on in between, so the child can inherit the layer's memory of descriptors its table never got. Each trial is a
 * fresh process P whose thread, after a delay that differs per trial, duplicates a remote directory's stand-in it
 * opened before (the layer notes the copy as remote) and opens the target's file for the first time (the layer opens
 * the target's root), while P forks with thousands of mappings (a long copy of memory: a wide window). The child looks
 * up NAME (the layer's next descriptor then takes the lost root's number), opens a file of this machine (which takes
 * the lost copy's number) and checks fstat describes it, then reads the target's file.
 * usage: fork-mid-open FILE EXPECTED_CONTENT DIR NAME TRIALS   (DIR and NAME only on the target; DIR spelled so that
 * the layer asks the proxy, which opens no root) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAPPINGS 20000

static const char *path, *expected, *dir, *name;
static atomic_int go;
static long delay_us;
static int dir_fd;

static long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

/* 1 when FILE reads as the target's. */
static int reads_remote(void) {
  char buf[4096];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  return n == (ssize_t)strlen(expected) && memcmp(buf, expected, (size_t)n) == 0;
}

static void *open_later(void *arg) {
  while (!atomic_load(&go)) {
  }
  for (long start = now_us(); now_us() - start < delay_us;) {
  }
  struct stat st;
  int copy = dup(dir_fd);
  int ok = copy >= 0 && fstat(copy, &st) == 0 && S_ISDIR(st.st_mode) && reads_remote();
  return ok ? arg : NULL;
}

/* One trial in a fresh process: 0 when the child and the opening thread both read the target's file. */
static int trial(void) {
  dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return 1;
  pthread_t thread;
  /* Made before the mappings, so that its stack lies above them: fork copies memory in address order, and the thread
   * stops at its next write to its stack once that is copied. */
  if (pthread_create(&thread, NULL, open_later, (void *)path) != 0) return 1;
  for (int i = 0; i < MAPPINGS; i++) {
    /* Alternating protections keep neighbours from merging into one mapping. */
    if (mmap(NULL, 4096, i % 2 ? PROT_READ : PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED) return 1;
  }
  atomic_store(&go, 1);
  pid_t pid = fork();
  if (pid == 0) {
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(name, NULL, &hints, &res) != 0) _exit(1);
    freeaddrinfo(res);
    struct stat st, by_path;
    int local = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (local < 0 || fstat(local, &st) != 0 || stat("/proc/self/stat", &by_path) != 0 || st.st_ino != by_path.st_ino) _exit(1);
    _exit(reads_remote() ? 0 : 1);
  }
  int status = 1;
  if (pid < 0 || waitpid(pid, &status, 0) != pid) return 1;
  void *opened;
  pthread_join(thread, &opened);
  return !(WIFEXITED(status) && WEXITSTATUS(status) == 0 && opened != NULL);
}

int main(int argc, char **argv) {
  if (argc != 6) return 2;
  path = argv[1];
  expected = argv[2];
  dir = argv[3];
  name = argv[4];
  int trials = atoi(argv[5]);
  alarm(120);
  int failed = 0;
  for (int i = 0; i < trials; i++) {
    /* From 0 to 4 ms after the fork starts: the copy of the mappings takes some 20 ms. */
    delay_us = (i * 397L) % 4000;
    pid_t pid = fork();
    if (pid == 0) _exit(trial());
    int status = 1;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
  }
  printf("trials %d, failed %d\n", trials, failed);
  return 0;
}
