/* The layer <-> proxy wire contract: fixed-layout little-endian messages on a Unix stream socket.
 * The TypeScript side is src/proxy/layer-wire.ts; both ship together, so this may change freely,
 * but the two files must always change in the same commit (test/unit/layer-wire.test.ts checks sizes). */
#ifndef DOPPEL_WIRE_H
#define DOPPEL_WIRE_H

#include <stdint.h>

/* The layer finds the proxy's socket path here (read once, at load). */
#define DP_ENV_SOCKET "DOPPEL_LAYER_SOCKET"
/* The target's hostname (feature.hostname), which gethostname and uname report; unset keeps the local one. */
#define DP_ENV_HOSTNAME "DOPPEL_HOSTNAME"
/* Set when some Unix socket paths are the target's (unix_streams): only then does connect() ask about AF_UNIX. */
#define DP_ENV_UNIX_STREAMS "DOPPEL_UNIX_STREAMS"
/* Process names, ':'-separated, in which the layer stays inactive (skip_processes, and the build tools). */
#define DP_ENV_SKIP_PROCESSES "DOPPEL_SKIP_PROCESSES"

/* Remote directories have local stand-ins under this directory next to the socket: the remote path P is mirrored at
 * <socket's directory>/DP_STANDIN_DIR/P, a real directory holding an empty entry of the same kind for each remote
 * entry, so that fdopendir, getdents64 and fchdir work on it. The layer maps paths under it back to P. */
#define DP_STANDIN_DIR "dirs"

/* Before the program starts, the proxy writes the payload of its hello answer (struct dp_hello_resp, then the fast
 * rules) to this file next to the socket: a process reads it at load (an open, a few reads) instead of connecting
 * and waiting for a hello's answer, and connects only when it has something to ask. */
#define DP_FAST_PATH_FILE "fast-path"

/* Where the agent answers DP_OP_GETADDRINFO itself when the rules say so (DP_HELLO_AGENT_DNS), next to the socket. */
#define DP_AGENT_DNS_SOCKET "dns.sock"

/* The largest answer payload (a whole remote file travels in one): the layer treats a longer one as a broken stream. */
#define DP_MAX_REPLY (1u << 30)

/* Request: header, then `len` payload bytes. */
struct dp_req_hdr {
  uint32_t len;
  uint32_t op;
  uint32_t seq; /* echoed in the answer; a different one is a stale answer to a call the program jumped out of */
  uint32_t reserved;
};

/* Response: header, then `len` payload bytes. */
struct dp_resp_hdr {
  uint32_t len;
  int32_t status; /* DP_OK, DP_LOCAL, DP_DIRECTORY, or a negative errno (for DP_OP_GETADDRINFO a negative EAI_* code) */
  uint32_t seq;   /* the request's */
  uint32_t reserved;
};

enum dp_status {
  DP_OK = 0,    /* done remotely; payload holds the result */
  DP_LOCAL = 1, /* do the call locally; a non-empty payload is a NUL-terminated path to use instead,
                 * or for DP_OP_CONNECT a struct dp_addr to connect to instead */
  /* DP_OP_OPEN only: a file opened for writing on the target (write mode). Payload: struct dp_open_write, then
   * struct dp_stat and the file's bytes as for DP_OK. Its content goes back with DP_OP_WRITEBACK. */
  DP_WRITABLE = 2,
  DP_DIRECTORY = 3, /* DP_OP_OPEN of a remote directory; payload: struct dp_stat, then its stand-in's path NUL */
  /* DP_OP_CONNECT only, to a request flagged DP_CONNECT_TAKES_FD: the agent's connected socket for the program to take
   * (pidfd_getfd) in place of its own. Payload: struct dp_handover; the layer then sends DP_OP_HANDED_OVER. */
  DP_HANDOVER = 4,
  /* DP_OP_CONNECT only, to a request flagged DP_CONNECT_MAKES_SOCKET: the layer makes a socket in the target's network
   * namespace (that of the process in the payload, struct dp_make_socket) in place of the program's, and connects it
   * itself. No agent takes part. */
  DP_MAKE_SOCKET = 5,
  /* DP_OP_OPEN only, to a read-only open of a regular file without DP_OPEN_NO_HOST_FILE: the target's file can be opened
   * from this machine (process platform). Payload: struct dp_stat, then the path that reaches it here (under
   * /proc/PID/root, every link resolved), NUL. The layer opens that path itself; a process that may not (EACCES, EPERM)
   * asks again with DP_OPEN_NO_HOST_FILE. */
  DP_HOST_FILE = 6,
};

