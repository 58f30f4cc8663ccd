/* What the layer's parts share: session state, the in-hook guard, RPC to the proxy, the fd table, logging. */
#ifndef DOPPEL_LAYER_H
#define DOPPEL_LAYER_H

#include "hooks.h"
#include "doppel-wire.h"
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>

/* Older C libraries' headers lack the number. */
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* Why a hook let a call through to libc untouched; logged at debug level. */
enum dp_bypass {
  DP_BYPASS_DISABLED,   /* no DOPPEL_LAYER_SOCKET: not under doppel */
  DP_BYPASS_REENTRANT,  /* the layer itself is calling libc */
  DP_BYPASS_POLICY,     /* the proxy answered "local" */
  DP_BYPASS_NOT_INET,   /* not an IPv4/IPv6 stream socket */
  DP_BYPASS_NUMERIC,    /* a numeric host or no host: nothing to resolve */
  DP_BYPASS_NOT_OURS,   /* an fd or DIR the layer did not create */
  DP_BYPASS_ANY_PORT,   /* bind to port 0: no port to receive the target's traffic for */
};

/* The proxy's socket path, captured at load ("" when not under doppel). */
const char *dp_socket_path(void);
/* The agent's socket for lookups next to it (see DP_HELLO_AGENT_DNS), "" when the path would be too long. */
const char *dp_agent_dns_path(void);
/* Maps a path under the stand-in directory (see DP_STANDIN_DIR) back to the remote path it stands for, in place;
 * returns 1 if it did. */
int dp_unstand(char *path);
/* Reads the session's state once; every hook calls it (directly or through dp_enter) before its own work. */
void dp_init(void);
/* The start time of process pid (field 22 of /proc/PID/stat, clock ticks since boot), or 0 when it cannot be read. */
uint64_t dp_start_time(uint32_t pid);
/* In the launch trampoline, when no warm host took the request: starts the program from its plan, if any (plan.c).
 * `warm`: the warm directory, where bin/doppel's agent listens. */
void dp_planned_start(int argc, char **argv, const char *plans_dir, const char *warm);
/* Whether the layer serves this process: under doppel, and not one skip_processes or skip_build_tools names. */
int dp_active(void);
/* This process is one the CLI's DP_ENV_SKIP_PROCESSES lists (skip.c). */
int dp_skipped_process(void);
/* True when the hook should do its own work; false means "call libc". Sets the guard when true. */
int dp_enter(void);
void dp_leave(void);
void dp_bypassed(enum dp_bypass why, const char *what);
void dp_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One round trip to the proxy. On success returns the status (DP_OK, DP_LOCAL or negative errno/EAI)
 * and sets *reply (NUL-terminated, NULL when empty) and *reply_len. Without a proxy it answers DP_LOCAL. */
int dp_call(uint32_t op, const void *a, size_t a_len, const void *b, size_t b_len, char **reply, uint32_t *reply_len);
/* dp_call to the agent's own socket for lookups when the rules say it serves them (DP_HELLO_AGENT_DNS), else, or when
 * it cannot be reached, to the proxy. */
int dp_call_agent(uint32_t op, const void *a, size_t a_len, const void *b, size_t b_len, char **reply, uint32_t *reply_len);
/* A request the proxy does not answer (the program does not wait); lost if the proxy is gone. */
void dp_tell(uint32_t op, const void *a, size_t a_len);
/* Releases a reply from dp_call; only the thread's latest reply is valid, so release it before the next call. */
void dp_free(char *reply);
/* The layer's own sockets are numbered below this (from 900 up). */
#define DP_OWN_FDS 4096
/* True if fd is one of the layer's own sockets, which the program must not close. */
int dp_is_own_fd(int fd);
/* One past the highest descriptor number the layer ever kept as its own. */
int dp_own_fds_end(void);
/* Moves the layer's socket at fd to another number (the program is about to take fd, with dup2 or dup3). */
void dp_move_own_fd(int fd);
/* The target's root (/proc/PID/root), opened once for the process and kept among the layer's own descriptors. */
int dp_target_root(uint32_t pid);
/* Whether process pid is alive and is the one that started at `start` (the hello's target_start; 0 takes any): checked
 * once (a pidfd, /proc/PID/stat), then one poll of the pidfd per call. Once it says no, it says no for good in this
 * process (and its forked children). errno is kept. */
