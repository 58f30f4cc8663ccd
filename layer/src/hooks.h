/* The hook table: one line per libc function the layer replaces. REAL(name) is the next definition of that symbol
 * (libc's), looked up at its first use by hooks.c: a process pays only for the functions it calls (all 106 looked up
 * at load cost every process start 16-60 us). */
#ifndef DOPPEL_HOOKS_H
#define DOPPEL_HOOKS_H

#define _GNU_SOURCE
#include <dirent.h>
#include <netdb.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/types.h>
#include <sys/utsname.h>

struct statx;

/* X(name, return type, parameter list, required) — an optional symbol may be missing from this libc. */
#define DP_HOOKS(X) \
  X(open, int, (const char *, int, ...), 1) \
  X(open64, int, (const char *, int, ...), 1) \
  X(openat, int, (int, const char *, int, ...), 1) \
  X(openat64, int, (int, const char *, int, ...), 1) \
  X(__open_2, int, (const char *, int), 0) \
  X(__open64_2, int, (const char *, int), 0) \
  X(__openat_2, int, (int, const char *, int), 0) \
  X(__openat64_2, int, (int, const char *, int), 0) \
  X(creat, int, (const char *, mode_t), 1) \
  X(creat64, int, (const char *, mode_t), 0) \
  X(fopen, FILE *, (const char *, const char *), 1) \
  X(fopen64, FILE *, (const char *, const char *), 1) \
  X(fclose, int, (FILE *), 1) \
  X(close, int, (int), 1) \
  X(close_range, int, (unsigned int, unsigned int, int), 0) \
  X(closefrom, void, (int), 0) \
  X(dup, int, (int), 1) \
  X(dup2, int, (int, int), 1) \
  X(dup3, int, (int, int, int), 1) \
  X(fcntl, int, (int, int, ...), 1) \
  X(fcntl64, int, (int, int, ...), 0) \
  X(fsync, int, (int), 1) \
  X(fdatasync, int, (int), 1) \
  X(mkdir, int, (const char *, mode_t), 1) \
  X(mkdirat, int, (int, const char *, mode_t), 1) \
  X(rmdir, int, (const char *), 1) \
  X(unlink, int, (const char *), 1) \
  X(unlinkat, int, (int, const char *, int), 1) \
  X(rename, int, (const char *, const char *), 1) \
  X(renameat, int, (int, const char *, int, const char *), 1) \
  X(renameat2, int, (int, const char *, int, const char *, unsigned int), 0) \
  X(chmod, int, (const char *, mode_t), 1) \
  X(fchmod, int, (int, mode_t), 1) \
  X(fchmodat, int, (int, const char *, mode_t, int), 1) \
  X(stat, int, (const char *, struct stat *), 0) \
  X(stat64, int, (const char *, struct stat64 *), 0) \
  X(lstat, int, (const char *, struct stat *), 0) \
  X(lstat64, int, (const char *, struct stat64 *), 0) \
  X(fstat, int, (int, struct stat *), 0) \
  X(fstat64, int, (int, struct stat64 *), 0) \
  X(fstatat, int, (int, const char *, struct stat *, int), 0) \
  X(fstatat64, int, (int, const char *, struct stat64 *, int), 0) \
  X(__xstat, int, (int, const char *, struct stat *), 0) \
  X(__xstat64, int, (int, const char *, struct stat64 *), 0) \
  X(__lxstat, int, (int, const char *, struct stat *), 0) \
  X(__lxstat64, int, (int, const char *, struct stat64 *), 0) \
  X(__fxstat, int, (int, int, struct stat *), 0) \
  X(__fxstat64, int, (int, int, struct stat64 *), 0) \
  X(__fxstatat, int, (int, int, const char *, struct stat *, int), 0) \
  X(__fxstatat64, int, (int, int, const char *, struct stat64 *, int), 0) \
  X(statx, int, (int, const char *, int, unsigned int, struct statx *), 0) \
  X(syscall, long, (long, ...), 1) \
  X(fchdir, int, (int), 1) \
  X(access, int, (const char *, int), 1) \
  X(faccessat, int, (int, const char *, int, int), 1) \
  X(euidaccess, int, (const char *, int), 0) \
  X(eaccess, int, (const char *, int), 0) \
  X(readlink, ssize_t, (const char *, char *, size_t), 1) \
  X(readlinkat, ssize_t, (int, const char *, char *, size_t), 1) \
  X(getxattr, ssize_t, (const char *, const char *, void *, size_t), 0) \
  X(lgetxattr, ssize_t, (const char *, const char *, void *, size_t), 0) \
  X(listxattr, ssize_t, (const char *, char *, size_t), 0) \
  X(llistxattr, ssize_t, (const char *, char *, size_t), 0) \
  X(setxattr, int, (const char *, const char *, const void *, size_t, int), 0) \
  X(lsetxattr, int, (const char *, const char *, const void *, size_t, int), 0) \
  X(removexattr, int, (const char *, const char *), 0) \
  X(lremovexattr, int, (const char *, const char *), 0) \
  X(realpath, char *, (const char *, char *), 1) \
  X(__realpath_chk, char *, (const char *, char *, size_t), 0) \
  X(canonicalize_file_name, char *, (const char *), 0) \
  X(opendir, DIR *, (const char *), 1) \
  X(chdir, int, (const char *), 1) \
  X(closedir, int, (DIR *), 1) \
  X(scandir, int, (const char *, struct dirent ***, int (*)(const struct dirent *), int (*)(const struct dirent **, const struct dirent **)), 1) \
  X(scandir64, int, (const char *, struct dirent64 ***, int (*)(const struct dirent64 *), int (*)(const struct dirent64 **, const struct dirent64 **)), 1) \
  X(getaddrinfo, int, (const char *, const char *, const struct addrinfo *, struct addrinfo **), 1) \
  X(freeaddrinfo, void, (struct addrinfo *), 1) \
  X(gethostbyname, struct hostent *, (const char *), 1) \
  X(gethostbyname2, struct hostent *, (const char *, int), 1) \
  X(gethostbyname_r, int, (const char *, struct hostent *, char *, size_t, struct hostent **, int *), 1) \
  X(gethostbyname2_r, int, (const char *, int, struct hostent *, char *, size_t, struct hostent **, int *), 1) \
  X(gethostname, int, (char *, size_t), 1) \
  X(uname, int, (struct utsname *), 1) \
  X(connect, int, (int, const struct sockaddr *, socklen_t), 1) \
  X(getpeername, int, (int, struct sockaddr *, socklen_t *), 1) \
  X(getsockname, int, (int, struct sockaddr *, socklen_t *), 1) \
  X(sendto, ssize_t, (int, const void *, size_t, int, const struct sockaddr *, socklen_t), 1) \
  X(sendmsg, ssize_t, (int, const struct msghdr *, int), 1) \
  X(sendmmsg, int, (int, struct mmsghdr *, unsigned int, int), 1) \
  X(recvfrom, ssize_t, (int, void *, size_t, int, struct sockaddr *, socklen_t *), 1) \
  X(__recvfrom_chk, ssize_t, (int, void *, size_t, size_t, int, struct sockaddr *, socklen_t *), 0) \
  X(recvmsg, ssize_t, (int, struct msghdr *, int), 1) \
  X(recvmmsg, int, (int, struct mmsghdr *, unsigned int, int, struct timespec *), 1) \
  X(bind, int, (int, const struct sockaddr *, socklen_t), 1) \
  X(listen, int, (int, int), 1) \
  X(accept, int, (int, struct sockaddr *, socklen_t *), 1) \
  X(accept4, int, (int, struct sockaddr *, socklen_t *, int), 1) \
  X(epoll_create, int, (int), 1) \
  X(epoll_create1, int, (int), 1) \
  X(execve, int, (const char *, char *const[], char *const[]), 1) \
  X(execv, int, (const char *, char *const[]), 1) \
  X(execvp, int, (const char *, char *const[]), 1) \
  X(execvpe, int, (const char *, char *const[], char *const[]), 1) \
  X(fexecve, int, (int, char *const[], char *const[]), 1) \
  X(posix_spawn, int, (pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *, char *const[], char *const[]), 1) \
  X(posix_spawnp, int, (pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *, char *const[], char *const[]), 1)

