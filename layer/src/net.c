/* Outgoing connect(): TCP on a socket made in the target's network, the agent's socket taken (handover.c) or relayed through
 * the proxy; UDP handed to udp.c. getpeername/getsockname report the remote view of the layer's relayed sockets. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

int dp_to_addr(const struct sockaddr *sa, socklen_t len, struct dp_addr *out) {
  memset(out, 0, sizeof *out);
  if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *sin = (const void *)sa;
    out->family = AF_INET;
    out->port = ntohs(sin->sin_port);
    memcpy(out->addr, &sin->sin_addr, 4);
    return 1;
  }
  if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *sin6 = (const void *)sa;
    out->family = AF_INET6;
    out->port = ntohs(sin6->sin6_port);
    memcpy(out->addr, &sin6->sin6_addr, 16);
    return 1;
  }
  return 0;
}

socklen_t dp_from_addr(const struct dp_addr *a, int family, struct sockaddr_storage *out) {
  memset(out, 0, sizeof *out);
  if (family == AF_INET6) {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)a->port);
    if (a->family == AF_INET) {
      sin6->sin6_addr.s6_addr[10] = 0xff;
      sin6->sin6_addr.s6_addr[11] = 0xff;
      memcpy(&sin6->sin6_addr.s6_addr[12], a->addr, 4);
    } else {
      memcpy(&sin6->sin6_addr, a->addr, 16);
    }
    return sizeof *sin6;
  }
  struct sockaddr_in *sin = (struct sockaddr_in *)out;
  sin->sin_family = AF_INET;
  sin->sin_port = htons((uint16_t)a->port);
  memcpy(&sin->sin_addr, a->addr, 4);
  return sizeof *sin;
}

int dp_is_loopback(const struct dp_addr *a) {
  static const uint8_t v6_loopback[16] = {[15] = 1};
  static const uint8_t v4_mapped[12] = {[10] = 0xff, [11] = 0xff};
  if (a->family == AF_INET) return a->addr[0] == 127;
  return memcmp(a->addr, v6_loopback, 16) == 0 || (memcmp(a->addr, v4_mapped, 12) == 0 && a->addr[12] == 127);
}

int dp_is_any(const struct dp_addr *a) {
  static const uint8_t any[16];
  return memcmp(a->addr, any, sizeof any) == 0;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
  dp_init();
  struct dp_connect_req req = {0};
  int type = 0;
  socklen_t type_len = sizeof type;
  if (addr != NULL && addr->sa_family == AF_UNIX) return dp_unix_connect(fd, addr, len);
  if (addr == NULL || !dp_to_addr(addr, len, &req.remote)) {
    /* AF_UNSPEC dissolves a connection: its relayed peer goes with it (a socket in the target's network stays one). */
    if (addr != NULL && addr->sa_family == AF_UNSPEC) dp_udp_dissolve(fd);
    return REAL(connect)(fd, addr, len);
  }
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) < 0) return REAL(connect)(fd, addr, len);
  if (type == SOCK_DGRAM) return dp_udp_connect(fd, addr, len);
  if (type != SOCK_STREAM) return REAL(connect)(fd, addr, len);
  if (dp_loopback_tcp_local() && dp_is_loopback(&req.remote)) {
    dp_log("connect: loopback, local by rule");
    return REAL(connect)(fd, addr, len);
  }
  if (!dp_enter()) return REAL(connect)(fd, addr, len);
  if (dp_handover_flags(fd, &req.flags)) {
    dp_leave();
    return REAL(connect)(fd, addr, len);
  }
  req.socktype = (uint32_t)type;
  /* Every such connection goes to the target and is made in its network: the proxy's answer is known. An IPv4 socket
   * cannot reach an IPv6 address, there or here. */
  struct dp_make_socket there = {.pid = dp_network_pid()};
  if (there.pid != 0 && (req.flags & DP_CONNECT_MAKES_SOCKET) && (req.remote.family == AF_INET || (req.flags & DP_CONNECT_INET6_SOCKET))) {
    dp_log("connect: every connection goes to the target: not asked");
    uint64_t since = dp_trace_clock();
    if (dp_make_socket(fd, (const char *)&there) == 0) {
      int r = REAL(connect)(fd, addr, len);
      int saved = errno;
      dp_traced_address("connect", addr, len, since);
      dp_leave();
      errno = saved;
      return r;
    }
    req.flags &= ~DP_CONNECT_MAKES_SOCKET;
  }
  char *reply = NULL;
  uint32_t reply_len;
  int status = dp_call(DP_OP_CONNECT, &req, sizeof req, NULL, 0, &reply, &reply_len);
  int made = -EIO, taken = -EIO;
  if (status == DP_MAKE_SOCKET && (reply_len < sizeof(struct dp_make_socket) || (made = dp_make_socket(fd, reply)) < 0)) {
    /* Not made: the proxy has the agent connect when asked again without the flag. */
    dp_free(reply);
    req.flags &= ~DP_CONNECT_MAKES_SOCKET;
    status = dp_call(DP_OP_CONNECT, &req, sizeof req, NULL, 0, &reply, &reply_len);
  }
  if (status == DP_HANDOVER && (reply_len < sizeof(struct dp_handover) || (taken = dp_take_handover(fd, reply, addr, len)) < 0)) {
    /* Not taken: the proxy relays it when asked again without the flag. */
    dp_free(reply);
    req.flags &= ~DP_CONNECT_TAKES_FD;
    status = dp_call(DP_OP_CONNECT, &req, sizeof req, NULL, 0, &reply, &reply_len);
  }
  int r;
  if (status == DP_MAKE_SOCKET && made == 0) {
    /* The program's own connect, blocking or not, on the socket made in the target's network. */
    r = REAL(connect)(fd, addr, len);
  } else if (status == DP_HANDOVER && taken == 0) {
    r = 0;
  } else if (status == DP_HANDOVER && taken > 0) {
    /* Connected already; a non-blocking socket says so as a real connect would, and poll then finds it writable. */
    errno = EINPROGRESS;
    r = -1;
  } else if (status == DP_LOCAL && reply_len >= sizeof(struct dp_addr)) {
    struct dp_addr instead;
    memcpy(&instead, reply, sizeof instead);
    struct sockaddr_storage to;
    socklen_t to_len = dp_from_addr(&instead, addr->sa_family, &to);
    r = REAL(connect)(fd, (struct sockaddr *)&to, to_len);
  } else if (status == DP_LOCAL) {
    dp_bypassed(DP_BYPASS_POLICY, "connect");
    r = REAL(connect)(fd, addr, len);
  } else if (status < 0) {
    errno = -status;
    r = -1;
  } else if (status != DP_OK || reply_len < sizeof(struct dp_connect_resp)) {
    errno = EIO;
    r = -1;
  } else {
    struct dp_connect_resp resp;
    memcpy(&resp, reply, sizeof resp);
    struct sockaddr_storage via;
    socklen_t via_len = dp_from_addr(&resp.via, addr->sa_family, &via);
    struct dp_fdinfo info = {.has_peer = 1, .has_local = 1, .peer_len = len < sizeof info.peer ? len : sizeof info.peer};
    memcpy(&info.peer, addr, info.peer_len);
    info.local_len = dp_from_addr(&resp.local, addr->sa_family, &info.local);
    r = dp_connect_via(fd, &info, (struct sockaddr *)&via, via_len);
  }
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return r;
}

