/* Outgoing TCP in the target's own network (process platform), with no relay: the program talks to the server through
 * the kernel alone, and getpeername/getsockname are the kernel's. Either the layer makes a socket in the target's
 * network namespace (setns there and back, on this thread alone) and connects it itself, or the agent connected one
 * from there and connect() takes that very socket (pidfd_getfd); either goes in place of the program's own (dup3 onto
 * its number). Which is the proxy's decision; the layer only says what it can do for this socket. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

/* What a program may set on its socket before connect, which the kernel keeps per socket: each one whose value differs
 * from a fresh socket's is set on the socket taken. Buffer sizes read back doubled (the kernel's bookkeeping share),
 * so they are set at half. */
struct option {
  int level, name;
  socklen_t size;
  int doubled;
};
static const struct option options[] = {
    {IPPROTO_TCP, TCP_NODELAY, sizeof(int), 0},        {SOL_SOCKET, SO_KEEPALIVE, sizeof(int), 0},
    {IPPROTO_TCP, TCP_KEEPIDLE, sizeof(int), 0},       {IPPROTO_TCP, TCP_KEEPINTVL, sizeof(int), 0},
    {IPPROTO_TCP, TCP_KEEPCNT, sizeof(int), 0},        {IPPROTO_TCP, TCP_USER_TIMEOUT, sizeof(int), 0},
    {SOL_SOCKET, SO_RCVTIMEO, sizeof(struct timeval), 0}, {SOL_SOCKET, SO_SNDTIMEO, sizeof(struct timeval), 0},
    {SOL_SOCKET, SO_LINGER, sizeof(struct linger), 0}, {SOL_SOCKET, SO_PRIORITY, sizeof(int), 0},
    {SOL_SOCKET, SO_RCVBUF, sizeof(int), 1},           {SOL_SOCKET, SO_SNDBUF, sizeof(int), 1},
    /* Before a datagram socket binds its port again there (dp_move_datagram). */
    {SOL_SOCKET, SO_REUSEADDR, sizeof(int), 0},        {SOL_SOCKET, SO_REUSEPORT, sizeof(int), 0},
    {SOL_SOCKET, SO_BROADCAST, sizeof(int), 0},        {IPPROTO_IPV6, IPV6_V6ONLY, sizeof(int), 0},
};
#define OPTIONS (sizeof options / sizeof options[0])
#define OPTION_MAX 16

/* What this process can do, found out once, at the first connect that could use it: take the agent's sockets, and
 * make sockets in another network namespace. */
enum { UNKNOWN, PROBING, KNOWN };
static atomic_int probed;
static atomic_int can_take, can_make;
/* A fresh socket's values of `options`, stream and datagram, read by the probe (before KNOWN is published). */
static unsigned char defaults[2][OPTIONS][OPTION_MAX];
static int kind(int type) { return type == SOCK_DGRAM; }

/* A child forked while another thread was probing would never see the probe end; it probes again instead. */
static void after_fork_child(void) {
  int probing = PROBING;
  atomic_compare_exchange_strong(&probed, &probing, UNKNOWN);
}
__attribute__((constructor)) static void fork_safe(void) { pthread_atfork(NULL, NULL, after_fork_child); }

/* Each descriptor's registration in an epoll set, by the socket's inode: a socket watched before it connects or sends
 * (nginx adds its upstream sockets to epoll, then connects; node's dgram watches its socket, then sends) is replaced
 * with its registration moved to the new socket, or the program would wait on one that is gone. By inode, so a number
 * closed and reused for another socket needs nothing at close. A socket in more than one set is the program's to keep.
 * Chunks are mapped on first use (a signal handler may be first). Two threads changing one descriptor's registration at
 * once may leave a mix of both here, as the kernel would keep only one: a replaced socket then waits for other events. */
struct watch {
  _Atomic uint64_t inode;
  _Atomic uint64_t data;
  _Atomic uint32_t events;
  atomic_int epfd, shared;
};
#define WATCH_MAX_FD 65536
#define WATCH_CHUNK 4096
static _Atomic(struct watch *) watched[WATCH_MAX_FD / WATCH_CHUNK];

