/* Round trips to the proxy: one Unix socket per thread (fork-safe by PID check), kept at a high fd the program won't
 * reuse; every request carries a sequence number its answer echoes, and answers are bounded. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DP_FD_FLOOR 900

/* Where a thread's connection is in a round trip. A program's signal handler can siglongjmp out of a hook at any
 * point; the next call on that thread then finds the connection in that state. */
enum phase { IDLE, SENDING, AWAITING, RECEIVING };

/* A thread's connection to one server: the proxy, or the agent's socket for lookups (DP_HELLO_AGENT_DNS). */
struct conn {
  int fd;
  pid_t pid;
  /* volatile: a jump can come between any two statements, so each change must be in memory before the next call. */
  volatile enum phase phase;
  /* The hello of this connection when its answer was not waited for (the rules were loaded already). */
  uint32_t unanswered_hello;
};
static __thread struct conn proxy __attribute__((tls_model("initial-exec"))) = {.fd = -1};
static __thread struct conn agent __attribute__((tls_model("initial-exec"))) = {.fd = -1};
static __thread char reply_buf[2048] __attribute__((tls_model("initial-exec")));
static atomic_uchar own_fds[DP_OWN_FDS];
/* One past the highest number ever marked in own_fds: a forked child and close_range look no further (4096 loads in
 * every child node forks took 7 us of its exec). */
static atomic_int own_end;
/* A connection the program took the number of (dup2 onto it) was moved: moved[old] = new + 1, or -1 if it is gone. */
static atomic_int moved[DP_OWN_FDS];
/* One counter for all threads, so no two requests in flight share a number. */
static atomic_uint next_seq = 1;

void dp_free(char *reply) {
  if (reply != reply_buf) free(reply);
}
static pthread_key_t conn_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

int dp_is_own_fd(int fd) { return fd >= 0 && fd < DP_OWN_FDS && atomic_load(&own_fds[fd]); }
int dp_own_fds_end(void) { return atomic_load(&own_end); }

static void mark_own(int fd) {
  atomic_store(&own_fds[fd], 1);
  int end = atomic_load(&own_end);
  while (end <= fd && !atomic_compare_exchange_weak(&own_end, &end, fd + 1)) {
  }
}

static void release(int fd) {
  if (fd < 0) return;
  if (fd < DP_OWN_FDS) atomic_store(&own_fds[fd], 0);
  REAL(close)(fd);
}

/* The target's root directory, one per process for every open, stat and access check in it; -1 until first used.
 * Its identity, set once it is root_fd, tells it again in a forked child. */
static atomic_int root_fd = -1;
static dev_t root_dev;
static ino_t root_ino;

/* The target's process (dp_target_alive), watched through a pidfd among the layer's own descriptors: UNWATCHED until
 * first used, then the pidfd, or GONE for good once that process exited or was never the target. Its identity, as
 * root_fd's, tells it again in a forked child. */
enum { UNWATCHED = -1, GONE = -2 };
static atomic_int target_fd = UNWATCHED;
static dev_t target_dev;
static ino_t target_ino;

/* fork copies a threaded process's descriptor table before its memory, and the other threads run on in between: the
 * child's memory can name descriptors of the layer's that its table never had (the root opened by another thread
 * just then, whose number the child's next connection then takes). Those are forgotten. */
static void after_fork_child(void) {
  int saved = errno;
  struct stat st;
  int root = atomic_load(&root_fd);
  if (root >= 0 && (REAL(syscall)(SYS_fstat, (long)root, (long)&st) != 0 || st.st_dev != root_dev || st.st_ino != root_ino)) atomic_store(&root_fd, -1);
  /* Forgotten, the target is watched again at the child's next use. (Before Linux 6.9 pidfds have no inode of their
   * own, but share one with eventfds, epoll sets and the like: there the identity tells only such a file.) */
  int watched = atomic_load(&target_fd);
  if (watched >= 0 && (REAL(syscall)(SYS_fstat, (long)watched, (long)&st) != 0 || st.st_dev != target_dev || st.st_ino != target_ino)) atomic_store(&target_fd, UNWATCHED);
  for (int fd = 0, end = atomic_load(&own_end); fd < end; fd++) {
    if (atomic_load(&own_fds[fd]) && REAL(fcntl)(fd, F_GETFD) < 0) atomic_store(&own_fds[fd], 0);
  }
  errno = saved;
}
__attribute__((constructor)) static void fork_safe(void) { pthread_atfork(NULL, NULL, after_fork_child); }

