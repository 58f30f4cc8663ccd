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
#include <linux/kcmp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

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

/* This process's epoll sets, by descriptor (epoll_create, epoll_create1): a socket watched before it connects or sends
 * (nginx adds its upstream sockets to epoll, then connects; node's dgram watches its socket, then sends) is replaced
 * with its registrations moved to the new socket, or the program would wait on one that is gone. Each set's
 * registrations are read from the kernel (kcmp, then /proc/self/fdinfo), since a program may make them without
 * epoll_ctl (libuv adds through io_uring). A number closed and reused needs nothing: its fdinfo then lists no socket. */
#define EPOLL_MAX_FD 65536
static _Atomic uint64_t epoll_sets[EPOLL_MAX_FD / 64];
/* One past the last word of epoll_sets with a set noted: 0 while none was made. */
static atomic_int epoll_words;

static int noted_set(int r) {
  if (r >= 0 && r < EPOLL_MAX_FD) {
    atomic_fetch_or(&epoll_sets[r / 64], (uint64_t)1 << (r % 64));
    int words = atomic_load(&epoll_words);
    while (words <= r / 64 && !atomic_compare_exchange_weak(&epoll_words, &words, r / 64 + 1)) {
    }
  }
  return r;
}

int epoll_create(int size) {
  dp_init();
  return noted_set(REAL(epoll_create)(size));
}

int epoll_create1(int flags) {
  dp_init();
  return noted_set(REAL(epoll_create1)(flags));
}

static uint64_t socket_inode(int fd) {
  struct stat st;
  return REAL(syscall)(SYS_fstat, (long)fd, (long)&st) == 0 && S_ISSOCK(st.st_mode) ? (uint64_t)st.st_ino : 0;
}

struct registration {
  int epfd;
  struct epoll_event event;
};
#define REGISTRATIONS_MAX 8
/* An epoll set's fdinfo is read this far at most (a line per socket it watches: a busy server's is long). */
#define FDINFO_MAX (256 * 1024)

/* The registrations of fd's socket (its inode in *inode, looked up once needed) in set epfd, appended to out (n so
 * far): the new count, or -1 when they cannot all be known. A line: "tfd: FD events: HEX data: HEX  pos:N ino:HEX". */
static int registrations_in(int epfd, int fd, pid_t self, uint64_t *inode, struct registration *out, int n) {
  /* Most sockets are in no set, which one system call tells (1 µs, where reading the set's fdinfo takes 17). */
  struct kcmp_epoll_slot slot = {.efd = (uint32_t)epfd, .tfd = (uint32_t)fd, .toff = 0};
  if (REAL(syscall)(SYS_kcmp, (long)self, (long)self, (long)KCMP_EPOLL_TFD, (long)fd, (long)&slot) < 0 && (errno == ENOENT || errno == EINVAL || errno == EBADF)) return n;
  if (*inode == 0) *inode = socket_inode(fd);
  char path[40], buf[4096];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
  int info = REAL(openat)(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  if (info < 0) return n;
  size_t kept = 0, total = 0;
  for (;;) {
    ssize_t got = read(info, buf + kept, sizeof buf - 1 - kept);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0 || (total += (size_t)got) > FDINFO_MAX) {
      n = got < 0 || total > FDINFO_MAX ? -1 : n;
      break;
    }
    buf[kept + (size_t)got] = '\0';
    char *line = buf, *nl;
    while (n >= 0 && (nl = strchr(line, '\n')) != NULL) {
      *nl = '\0';
      int tfd;
      unsigned events;
      unsigned long long data, ino;
      if (sscanf(line, "tfd: %d events: %x data: %llx pos:%*d ino:%llx", &tfd, &events, &data, &ino) == 4 && tfd == fd && ino == *inode) {
        if (n == REGISTRATIONS_MAX) n = -1;
        else out[n++] = (struct registration){.epfd = epfd, .event = {.events = events, .data.u64 = data}};
      }
      line = nl + 1;
    }
    kept = strlen(line);
    /* A line longer than the buffer is no registration line. */
    if (kept == sizeof buf - 1) kept = 0;
    memmove(buf, line, kept);
    if (n < 0) break;
  }
  REAL(close)(info);
  return n;
}

