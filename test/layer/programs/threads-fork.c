/* Threads inside hooks (files and getaddrinfo/freeaddrinfo), forks while they are, and a signal handler that closes
 * descriptors on top of them: every remote answer stays right, and nothing hangs (a child or the whole run that
 * takes too long fails).
 * usage: threads-fork FILE EXPECTED_CONTENT NAME FORKS   (NAME resolves only on the target) */
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

#define THREADS 4

static const char *path, *expected, *name;
static volatile int stop;
static int failures;
static pid_t waiting_for;
/* A duplicate each worker leaves for the signal handler to close, as a program's handler might. */
static __thread int victim = -1;
static long closed_by_handler;

static void on_usr1(int sig) {
  (void)sig;
  int fd = __atomic_exchange_n(&victim, -1, __ATOMIC_SEQ_CST);
  if (fd >= 0 && close(fd) == 0) __atomic_add_fetch(&closed_by_handler, 1, __ATOMIC_RELAXED);
}

static void hung(int sig) {
  (void)sig;
  if (waiting_for > 0) kill(waiting_for, SIGKILL);
  static const char msg[] = "hung: a forked child or the run did not finish in time\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(3);
}

/* One remote open, read, fstat, stat and close, and one lookup; 0 when every answer is the target's. */
static int remote_round(int leave_victim) {
  char buf[4096];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  struct stat st, st2;
  int ok = n == (ssize_t)strlen(expected) && memcmp(buf, expected, (size_t)n) == 0;
  ok = ok && fstat(fd, &st) == 0 && st.st_size == n && stat(path, &st2) == 0 && st2.st_ino == st.st_ino;
  if (leave_victim) {
    int old = __atomic_exchange_n(&victim, dup(fd), __ATOMIC_SEQ_CST);
    if (old >= 0) close(old);
  }
  close(fd);
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
  if (getaddrinfo(name, NULL, &hints, &res) != 0) return -1;
  freeaddrinfo(res);
  return ok ? 0 : -1;
}

static void *worker(void *arg) {
  while (!stop) {
    if (remote_round(1) != 0) __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
  }
  return arg;
}

int main(int argc, char **argv) {
  if (argc != 5) return 2;
  path = argv[1];
  expected = argv[2];
  name = argv[3];
  int forks = atoi(argv[4]);
  signal(SIGALRM, hung);
  struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
  sigaction(SIGUSR1, &sa, NULL);
  alarm(240);
  pthread_t threads[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, worker, NULL);
  int child_failures = 0;
  for (int i = 0; i < forks; i++) {
    for (int t = 0; t < THREADS; t++) pthread_kill(threads[t], SIGUSR1);
    pid_t pid = fork();
    if (pid == 0) {
      alarm(0);
      _exit(remote_round(0) == 0 && remote_round(0) == 0 ? 0 : 1);
    }
    waiting_for = pid;
    int status = 0;
    waitpid(pid, &status, 0);
    waiting_for = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) child_failures++;
  }
  stop = 1;
  for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
  alarm(0);
  printf("forks %d, failed children %d, failed calls %d, handler closed some: %s\n", forks, child_failures, failures, closed_by_handler > 0 ? "yes" : "no");
  return 0;
}