void dp_move_own_fd(int fd) {
  if (!dp_is_own_fd(fd)) return;
  int to = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, DP_FD_FLOOR);
  if (to >= 0 && to < DP_OWN_FDS) mark_own(to);
  else if (to >= 0) {
    REAL(close)(to);
    to = -1;
  }
  atomic_store(&own_fds[fd], 0);
  atomic_store(&moved[fd], to >= 0 ? to + 1 : -1);
  /* The root's new number is taken now, before the program's dup2 takes the old one (a connection follows its move at
   * its thread's next call). */
  int root = fd;
  atomic_compare_exchange_strong(&root_fd, &root, to);
  /* The pidfd's too; one that cannot move leaves the target unwatched: asked about from then on. */
  int watched = fd;
  atomic_compare_exchange_strong(&target_fd, &watched, to >= 0 ? to : GONE);
}

/* A new descriptor of the layer's, moved to DP_FD_FLOOR or above, and kept from the program below DP_OWN_FDS. */
static int adopt(int fd) {
  int high = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, DP_FD_FLOOR);
  if (high >= 0) {
    REAL(close)(fd);
    fd = high;
  }
  if (fd < DP_OWN_FDS) {
    atomic_store(&moved[fd], 0);
    mark_own(fd);
  }
  return fd;
}

