/* A UDP client through every UDP hook: connected send/recv and getpeername, sendto/recvfrom, sendmsg/recvmsg,
 * sendmmsg/recvmmsg, an IPv6 socket to an IPv4 destination, a connect dissolved with AF_UNSPEC, and a socket bound to
 * any port and watched by epoll that talks to the echo, to a loopback echo at LOOPBACK_PORT, and to the echo again.
 * Usage: udp-client ADDRESS PORT LOOPBACK_PORT. Prints one line per step: what came back and from where. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static void fail(const char *what) {
  fprintf(stderr, "udp-client: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int open_socket(int family) {
  int fd = socket(family, SOCK_DGRAM, 0);
  if (fd < 0) fail("socket");
  struct timeval timeout = {.tv_sec = 10};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) < 0) fail("SO_RCVTIMEO");
  return fd;
}

static const char *describe(const struct sockaddr_storage *addr) {
  static char out[INET6_ADDRSTRLEN + 8];
  char text[INET6_ADDRSTRLEN];
  if (addr->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const void *)addr;
    snprintf(out, sizeof out, "%s:%d", inet_ntop(AF_INET, &in->sin_addr, text, sizeof text), ntohs(in->sin_port));
  } else if (addr->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const void *)addr;
    snprintf(out, sizeof out, "[%s]:%d", inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text), ntohs(in6->sin6_port));
  } else {
    snprintf(out, sizeof out, "family %d", addr->ss_family);
  }
  return out;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: udp-client ADDRESS PORT LOOPBACK_PORT\n");
    return 2;
  }
  struct sockaddr_in echo = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &echo.sin_addr) != 1) fail("address");
  char buf[512];
  struct sockaddr_storage from;
  socklen_t from_len;
  ssize_t n;

  /* Connected: connect, send, recv, getpeername, and recvfrom on the connected socket. */
  int fd = open_socket(AF_INET);
  if (connect(fd, (struct sockaddr *)&echo, sizeof echo) < 0) fail("connect");
  if (send(fd, "connected", 9, 0) != 9) fail("send");
  if ((n = recv(fd, buf, sizeof buf - 1, 0)) < 0) fail("recv");
  buf[n] = '\0';
  from_len = sizeof from;
  if (getpeername(fd, (struct sockaddr *)&from, &from_len) < 0) fail("getpeername");
  printf("recv %s peer %s\n", buf, describe(&from));
  if (write(fd, "written", 7) != 7) fail("write");
  from_len = sizeof from;
  if ((n = recvfrom(fd, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &from_len)) < 0) fail("recvfrom (connected)");
  buf[n] = '\0';
  printf("recvfrom %s from %s\n", buf, describe(&from));
  /* AF_UNSPEC dissolves the association: getpeername says so, as the kernel would. */
  struct sockaddr unspec = {.sa_family = AF_UNSPEC};
  if (connect(fd, &unspec, sizeof unspec) < 0) fail("connect AF_UNSPEC");
  from_len = sizeof from;
  printf("after AF_UNSPEC getpeername %s\n", getpeername(fd, (struct sockaddr *)&from, &from_len) < 0 && errno == ENOTCONN ? "ENOTCONN" : "still connected");
  close(fd);

  /* Unconnected: sendto and recvfrom, with a too-short address buffer too (truncated, full length reported). */
  fd = open_socket(AF_INET);
  if (sendto(fd, "unconnected", 11, 0, (struct sockaddr *)&echo, sizeof echo) != 11) fail("sendto");
  from_len = sizeof from;
  if ((n = recvfrom(fd, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &from_len)) < 0) fail("recvfrom");
  buf[n] = '\0';
  printf("recvfrom %s from %s len %u\n", buf, describe(&from), (unsigned)from_len);
  if (sendto(fd, "short", 5, 0, (struct sockaddr *)&echo, sizeof echo) != 5) fail("sendto (short)");
  struct sockaddr_in truncated[2];
  memset(truncated, 0xee, sizeof truncated);
  from_len = 4;
  if (recvfrom(fd, buf, sizeof buf - 1, 0, (struct sockaddr *)truncated, &from_len) < 0) fail("recvfrom (short)");
  printf("short address len %u, port %d, bytes after it untouched: %s\n", (unsigned)from_len, ntohs(truncated[0].sin_port), ((unsigned char *)truncated)[4] == 0xee ? "yes" : "no");

  /* sendmsg and recvmsg, with the address in msg_name. */
  struct iovec iov = {.iov_base = "message", .iov_len = 7};
  struct msghdr msg = {.msg_name = &echo, .msg_namelen = sizeof echo, .msg_iov = &iov, .msg_iovlen = 1};
  if (sendmsg(fd, &msg, 0) != 7) fail("sendmsg");
  struct iovec in_iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
  struct msghdr in = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &in_iov, .msg_iovlen = 1};
  if ((n = recvmsg(fd, &in, 0)) < 0) fail("recvmsg");
  buf[n] = '\0';
  printf("recvmsg %s from %s\n", buf, describe(&from));

  /* sendmmsg and recvmmsg: three datagrams out, each reply with its own source. */
  struct mmsghdr out[3];
  struct iovec out_iov[3];
  const char *words[3] = {"one", "two", "three"};
  for (int i = 0; i < 3; i++) {
    out_iov[i] = (struct iovec){.iov_base = (void *)words[i], .iov_len = strlen(words[i])};
    out[i] = (struct mmsghdr){.msg_hdr = {.msg_name = &echo, .msg_namelen = sizeof echo, .msg_iov = &out_iov[i], .msg_iovlen = 1}};
  }
  if (sendmmsg(fd, out, 3, 0) != 3) fail("sendmmsg");
  printf("sendmmsg lengths %u %u %u\n", out[0].msg_len, out[1].msg_len, out[2].msg_len);
  char bufs[3][64];
  struct sockaddr_storage sources[3];
  struct iovec replies_iov[3];
  struct mmsghdr replies[3];
  int got = 0;
  while (got < 3) {
    for (int i = got; i < 3; i++) {
      replies_iov[i] = (struct iovec){.iov_base = bufs[i], .iov_len = sizeof bufs[i] - 1};
      replies[i] = (struct mmsghdr){.msg_hdr = {.msg_name = &sources[i], .msg_namelen = sizeof sources[i], .msg_iov = &replies_iov[i], .msg_iovlen = 1}};
    }
    int r = recvmmsg(fd, replies + got, (unsigned)(3 - got), MSG_WAITFORONE, NULL);
    if (r <= 0) fail("recvmmsg");
    for (int i = got; i < got + r; i++) bufs[i][replies[i].msg_len] = '\0';
    got += r;
  }
  for (int i = 0; i < 3; i++) printf("recvmmsg %s from %s\n", bufs[i], describe(&sources[i]));
  close(fd);

  /* An IPv6 socket to the IPv4 destination (v4-mapped), as dual-stack runtimes send. */
  fd = open_socket(AF_INET6);
  struct sockaddr_in6 mapped = {.sin6_family = AF_INET6, .sin6_port = echo.sin_port};
  mapped.sin6_addr.s6_addr[10] = 0xff;
  mapped.sin6_addr.s6_addr[11] = 0xff;
  memcpy(&mapped.sin6_addr.s6_addr[12], &echo.sin_addr, 4);
  if (sendto(fd, "six", 3, 0, (struct sockaddr *)&mapped, sizeof mapped) != 3) fail("sendto (IPv6)");
  from_len = sizeof from;
  if ((n = recvfrom(fd, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &from_len)) < 0) fail("recvfrom (IPv6)");
  buf[n] = '\0';
  printf("recvfrom %s from %s\n", buf, describe(&from));
  close(fd);

  /* Bound to any port and in an epoll set (as node's dgram), then to the echo, this machine's loopback, the echo. */
  struct sockaddr_in here = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct sockaddr_in any = {.sin_family = AF_INET}, bound;
  socklen_t bound_len = sizeof bound;
  fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event watch = {.events = EPOLLIN, .data.u64 = 0x5eed}, ready;
  if (fd < 0 || ep < 0 || bind(fd, (struct sockaddr *)&any, sizeof any) < 0 || getsockname(fd, (struct sockaddr *)&bound, &bound_len) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &watch) < 0) fail("bound socket");
  printf("bound");
  const struct sockaddr_in *to[3] = {&echo, &here, &echo};
  const char *say[3] = {"first", "second", "third"};
  for (int i = 0; i < 3; i++) {
    if (sendto(fd, say[i], strlen(say[i]), 0, (const struct sockaddr *)to[i], sizeof *to[i]) < 0) fail("sendto (bound)");
    if (epoll_wait(ep, &ready, 1, 10000) != 1 || ready.data.u64 != 0x5eed) fail("epoll_wait (bound)");
    if ((n = recvfrom(fd, buf, sizeof buf - 1, 0, NULL, NULL)) < 0) fail("recvfrom (bound)");
    buf[n] = '\0';
    printf(" %s", buf);
  }
  struct sockaddr_in now;
  socklen_t now_len = sizeof now;
  printf(" same port %s\n", getsockname(fd, (struct sockaddr *)&now, &now_len) == 0 && now.sin_port == bound.sin_port ? "yes" : "no");
  close(fd);
  close(ep);
  return 0;
}