static uint64_t socket_inode(int fd) {
  struct stat st;
  return real_syscall(SYS_fstat, (long)fd, (long)&st) == 0 && S_ISSOCK(st.st_mode) ? (uint64_t)st.st_ino : 0;
}

static struct watch *watch_slot(int fd, int create) {
  if (fd < 0 || fd >= WATCH_MAX_FD) return NULL;
  struct watch *chunk = atomic_load_explicit(&watched[fd / WATCH_CHUNK], memory_order_acquire);
  if (chunk == NULL && create) {
    void *fresh = mmap(NULL, WATCH_CHUNK * sizeof *chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fresh == MAP_FAILED) return NULL;
    struct watch *expected = NULL;
    if (atomic_compare_exchange_strong(&watched[fd / WATCH_CHUNK], &expected, (struct watch *)fresh)) chunk = fresh;
    else {
      munmap(fresh, WATCH_CHUNK * sizeof *chunk);
      chunk = expected;
    }
  }
  return chunk == NULL ? NULL : &chunk[fd % WATCH_CHUNK];
}

static void note_watch(int epfd, int op, int fd, const struct epoll_event *event) {
  struct watch *w = watch_slot(fd, op == EPOLL_CTL_ADD);
  /* Only an added socket's slot needs the inode looked up; most changes are to descriptors never added by a socket. */
  if (w == NULL || (op != EPOLL_CTL_ADD && atomic_load(&w->inode) == 0)) return;
  uint64_t inode = socket_inode(fd);
  if (inode == 0) return;
  int same = atomic_load(&w->inode) == inode;
  if (op == EPOLL_CTL_ADD && same && atomic_load(&w->epfd) != epfd) {
    atomic_store(&w->shared, 1);
  } else if (op == EPOLL_CTL_ADD || (op == EPOLL_CTL_MOD && same && atomic_load(&w->epfd) == epfd)) {
    atomic_store(&w->epfd, epfd);
    atomic_store(&w->events, event != NULL ? event->events : 0);
    atomic_store(&w->data, event != NULL ? event->data.u64 : 0);
    if (op == EPOLL_CTL_ADD) atomic_store(&w->shared, 0);
    atomic_store_explicit(&w->inode, inode, memory_order_release);
  } else if (op == EPOLL_CTL_DEL && same && atomic_load(&w->epfd) == epfd && !atomic_load(&w->shared)) {
    atomic_store(&w->inode, 0);
  }
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event) {
  dp_init();
  int r = real_epoll_ctl(epfd, op, fd, event);
  /* Only a session whose agent runs here replaces sockets (and one whose rules are not loaded yet may be one). */
  if (r == 0 && dp_active() && (dp_handover_pid() != 0 || !dp_rules_ready())) {
    int saved = errno;
    note_watch(epfd, op, fd, event);
    errno = saved;
  }
  return r;
}

/* fd's socket's registration, when it is in exactly one epoll set; NULL when in none. *shared when in more. */
static struct watch *watch_of(int fd, int *shared) {
  struct watch *w = watch_slot(fd, 0);
  uint64_t inode = w != NULL ? atomic_load_explicit(&w->inode, memory_order_acquire) : 0;
  *shared = 0;
  if (inode == 0 || inode != socket_inode(fd)) return NULL;
  *shared = atomic_load(&w->shared);
  return *shared ? NULL : w;
}

static int is_shared(int fd) {
  int shared;
  watch_of(fd, &shared);
  return shared;
}

static int take_fd(uint32_t pid, uint32_t fd) {
  int pidfd = (int)real_syscall(SYS_pidfd_open, (long)pid, 0L);
  if (pidfd < 0) return -1;
  int got = (int)real_syscall(SYS_pidfd_getfd, (long)pidfd, (long)fd, 0L);
  int saved = errno;
  real_close(pidfd);
  errno = saved;
  return got;
}

/* Taking a descriptor needs ptrace access to the agent (root with every capability the agent has: a program under
 * `sudo doppel exec`): EPERM otherwise, ENOSYS before Linux 5.6. Any descriptor tells; one the agent does not have
 * (EBADF) was looked for, so access was granted. Entering a network namespace needs CAP_SYS_ADMIN over it: entering
 * our own tells whether this process has it at all. */
