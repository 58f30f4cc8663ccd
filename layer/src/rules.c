/* The session's fast rules (made by src/config/fs-fast-rules.ts from the fs policy): paths they call local are
 * served by libc without a round trip to the proxy. Loaded once per process from the first connection's hello. */
#define _GNU_SOURCE
#include "layer.h"
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

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
static char store[DP_RULES_MAX_BYTES];

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

/* Parses the claimed store; anything malformed loads no rules, which means "ask about everything". */
void dp_rules_loaded(uint32_t hello_flags, uint32_t len, int ok) {
  if (!ok) {
    atomic_store(&state, UNSET);
    return;
  }
  size_t n = 0;
  for (uint32_t off = 0; off < len; n++) {
    struct dp_rule head;
    if (n == DP_RULES_MAX || len - off < sizeof head) goto bad;
    memcpy(&head, store + off, sizeof head);
    off += (uint32_t)sizeof head;
    if (head.len > len - off || head.match < DP_MATCH_EXACT || head.match > DP_MATCH_CONTAINS || (head.verdict != DP_RULE_LOCAL && head.verdict != DP_RULE_ASK)) goto bad;
    rules[n] = (struct rule){head.match, head.verdict, head.len, store + off};
    off += head.len;
  }
  count = n;
  flags = hello_flags;
  atomic_store_explicit(&state, LOADED, memory_order_release);
  dp_log("hello: %zu fast rules", n);
  return;
bad:
  count = 0;
  flags = 0;
  atomic_store_explicit(&state, LOADED, memory_order_release);
  dp_log("hello: malformed fast rules; asking the proxy about every path");
}

static inline char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + ('a' - 'A')) : c; }

/* Rule texts are lower case; a path is compared as it is, letter by letter. */
static int same(const char *path, const char *text, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (lower(path[i]) != text[i]) return 0;
  }
  return 1;
}

/* A path is checked against every rule before the one that decides: the byte after the leading slash of a prefix,
 * and the last byte of a suffix, reject most of them at once. */
static int matches(const struct rule *r, const char *path, size_t n) {
  size_t len = r->len;
  switch (r->match) {
  case DP_MATCH_EXACT: return n == len && same(path, r->text, n);
  case DP_MATCH_PREFIX: return n >= len && (len < 2 || lower(path[1]) == r->text[1]) && same(path, r->text, len);
  case DP_MATCH_SUFFIX: return n >= len && (len == 0 || lower(path[n - 1]) == r->text[len - 1]) && same(path + n - len, r->text, len);
  default:
    for (size_t i = 0; i + len <= n; i++) {
      if (same(path + i, r->text, len)) return 1;
    }
    return 0;
  }
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

int dp_loopback_tcp_local(void) { return atomic_load_explicit(&state, memory_order_acquire) == LOADED && (flags & DP_HELLO_LOOPBACK_TCP_LOCAL); }

int dp_rules_local(const char *path) {
  /* The rules come with a connection's hello: a process's first call connects before it looks at them, so that
   * call too can stay local. */
  if (atomic_load_explicit(&state, memory_order_acquire) == UNSET) dp_connect_early();
  if (atomic_load_explicit(&state, memory_order_acquire) != LOADED || count == 0) return 0;
  size_t n = plain_length(path);
  if (n == 0) return 0;
  for (size_t i = 0; i < count; i++) {
    if (matches(&rules[i], path, n)) return rules[i].verdict == DP_RULE_LOCAL;
  }
  return 0;
}
