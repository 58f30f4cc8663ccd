/* Round trips to the proxy: one Unix socket per thread (fork-safe by PID check), kept at a high fd the program won't reuse. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define DP_FD_FLOOR 900
#define DP_OWN_FDS 4096

static __thread int conn_fd __attribute__((tls_model("initial-exec"))) = -1;
static __thread pid_t conn_pid __attribute__((tls_model("initial-exec")));
static atomic_uchar own_fds[DP_OWN_FDS];
static __thread char reply_buf[2048] __attribute__((tls_model("initial-exec")));

void dp_free(char *reply) {
  if (reply != reply_buf) free(reply);
}
static pthread_key_t conn_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

int dp_is_own_fd(int fd) { return fd >= 0 && fd < DP_OWN_FDS && atomic_load(&own_fds[fd]); }

static void release(int fd) {
  if (fd < 0) return;
  if (fd < DP_OWN_FDS) atomic_store(&own_fds[fd], 0);
  real_close(fd);
}

/* A thread that ends closes its connection. */
static void on_thread_exit(void *value) {
  (void)value;
  if (conn_pid == getpid()) release(conn_fd);
  conn_fd = -1;
}

static void make_key(void) { pthread_key_create(&conn_key, on_thread_exit); }

static int connect_proxy(void) {
  const char *path = getenv(DP_ENV_SOCKET);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (path == NULL || strlen(path) >= sizeof addr.sun_path) return -1;
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (real_connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    real_close(fd);
    return -1;
  }
  int high = real_fcntl(fd, F_DUPFD_CLOEXEC, DP_FD_FLOOR);
  if (high >= 0) {
    real_close(fd);
    fd = high;
  }
  if (fd < DP_OWN_FDS) atomic_store(&own_fds[fd], 1);
  pthread_once(&key_once, make_key);
  pthread_setspecific(conn_key, (void *)1);
  return fd;
}

static int write_all(int fd, struct iovec *iov, int count) {
  while (count > 0) {
    ssize_t n = writev(fd, iov, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    while (count > 0 && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      count--;
    }
    if (count > 0) {
      iov->iov_base = (char *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
  return 0;
}

static int read_all(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int exchange(int fd, uint32_t op, const void *a, size_t a_len, const void *b, size_t b_len, char **reply, uint32_t *reply_len, int *status) {
  struct dp_req_hdr req = {.len = (uint32_t)(a_len + b_len), .op = op};
  struct iovec iov[3] = {{&req, sizeof req}, {(void *)a, a_len}, {(void *)b, b_len}};
  if (write_all(fd, iov, 3) < 0) return -1;
  struct dp_resp_hdr resp;
  if (read_all(fd, &resp, sizeof resp) < 0) return -1;
  char *body = NULL;
  if (resp.len > 0) {
    /* Small answers (every "local", most stats) use a per-thread buffer: no malloc, so an allocator
     * that reads its config file while holding its own lock cannot deadlock on us. */
    body = resp.len < sizeof reply_buf ? reply_buf : malloc(resp.len + 1);
    if (body == NULL) return -1;
    if (read_all(fd, body, resp.len) < 0) {
      dp_free(body);
      return -1;
    }
    body[resp.len] = '\0';
  }
  *reply = body;
  *reply_len = resp.len;
  *status = resp.status;
  return 0;
}

int dp_call(uint32_t op, const void *a, size_t a_len, const void *b, size_t b_len, char **reply, uint32_t *reply_len) {
  int saved = errno;
  *reply = NULL;
  *reply_len = 0;
  pid_t pid = getpid();
  if (conn_fd >= 0 && conn_pid != pid) {
    /* A forked child must not share its parent's stream; its copy of the fd is its own to close. */
    release(conn_fd);
    conn_fd = -1;
  }
  for (int attempt = 0; attempt < 2; attempt++) {
    if (conn_fd < 0) {
      conn_fd = connect_proxy();
      conn_pid = pid;
      if (conn_fd < 0) break;
    }
    int status;
    if (exchange(conn_fd, op, a, a_len, b, b_len, reply, reply_len, &status) == 0) {
      errno = saved;
      return status;
    }
    /* The stream broke (the program closed it, or the proxy restarted): one fresh try. */
    release(conn_fd);
    conn_fd = -1;
  }
  /* Without its proxy the program still runs, on its local context; say so once. */
  static atomic_int warned;
  if (!atomic_exchange(&warned, 1)) {
    static const char msg[] = "doppel layer: the doppel proxy is gone; this process continues with local files and network only\n";
    (void)!write(2, msg, sizeof msg - 1);
  }
  errno = saved;
  return DP_LOCAL;
}