int dp_target_alive(uint32_t pid, uint64_t start);
/* Grows the descriptor table to hold the layer's own numbers; called at load, while the process has one thread. */
void dp_reserve_own_fds(void);

/* The working directory, without a system call while no chdir/fchdir happened (cwd.c); 0 or -errno. */
int dp_cwd(char *out, size_t size);
/* syscall(SYS_chdir / SYS_fchdir, arg) as the program made it. */
int dp_chdir_raw(long number, long arg);
/* Called after every change of directory, with its result (returned): the kept working directory is read again. */
int dp_cwd_moved(int r);

/* Builds the absolute form of path (relative to dirfd, or the cwd for AT_FDCWD) into out, with a stand-in's path
 * mapped back to the remote one. Returns 1 if it was, 0 if not, or a negative errno. */
int dp_absolute(int dirfd, const char *path, char *out, size_t size);

/* What the layer knows about a descriptor it made or relayed. */
struct dp_fdinfo {
  int has_stat;
  struct dp_stat stat;
  int has_peer, has_local; /* getpeername / getsockname are answered from peer / local */
  struct sockaddr_storage peer, local;
  socklen_t peer_len, local_len;
  /* A server socket the proxy tracks from bind: the port the program asked for; subscribed once listen succeeded. */
  uint32_t requested_port;
  int subscribed;
  uint64_t inode;
  /* A file written on the target (write mode): the proxy's handle for its write-backs; 0 for any other. */
  uint64_t handle;
  /* A datagram socket's way (udp.c): DP_UDP_*. */
  int udp;
};
enum {
  DP_UDP_UNSEEN,
  /* Bound by the program to the wildcard address on a port the kernel chose: it may go to the target's network. */
  DP_UDP_ANY_PORT,
  /* Made in the target's network by the layer: loopback is not reachable from it. */
  DP_UDP_IN_NETWORK,
  /* Stays on this machine, its remote datagrams relayed. */
  DP_UDP_HERE,
};
void dp_fd_set(int fd, const struct dp_fdinfo *info);
int dp_fd_get(int fd, struct dp_fdinfo *out);
void dp_fd_forget(int fd);
/* Forgets fd and returns what was known about it, in one step (close). */
int dp_fd_take(int fd, struct dp_fdinfo *out);
void dp_fd_copy(int from, int to);
/* Calls `each` for every descriptor in [first, last] the layer knows (close_range), forgetting each one if `take`. */
void dp_fd_each(unsigned first, unsigned last, int take, void (*each)(int fd, const struct dp_fdinfo *));

/* IPv4/IPv6 socket addresses to and from the wire's one shape; an IPv4 address becomes v4-mapped on an IPv6 socket. */
int dp_to_addr(const struct sockaddr *sa, socklen_t len, struct dp_addr *out);
/* 127.0.0.0/8, ::1, and IPv4 loopback mapped into IPv6. */
int dp_is_loopback(const struct dp_addr *a);
/* 0.0.0.0 or :: (bind's "any address"). */
int dp_is_any(const struct dp_addr *a);
socklen_t dp_from_addr(const struct dp_addr *a, int family, struct sockaddr_storage *out);
/* Copies an address into a caller's (addr, len) out-parameters the way the kernel does: truncated, full length reported. */
void dp_copy_out(const struct sockaddr_storage *src, socklen_t src_len, struct sockaddr *addr, socklen_t *len);

/* A relayed connect: the program's socket connects to `via` (the proxy's) and getpeername/getsockname answer from
 * info; forgotten again if the connect fails outright. */
int dp_connect_via(int fd, const struct dp_fdinfo *info, const struct sockaddr *via, socklen_t via_len);
/* The DP_CONNECT_* flags of a TCP socket about to connect, in *flags: its family, and whether its number may take the
 * agent's socket or one the layer makes in the target's network (this process can, and the socket is not bound). 1 when
 * it is connected already. */