enum dp_op {
  /* payload: struct dp_open_req, path NUL.
   * DP_OK payload: struct dp_stat, then the whole file's bytes; a directory is answered DP_DIRECTORY; DP_HOST_FILE.
   * opendir and scandir ask it too (O_DIRECTORY), and list the directory it names. */
  DP_OP_OPEN = 1,
  /* payload: uint32 flags (DP_STAT_NOFOLLOW), path NUL.  DP_OK payload: struct dp_stat. */
  DP_OP_STAT = 2,
  /* payload: int32 mode (F_OK/R_OK/W_OK/X_OK), path NUL.  DP_OK payload: empty. */
  DP_OP_ACCESS = 3,
  /* payload: path NUL.  DP_OK payload: the link's target, not NUL-terminated. */
  DP_OP_READLINK = 4,
  /* payload: path NUL.  DP_OK payload: the canonical path, NUL-terminated. */
  DP_OP_REALPATH = 6,
  /* payload: struct dp_gai_req, then name NUL.
   * DP_OK payload: uint32 count, `count` x struct dp_addr (port 0), then canonical name NUL (may be empty). */
  DP_OP_GETADDRINFO = 7,
  /* payload: struct dp_connect_req.  DP_OK payload: struct dp_connect_resp (relayed); DP_HANDOVER; DP_MAKE_SOCKET; DP_LOCAL: connect
   * as asked, or to the struct dp_addr in the payload (a name kept local that the target's DNS resolved: where it
   * resolves locally). */
  DP_OP_CONNECT = 8,
  /* A server socket's bind to a port > 0.  payload: struct dp_bind_req.
   * DP_OK payload: struct dp_bind_resp (the port to bind locally; the layer tracks the socket); DP_LOCAL: bind as asked. */
  DP_OP_BIND = 9,
  /* listen() on a tracked socket.  payload: struct dp_listen_req.
   * DP_OK payload: empty (the target's port now comes here); DP_LOCAL: the socket stays local. */
  DP_OP_LISTEN = 10,
  /* A connection accepted on a subscribed socket.  payload: struct dp_peer_of_req.
   * DP_OK payload: struct dp_peer_of_resp; DP_LOCAL: not one the proxy made (a local caller). */
  DP_OP_PEER_OF = 11,
  /* A subscribed socket's descriptor was closed (others may still hold it).  payload: struct dp_unlisten_req.
   * DP_OK payload: empty. */
  DP_OP_UNLISTEN = 12,
  /* Sent first on every new connection.  payload: struct dp_hello_req, then the executable's path NUL.
   * DP_OK payload: struct dp_hello_resp, then the session's fast rules for paths, each struct dp_rule then `len`
   * bytes of text (no NUL), at most DP_RULES_MAX of them in DP_RULES_MAX_BYTES; an error status means none
   * (ask about everything). */
  DP_OP_HELLO = 13,
  /* The layer took the socket of a DP_HANDOVER answer, or could not: payload struct dp_handed_over. One way: the proxy
   * answers nothing (a connect pays no second round trip). */
  DP_OP_HANDED_OVER = 14,
  /* A remote call the layer settled itself (in the target's root, or a socket made in its network), told only in a
   * traced session (DP_HELLO_TRACE): payload struct dp_layer_call, then the call's name NUL and its subject NUL. One
   * way, as DP_OP_HANDED_OVER. */
  DP_OP_LAYER_CALL = 15,
  /* Where a UDP datagram to a destination goes (sendto, sendmsg, connect of a UDP socket).  payload: struct dp_udp_route_req.
   * DP_OK payload: struct dp_udp_route_resp (send there instead: a proxy relay on loopback); DP_LOCAL: send as asked.
   * The answer holds for the whole session, so the layer keeps it. */
  DP_OP_UDP_ROUTE = 30,
  /* Write mode (40-59). A written file's content goes back to the target: payload struct dp_writeback_req.
   * DP_OK payload: struct dp_writeback_resp; then the content from `from` to its end in DP_OP_WRITEBACK_DATA pieces. */
  DP_OP_WRITEBACK = 40,
  /* payload: struct dp_writeback_data, then at most DP_WRITEBACK_CHUNK bytes.  DP_OK payload: empty; the piece
   * flagged DP_WRITEBACK_LAST (maybe empty) is answered once the target has it all, or with its errno. */
  DP_OP_WRITEBACK_DATA = 41,
  /* payload: uint32 mode, path NUL.  DP_OK payload: empty. */
  DP_OP_MKDIR = 42,
  /* payload: path NUL.  DP_OK payload: empty. */
  DP_OP_RMDIR = 43,
  DP_OP_UNLINK = 44,
  /* payload: uint32 flags (DP_RENAME_NOREPLACE), from NUL, to NUL.  DP_LOCAL: a non-empty payload is from NUL to NUL. */
  DP_OP_RENAME = 45,
  /* payload: uint32 mode, uint32 flags (DP_CHMOD_NOFOLLOW), path NUL.  DP_OK payload: empty. */
  DP_OP_CHMOD = 46,
  /* fchmod of a written file.  payload: struct dp_fchmod_req.  DP_OK payload: empty. */
  DP_OP_FCHMOD = 47,
  /* Outgoing Unix streams (60-69; feature.network.outgoing.unix_streams). connect() of an AF_UNIX stream socket:
   * payload: sun_path as the program passed it (an abstract name starts with a NUL byte).
   * DP_OK payload: a NUL-terminated path of a proxy socket to connect to instead (relayed to the target's socket);
   * DP_LOCAL: connect as asked. Asked only when DP_ENV_UNIX_STREAMS is set. */
  DP_OP_UNIX_CONNECT = 60,
};

