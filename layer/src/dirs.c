/* Directory hooks: a remote directory is listed once and served from a layer-owned stand-in for DIR. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define DP_DIR_MAGIC 0x64707064u

/* Our DIR stand-in; told apart from libc's by the registry below, never by reading its bytes. */
struct dp_dir {
  uint32_t magic;
  size_t count, pos;
  struct dirent64 *entries;
  struct dp_dir *next;
};

static struct dp_dir *registry;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static struct dp_dir *ours(DIR *dir) {
  pthread_mutex_lock(&lock);
  struct dp_dir *d = registry;
  while (d != NULL && (DIR *)d != dir) d = d->next;
  pthread_mutex_unlock(&lock);
  return d;
}

static void add_entry(struct dirent64 *e, uint64_t ino, unsigned type, const char *name, size_t name_len, size_t index) {
  memset(e, 0, sizeof *e);
  e->d_ino = ino;
  e->d_off = (off64_t)(index + 1);
  e->d_reclen = sizeof *e;
  e->d_type = (unsigned char)type;
  if (name_len >= sizeof e->d_name) name_len = sizeof e->d_name - 1;
  memcpy(e->d_name, name, name_len);
}

/* Parses a DP_OP_LISTDIR answer into entries, with "." and ".." first as a real directory has them. */
static struct dirent64 *parse_listing(const char *reply, uint32_t len, size_t *count) {
  size_t n = 2;
  for (uint32_t off = 0; off + sizeof(struct dp_dirent) <= len;) {
    struct dp_dirent d;
    memcpy(&d, reply + off, sizeof d);
    off += (uint32_t)sizeof d + d.name_len + 1;
    n++;
  }
  struct dirent64 *entries = calloc(n, sizeof *entries);
  if (entries == NULL) return NULL;
  add_entry(&entries[0], 1, DT_DIR, ".", 1, 0);
  add_entry(&entries[1], 1, DT_DIR, "..", 2, 1);
  size_t i = 2;
  for (uint32_t off = 0; off + sizeof(struct dp_dirent) <= len && i < n; i++) {
    struct dp_dirent d;
    memcpy(&d, reply + off, sizeof d);
    const char *name = reply + off + sizeof d;
    if (off + sizeof d + d.name_len > len) break;
    add_entry(&entries[i], d.ino, d.type, name, d.name_len, i);
    off += (uint32_t)sizeof d + d.name_len + 1;
  }
  *count = i;
  return entries;
}

/* 1: listed remotely into *entries; 0: local (path in *local); -1: failed with errno. */
static int list_remote(const char *path, struct dirent64 **entries, size_t *count, char **reply, const char **local) {
  uint32_t len;
  int status = dp_ask_path(DP_OP_LISTDIR, NULL, 0, AT_FDCWD, path, reply, &len, local);
  if (status == DP_LOCAL) return 0;
  if (status < 0) {
    errno = -status;
    return -1;
  }
  *entries = parse_listing(*reply ? *reply : "", len, count);
  if (*entries == NULL) {
    errno = ENOMEM;
    return -1;
  }
  return 1;
}

DIR *opendir(const char *path) {
  dp_init();
  if (!dp_enter()) return real_opendir(path);
  struct dirent64 *entries;
  size_t count;
  char *reply;
  const char *local;
  DIR *result = NULL;
  int r = list_remote(path, &entries, &count, &reply, &local);
  if (r == 0) result = real_opendir(local);
  else if (r == 1) {
    struct dp_dir *d = calloc(1, sizeof *d);
    if (d == NULL) {
      free(entries);
      errno = ENOMEM;
    } else {
      *d = (struct dp_dir){.magic = DP_DIR_MAGIC, .count = count, .entries = entries};
      pthread_mutex_lock(&lock);
      d->next = registry;
      registry = d;
      pthread_mutex_unlock(&lock);
      result = (DIR *)d;
    }
  }
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return result;
}

struct dirent64 *readdir64(DIR *dir) {
  dp_init();
  struct dp_dir *d = ours(dir);
  if (d == NULL) return real_readdir64(dir);
  return d->pos < d->count ? &d->entries[d->pos++] : NULL;
}

/* On 64-bit Linux struct dirent and struct dirent64 have the same layout. */
_Static_assert(sizeof(struct dirent) == sizeof(struct dirent64), "dirent layouts differ");

struct dirent *readdir(DIR *dir) {
  dp_init();
  struct dp_dir *d = ours(dir);
  if (d == NULL) return real_readdir(dir);
  return d->pos < d->count ? (struct dirent *)&d->entries[d->pos++] : NULL;
}