/* Every registration of fd's socket in this process's epoll sets: how many, or -1 when they cannot all be known. */
static int registrations_of(int fd, struct registration *out) {
  int words = atomic_load(&epoll_words), n = 0;
  uint64_t inode = 0;
  pid_t self = words > 0 ? getpid() : 0;
  for (int word = 0; word < words && n >= 0; word++) {
    uint64_t bits = atomic_load_explicit(&epoll_sets[word], memory_order_relaxed);
    for (; bits != 0 && n >= 0; bits &= bits - 1) n = registrations_in(word * 64 + __builtin_ctzll(bits), fd, self, &inode, out, n);
  }
  return n;
}

static int take_fd(uint32_t pid, uint32_t fd) {
  int pidfd = (int)REAL(syscall)(SYS_pidfd_open, (long)pid, 0L);
  if (pidfd < 0) return -1;
  int got = (int)REAL(syscall)(SYS_pidfd_getfd, (long)pidfd, (long)fd, 0L);
  int saved = errno;
  REAL(close)(pidfd);
  errno = saved;
  return got;
}

/* Taking a descriptor needs ptrace access to the agent (root with every capability the agent has: a program under
 * `sudo doppel exec`): EPERM otherwise, ENOSYS before Linux 5.6. Any descriptor tells; one the agent does not have
 * (EBADF) was looked for, so access was granted. Entering a network namespace needs CAP_SYS_ADMIN over it: entering
 * our own tells whether this process has it at all. */