int dp_handover_flags(int fd, uint32_t *flags);
/* A DP_MAKE_SOCKET answer (struct dp_make_socket): a socket made in that process's network namespace in place of fd,
 * for the caller to connect. 0, or -errno with fd untouched (ask again without DP_CONNECT_MAKES_SOCKET). */
int dp_make_socket(int fd, const char *reply);
/* A datagram socket made in process pid's network namespace in place of fd, bound to the same port when the program
 * bound it to the wildcard address on any port (any_port), its epoll registration moved: 0, or -errno with fd untouched
 * (bound to an address or port of the program's, connected, in two epoll sets, or none can be made there). */
int dp_move_datagram(int fd, uint32_t pid, int any_port);
/* bind() of a datagram socket, as asked: one bound to the wildcard address on any port is noted (DP_UDP_ANY_PORT). */
int dp_udp_bind(int fd, const struct sockaddr *addr, socklen_t len, const struct dp_addr *requested);
/* A socket of fd's kind made in this thread's own network namespace in place of fd (one dp_make_socket moved, going
 * back for a local destination): 0, or -errno with fd untouched. */
int dp_remake_socket_here(int fd);
/* A DP_HANDOVER answer (struct dp_handover) to connect(fd, addr): takes the agent's socket in place of fd and tells the
 * proxy. 0 (blocking) or 1 (non-blocking socket) when taken, else -errno with fd untouched (relay it instead). */
int dp_take_handover(int fd, const char *reply, const struct sockaddr *addr, socklen_t len);
/* connect() of an AF_UNIX socket: to a proxy socket relayed to the target's when its path is one of unix_streams. */
int dp_unix_connect(int fd, const struct sockaddr *addr, socklen_t len);

/* connect() of a UDP socket: to the destination's relay when it is remote, with getpeername answering the destination. */
int dp_udp_connect(int fd, const struct sockaddr *addr, socklen_t len);
/* connect(AF_UNSPEC): the peer the layer reported goes; a socket made in the target's network is still one. */
void dp_udp_dissolve(int fd);

/* close() and syscall(SYS_close): protects the layer's own fds, forgets the fd, and tells the proxy about a
 * subscribed listener's descriptor going away. */
int dp_close(int fd, int raw);
/* A DP_WRITABLE answer to DP_OP_OPEN as a descriptor with the program's flags (write.c). */
int dp_written_open(const char *reply, uint32_t len, int flags);
/* fd is going away (close, dup2 onto it): a written file that no other descriptor of this process holds goes back
 * to the target first. 0, or the target's -errno, which close returns. */
int dp_written_release(int fd);
/* close_range() and syscall(SYS_close_range): the same for every descriptor in the range. */
int dp_close_range(unsigned first, unsigned last, int flags);
/* Tells the proxy that a subscribed listener's descriptor went away; errno is kept. */
void dp_unlisten(const struct dp_fdinfo *info);

/* Asks the proxy about a path-based call: `head` is the op's fixed part, the absolute path follows.
 * On DP_LOCAL, *local_path is the path to use locally (the caller's own, or the proxy's rewrite). */
int dp_ask_path(uint32_t op, const void *head, size_t head_len, int dirfd, const char *path, char **reply, uint32_t *reply_len, const char **local_path);
/* The absolute path to ask the proxy about, in abs (PATH_MAX bytes), and in *local_path the path a local call uses;
 * 0 when the call stays local without asking (no path, or one the session's fast rules call local), else the rules'
 * verdict: DP_RULE_ASK, or DP_RULE_REMOTE (a read-only open may then be dp_open_in_root's). */
int dp_path_to_ask(int dirfd, const char *path, char *abs, const char **local_path);
/* dp_ask_path for a path dp_path_to_ask gave; *local_path becomes the proxy's rewrite, if any. */
int dp_ask_abs(uint32_t op, const void *head, size_t head_len, const char *abs, char **reply, uint32_t *reply_len, const char **local_path);

/* The session's fast rules (rules.c): the hello's answer is read into the store dp_rules_claim hands out (NULL
 * when another connection loads them, or they are too big), then parsed by dp_rules_loaded (`from` names the
 * source in the debug log). */