static void probe(void) {
  uint32_t pid = dp_handover_pid();
  int got = take_fd(pid, 0);
  int take = got >= 0 || errno == EBADF;
  int take_why = errno;
  if (got >= 0) real_close(got);
  int here = real_openat(AT_FDCWD, "/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC, 0);
  int make = here >= 0 && setns(here, CLONE_NEWNET) == 0;
  int make_why = errno;
  if (here >= 0) real_close(here);
  /* Either needs a fresh socket of each kind, whose option values are the ones not to copy. */
  int sockets = take || make;
  for (int type = SOCK_STREAM; type <= SOCK_DGRAM && sockets; type++) {
    int fresh = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    sockets = fresh >= 0;
    for (size_t i = 0; sockets && i < OPTIONS; i++) {
      socklen_t size = options[i].size;
      if (getsockopt(fresh, options[i].level, options[i].name, defaults[kind(type)][i], &size) < 0) memset(defaults[kind(type)][i], 0, OPTION_MAX);
    }
    if (sockets) real_close(fresh);
  }
  atomic_store(&can_make, sockets && make);
  atomic_store(&can_take, sockets && take);
  dp_log("connect: sockets in the target's network %s (errno %d); the agent's (process %u) %s (errno %d)", atomic_load(&can_make) ? "can be made" : "cannot be made",
         make ? 0 : make_why, pid, atomic_load(&can_take) ? "can be taken" : "cannot be taken", take ? 0 : take_why);
}

/* Only a session whose agent runs on this machine (it hands its sockets over) has a network to reach from here. */
static int probe_done(void) {
  int state = atomic_load_explicit(&probed, memory_order_acquire);
  if (state == UNKNOWN && dp_rules_ready() && dp_handover_pid() != 0) {
    /* One thread probes; the others relay meanwhile. */
    if (!atomic_compare_exchange_strong(&probed, &state, PROBING)) return state == KNOWN;
    probe();
    atomic_store_explicit(&probed, KNOWN, memory_order_release);
    return 1;
  }
  return state == KNOWN;
}

int dp_handover_flags(int fd, uint32_t *flags) {
  struct sockaddr_storage me, peer;
  socklen_t me_len = sizeof me, peer_len = sizeof peer;
  struct dp_addr bound;
  static const uint8_t any[16];
  *flags = 0;
  if (real_getsockname(fd, (struct sockaddr *)&me, &me_len) < 0 || !dp_to_addr((struct sockaddr *)&me, me_len, &bound)) return 0;
  *flags = me.ss_family == AF_INET6 ? DP_CONNECT_INET6_SOCKET : 0;
  int unbound = bound.port == 0 && memcmp(bound.addr, any, sizeof any) == 0;
  /* A socket with a local address is bound or connected already: a program polling a non-blocking connect's end by
   * connecting again (Ruby's connect_nonblock) must get the kernel's EISCONN, not a second connection. */
  if (!unbound && real_getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0) return 1;
  /* A socket bound first (its address or port chosen), or in more than one epoll set, is the program's to keep: it is
   * relayed. */
  if (unbound && probe_done() && (atomic_load(&can_take) || atomic_load(&can_make)) && !is_shared(fd)) {
    if (atomic_load(&can_take)) *flags |= DP_CONNECT_TAKES_FD;
    if (atomic_load(&can_make)) *flags |= DP_CONNECT_MAKES_SOCKET;
  }
  return 0;
}

/* The taken socket gets the program's file status flags (O_NONBLOCK) and the options it set; 0 or -errno. */
static int copy_settings(int fd, int got, int type) {
  int mine = real_fcntl(fd, F_GETFL), theirs = real_fcntl(got, F_GETFL);
  if (mine < 0 || theirs < 0) return -errno;
  if (((mine ^ theirs) & O_NONBLOCK) && real_fcntl(got, F_SETFL, (theirs & ~O_NONBLOCK) | (mine & O_NONBLOCK)) < 0) return -errno;
  for (size_t i = 0; i < OPTIONS; i++) {
    unsigned char value[OPTION_MAX];
    socklen_t size = options[i].size;
    if (getsockopt(fd, options[i].level, options[i].name, value, &size) < 0 || memcmp(value, defaults[kind(type)][i], options[i].size) == 0) continue;
    if (options[i].doubled) {
      int half;
      memcpy(&half, value, sizeof half);
      half /= 2;
      memcpy(value, &half, sizeof half);
    }
    if (setsockopt(got, options[i].level, options[i].name, value, options[i].size) < 0) dp_log("connect: option %d/%d not copied (errno %d)", options[i].level, options[i].name, errno);
  }
  return 0;
}

/* The taken socket must be the connection asked for: a stream connected to the program's destination (the pid could
 * name another process, in another PID namespace). */
static int is_connection_to(int got, const struct sockaddr *addr, socklen_t len) {
  struct sockaddr_storage peer;
  socklen_t peer_len = sizeof peer;
  struct dp_addr want, have;
  return real_getpeername(got, (struct sockaddr *)&peer, &peer_len) == 0 && dp_to_addr(addr, len, &want) &&
         dp_to_addr((struct sockaddr *)&peer, peer_len, &have) && memcmp(&want, &have, sizeof want) == 0;
}

/* `got` in place of the program's socket fd, atomically (fd's old socket closes), keeping its close-on-exec, and
 * with its epoll registration moved over; 0 or -errno (fd untouched). */
static int install(int fd, int got) {
  int shared;
  struct watch *w = watch_of(fd, &shared);
  int fd_flags = real_fcntl(fd, F_GETFD);
  if (shared) return -EBUSY;
  if (fd_flags < 0) return -errno;
  struct epoll_event event = {0};
  int epfd = -1;
  if (w != NULL) {
    epfd = atomic_load(&w->epfd);
    event.events = atomic_load(&w->events);
    event.data.u64 = atomic_load(&w->data);
    /* Out of the set while fd still names the old socket: a child sharing that socket would otherwise keep it there. */
    real_epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
  }
  if (real_dup3(got, fd, (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
    int why = errno;
    if (w != NULL) real_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
    return -why;
  }
  if (w != NULL) {
    if (real_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) == 0) atomic_store(&w->inode, socket_inode(fd));
    else dp_log("connect: the socket's epoll registration could not be moved (errno %d)", errno);
  }
  return 0;
}

/* `got` (of the same `type`) in place of the program's socket fd, with its settings; 0 or -errno (fd untouched). got is
 * closed either way. */
static int replace(int fd, int got, int type) {
  int r = copy_settings(fd, got, type);
  if (r == 0) r = install(fd, got);
  int saved = errno;
  real_close(got);
  errno = saved;
  return r;
}

/* A socket made in the network namespace of process `pid`, or -errno. Only this thread enters it, with signals
 * blocked so that no handler makes a socket of its own there, and it comes back before anything else runs. */
static int socket_in(uint32_t pid, int domain, int type, int protocol) {
  char path[48];
  snprintf(path, sizeof path, "/proc/%u/ns/net", pid);
  int there = real_openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  int here = there < 0 ? -1 : real_openat(AT_FDCWD, "/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC, 0);
  int made = -1, why = errno;
  if (here >= 0) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    if (setns(there, CLONE_NEWNET) == 0) {
      made = socket(domain, type, protocol);
      why = errno;
      if (setns(here, CLONE_NEWNET) != 0) {
        static const char msg[] = "doppel layer: cannot leave the target's network namespace; stopping\n";
        (void)!write(2, msg, sizeof msg - 1);
        abort();
      }
    } else {
      why = errno;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  if (here >= 0) real_close(here);
  if (there >= 0) real_close(there);
  return made >= 0 ? made : -why;
}

/* fd's domain, type and protocol; 0 or -errno. */
static int kind_of(int fd, int *domain, int *type, int *protocol) {
  socklen_t size = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, domain, &size) < 0) return -errno;
  size = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, type, &size) < 0) return -errno;
  size = sizeof(int);
  return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, protocol, &size) < 0 ? -errno : 0;
}