static void probe(void) {
  uint32_t pid = dp_handover_pid();
  int got = pid != 0 ? take_fd(pid, 0) : -1;
  int take = pid != 0 && (got >= 0 || errno == EBADF);
  int take_why = pid != 0 ? errno : ESRCH;
  if (got >= 0) REAL(close)(got);
  int here = REAL(openat)(AT_FDCWD, "/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC, 0);
  int make = here >= 0 && setns(here, CLONE_NEWNET) == 0;
  int make_why = errno;
  if (here >= 0) REAL(close)(here);
  /* Either needs a fresh socket of each kind, whose option values are the ones not to copy. */
  int sockets = take || make;
  for (int type = SOCK_STREAM; type <= SOCK_DGRAM && sockets; type++) {
    int fresh = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    sockets = fresh >= 0;
    for (size_t i = 0; sockets && i < OPTIONS; i++) {
      socklen_t size = options[i].size;
      if (getsockopt(fresh, options[i].level, options[i].name, defaults[kind(type)][i], &size) < 0) memset(defaults[kind(type)][i], 0, OPTION_MAX);
    }
    if (sockets) REAL(close)(fresh);
  }
  atomic_store(&can_make, sockets && make);
  atomic_store(&can_take, sockets && take);
  dp_log("connect: sockets in the target's network %s (errno %d); the agent's (process %u) %s (errno %d)", atomic_load(&can_make) ? "can be made" : "cannot be made",
         make ? 0 : make_why, pid, atomic_load(&can_take) ? "can be taken" : "cannot be taken", take ? 0 : take_why);
}

/* Only a session whose agent runs on this machine (it hands its sockets over), or whose target does (a pod on this
 * node), has a network to reach from here. */
static int probe_done(void) {
  int state = atomic_load_explicit(&probed, memory_order_acquire);
  if (state == UNKNOWN && dp_rules_ready() && (dp_handover_pid() != 0 || dp_root_pid() != 0)) {
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
  *flags = 0;
  if (REAL(getsockname)(fd, (struct sockaddr *)&me, &me_len) < 0 || !dp_to_addr((struct sockaddr *)&me, me_len, &bound)) return 0;
  *flags = me.ss_family == AF_INET6 ? DP_CONNECT_INET6_SOCKET : 0;
  int unbound = bound.port == 0 && dp_is_any(&bound);
  /* A socket with a local address is bound or connected already: a program polling a non-blocking connect's end by
   * connecting again (Ruby's connect_nonblock) must get the kernel's EISCONN, not a second connection. */
  if (!unbound && REAL(getpeername)(fd, (struct sockaddr *)&peer, &peer_len) == 0) return 1;
  /* A socket bound first (its address or port chosen) is the program's to keep: it is relayed. */
  if (unbound && probe_done() && (atomic_load(&can_take) || atomic_load(&can_make))) {
    if (atomic_load(&can_take)) *flags |= DP_CONNECT_TAKES_FD;
    if (atomic_load(&can_make)) *flags |= DP_CONNECT_MAKES_SOCKET;
  }
  return 0;
}

/* The taken socket gets the program's file status flags (O_NONBLOCK) and the options it set; 0 or -errno. */
static int copy_settings(int fd, int got, int domain, int type) {
  int mine = REAL(fcntl)(fd, F_GETFL), theirs = REAL(fcntl)(got, F_GETFL);
  if (mine < 0 || theirs < 0) return -errno;
  if (((mine ^ theirs) & O_NONBLOCK) && REAL(fcntl)(got, F_SETFL, (theirs & ~O_NONBLOCK) | (mine & O_NONBLOCK)) < 0) return -errno;
  for (size_t i = 0; i < OPTIONS; i++) {
    /* TCP's options exist on streams alone, IPv6's on IPv6 sockets: asking a datagram socket cost six failed calls. */
    if ((options[i].level == IPPROTO_TCP && type != SOCK_STREAM) || (options[i].level == IPPROTO_IPV6 && domain != AF_INET6)) continue;
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
  return REAL(getpeername)(got, (struct sockaddr *)&peer, &peer_len) == 0 && dp_to_addr(addr, len, &want) &&
         dp_to_addr((struct sockaddr *)&peer, peer_len, &have) && memcmp(&want, &have, sizeof want) == 0;
}

/* `got` in place of the program's socket fd, atomically (fd's old socket closes), keeping its close-on-exec, and
 * with its epoll registrations moved over; 0 or -errno (fd untouched). */
static int install(int fd, int got) {
  struct registration held[REGISTRATIONS_MAX];
  int n = registrations_of(fd, held);
  int fd_flags = REAL(fcntl)(fd, F_GETFD);
  if (n < 0) return -EBUSY;
  if (fd_flags < 0) return -errno;
  /* Out of each set while fd still names the old socket: a child sharing that socket would otherwise keep it there. */
  for (int i = 0; i < n; i++) epoll_ctl(held[i].epfd, EPOLL_CTL_DEL, fd, NULL);
  int r = REAL(dup3)(got, fd, (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0 ? -errno : 0;
  for (int i = 0; i < n; i++) {
    if (epoll_ctl(held[i].epfd, EPOLL_CTL_ADD, fd, &held[i].event) < 0) dp_log("connect: an epoll registration could not be moved (errno %d)", errno);
  }
  return r;
}

/* `got` (of the same `type`) in place of the program's socket fd, with its settings, first bound to fd's wildcard
 * address and port when `rebind` says so (REBIND_OR_FAIL: unless that port is taken there, which fails it); 0 or
 * -errno (fd untouched). got is closed either way. */
enum { NO_REBIND, REBIND_IF_FREE, REBIND_OR_FAIL };
static int replace_bound(int fd, int got, int domain, int type, int rebind) {
  int r = copy_settings(fd, got, domain, type);
  struct sockaddr_storage me;
  socklen_t me_len = sizeof me;
  struct dp_addr bound;
  if (r == 0 && rebind != NO_REBIND && REAL(getsockname)(fd, (struct sockaddr *)&me, &me_len) == 0 && dp_to_addr((struct sockaddr *)&me, me_len, &bound) &&
      bound.port != 0 && dp_is_any(&bound) && REAL(bind)(got, (struct sockaddr *)&me, me_len) < 0) {
    if (rebind == REBIND_OR_FAIL) r = -errno;
    else dp_log("udp: port %u is taken here; the socket gets another", bound.port);
  }
  if (r == 0) r = install(fd, got);
  int saved = errno;
  REAL(close)(got);
  errno = saved;
  return r;
}

static int replace(int fd, int got, int domain, int type) { return replace_bound(fd, got, domain, type, NO_REBIND); }

/* A socket made in the network namespace of process `pid`, or -errno. Only this thread enters it, with signals
 * blocked so that no handler makes a socket of its own there, and it comes back before anything else runs. */
static int socket_in(uint32_t pid, int domain, int type, int protocol) {
  char path[48];
  snprintf(path, sizeof path, "/proc/%u/ns/net", pid);
  int there = REAL(openat)(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
  int here = there < 0 ? -1 : REAL(openat)(AT_FDCWD, "/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC, 0);
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
  if (here >= 0) REAL(close)(here);
  if (there >= 0) REAL(close)(there);
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
  int domain, type, protocol;
  int r = kind_of(fd, &domain, &type, &protocol);
  if (r < 0) return r;
  int made = socket(domain, type | SOCK_CLOEXEC, protocol);
  if (made < 0) return -errno;
  /* A socket bound to any address keeps its port where this machine has it free (else it gets one at its next send). */
  r = replace_bound(fd, made, domain, type, REBIND_IF_FREE);
  if (r == 0) dp_fd_forget(fd);
  return r;
}

int dp_move_datagram(int fd, uint32_t pid, int any_port) {
  struct sockaddr_storage me, peer;
  socklen_t me_len = sizeof me, peer_len = sizeof peer;
  struct dp_addr bound;
  if (!probe_done() || !atomic_load(&can_make)) return -EPERM;
  if (REAL(getsockname)(fd, (struct sockaddr *)&me, &me_len) < 0) return -errno;
  if (!dp_to_addr((struct sockaddr *)&me, me_len, &bound)) return -EAFNOSUPPORT;
  /* An address of this machine, or a port the program chose, is the program's to keep. */
  if (!dp_is_any(&bound) || (bound.port != 0 && !any_port)) return -EADDRINUSE;
  if (REAL(getpeername)(fd, (struct sockaddr *)&peer, &peer_len) == 0) return -EISCONN;
  int domain, type, protocol;
  int r = kind_of(fd, &domain, &type, &protocol);
  if (r < 0) return r;
  int made = socket_in(pid, domain, type | SOCK_CLOEXEC, protocol);
  if (made < 0) {
    dp_log("udp: could not make a socket in process %u's network (errno %d); relaying from now on", pid, -made);
    atomic_store(&can_make, 0);
    return made;
  }
  /* The same port there, so that the address the program knows stays true; where it is taken there, it stays here. */
  r = replace_bound(fd, made, domain, type, REBIND_OR_FAIL);
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
  if (made < 0) {
    dp_log("connect: could not make a socket in process %u's network (errno %d); asking the agent from now on", where.pid, -made);
    atomic_store(&can_make, 0);
    return made;
  }
  /* This socket alone is asked about (its epoll registrations could not all be read). */
  r = replace(fd, made, domain, type);
  if (r < 0) {
    dp_log("connect: the socket made in process %u's network could not replace the program's (errno %d)", where.pid, -r);
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
  int r = 0, taken = 0;
  int got = take_fd(from.pid, from.fd);
  if (got < 0) r = -errno;
  else if (!is_connection_to(got, addr, len)) {
    r = -ENOTCONN;
    REAL(close)(got);
  } else {
    taken = 1;
    r = replace(fd, got, addr->sa_family, SOCK_STREAM);
  }
  struct dp_handed_over told = {.token = from.token, .status = r};
  dp_tell(DP_OP_HANDED_OVER, &told, sizeof told);
  if (r < 0) {
    /* A socket taken but not put in place (its epoll registrations could not all be read) is this socket's matter. */
    dp_log("connect: could not take the agent's socket (errno %d); relaying %s", -r, taken ? "this one" : "from now on");
    if (!taken) atomic_store(&can_take, 0);
    return r;
  }
  /* Not a relayed socket: the kernel answers getpeername and getsockname. */
  dp_fd_forget(fd);
  dp_log("connect: took the agent's socket (process %u, fd %u)", from.pid, from.fd);
  return (REAL(fcntl)(fd, F_GETFL) & O_NONBLOCK) ? 1 : 0;
}
