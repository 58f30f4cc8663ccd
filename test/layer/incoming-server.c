/* A TCP server in C for the layer's incoming hooks: bind, getsockname, listen, accept, accept4, getpeername, and dup,
 * fork and close of the listener; it prints what each call reported and answers each caller with the same line. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void fail(const char *what) {
  perror(what);
  exit(2);
}

static const char *text(const struct sockaddr_in *sin, char *out, size_t size) {
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
  snprintf(out, size, "%s:%d", ip, ntohs(sin->sin_port));
  return out;
}

/* One caller: what accept filled in (if asked), getpeername and getsockname; the same line goes back to the caller. */
static void serve(int listener, int use_accept4) {
  struct sockaddr_in from = {0}, peer, local;
  socklen_t from_len = sizeof from, peer_len = sizeof peer, local_len = sizeof local;
  int fd = use_accept4 ? accept4(listener, NULL, NULL, SOCK_CLOEXEC) : accept(listener, (struct sockaddr *)&from, &from_len);
  if (fd < 0) fail("accept");
  if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) < 0 || getsockname(fd, (struct sockaddr *)&local, &local_len) < 0) fail("getpeername");
  char a[64], b[64], c[64], line[256];
  int n = snprintf(line, sizeof line, "%s from=%s peer=%s local=%s\n", use_accept4 ? "accept4" : "accept", use_accept4 ? "-" : text(&from, a, sizeof a),
                   text(&peer, b, sizeof b), text(&local, c, sizeof c));
  fputs(line, stdout);
  fflush(stdout);
  if (write(fd, line, (size_t)n) != n) fail("write");
  close(fd);
}

static int port_of(int fd) {
  struct sockaddr_in sin;
  socklen_t len = sizeof sin;
  if (getsockname(fd, (struct sockaddr *)&sin, &len) < 0) fail("getsockname");
  return ntohs(sin.sin_port);
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  sigprocmask(SIG_BLOCK, &term, NULL);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) < 0) fail("bind");
  printf("bound %d\n", port_of(s));
  if (listen(s, 16) < 0) fail("listen");
  printf("listening %d\n", port_of(s));
  fflush(stdout);
  serve(s, 0);
  /* Closing copies of the listener (a dup here, an inherited one in a child) leaves it subscribed. */
  close(dup(s));
  pid_t child = fork();
  if (child == 0) {
    close(s);
    _exit(0);
  }
  waitpid(child, NULL, 0);
  printf("copies closed\n");
  fflush(stdout);
  serve(s, 1);
  close(s);
  printf("closed\n");
  fflush(stdout);
  int sig;
  sigwait(&term, &sig);
  return 0;
}
