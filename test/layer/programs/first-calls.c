/* The layer looks each libc function up at its first use: first uses racing in threads, one in a signal handler and
 * one in a vfork child (its execve) each reach the target, or start the program under the layer, as later ones do.
 * usage: first-calls FILE EXPECTED_CONTENT NAME   (FILE and NAME exist only on the target) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 8

extern char **environ;
static const char *path, *expected, *name;
static pthread_barrier_t start;
static int right;
static volatile sig_atomic_t handler_saw;

static void *first_uses(void *arg) {
  pthread_barrier_wait(&start);
  char buf[4096];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
  struct stat st;
  int ok = n == (ssize_t)strlen(expected) && memcmp(buf, expected, (size_t)n) == 0 && stat(path, &st) == 0 && st.st_size == n;
  if (fd >= 0) close(fd);
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
  if (getaddrinfo(name, NULL, &hints, &res) == 0) freeaddrinfo(res);
  else ok = 0;
  if (ok) __atomic_add_fetch(&right, 1, __ATOMIC_RELAXED);
  return arg;
}

static void on_usr1(int sig) {
  (void)sig;
  char link[16];
  /* access and readlink, used here first: the file is the target's, and a path that is no link says EINVAL. */
  handler_saw = access(path, R_OK) == 0 && readlink(path, link, sizeof link) < 0 ? 1 : 2;
}

int main(int argc, char **argv) {
  if (argc != 4) return 2;
  path = argv[1];
  expected = argv[2];
  name = argv[3];
  alarm(120);
  signal(SIGUSR1, on_usr1);
  raise(SIGUSR1);
  pthread_barrier_init(&start, NULL, THREADS);
  pthread_t threads[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, first_uses, NULL);
  for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
  printf("first uses in %d racing threads: %d right\n", THREADS, right);
  printf("first use in a signal handler: %s\n", handler_saw == 1 ? "remote" : "local");
  char test[4200];
  snprintf(test, sizeof test, "[ -r '%s' ] && exit 7; exit 1", path);
  char *args[] = {"sh", "-c", test, NULL};
  pid_t pid = vfork();
  if (pid == 0) {
    execve("/bin/sh", args, environ);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  printf("a vfork child's first execve: %s\n", WIFEXITED(status) && WEXITSTATUS(status) == 7 ? "runs under the layer" : "lost the layer");
  return 0;
}