int dp_remake_socket_here(int fd) {
  /* More than one epoll set would keep waiting on the socket that goes. */
  if (is_shared(fd)) return -ENETUNREACH;
  int domain, type, protocol;
  int r = kind_of(fd, &domain, &type, &protocol);
  if (r < 0) return r;
  int made = socket(domain, type | SOCK_CLOEXEC, protocol);
  if (made < 0) return -errno;
  r = replace(fd, made, type);
  if (r == 0) dp_fd_forget(fd);
  return r;
}

int dp_move_datagram(int fd, uint32_t pid, int any_port) {
  struct sockaddr_storage me, peer;
  socklen_t me_len = sizeof me, peer_len = sizeof peer;
  struct dp_addr bound;
  static const uint8_t any[16];
  if (!probe_done() || !atomic_load(&can_make)) return -EPERM;
  if (real_getsockname(fd, (struct sockaddr *)&me, &me_len) < 0) return -errno;
  if (!dp_to_addr((struct sockaddr *)&me, me_len, &bound)) return -EAFNOSUPPORT;
  /* An address of this machine, or a port the program chose, is the program's to keep. */
  if (memcmp(bound.addr, any, sizeof any) != 0 || (bound.port != 0 && !any_port)) return -EADDRINUSE;
  if (real_getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0) return -EISCONN;
  if (is_shared(fd)) return -EBUSY;
  int domain, type, protocol;
  int r = kind_of(fd, &domain, &type, &protocol);
  if (r < 0) return r;
  int made = socket_in(pid, domain, type | SOCK_CLOEXEC, protocol);
  if (made < 0) {
    dp_log("udp: could not make a socket in process %u's network (errno %d); relaying from now on", pid, -made);
    atomic_store(&can_make, 0);
    return made;
  }
  r = copy_settings(fd, made, type);
  /* The same port there, so that the address the program knows stays true; where it is taken there, it stays here. */
  if (r == 0 && bound.port != 0 && real_bind(made, (struct sockaddr *)&me, me_len) < 0) r = -errno;
  if (r == 0) r = install(fd, made);
  real_close(made);
  if (r == 0) dp_log("udp: made the socket in process %u's network", pid);
  return r;
}