int dp_target_root(uint32_t pid) {
  int fd = atomic_load(&root_fd);
  if (fd >= 0) return fd;
  char path[32];
  snprintf(path, sizeof path, "/proc/%u/root", (unsigned)pid);
  int opened = REAL(openat)(AT_FDCWD, path, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
  if (opened < 0) return -1;
  fd = adopt(opened);
  /* One the program could close, and then reuse the number of, is no root to keep: the proxy answers instead. */
  if (fd >= DP_OWN_FDS) {
    REAL(close)(fd);
    errno = EMFILE;
    return -1;
  }
  struct stat st;
  if (REAL(syscall)(SYS_fstat, (long)fd, (long)&st) != 0) {
    release(fd);
    return -1;
  }
  /* Two threads at once: the first one's stays. */
  int none = -1;
  if (atomic_compare_exchange_strong(&root_fd, &none, fd)) {
    root_dev = st.st_dev;
    root_ino = st.st_ino;
    return fd;
  }
  release(fd);
  return none;
}

/* The start time of process pid (field 22 of /proc/PID/stat, clock ticks since boot), or 0 when it cannot be read. */
uint64_t dp_start_time(uint32_t pid) {
  char path[32], buf[1024];
  snprintf(path, sizeof path, "/proc/%u/stat", (unsigned)pid);
  int fd = REAL(openat)(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return 0;
  ssize_t n;
  do n = read(fd, buf, sizeof buf - 1);
  while (n < 0 && errno == EINTR);
  REAL(close)(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  /* The name, field 2, may hold spaces and parentheses: the fields are counted from after its last ')', which ends
   * field 2; field 22 is the 20th after it. */
  char *p = strrchr(buf, ')');
  for (int field = 2; p != NULL && field < 22; field++) p = strchr(p + 1, ' ');
  return p == NULL ? 0 : strtoull(p + 1, NULL, 10);
}

/* Watches process pid, if it is the one that started at `start` (any, for 0): the pidfd, or GONE. */
static int watch(uint32_t pid, uint64_t start) {
  const char *why = NULL;
  int fd = (int)REAL(syscall)(SYS_pidfd_open, (long)pid, 0L);
  if (fd < 0) why = errno == ESRCH ? "target process %u exited; asking the proxy from now on" : "target process %u cannot be watched; asking the proxy from now on";
  else fd = adopt(fd);
  struct stat st;
  /* One the program could close, and then reuse the number of, is no pidfd to keep. */
  if (why == NULL && (fd >= DP_OWN_FDS || REAL(syscall)(SYS_fstat, (long)fd, (long)&st) != 0)) why = "target process %u cannot be watched; asking the proxy from now on";
  /* Read after the pidfd is open: the process read is the pidfd's, or the pidfd's exited and the next poll says so. */
  if (why == NULL && start != 0 && dp_start_time(pid) != start) why = "process %u is not the target (start time differs); asking the proxy from now on";
  if (why != NULL && fd >= 0) {
    release(fd);
    fd = GONE;
  }
  /* Two threads at once: the first one's stays. */
  int none = UNWATCHED;
  if (atomic_compare_exchange_strong(&target_fd, &none, fd)) {
    if (why != NULL) dp_log(why, (unsigned)pid);
    else {
      target_dev = st.st_dev;
      target_ino = st.st_ino;
    }
    return fd;
  }
  if (fd >= 0) release(fd);
  return none;
}

int dp_target_alive(uint32_t pid, uint64_t start) {
  int fd = atomic_load(&target_fd);
  if (fd == GONE) return 0;
  int saved = errno;
  if (fd == UNWATCHED) fd = watch(pid, start);
  /* A pidfd turns readable once its process exits, and stays so: one poll without waiting tells, and the process seen
   * alive cannot have been replaced by another of the same PID (that needs it to exit first). An error says no too. */
  struct pollfd exited = {.fd = fd, .events = POLLIN};
  struct timespec now = {0, 0};
  if (fd >= 0 && REAL(syscall)(SYS_ppoll, (long)&exited, 1L, (long)&now, 0L, 0L) != 0) {
    /* The pidfd stays open, among the layer's own: another thread may be polling its number right now. */
    if (atomic_compare_exchange_strong(&target_fd, &fd, GONE)) dp_log("target process %u exited; asking the proxy from now on", (unsigned)pid);
    fd = GONE;
  }
  errno = saved;
  return fd >= 0;
}

/* The kernel grows a descriptor table shared by threads only after an RCU grace period: the first connection's move
 * to DP_FD_FLOOR cost a threaded program (Node.js, a JVM) 10-20 ms at its first remote call. Grown at load, while
 * the process has one thread, it costs microseconds, and a table never shrinks (a fork's copy does; the child, with
 * one thread, grows it as cheaply). Any open descriptor will do to grow it, "/" when none of 0-2 is. */
void dp_reserve_own_fds(void) {
  int saved = errno;
  int fd = -1;
  for (int std = 0; std <= 2 && fd < 0; std++) fd = REAL(fcntl)(std, F_DUPFD_CLOEXEC, DP_FD_FLOOR);
  if (fd < 0) {
    int root = REAL(openat)(AT_FDCWD, "/", O_PATH | O_CLOEXEC);
    if (root >= 0) {
      fd = REAL(fcntl)(root, F_DUPFD_CLOEXEC, DP_FD_FLOOR);
      REAL(close)(root);
    }
  }
  if (fd >= 0) REAL(close)(fd);
  errno = saved;
}

/* Follows a move of this thread's connection; the old number is the program's now. */
static void follow_move(struct conn *c) {
  if (c->fd < 0 || c->fd >= DP_OWN_FDS) return;
  int to = atomic_exchange(&moved[c->fd], 0);
  if (to != 0) c->fd = to > 0 ? to - 1 : -1;
}

static void drop(struct conn *c) {
  release(c->fd);
  c->fd = -1;
}

/* A thread that ends closes its connections. */
static void on_thread_exit(void *value) {
  (void)value;
  pid_t pid = getpid();
  struct conn *both[] = {&proxy, &agent};
  for (int i = 0; i < 2; i++) {
    follow_move(both[i]);
    if (both[i]->pid == pid) release(both[i]->fd);
    both[i]->fd = -1;
  }
}

static void make_key(void) { pthread_key_create(&conn_key, on_thread_exit); }

static int say_hello(int fd, uint32_t *seq);
static int hello(int fd);

/* A stream to the Unix socket at path, among the layer's own descriptors, closed when the thread ends; or -1. */
static int connect_unix(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (path[0] == '\0' || strlen(path) >= sizeof addr.sun_path) return -1;
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (REAL(connect)(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    REAL(close)(fd);
    return -1;
  }
  fd = adopt(fd);
  pthread_once(&key_once, make_key);
  pthread_setspecific(conn_key, (void *)1);
  return fd;
}

/* How long a lookup waits for the agent bin/doppel started to listen, at most (it is still starting). */
#define EARLY_AGENT_WAIT_MS 3000

/* A program started from a launch plan (plan.c) runs while bin/doppel's agent starts: its socket is a link to the one
 * that agent will listen on. Waited for while the agent lives: the proxy, the other way, waits for it and the CLI. */
static int agent_starting(const char *path) {
  char target[8];
  uint32_t pid = dp_handover_pid();
  return REAL(readlink)(path, target, sizeof target) > 0 && pid > 1 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* The agent's socket takes lookups alone, with no hello. */
static int connect_agent(void) {
  const char *path = dp_agent_dns_path();
  int fd = connect_unix(path);
  for (int waited = 0; fd < 0 && waited < EARLY_AGENT_WAIT_MS && agent_starting(path); waited++) {
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
    fd = connect_unix(path);
  }
  return fd;
}

/* wait: the hello's answer is read even when the rules are loaded already. */
static int connect_proxy_with(int wait) {
  int fd = connect_unix(dp_socket_path());
  if (fd < 0) return -1;
  dp_log("connected to the proxy");
  /* A proxy that closes the stream on a hello does not know it: from then on, ask it about every path. Once the
   * rules are loaded (from the proxy's file), the hello only says who this process is, for the proxy's messages:
   * its answer is not waited for, and the next exchange passes over it. */
  static atomic_int no_hello;
  if (dp_rules_ready() && !wait) {
    if (say_hello(fd, &proxy.unanswered_hello) < 0) {
      release(fd);
      return -1;
    }
  } else if (!atomic_load(&no_hello) && hello(fd) < 0) {
    atomic_store(&no_hello, 1);
    release(fd);
    return connect_proxy_with(wait);
  }
  return fd;
}

static int connect_proxy(void) { return connect_proxy_with(0); }

/* For a connection that only tells (one way): an answer left unread when the process exits makes its close reset the
 * stream, and the proxy loses what was told after the hello (a traced `cat`'s only call). */
static int connect_proxy_to_tell(void) { return connect_proxy_with(1); }

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

/* Waits until len bytes can be read, and copies them without taking them. */
static int peek_all(int fd, void *buf, size_t len) {
  for (;;) {
    ssize_t n = recv(fd, buf, len, MSG_PEEK | MSG_WAITALL);
    if (n == (ssize_t)len) return 0;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
  }
}

/* Reads and drops an answer's payload (one to a request the program jumped out of). */
static int skip(int fd, uint32_t len) {
  while (len > 0) {
    uint32_t n = len < sizeof reply_buf ? len : (uint32_t)sizeof reply_buf;
    if (read_all(fd, reply_buf, n) < 0) return -1;
    len -= n;
  }
  return 0;
}

/* Says who this process is, under the sequence number in *seq. -1: the stream broke. */
static int say_hello(int fd, uint32_t *seq) {
  char exe[PATH_MAX];
  ssize_t n = REAL(readlink)("/proc/self/exe", exe, sizeof exe - 1);
  exe[n < 0 ? 0 : n] = '\0';
  struct dp_hello_req who = {(uint32_t)getpid(), (uint32_t)getppid()};
  size_t exe_len = strlen(exe) + 1;
  *seq = atomic_fetch_add(&next_seq, 1);
  struct dp_req_hdr req = {.len = (uint32_t)(sizeof who + exe_len), .op = DP_OP_HELLO, .seq = *seq};
  struct iovec iov[3] = {{&req, sizeof req}, {&who, sizeof who}, {exe, exe_len}};
  return write_all(fd, iov, 3);
}

/* A hello whose answer holds the session's fast rules (rules.c). -1: the stream broke. */
static int hello(int fd) {
  uint32_t seq;
  struct dp_resp_hdr resp;
  if (say_hello(fd, &seq) < 0 || read_all(fd, &resp, sizeof resp) < 0 || resp.seq != seq || resp.len > DP_MAX_REPLY) return -1;
  struct dp_hello_resp head;
  uint32_t left = resp.len;
  if (resp.status == DP_OK && left >= sizeof head) {
    if (read_all(fd, &head, sizeof head) < 0) return -1;
    left -= (uint32_t)sizeof head;
    /* Read into the rules' own store, without malloc: the first call may come from inside an allocator. */
    char *store = dp_rules_claim(left);
    if (store != NULL) {
      int ok = read_all(fd, store, left) == 0;
      dp_rules_loaded("hello", &head, left, ok);
      return ok ? 0 : -1;
    }
  }
  return skip(fd, left);
}

static int exchange(struct conn *c, uint32_t op, const void *a, size_t a_len, const void *b, size_t b_len, char **reply, uint32_t *reply_len, int *status) {
  int fd = c->fd;
  uint32_t seq = atomic_fetch_add(&next_seq, 1);
  struct dp_req_hdr req = {.len = (uint32_t)(a_len + b_len), .op = op, .seq = seq};
  struct iovec iov[3] = {{&req, sizeof req}, {(void *)a, a_len}, {(void *)b, b_len}};
  c->phase = SENDING;
  if (write_all(fd, iov, 3) < 0) return -1;
  struct dp_resp_hdr resp;
  for (;;) {
    c->phase = AWAITING;
    /* The header is peeked, not taken, while AWAITING: a jump at any point leaves the stream at an answer's start. */
    if (peek_all(fd, &resp, sizeof resp) < 0) return -1;
    c->phase = RECEIVING;
    if (read_all(fd, &resp, sizeof resp) < 0) return -1;
    if (resp.len > DP_MAX_REPLY) return -2;
    if (resp.seq == seq) break;
    /* Answers come in request order, so anything else is the answer to an abandoned, earlier request (or to the
     * connection's hello). */
    if (resp.seq != c->unanswered_hello) dp_log("dropped the answer to abandoned request %u", resp.seq);
    if (skip(fd, resp.len) < 0) return -1;
  }
  char *body = NULL;
  if (resp.len > 0) {
    /* Small answers (every "local", most stats) use a per-thread buffer: no malloc, so an allocator
     * that reads its config file while holding its own lock cannot deadlock on us. */
    body = resp.len < sizeof reply_buf ? reply_buf : malloc((size_t)resp.len + 1);
    if (body == NULL) return -1;
    if (read_all(fd, body, resp.len) < 0) {
      dp_free(body);
      return -1;
    }
    body[resp.len] = '\0';
  }
  c->phase = IDLE;
  *reply = body;
  *reply_len = resp.len;
  *status = resp.status;
  return 0;
}

/* Opens a fresh connection of this thread's to one server (c->fd stays -1 when it cannot be reached). */
static void open_conn(struct conn *c, int (*connect_to)(void), pid_t pid) {
  c->fd = connect_to();
  c->pid = pid;
  c->phase = IDLE;
}

void dp_connect_early(void) {
  if (proxy.fd >= 0) return;
  int saved = errno;
  open_conn(&proxy, connect_proxy, getpid());
  errno = saved;
}

/* Drops this thread's connection when it cannot carry a new request: a forked child's copy of its parent's, or one
 * the program jumped out of mid-message. */
static void check_conn(struct conn *c, pid_t pid) {
  follow_move(c);
  if (c->fd >= 0 && c->pid != pid) {
    /* A forked child must not share its parent's stream; its copy of the fd is its own to close. */
    drop(c);
  }
  if (c->fd >= 0 && (c->phase == SENDING || c->phase == RECEIVING)) {
    /* The program jumped out mid-message: where the stream stands is unknown, so start a new one. An answer
     * still awaited (AWAITING) is fine: the sequence number tells it apart. */
    dp_log("a call was abandoned mid-message; reconnecting");
    drop(c);
  }
}

void dp_tell(uint32_t op, const void *a, size_t a_len) {
  int saved = errno;
  pid_t pid = getpid();
  check_conn(&proxy, pid);
  if (proxy.fd < 0) open_conn(&proxy, connect_proxy_to_tell, pid);
  if (proxy.fd >= 0) {
    struct dp_req_hdr req = {.len = (uint32_t)a_len, .op = op, .seq = atomic_fetch_add(&next_seq, 1)};
    struct iovec iov[2] = {{&req, sizeof req}, {(void *)a, a_len}};
    proxy.phase = SENDING;
    if (write_all(proxy.fd, iov, 2) < 0) drop(&proxy);
    proxy.phase = IDLE;
  }
  errno = saved;
}

/* One round trip on c: 0 with *status, or -1 when no connection carried it (after one fresh try for a broken one), or
 * -2 for an answer longer than any a server sends (the stream cannot be trusted, and asking again would not help). */
static int round_trip(struct conn *c, int (*connect_to)(void), uint32_t op, const void *a, size_t a_len, const void *b, size_t b_len, char **reply, uint32_t *reply_len, int *status) {
  pid_t pid = getpid();
  check_conn(c, pid);
  for (int attempt = 0; attempt < 2; attempt++) {
    if (c->fd < 0) open_conn(c, connect_to, pid);
    if (c->fd < 0) return -1;
    int r = exchange(c, op, a, a_len, b, b_len, reply, reply_len, status);
    if (r == 0) return 0;
    drop(c);
    if (r == -2) return -2;
    /* The stream broke (the program closed it, or the server went): one fresh try. */
  }
  return -1;
}

int dp_call(uint32_t op, const void *a, size_t a_len, const void *b, size_t b_len, char **reply, uint32_t *reply_len) {
  int saved = errno;
  *reply = NULL;
  *reply_len = 0;
  dp_cache_note(op, a, a_len);
  int status;
  int r = round_trip(&proxy, connect_proxy, op, a, a_len, b, b_len, reply, reply_len, &status);
  if (r == 0) dp_cache_note(op, a, a_len);
  errno = saved;
  if (r == 0) return status;
  if (r == -2) return -EIO;
  /* Without its proxy the program still runs, on its local context; say so once. */
  static atomic_int warned;
  if (!atomic_exchange(&warned, 1)) {
    static const char msg[] = "doppel layer: the doppel proxy is gone; this process continues with local files and network only\n";
    (void)!write(2, msg, sizeof msg - 1);
  }
  return DP_LOCAL;
}

int dp_call_agent(uint32_t op, const void *a, size_t a_len, const void *b, size_t b_len, char **reply, uint32_t *reply_len) {
  if (dp_agent_dns()) {
    int saved = errno;
    *reply = NULL;
    *reply_len = 0;
    int status;
    int r = round_trip(&agent, connect_agent, op, a, a_len, b, b_len, reply, reply_len, &status);
    dp_log(r == 0 ? "op %u: asked the agent" : "op %u: the agent's socket cannot be reached; asking the proxy", op);
    errno = saved;
    if (r == 0) return status;
    if (r == -2) return -EIO;
  }
  return dp_call(op, a, a_len, b, b_len, reply, reply_len);
}