#define DP_STAT_NOFOLLOW 1u

/* A remote stat(2) result; every field 64-bit so both sides agree without packing rules. */
struct dp_stat {
  uint64_t dev, ino, mode, nlink, uid, gid, rdev, size, blksize, blocks;
  int64_t atime_sec, atime_nsec, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec;
};

/* An IPv4 or IPv6 socket address in one fixed shape. */
struct dp_addr {
  uint32_t family; /* AF_INET or AF_INET6 */
  uint32_t port;   /* host byte order */
  uint8_t addr[16]; /* IPv4 in the first 4 bytes */
};

/* The process may not open the target's files by their path on this machine: no DP_HOST_FILE answer. */
#define DP_OPEN_NO_HOST_FILE 1u

struct dp_open_req {
  int32_t flags;    /* open(2) flags */
  uint32_t mode;    /* open(2) mode */
  uint32_t options; /* DP_OPEN_* */
  uint32_t reserved;
};

struct dp_gai_req {
  int32_t family, socktype, protocol, flags; /* from the hints; 0 when hints is NULL */
};

/* The layer can take a socket from the agent (pidfd_getfd works on the hello's handover_pid), and the program's socket
 * may be replaced: it was not bound. */
#define DP_CONNECT_TAKES_FD 1u
/* The program's socket is AF_INET6 (an IPv4 destination is then reached at its IPv4-mapped address). */
#define DP_CONNECT_INET6_SOCKET 2u
/* The layer can make sockets in another network namespace (setns is permitted), and the program's socket may be
 * replaced, as for DP_CONNECT_TAKES_FD. */
#define DP_CONNECT_MAKES_SOCKET 4u

struct dp_connect_req {
  uint32_t socktype; /* SOCK_STREAM (others are answered DP_LOCAL for now) */
  uint32_t flags;    /* DP_CONNECT_* */
  struct dp_addr remote;
};

struct dp_connect_resp {
  struct dp_addr via;   /* where the layer connects instead: a proxy listener on loopback */
  struct dp_addr local; /* the connection's local address on the target, for getsockname */
};

struct dp_handover {
  uint32_t pid;   /* the agent's process */
  uint32_t fd;    /* the connected socket's descriptor there */
  uint64_t token; /* names the hand-over in DP_OP_HANDED_OVER */
};

struct dp_make_socket {
  uint32_t pid; /* a process in the target's network namespace */
  uint32_t reserved;
};

struct dp_layer_call {
  uint32_t ns; /* the layer's time for the call */
  uint32_t reserved;
};

struct dp_handed_over {
  uint64_t token;
  int32_t status; /* 0: taken; else -errno (the layer asks again without DP_CONNECT_TAKES_FD) */
  uint32_t reserved;
};

struct dp_udp_route_req {
  struct dp_addr remote;
};

struct dp_udp_route_resp {
  struct dp_addr via; /* the relay: datagrams from it are the remote's */
};

/* When the port is taken locally (EADDRINUSE, or EACCES for a privileged port), bind port 0 instead. */
#define DP_BIND_FALLBACK 1u

struct dp_bind_req {
  uint32_t socktype;
  uint32_t reserved;
  struct dp_addr requested; /* what the program passed to bind */
};

struct dp_bind_resp {
  uint32_t port;  /* the local port to bind */
  uint32_t flags; /* DP_BIND_FALLBACK */
};

/* The socket accepts IPv6 only (IPV6_V6ONLY), so IPv4 loopback cannot reach it. */
#define DP_LISTEN_V6ONLY 1u

struct dp_listen_req {
  struct dp_addr requested; /* the address and port the program asked for */
  struct dp_addr local;     /* where it really listens */
  uint64_t inode;           /* the socket's inode, as /proc/net/tcp lists it */
  uint32_t flags;           /* DP_LISTEN_V6ONLY */
  uint32_t reserved;
};