int dp_make_socket(int fd, const char *reply) {
  struct dp_make_socket where;
  memcpy(&where, reply, sizeof where);
  int domain, type, protocol;
  int r = kind_of(fd, &domain, &type, &protocol);
  if (r < 0) return r;
  int made = socket_in(where.pid, domain, type | SOCK_CLOEXEC, protocol);
  r = made < 0 ? made : replace(fd, made, type);
  if (r < 0) {
    dp_log("connect: could not make a socket in process %u's network (errno %d); asking the agent from now on", where.pid, -r);
    atomic_store(&can_make, 0);
    return r;
  }
  /* The kernel answers getpeername and getsockname. */
  dp_fd_forget(fd);
  dp_log("connect: made the socket in process %u's network", where.pid);
  return 0;
}

int dp_take_handover(int fd, const char *reply, const struct sockaddr *addr, socklen_t len) {
  struct dp_handover from;
  memcpy(&from, reply, sizeof from);
  int r = 0;
  int got = take_fd(from.pid, from.fd);
  if (got < 0) r = -errno;
  else if (!is_connection_to(got, addr, len)) {
    r = -ENOTCONN;
    real_close(got);
  } else r = replace(fd, got, SOCK_STREAM);
  struct dp_handed_over told = {.token = from.token, .status = r};
  dp_tell(DP_OP_HANDED_OVER, &told, sizeof told);
  if (r < 0) {
    dp_log("connect: could not take the agent's socket (errno %d); relaying from now on", -r);
    atomic_store(&can_take, 0);
    return r;
  }
  /* Not a relayed socket: the kernel answers getpeername and getsockname. */
  dp_fd_forget(fd);
  dp_log("connect: took the agent's socket (process %u, fd %u)", from.pid, from.fd);
  return (real_fcntl(fd, F_GETFL) & O_NONBLOCK) ? 1 : 0;
}
