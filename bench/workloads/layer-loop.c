/* Benchmark workload: one hooked call pattern N times; prints each iteration's nanoseconds as a JSON array.
 *   stat PATH N       stat(2)
 *   read PATH N       open + read to the end + close
 *   stat-open PATH N  stat, then open + read + close, then stat again (what many runtimes do to load a file)
 *   missing PATH N    stat of PATH.<i>, a different file that is not there each time (ENOENT)
 *   connect - N       socket + connect to a loopback listener of its own (accept and close are not timed)
 *   connect-to A:P N  socket + connect to IPv4 address A, port P, + close
 *   udp-echo A:P N    a UDP socket connected to an echo at A:P, one datagram there and its echo back, + close
 *   udp-bound A:P N   a UDP socket bound to any port and watched by epoll (as node's dgram), a datagram sent to the echo
 *                     at A:P, its echo waited for with epoll_wait and received, + close */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void fail(const char *what) {
  perror(what);
  exit(1);
}

static void read_file(const char *path) {
  static char buf[65536];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path);
  ssize_t n, total = 0;
  while ((n = read(fd, buf, sizeof buf)) > 0) total += n;
  if (n < 0) fail("read");
  close(fd);
}

static void stat_file(const char *path) {
  struct stat st;
  if (stat(path, &st) < 0) fail(path);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s stat|read|stat-open|missing|connect|connect-to|udp-echo|udp-bound PATH N\n", argv[0]);
    return 2;
  }
  const char *mode = argv[1], *path = argv[2];
  int n = atoi(argv[3]);
  long long *times = calloc((size_t)n, sizeof *times);
  int listener = -1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int bound = strcmp(mode, "udp-bound") == 0;
  int remote = strcmp(mode, "connect-to") == 0 || strcmp(mode, "udp-echo") == 0 || bound;
  int epfd = bound ? epoll_create1(EPOLL_CLOEXEC) : -1;
  if (bound && epfd < 0) fail("epoll_create1");
  if (remote) {
    char host[64];
    const char *colon = strchr(path, ':');
    if (colon == NULL || (size_t)(colon - path) >= sizeof host) fail("address:port");
    memcpy(host, path, (size_t)(colon - path));
    host[colon - path] = '\0';
    addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) fail("address");
  }
  if (strcmp(mode, "connect") == 0) {
    socklen_t len = sizeof addr;
    listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 16) < 0 || getsockname(listener, (struct sockaddr *)&addr, &len) < 0) fail("listener");
  }
  for (int i = 0; i < n; i++) {
    long long start = now();
    if (strcmp(mode, "stat") == 0) {
      stat_file(path);
    } else if (strcmp(mode, "read") == 0) {
      read_file(path);
    } else if (strcmp(mode, "missing") == 0) {
      char name[4096];
      struct stat st;
      snprintf(name, sizeof name, "%s.%d", path, i);
      if (stat(name, &st) == 0) fail("a missing file is there");
    } else if (strcmp(mode, "stat-open") == 0) {
      stat_file(path);
      read_file(path);
      stat_file(path);
    } else if (bound) {
      int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
      struct sockaddr_in any = {.sin_family = AF_INET};
      struct epoll_event event = {.events = EPOLLIN, .data.fd = fd}, ready;
      char echo[16];
      if (fd < 0 || bind(fd, (struct sockaddr *)&any, sizeof any) < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) < 0) fail("bind");
      if (sendto(fd, "ping", 4, 0, (struct sockaddr *)&addr, sizeof addr) != 4) fail("sendto");
      if (epoll_wait(epfd, &ready, 1, 10000) != 1 || recvfrom(fd, echo, sizeof echo, 0, NULL, NULL) <= 0) fail("udp echo");
      close(fd);
    } else if (remote) {
      int udp = strcmp(mode, "udp-echo") == 0;
      int fd = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
      char echo[16];
      if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) fail("connect");
      if (udp && (send(fd, "ping", 4, 0) != 4 || recv(fd, echo, sizeof echo, 0) <= 0)) fail("udp echo");
      close(fd);
    } else {
      int fd = socket(AF_INET, SOCK_STREAM, 0);
      if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) fail("connect");
      times[i] = now() - start;
      int peer = accept(listener, NULL, NULL);
      if (peer < 0) fail("accept");
      close(peer);
      close(fd);
      continue;
    }
    times[i] = now() - start;
  }
  printf("[");
  for (int i = 0; i < n; i++) printf("%s%lld", i ? "," : "", times[i]);
  printf("]\n");
  return 0;
}