#define DP_HOOK_INDEX(name, ret, params, required) DP_HOOK_##name,
enum dp_hook { DP_HOOKS(DP_HOOK_INDEX) DP_HOOK_COUNT };
#undef DP_HOOK_INDEX

#define DP_HOOK_TYPE(name, ret, params, required) typedef ret(*dp_##name##_fn) params;
DP_HOOKS(DP_HOOK_TYPE)
#undef DP_HOOK_TYPE

/* The resolved definitions, NULL until first used (DP_REAL_MISSING for an optional one this libc lacks). */
extern void *dp_reals[DP_HOOK_COUNT];
#define DP_REAL_MISSING ((void *)1)
/* Looks hook up with dlsym(RTLD_NEXT) and keeps it; aborts with one line when a required one is missing. */
void *dp_resolve_hook(enum dp_hook hook);

static inline void *dp_real(enum dp_hook hook) {
  void *fn = __atomic_load_n(&dp_reals[hook], __ATOMIC_RELAXED);
  if (__builtin_expect(fn == NULL, 0)) fn = dp_resolve_hook(hook);
  return fn == DP_REAL_MISSING ? NULL : fn;
}

/* The next definition of a hooked function, NULL for an optional one this libc lacks. */
#define REAL(name) ((dp_##name##_fn)dp_real(DP_HOOK_##name))

#endif
