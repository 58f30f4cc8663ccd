/* Outgoing Unix streams (unix_streams): a connect() to a socket path the target has goes to a proxy socket that
 * the agent relays to the target's, inside its mount (or, for an abstract name, network) namespace. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

/* Captured at load: without unix_streams, AF_UNIX connects (nscd, D-Bus, X11) cost nothing. */
static int wanted;

__attribute__((constructor)) static void capture(void) { wanted = getenv(DP_ENV_UNIX_STREAMS) != NULL; }

int dp_unix_connect(int fd, const struct sockaddr *addr, socklen_t len) {
  dp_init();
  int type = 0;
  socklen_t type_len = sizeof type;
  size_t offset = offsetof(struct sockaddr_un, sun_path);
  if (!wanted || len <= offset || len > sizeof(struct sockaddr_un) || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) < 0 || type != SOCK_STREAM) {
    return REAL(connect)(fd, addr, len);
  }
  if (!dp_enter()) return REAL(connect)(fd, addr, len);
  const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
  /* A path name ends at its NUL; an abstract name (leading NUL) is all of its bytes. */
  size_t path_len = un->sun_path[0] == '\0' ? len - offset : strnlen(un->sun_path, len - offset);
  char *reply = NULL;
  uint32_t reply_len;
  int status = dp_call(DP_OP_UNIX_CONNECT, un->sun_path, path_len, NULL, 0, &reply, &reply_len);
  int r;
  if (status == DP_LOCAL) {
    dp_bypassed(DP_BYPASS_POLICY, "connect");
    r = REAL(connect)(fd, addr, len);
  } else if (status < 0) {
    errno = -status;
    r = -1;
  } else if (reply == NULL || reply_len == 0 || reply_len > sizeof ((struct sockaddr_un *)0)->sun_path || reply[reply_len - 1] != '\0') {
    errno = EIO;
    r = -1;
  } else {
    struct sockaddr_un via = {.sun_family = AF_UNIX};
    memcpy(via.sun_path, reply, reply_len);
    struct dp_fdinfo info = {.has_peer = 1, .peer_len = len};
    memcpy(&info.peer, addr, len);
    r = dp_connect_via(fd, &info, (struct sockaddr *)&via, (socklen_t)(offset + reply_len));
  }
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return r;
}