static void next_into(struct dp_dir *d, struct dirent64 *entry, struct dirent64 **result) {
  if (d->pos < d->count) {
    *entry = d->entries[d->pos++];
    *result = entry;
  } else {
    *result = NULL;
  }
}

int readdir64_r(DIR *dir, struct dirent64 *entry, struct dirent64 **result) {
  dp_init();
  struct dp_dir *d = ours(dir);
  if (d == NULL) return real_readdir64_r ? real_readdir64_r(dir, entry, result) : ENOSYS;
  next_into(d, entry, result);
  return 0;
}

int readdir_r(DIR *dir, struct dirent *entry, struct dirent **result) {
  dp_init();
  struct dp_dir *d = ours(dir);
  if (d == NULL) return real_readdir_r ? real_readdir_r(dir, entry, result) : ENOSYS;
  next_into(d, (struct dirent64 *)entry, (struct dirent64 **)result);
  return 0;
}

int closedir(DIR *dir) {
  dp_init();
  pthread_mutex_lock(&lock);
  struct dp_dir **link = &registry;
  while (*link != NULL && (DIR *)*link != dir) link = &(*link)->next;
  struct dp_dir *d = *link;
  if (d != NULL) *link = d->next;
  pthread_mutex_unlock(&lock);
  if (d == NULL) return real_closedir(dir);
  free(d->entries);
  free(d);
  return 0;
}

int dirfd(DIR *dir) {
  dp_init();
  if (ours(dir) == NULL) return real_dirfd(dir);
  errno = ENOTSUP;
  return -1;
}

void rewinddir(DIR *dir) {
  dp_init();
  struct dp_dir *d = ours(dir);
  if (d == NULL) real_rewinddir(dir);
  else d->pos = 0;
}

long telldir(DIR *dir) {
  dp_init();
  struct dp_dir *d = ours(dir);
  return d == NULL ? real_telldir(dir) : (long)d->pos;
}

void seekdir(DIR *dir, long pos) {
  dp_init();
  struct dp_dir *d = ours(dir);
  if (d == NULL) real_seekdir(dir, pos);
  else if (pos >= 0 && (size_t)pos <= d->count) d->pos = (size_t)pos;
}

typedef int (*dp_filter)(const struct dirent64 *);
typedef int (*dp_compar)(const struct dirent64 **, const struct dirent64 **);

/* Casts between function pointer types go through void (*)(void), which the compiler accepts as deliberate. */
#define DP_FN_CAST(type, fn) ((type)(void (*)(void))(fn))

/* scandir over a remote listing, each entry malloc'd on its own as callers free them one by one.
 * Returns the count, -1 with errno, or DP_SCAN_LOCAL to run libc's scandir on *use. */
#define DP_SCAN_LOCAL (-2)
static int scan_remote(const char *path, struct dirent64 ***out, dp_filter filter, dp_compar compar, char **reply, const char **use) {
  struct dirent64 *entries;
  size_t count;
  int r = list_remote(path, &entries, &count, reply, use);
  if (r <= 0) return r == 0 ? DP_SCAN_LOCAL : -1;
  struct dirent64 **list = malloc((count ? count : 1) * sizeof *list);
  size_t kept = 0;
  for (size_t i = 0; list != NULL && i < count; i++) {
    if (filter != NULL && !filter(&entries[i])) continue;
    struct dirent64 *copy = malloc(sizeof *copy);
    if (copy == NULL) break;
    *copy = entries[i];
    list[kept++] = copy;
  }
  free(entries);
  if (list == NULL) {
    errno = ENOMEM;
    return -1;
  }
  if (compar != NULL) qsort(list, kept, sizeof *list, DP_FN_CAST(int (*)(const void *, const void *), compar));
  *out = list;
  return (int)kept;
}

int scandir64(const char *path, struct dirent64 ***out, dp_filter filter, dp_compar compar) {
  dp_init();
  if (!dp_enter()) return real_scandir64(path, out, filter, compar);
  char *reply;
  const char *use;
  int r = scan_remote(path, out, filter, compar, &reply, &use);
  if (r == DP_SCAN_LOCAL) r = real_scandir64(use, out, filter, compar);
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return r;
}

int scandir(const char *path, struct dirent ***out, int (*filter)(const struct dirent *), int (*compar)(const struct dirent **, const struct dirent **)) {
  dp_init();
  if (!dp_enter()) return real_scandir(path, out, filter, compar);
  char *reply;
  const char *use;
  int r = scan_remote(path, (struct dirent64 ***)out, DP_FN_CAST(dp_filter, filter), DP_FN_CAST(dp_compar, compar), &reply, &use);
  if (r == DP_SCAN_LOCAL) r = real_scandir(use, out, filter, compar);
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return r;
}
