/* Forks while other threads close sockets (through close and syscall(SYS_close), as libuv does); each child closes
 * too. A child that inherited the layer's fd table locked by another thread would hang in its first close. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 8

static volatile int stop;
static pid_t waiting_for;

/* A child that has not exited within seconds is hung: kill it and fail. */
static void hung(int sig) {
  (void)sig;
  kill(waiting_for, SIGKILL);
  static const char msg[] = "a forked child hung in close\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

static void *churn(void *arg) {
  for (long n = 0; !stop; n++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (n % 2) close(fd);
    else syscall(SYS_close, fd);
  }
  return arg;
}

int main(int argc, char **argv) {
  int forks = argc > 1 ? atoi(argv[1]) : 1000;
  signal(SIGALRM, hung);
  pthread_t threads[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, churn, NULL);
  for (int i = 0; i < forks; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      close(100);
      syscall(SYS_close, 101);
      _exit(0);
    }
    waiting_for = pid;
    alarm(5);
    waitpid(pid, NULL, 0);
    alarm(0);
  }
  stop = 1;
  for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
  printf("forked %d times\n", forks);
  return 0;
}
