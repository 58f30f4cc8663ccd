/* What the layer's parts share: session state, the in-hook guard, RPC to the proxy, the fd table, logging. */
#ifndef DOPPEL_LAYER_H
#define DOPPEL_LAYER_H

#include "hooks.h"
#include "doppel-wire.h"
#include <stddef.h>
#include <stdint.h>

/* Why a hook let a call through to libc untouched; logged at debug level. */
enum dp_bypass {
  DP_BYPASS_DISABLED,   /* no DOPPEL_LAYER_SOCKET: not under doppel */
  DP_BYPASS_REENTRANT,  /* the layer itself is calling libc */
  DP_BYPASS_POLICY,     /* the proxy answered "local" */
  DP_BYPASS_NOT_INET,   /* not an IPv4/IPv6 stream socket */
  DP_BYPASS_NUMERIC,    /* a numeric host or no host: nothing to resolve */
  DP_BYPASS_NOT_OURS,   /* an fd or DIR the layer did not create */
};

/* Resolves the hook table once; every hook calls it (directly or through dp_enter) before using real_*. */
void dp_init(void);
/* True when the hook should do its own work; false means "call libc". Sets the guard when true. */
int dp_enter(void);
void dp_leave(void);
void dp_bypassed(enum dp_bypass why, const char *what);
void dp_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One round trip to the proxy. On success returns the status (DP_OK, DP_LOCAL or negative errno/EAI)
 * and sets *reply (NUL-terminated, NULL when empty) and *reply_len. Without a proxy it answers DP_LOCAL. */
int dp_call(uint32_t op, const void *a, size_t a_len, const void *b, size_t b_len, char **reply, uint32_t *reply_len);
/* Releases a reply from dp_call; only the thread's latest reply is valid, so release it before the next call. */
void dp_free(char *reply);
/* True if fd is one of the layer's own sockets, which the program must not close. */
int dp_is_own_fd(int fd);

/* Builds the absolute form of path (relative to dirfd, or the cwd for AT_FDCWD) into out. */
int dp_absolute(int dirfd, const char *path, char *out, size_t size);

/* What the layer knows about a descriptor it made or relayed. */
struct dp_fdinfo {
  int has_stat;
  struct dp_stat stat;
  int has_addrs;
  struct sockaddr_storage peer, local;
  socklen_t peer_len, local_len;
};
void dp_fd_set(int fd, const struct dp_fdinfo *info);
int dp_fd_get(int fd, struct dp_fdinfo *out);
void dp_fd_forget(int fd);
void dp_fd_copy(int from, int to);

/* Asks the proxy about a path-based call: `head` is the op's fixed part, the absolute path follows.
 * On DP_LOCAL, *local_path is the path to use locally (the caller's own, or the proxy's rewrite). */
int dp_ask_path(uint32_t op, const void *head, size_t head_len, int dirfd, const char *path, char **reply, uint32_t *reply_len, const char **local_path);

/* Fill libc structures from a remote stat. */
void dp_fill_stat(struct stat *st, const struct dp_stat *remote);
void dp_fill_statx(struct statx *stx, const struct dp_stat *remote);

/* The carried variables for exec, captured at load. */
const char *dp_layer_path(void);
char *const *dp_fix_env(char *const envp[], char **scratch, size_t scratch_len, char *preload_buf, size_t preload_len);
void dp_warn_if_static(const char *path);

#endif