char *dp_rules_claim(uint32_t len);
void dp_rules_loaded(const char *from, const struct dp_hello_resp *head, uint32_t len, int ok);
/* Loads them from the proxy's DP_FAST_PATH_FILE instead; 1 if it did. */
int dp_rules_from_file(const char *path);
/* The rules are loaded (from the file or a hello), so a connection need not wait for its hello's answer. */
int dp_rules_ready(void);
/* Whether this process may hold written files (write.c): true until the rules say no write goes to the target. */
int dp_remote_writes(void);
/* The rules' verdict on this absolute path: DP_RULE_LOCAL, DP_RULE_ASK (also when no rule matches) or DP_RULE_REMOTE. */
int dp_rules_verdict(const char *path);
/* A process whose root is the target's (the hello's root_pid), or 0; 0 too once that process exited or if it is not
 * the target (dp_target_alive). */
uint32_t dp_root_pid(void);
/* A process in the target's network where every non-loopback TCP connection is made without asking (the hello's
 * network_pid), or 0; 0 too as for dp_root_pid. */
uint32_t dp_network_pid(void);
/* openat2 of an absolute path in the target's root (/proc/<root_pid>/root, RESOLVE_IN_ROOT: the target's links and
 * ".." resolve inside it, as the proxy's own walk resolves them): the descriptor, or -1 and errno (ENOSYS without a
 * root, or on a kernel before 5.6). */
int dp_openat_in_root(const char *abs, int flags);
/* A read-only open of a regular file the rules call remote, there (files.c): 1 when settled here (*fd, or -1 and
 * errno), 0 when the proxy must answer. */
int dp_open_in_root(const char *abs, int flags, int *fd);
/* Inside a hook: opens this thread's proxy connection now if it has none, so that its hello loads the rules. */
void dp_connect_early(void);
/* True when TCP to a loopback address is always local in this session. */
int dp_loopback_tcp_local(void);
/* The session is traced (DP_HELLO_TRACE). */
int dp_tracing(void);
/* In a traced session (DP_HELLO_TRACE), the monotonic clock in ns; 0 otherwise, without reading it. */
uint64_t dp_trace_clock(void);
/* Tells a traced session's proxy of a remote call the layer settled itself, begun at `since` (dp_trace_clock's; 0 does
 * nothing): `call` as the proxy's handler names it, `subject` its path or address. */
void dp_traced(const char *call, const char *subject, uint64_t since);
/* dp_traced for a call whose subject is a socket address (address:port). */
void dp_traced_address(const char *call, const struct sockaddr *sa, socklen_t len, uint64_t since);
/* True when the agent answers lookups itself (DP_HELLO_AGENT_DNS). */
int dp_agent_dns(void);
/* True when every UDP datagram to a non-loopback address goes to the target, whose network is dp_network_pid's
 * (DP_HELLO_UDP_IN_NETWORK). */
int dp_udp_in_network(void);
/* The agent's process whose sockets connect() may take (the hello's handover_pid), or 0. */
uint32_t dp_handover_pid(void);

/* Remote stat answers kept briefly (stat-cache.c). get: 0 (stat in *out) or a negative errno when known, 1 when not.
 * put stores an answer to a question asked in `asked_in` (dp_cache_epoch before asking); status 0 or -errno. */
int dp_cache_get(const char *path, int nofollow, struct dp_stat *out);
unsigned dp_cache_epoch(void);
void dp_cache_put(const char *path, int nofollow, int status, const struct dp_stat *stat, unsigned asked_in);
/* Every request to the proxy, before and after: one that may change files forgets what was kept. */
void dp_cache_note(uint32_t op, const void *head, size_t head_len);

/* fstatat as libc has it, or the raw system call where libc lacks the symbol (glibc before 2.33). */
int dp_local_fstatat(int dirfd, const char *path, struct stat *st, int flags);
/* Fill libc structures from a remote stat. */
void dp_fill_stat(struct stat *st, const struct dp_stat *remote);
void dp_fill_statx(struct statx *stx, const struct dp_stat *remote);

#endif