int dp_connect_via(int fd, const struct dp_fdinfo *info, const struct sockaddr *via, socklen_t via_len) {
  dp_fd_set(fd, info);
  /* On a non-blocking socket this may say EINPROGRESS, as the program expects. */
  int r = REAL(connect)(fd, via, via_len);
  if (r < 0 && errno != EINPROGRESS) {
    int saved = errno;
    dp_fd_forget(fd);
    errno = saved;
  }
  return r;
}

void dp_copy_out(const struct sockaddr_storage *src, socklen_t src_len, struct sockaddr *addr, socklen_t *len) {
  memcpy(addr, src, *len < src_len ? *len : src_len);
  *len = src_len;
}

static int report(int fd, struct sockaddr *addr, socklen_t *len, int peer, int (*real)(int, struct sockaddr *, socklen_t *)) {
  dp_init();
  struct dp_fdinfo info;
  if (addr == NULL || len == NULL || !dp_fd_get(fd, &info) || !(peer ? info.has_peer : info.has_local)) return real(fd, addr, len);
  if (peer) dp_copy_out(&info.peer, info.peer_len, addr, len);
  else dp_copy_out(&info.local, info.local_len, addr, len);
  return 0;
}

int getpeername(int fd, struct sockaddr *addr, socklen_t *len) { return report(fd, addr, len, 1, REAL(getpeername)); }
int getsockname(int fd, struct sockaddr *addr, socklen_t *len) { return report(fd, addr, len, 0, REAL(getsockname)); }
