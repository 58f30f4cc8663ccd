/* The session's fast rules (made by src/config/fs-fast-rules.ts from the fs policy): paths they call local are
 * served by libc without a round trip to the proxy. Loaded once per process: at load from the file the proxy wrote
 * next to its socket, or else from the first connection's hello. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

struct rule {
  uint16_t match, verdict;
  uint32_t len;
  const char *text;
};

enum { UNSET, LOADING, LOADED };
static atomic_int state;
static struct rule rules[DP_RULES_MAX];
static size_t count;
static uint32_t flags;
static uint32_t handover_pid;
static uint32_t root_pid;
static uint32_t network_pid;
static uint64_t target_start;
static char store[DP_RULES_MAX_BYTES];

/* The rules a path can match, by what rejects most of them at once: exact and prefix rules in the list of the byte
 * after their leading slash, suffix rules in the list of their last byte, and the rest (substrings, texts too short
 * for either byte) in one list tried for every path. Each list keeps the session's order, so the earliest first match
 * of the three lists a path picks is the rule that decides. */
enum { BY_FIRST = 0, BY_LAST = 128, ALWAYS = 256, LISTS };
static uint16_t list_start[LISTS + 1];
static uint16_t listed[DP_RULES_MAX];

/* A child forked while another thread was loading would wait for it forever; it loads again instead. */
static void after_fork_child(void) {
  int loading = LOADING;
  atomic_compare_exchange_strong(&state, &loading, UNSET);
}
__attribute__((constructor)) static void fork_safe(void) { pthread_atfork(NULL, NULL, after_fork_child); }

char *dp_rules_claim(uint32_t len) {
  int unset = UNSET;
  if (len > sizeof store || !atomic_compare_exchange_strong(&state, &unset, LOADING)) return NULL;
  return store;
}

static unsigned list_of(const struct rule *r) {
  if ((r->match == DP_MATCH_EXACT || r->match == DP_MATCH_PREFIX) && r->len >= 2) return BY_FIRST + (unsigned char)r->text[1];
  if (r->match == DP_MATCH_SUFFIX && r->len >= 1) return BY_LAST + (unsigned char)r->text[r->len - 1];
  return ALWAYS;
}

/* A counting sort of the rules' numbers into their lists, stable so each list keeps the session's order. */
static void index_rules(void) {
  uint16_t fill[LISTS] = {0};
  memset(list_start, 0, sizeof list_start);
  for (size_t i = 0; i < count; i++) list_start[list_of(&rules[i]) + 1]++;
  for (unsigned l = 0; l < LISTS; l++) list_start[l + 1] = (uint16_t)(list_start[l + 1] + list_start[l]);
  for (size_t i = 0; i < count; i++) {
    unsigned l = list_of(&rules[i]);
    listed[list_start[l] + fill[l]++] = (uint16_t)i;
  }
}

int dp_rules_from_file(const char *path) {
  int saved = errno;
  int fd = REAL(openat)(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
  int unset = UNSET, loaded = 0;
  if (fd >= 0 && atomic_compare_exchange_strong(&state, &unset, LOADING)) {
    struct dp_hello_resp head = {0};
    char more;
    /* One read: a regular file reads whole up to the buffer's end; a byte past the store says it is one this layer
     * cannot read whole. */
    struct iovec parts[] = {{&head, sizeof head}, {store, sizeof store}, {&more, 1}};
    ssize_t got;
    do got = readv(fd, parts, 3);
    while (got < 0 && errno == EINTR);
    loaded = got >= (ssize_t)sizeof head && (size_t)got <= sizeof head + sizeof store;
    dp_rules_loaded(DP_FAST_PATH_FILE, &head, loaded ? (uint32_t)((size_t)got - sizeof head) : 0, loaded);
  }
  if (fd >= 0) REAL(close)(fd);
  errno = saved;
  return loaded;
}

/* Parses the claimed store; anything malformed loads no rules, which means "ask about everything". */
void dp_rules_loaded(const char *from, const struct dp_hello_resp *hello, uint32_t len, int ok) {
  if (!ok) {
    atomic_store(&state, UNSET);
    return;
  }
  handover_pid = hello->handover_pid;
  root_pid = hello->root_pid;
  network_pid = hello->network_pid;
  target_start = hello->target_start;
  size_t n = 0;
  for (uint32_t off = 0; off < len; n++) {
    struct dp_rule head;
    if (n == DP_RULES_MAX || len - off < sizeof head) goto bad;
    memcpy(&head, store + off, sizeof head);
    off += (uint32_t)sizeof head;
    if (head.len > len - off || head.match < DP_MATCH_EXACT || head.match > DP_MATCH_CONTAINS || head.verdict < DP_RULE_LOCAL || head.verdict > DP_RULE_REMOTE) goto bad;
    for (uint32_t i = 0; i < head.len; i++) {
      /* Lower-case ASCII, as the policy sends them: the lists are indexed by byte. */
      unsigned char c = (unsigned char)store[off + i];
      if (c >= 0x80 || (c >= 'A' && c <= 'Z')) goto bad;
    }
    rules[n] = (struct rule){head.match, head.verdict, head.len, store + off};
    off += head.len;
  }
  count = n;
  index_rules();
  flags = hello->flags;
  atomic_store_explicit(&state, LOADED, memory_order_release);
  dp_log("%s: %zu fast rules", from, n);
  return;
bad:
  count = 0;
  flags = 0;
  atomic_store_explicit(&state, LOADED, memory_order_release);
  dp_log("%s: malformed fast rules; asking the proxy about every path", from);
}

static inline char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + ('a' - 'A')) : c; }

