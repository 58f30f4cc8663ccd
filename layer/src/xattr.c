/* Extended attributes by path. The target's are not served: a path the target has answers ENOTSUP, as a file system
 * without them does (ls -l, cp -a and getfattr then go on quietly), and one it lacks the target's error; without
 * these hooks they reached the local file of the same path, or ENOENT for every remote file ls -l lists. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/types.h>
#include <sys/xattr.h>

/* Local paths (or the proxy's rewrite of them) go to libc; a remote one answers its stat's error, or ENOTSUP. */
#define DP_XATTR(ret, name, nofollow, params, args)                                                      \
  ret name params {                                                                                       \
    dp_init();                                                                                            \
    if (!dp_enter()) return REAL(name) ? REAL(name)(path, args) : (errno = ENOSYS, -1);                 \
    uint32_t head = (nofollow) ? DP_STAT_NOFOLLOW : 0;                                                    \
    char *reply;                                                                                          \
    uint32_t len;                                                                                         \
    const char *local;                                                                                    \
    int status = dp_ask_path(DP_OP_STAT, &head, sizeof head, AT_FDCWD, path, &reply, &len, &local);       \
    ret r = -1;                                                                                           \
    if (status != DP_LOCAL) errno = status < 0 ? -status : ENOTSUP;                                       \
    else if (REAL(name)) r = REAL(name)(local, args);                                                   \
    else errno = ENOSYS;                                                                                  \
    int saved = errno;                                                                                    \
    dp_free(reply);                                                                                       \
    dp_leave();                                                                                           \
    errno = saved;                                                                                        \
    return r;                                                                                             \
  }

#define ARGS(...) __VA_ARGS__
DP_XATTR(ssize_t, getxattr, 0, (const char *path, const char *attr, void *value, size_t size), ARGS(attr, value, size))
DP_XATTR(ssize_t, lgetxattr, 1, (const char *path, const char *attr, void *value, size_t size), ARGS(attr, value, size))
DP_XATTR(ssize_t, listxattr, 0, (const char *path, char *list, size_t size), ARGS(list, size))
DP_XATTR(ssize_t, llistxattr, 1, (const char *path, char *list, size_t size), ARGS(list, size))
DP_XATTR(int, setxattr, 0, (const char *path, const char *attr, const void *value, size_t size, int flags), ARGS(attr, value, size, flags))
DP_XATTR(int, lsetxattr, 1, (const char *path, const char *attr, const void *value, size_t size, int flags), ARGS(attr, value, size, flags))
DP_XATTR(int, removexattr, 0, (const char *path, const char *attr), attr)
DP_XATTR(int, lremovexattr, 1, (const char *path, const char *attr), attr)
