/* Incoming traffic: bind/listen of the program's server sockets subscribe the target's port; accept reports the real caller. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/stat.h>

static int socket_type(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 ? type : 0;
}

static void set_port(struct sockaddr_storage *sa, uint16_t port) {
  if (sa->ss_family == AF_INET) ((struct sockaddr_in *)sa)->sin_port = htons(port);
  else ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

/* Binds where the proxy said; a taken port falls back to any port when allowed. getsockname reports the requested one. */
static int bind_tracked(int fd, const struct sockaddr *addr, socklen_t len, const struct dp_bind_resp *resp, uint32_t requested) {
  struct dp_fdinfo info = {.has_local = 1, .local_len = len, .requested_port = requested};
  memcpy(&info.local, addr, len);
  struct sockaddr_storage there = info.local;
  set_port(&there, (uint16_t)resp->port);
  int r = REAL(bind)(fd, (struct sockaddr *)&there, len);
  if (r < 0 && (errno == EADDRINUSE || errno == EACCES) && (resp->flags & DP_BIND_FALLBACK)) {
    set_port(&there, 0);
    r = REAL(bind)(fd, (struct sockaddr *)&there, len);
  }
  if (r == 0) dp_fd_set(fd, &info);
  return r;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  dp_init();
  struct dp_bind_req req = {.socktype = SOCK_STREAM};
  if (addr == NULL || len > sizeof(struct sockaddr_storage) || !dp_to_addr(addr, len, &req.requested)) return REAL(bind)(fd, addr, len);
  int type = socket_type(fd);
  if (type == SOCK_DGRAM) return dp_udp_bind(fd, addr, len, &req.requested);
  if (type != SOCK_STREAM) return REAL(bind)(fd, addr, len);
  if (req.requested.port == 0) {
    dp_bypassed(DP_BYPASS_ANY_PORT, "bind");
    return REAL(bind)(fd, addr, len);
  }
  if (!dp_enter()) return REAL(bind)(fd, addr, len);
  char *reply = NULL;
  uint32_t reply_len;
  int status = dp_call(DP_OP_BIND, &req, sizeof req, NULL, 0, &reply, &reply_len);
  int r;
  if (status == DP_LOCAL) {
    dp_bypassed(DP_BYPASS_POLICY, "bind");
    r = REAL(bind)(fd, addr, len);
  } else if (status < 0 || reply_len < sizeof(struct dp_bind_resp)) {
    errno = status < 0 ? -status : EIO;
    r = -1;
  } else {
    struct dp_bind_resp resp;
    memcpy(&resp, reply, sizeof resp);
    r = bind_tracked(fd, addr, len, &resp, req.requested.port);
  }
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return r;
}

/* Fills a LISTEN request from the socket as it really is; 0 when it cannot be described. */
static int describe(int fd, const struct dp_fdinfo *info, struct dp_listen_req *req) {
  struct sockaddr_storage actual;
  socklen_t actual_len = sizeof actual;
  struct stat st;
  int v6only = 0;
  socklen_t v6only_len = sizeof v6only;
  if (REAL(getsockname)(fd, (struct sockaddr *)&actual, &actual_len) < 0 || !dp_to_addr((struct sockaddr *)&actual, actual_len, &req->local)) return 0;
  if (!dp_to_addr((const struct sockaddr *)&info->local, info->local_len, &req->requested) || fstat(fd, &st) < 0) return 0;
  req->inode = (uint64_t)st.st_ino;
  if (actual.ss_family == AF_INET6 && getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &v6only_len) == 0 && v6only) req->flags |= DP_LISTEN_V6ONLY;
  return 1;
}

int listen(int fd, int backlog) {
  dp_init();
  struct dp_fdinfo info;
  if (!dp_fd_get(fd, &info) || info.requested_port == 0 || info.subscribed) return REAL(listen)(fd, backlog);
  int r = REAL(listen)(fd, backlog);
  struct dp_listen_req req = {0};
  if (r < 0 || !describe(fd, &info, &req) || !dp_enter()) return r;
  char *reply = NULL;
  uint32_t reply_len;
  int status = dp_call(DP_OP_LISTEN, &req, sizeof req, NULL, 0, &reply, &reply_len);
  if (status == DP_OK) {
    info.subscribed = 1;
    info.inode = req.inode;
    dp_fd_set(fd, &info);
  } else if (status == DP_LOCAL) {
    /* Not subscribed after all: report the socket as it is. */
    dp_bypassed(DP_BYPASS_POLICY, "listen");
    dp_fd_forget(fd);
  } else {
    errno = -status;
    r = -1;
  }
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return r;
}

/* An accepted socket as the kernel sees it: its peer (the proxy's socket, if ours) and the listener's real port. */
static int kernel_view(int fd, struct dp_peer_of_req *req, int *family) {
  struct sockaddr_storage peer, local;
  socklen_t peer_len = sizeof peer, local_len = sizeof local;
  struct dp_addr local_addr;
  if (REAL(getpeername)(fd, (struct sockaddr *)&peer, &peer_len) < 0 || REAL(getsockname)(fd, (struct sockaddr *)&local, &local_len) < 0) return 0;
  if (!dp_to_addr((struct sockaddr *)&peer, peer_len, &req->peer) || !dp_to_addr((struct sockaddr *)&local, local_len, &local_addr)) return 0;
  req->listener_port = local_addr.port;
  *family = peer.ss_family;
  return 1;
}

/* A connection accepted on a subscribed listener came through the proxy: record and report the real caller. */
static int accepted(int listener, int fd, struct sockaddr *addr, socklen_t *len) {
  if (fd < 0) return fd;
  int saved = errno;
  dp_fd_forget(fd);
  struct dp_fdinfo info;
  struct dp_peer_of_req req = {0};
  int family;
  if (dp_fd_get(listener, &info) && info.subscribed && kernel_view(fd, &req, &family) && dp_enter()) {
    char *reply = NULL;
    uint32_t reply_len;
    if (dp_call(DP_OP_PEER_OF, &req, sizeof req, NULL, 0, &reply, &reply_len) == DP_OK && reply_len >= sizeof(struct dp_peer_of_resp)) {
      struct dp_peer_of_resp resp;
      memcpy(&resp, reply, sizeof resp);
      struct dp_fdinfo conn = {.has_peer = 1, .has_local = 1};
      conn.peer_len = dp_from_addr(&resp.peer, family, &conn.peer);
      conn.local_len = dp_from_addr(&resp.local, family, &conn.local);
      dp_fd_set(fd, &conn);
      if (addr != NULL && len != NULL) dp_copy_out(&conn.peer, conn.peer_len, addr, len);
    }
    dp_free(reply);
    dp_leave();
  }
  errno = saved;
  return fd;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
  dp_init();
  return accepted(fd, REAL(accept)(fd, addr, len), addr, len);
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
  dp_init();
  return accepted(fd, REAL(accept4)(fd, addr, len, flags), addr, len);
}

void dp_unlisten(const struct dp_fdinfo *info) {
  int saved = errno;
  if (dp_enter()) {
    struct dp_unlisten_req req = {.port = info->requested_port, .inode = info->inode};
    char *reply = NULL;
    uint32_t reply_len;
    dp_call(DP_OP_UNLISTEN, &req, sizeof req, NULL, 0, &reply, &reply_len);
    dp_free(reply);
    dp_leave();
  }
  errno = saved;
}