struct dp_peer_of_req {
  struct dp_addr peer;    /* the accepted connection's peer as the kernel reports it (the proxy's socket, if ours) */
  uint32_t listener_port; /* its local port: the listener's real port */
  uint32_t reserved;
};

struct dp_peer_of_resp {
  struct dp_addr peer;  /* the real caller, for accept and getpeername */
  struct dp_addr local; /* the address it called on the target, for getsockname */
};

struct dp_unlisten_req {
  uint32_t port; /* the requested port */
  uint32_t reserved;
  uint64_t inode;
};

struct dp_open_write {
  uint64_t handle; /* names the file in write-backs */
  uint64_t reserved;
};

struct dp_writeback_req {
  uint64_t handle;
  uint64_t size; /* the content's size now */
};

struct dp_writeback_resp {
  uint64_t from;  /* send the content from this offset (an append sends only what was added) */
  uint64_t token; /* names this write-back in its pieces */
};

#define DP_WRITEBACK_LAST 1u
#define DP_WRITEBACK_CHUNK (60u * 1024u)

struct dp_writeback_data {
  uint64_t token;
  uint64_t offset;
  uint32_t flags; /* DP_WRITEBACK_LAST */
  uint32_t reserved;
};

#define DP_RENAME_NOREPLACE 1u
#define DP_CHMOD_NOFOLLOW 1u

struct dp_fchmod_req {
  uint64_t handle;
  uint32_t mode;
  uint32_t reserved;
};

struct dp_hello_req {
  uint32_t pid, ppid;
};

/* TCP connections to loopback addresses are always local. */
#define DP_HELLO_LOOPBACK_TCP_LOCAL 1u
/* Some writes go to the target (write mode, read_write lists): only then can a process hold written files. */
#define DP_HELLO_REMOTE_WRITES 2u
/* The agent answers DP_OP_GETADDRINFO itself on DP_AGENT_DNS_SOCKET, next to the proxy's socket (an agent on this
 * machine, no DNS or outgoing filter by name); asked there first, the proxy when it cannot be reached. */
#define DP_HELLO_AGENT_DNS 4u
/* With network_pid: every UDP datagram to a non-loopback address goes to the target too, so a UDP socket connected to
 * one is made in that network namespace without asking. */
#define DP_HELLO_UDP_IN_NETWORK 8u
/* The session is traced (--trace): the layer tells the proxy of each remote call it settles itself (DP_OP_LAYER_CALL). */
#define DP_HELLO_TRACE 16u

struct dp_hello_resp {
  uint32_t flags;        /* DP_HELLO_* */
  uint32_t handover_pid; /* the agent's process when it hands its sockets over (process platform), else 0 */
  uint32_t root_pid;     /* a process whose root is the target's (a local process target), else 0: see DP_RULE_REMOTE */
  /* A process in the target's network namespace when every TCP connection to a non-loopback address goes to the target
   * (no outgoing filter, DNS through the target), else 0: the layer then makes such a socket there without asking, as
   * for a DP_MAKE_SOCKET answer. */
  uint32_t network_pid;
  /* The start time, in clock ticks since boot (field 22 of /proc/PID/stat), of the process root_pid and network_pid
   * name (they name the same process when both are set), 0 when neither is set. The layer uses those pids only while
   * that very process lives (a Kubernetes target's process can exit during a session, and its PID be reused), and asks
   * the proxy from then on; with a pid and 0 here, only while the process at that PID lives. */
  uint64_t target_start;
};

/* A fast rule (src/config/fs-fast-rules.ts): how it matches an absolute, normalized, ASCII path, compared
 * ASCII case-insensitively with its text (lower case). The first rule that matches decides: LOCAL means local
 * without asking the proxy; ASK, or no rule, means ask; REMOTE means the file is read from the target at that path:
 * with a root_pid, the layer opens a regular file for reading itself, inside /proc/<root_pid>/root (any other call,
 * and any other kind of file, asks). */
struct dp_rule {
  uint16_t match;   /* enum dp_rule_match */
  uint16_t verdict; /* enum dp_rule_verdict */
  uint32_t len;
};

enum dp_rule_match { DP_MATCH_EXACT = 1, DP_MATCH_PREFIX = 2, DP_MATCH_SUFFIX = 3, DP_MATCH_CONTAINS = 4 };
enum dp_rule_verdict { DP_RULE_LOCAL = 1, DP_RULE_ASK = 2, DP_RULE_REMOTE = 3 };

#define DP_RULES_MAX 256
#define DP_RULES_MAX_BYTES 16384

#endif
