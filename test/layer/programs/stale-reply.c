/* A timer's handler siglongjmps out of stat calls while they wait for the proxy's answer; every stat that completes
 * must get its own file's answer, never the one left over from the call the program jumped out of.
 * usage: stale-reply FILE_A FILE_B ROUNDS  (two remote files of different sizes) */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static sigjmp_buf jump;
static volatile sig_atomic_t armed;

static int by_value(const void *a, const void *b) { return (*(const long *)a > *(const long *)b) - (*(const long *)a < *(const long *)b); }

static long now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000L + t.tv_nsec / 1000;
}

static void on_alarm(int sig) {
  (void)sig;
  if (armed) {
    armed = 0;
    siglongjmp(jump, 1);
  }
}

int main(int argc, char **argv) {
  if (argc != 4) return 2;
  const char *paths[2] = {argv[1], argv[2]};
  int rounds = atoi(argv[3]);
  struct stat want[2];
  for (int i = 0; i < 2; i++)
    if (stat(paths[i], &want[i]) != 0) return perror(paths[i]), 1;
  if (want[0].st_size == want[1].st_size) return fprintf(stderr, "the files must differ in size\n"), 2;
  /* How long a remote stat takes on this machine now, so that the timer fires before the answer about half the time. */
  long took[21];
  for (int i = 0; i < 21; i++) {
    struct stat st;
    long start = now_us();
    stat(paths[i % 2], &st);
    took[i] = now_us() - start;
  }
  qsort(took, 21, sizeof took[0], by_value);
  long span = 2 * took[10] + 10;
  struct sigaction sa = {.sa_handler = on_alarm};
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval off = {{0, 0}, {0, 0}};
  volatile int jumped = 0, completed = 0, wrong = 0;
  for (volatile int i = 0; i < rounds; i++) {
    if (sigsetjmp(jump, 1) != 0) {
      jumped++;
      continue;
    }
    struct stat st;
    struct itimerval once = {{0, 0}, {0, 5 + rand() % span}};
    armed = 1;
    setitimer(ITIMER_REAL, &once, NULL);
    int r = stat(paths[i % 2], &st);
    armed = 0;
    setitimer(ITIMER_REAL, &off, NULL);
    if (r != 0 || st.st_size != want[i % 2].st_size) wrong++;
    else completed++;
  }
  /* After all the jumps, the thread still reaches the target. */
  struct stat last;
  int after = stat(paths[0], &last) == 0 && last.st_size == want[0].st_size;
  fprintf(stderr, "a remote stat took %ld µs; jumped out of %d, completed %d\n", took[10], jumped, completed);
  printf("wrong %d, jumped out: %s, completed: %s, remote afterwards: %s\n", wrong, jumped > 0 ? "yes" : "no", completed > 0 ? "yes" : "no", after ? "yes" : "no");
  return 0;
}