/* Rule texts are lower case; a path is compared as it is, letter by letter. */
static int same(const char *path, const char *text, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (lower(path[i]) != text[i]) return 0;
  }
  return 1;
}

static int matches(const struct rule *r, const char *path, size_t n) {
  size_t len = r->len;
  switch (r->match) {
  case DP_MATCH_EXACT: return n == len && same(path, r->text, n);
  case DP_MATCH_PREFIX: return n >= len && same(path, r->text, len);
  case DP_MATCH_SUFFIX: return n >= len && same(path + n - len, r->text, len);
  default:
    if (len == 0) return 1;
    for (size_t i = 0; i + len <= n; i++) {
      if (lower(path[i]) == r->text[0] && same(path + i, r->text, len)) return 1;
    }
    return 0;
  }
}

/* The number of the first rule of list l before `before` that matches, or `before`. */
static size_t first_match(unsigned l, size_t before, const char *path, size_t n) {
  for (unsigned i = list_start[l]; i < list_start[l + 1] && listed[i] < before; i++) {
    if (matches(&rules[listed[i]], path, n)) return listed[i];
  }
  return before;
}

/* Only a path the policy would see unchanged: absolute, ASCII (the policy's regexes fold ASCII case only among
 * ASCII), and normalized (no empty, "." or ".." component but a last "."), since the policy normalizes before it
 * decides. Returns the length to match, or 0. */
static size_t plain_length(const char *path) {
  if (path[0] != '/') return 0;
  size_t n = 0;
  for (; path[n] != '\0'; n++) {
    unsigned char c = (unsigned char)path[n];
    if (c >= 0x80) return 0;
    if (c == '/') {
      const char *next = path + n + 1;
      /* A last "." component is dropped, as the policy's normalize does ("$PWD/." is how shells check a directory). */
      if (n > 0 && next[0] == '.' && next[1] == '\0') return n;
      if (next[0] == '/' || (next[0] == '.' && (next[1] == '/' || next[1] == '\0' || (next[1] == '.' && (next[2] == '/' || next[2] == '\0'))))) return 0;
    }
  }
  return n;
}

int dp_rules_ready(void) { return atomic_load_explicit(&state, memory_order_acquire) == LOADED; }

int dp_remote_writes(void) { return !dp_rules_ready() || (flags & DP_HELLO_REMOTE_WRITES); }

uint32_t dp_handover_pid(void) { return atomic_load_explicit(&state, memory_order_acquire) == LOADED ? handover_pid : 0; }

/* The target's pids only while the process they name lives: one that exited leaves its root and network to nobody,
 * or to whatever process takes its PID next. */
static uint32_t while_alive(uint32_t pid) { return pid != 0 && dp_target_alive(pid, target_start) ? pid : 0; }

uint32_t dp_root_pid(void) { return atomic_load_explicit(&state, memory_order_acquire) == LOADED ? while_alive(root_pid) : 0; }

uint32_t dp_network_pid(void) { return atomic_load_explicit(&state, memory_order_acquire) == LOADED ? while_alive(network_pid) : 0; }

int dp_tracing(void) { return atomic_load_explicit(&state, memory_order_acquire) == LOADED && (flags & DP_HELLO_TRACE); }
/* Asked at every datagram: the rules alone, with no check of the target's process (a system call), which a socket's
 * move there makes (dp_network_pid); one already there sends as addressed either way. */
int dp_udp_in_network(void) { return dp_rules_ready() && (flags & DP_HELLO_UDP_IN_NETWORK) && network_pid != 0; }
int dp_agent_dns(void) { return atomic_load_explicit(&state, memory_order_acquire) == LOADED && (flags & DP_HELLO_AGENT_DNS); }
int dp_loopback_tcp_local(void) { return atomic_load_explicit(&state, memory_order_acquire) == LOADED && (flags & DP_HELLO_LOOPBACK_TCP_LOCAL); }

int dp_rules_verdict(const char *path) {
  /* The rules come with a connection's hello: a process's first call connects before it looks at them, so that
   * call too can stay local. */
  if (atomic_load_explicit(&state, memory_order_acquire) == UNSET) dp_connect_early();
  if (atomic_load_explicit(&state, memory_order_acquire) != LOADED || count == 0) return DP_RULE_ASK;
  size_t n = plain_length(path);
  if (n == 0) return DP_RULE_ASK;
  size_t first = count;
  if (n >= 2) first = first_match(BY_FIRST + (unsigned char)lower(path[1]), first, path, n);
  first = first_match(BY_LAST + (unsigned char)lower(path[n - 1]), first, path, n);
  first = first_match(ALWAYS, first, path, n);
  return first < count ? rules[first].verdict : DP_RULE_ASK;
}
