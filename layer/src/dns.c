/* DNS hooks: getaddrinfo and gethostbyname* answered with the target's resolution; numeric hosts stay with libc. */
#define _GNU_SOURCE
#include "layer.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Lists the layer built, so freeaddrinfo frees them the way they were made. */
struct dp_ai_list {
  struct addrinfo *head;
  struct dp_ai_list *next;
};
static struct dp_ai_list *lists;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* fork() holds the lock, so a child never inherits it taken by another thread and hangs in its first freeaddrinfo. */
static void hold(void) { pthread_mutex_lock(&lock); }
static void release(void) { pthread_mutex_unlock(&lock); }
__attribute__((constructor)) static void fork_safe(void) { pthread_atfork(hold, release, release); }

static int is_numeric(const char *node) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, node, buf) == 1 || inet_pton(AF_INET6, node, buf) == 1;
}

/* 1: addresses in *addrs (*count of them) and canonical name in *canon (all inside *reply); 0: local; <0: EAI code. */
static int resolve_remote(const char *name, int family, int socktype, int protocol, int flags, char **reply, const struct dp_addr **addrs, uint32_t *count, const char **canon) {
  struct dp_gai_req req = {family, socktype, protocol, flags};
  uint32_t len;
  int status = dp_call_agent(DP_OP_GETADDRINFO, &req, sizeof req, name, strlen(name) + 1, reply, &len);
  if (status == DP_LOCAL) return 0;
  if (status < 0) return status;
  if (len < 4) return EAI_FAIL;
  memcpy(count, *reply, 4);
  if (4 + (uint64_t)*count * sizeof(struct dp_addr) >= len) return EAI_FAIL;
  *addrs = (const struct dp_addr *)(*reply + 4);
  *canon = *reply + 4 + *count * sizeof(struct dp_addr);
  return 1;
}

/* The port a service name means, found by libc with a numeric host so no lookup happens. */
static int service_port(const char *service, const struct addrinfo *hints, uint16_t *port) {
  *port = 0;
  if (service == NULL) return 0;
  struct addrinfo h = {.ai_flags = AI_NUMERICHOST, .ai_socktype = hints ? hints->ai_socktype : 0, .ai_protocol = hints ? hints->ai_protocol : 0};
  struct addrinfo *res;
  int r = REAL(getaddrinfo)("127.0.0.1", service, &h, &res);
  if (r != 0) return r;
  *port = ((struct sockaddr_in *)res->ai_addr)->sin_port;
  REAL(freeaddrinfo)(res);
  return 0;
}

static struct addrinfo *make_entry(const struct dp_addr *a, uint16_t port, int socktype, int protocol) {
  struct addrinfo *ai = calloc(1, sizeof *ai + sizeof(struct sockaddr_in6));
  if (ai == NULL) return NULL;
  ai->ai_socktype = socktype;
  ai->ai_protocol = protocol;
  ai->ai_addr = (struct sockaddr *)(ai + 1);
  if (a->family == AF_INET) {
    struct sockaddr_in *sin = (struct sockaddr_in *)ai->ai_addr;
    sin->sin_family = AF_INET;
    sin->sin_port = port;
    memcpy(&sin->sin_addr, a->addr, 4);
    ai->ai_family = AF_INET;
    ai->ai_addrlen = sizeof *sin;
  } else {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ai->ai_addr;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = port;
    memcpy(&sin6->sin6_addr, a->addr, 16);
    ai->ai_family = AF_INET6;
    ai->ai_addrlen = sizeof *sin6;
  }
  return ai;
}

static void free_entries(struct addrinfo *ai) {
  while (ai != NULL) {
    struct addrinfo *next = ai->ai_next;
    free(ai->ai_canonname);
    free(ai);
    ai = next;
  }
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
  dp_init();
  if (node == NULL || (hints && (hints->ai_flags & AI_NUMERICHOST)) || is_numeric(node)) return REAL(getaddrinfo)(node, service, hints, res);
  if (!dp_enter()) return REAL(getaddrinfo)(node, service, hints, res);
  int family = hints ? hints->ai_family : AF_UNSPEC;
  int socktype = hints ? hints->ai_socktype : 0;
  int protocol = hints ? hints->ai_protocol : 0;
  char *reply = NULL;
  const struct dp_addr *addrs;
  uint32_t count;
  const char *canon;
  int r = resolve_remote(node, family, socktype, protocol, hints ? hints->ai_flags : 0, &reply, &addrs, &count, &canon);
  uint16_t port = 0;
  if (r == 1) {
    int sr = service_port(service, hints, &port);
    if (sr != 0) r = sr;
  }
  if (r == 0) {
    r = REAL(getaddrinfo)(node, service, hints, res);
  } else if (r == 1) {
    /* As glibc does: with no socket type asked for, one entry per type. */
    static const int kinds[3][2] = {{SOCK_STREAM, IPPROTO_TCP}, {SOCK_DGRAM, IPPROTO_UDP}, {SOCK_RAW, 0}};
    struct addrinfo *head = NULL, **tail = &head;
    r = 0;
    for (uint32_t i = 0; i < count && r == 0; i++) {
      if (family != AF_UNSPEC && (int)addrs[i].family != family) continue;
      for (int k = 0; k < 3; k++) {
        if (socktype != 0 && socktype != kinds[k][0]) continue;
        struct addrinfo *ai = make_entry(&addrs[i], port, kinds[k][0], protocol ? protocol : kinds[k][1]);
        if (ai == NULL) {
          r = EAI_MEMORY;
          break;
        }
        *tail = ai;
        tail = &ai->ai_next;
      }
    }
    if (r == 0 && head == NULL) r = EAI_NONAME;
    if (r == 0 && hints && (hints->ai_flags & AI_CANONNAME)) head->ai_canonname = strdup(canon[0] ? canon : node);
    struct dp_ai_list *entry = r == 0 ? malloc(sizeof *entry) : NULL;
    if (r == 0 && entry == NULL) r = EAI_MEMORY;
    if (r == 0) {
      pthread_mutex_lock(&lock);
      *entry = (struct dp_ai_list){head, lists};
      lists = entry;
      pthread_mutex_unlock(&lock);
      *res = head;
    } else {
      free_entries(head);
    }
  }
  int saved = errno;
  dp_free(reply);
  dp_leave();
  errno = saved;
  return r;
}

void freeaddrinfo(struct addrinfo *ai) {
  dp_init();
  pthread_mutex_lock(&lock);
  struct dp_ai_list **link = &lists;
  while (*link != NULL && (*link)->head != ai) link = &(*link)->next;
  struct dp_ai_list *entry = *link;
  if (entry != NULL) *link = entry->next;
  pthread_mutex_unlock(&lock);
  if (entry == NULL) {
    REAL(freeaddrinfo)(ai);
    return;
  }
  free(entry);
  free_entries(ai);
}

/* Lays a hostent out in the caller's buffer. Returns 0, ERANGE, or a netdb error in *herr (-1 then). */
static int fill_hostent(const char *name, int af, struct hostent *he, char *buf, size_t buflen, int *herr) {
  char *reply = NULL;
  const struct dp_addr *addrs;
  uint32_t count;
  const char *canon;
  int r = resolve_remote(name, af, SOCK_STREAM, 0, 0, &reply, &addrs, &count, &canon);
  if (r <= 0) {
    dp_free(reply);
    if (r == 0) return 1;
    *herr = r == EAI_AGAIN ? TRY_AGAIN : r == EAI_NODATA ? NO_DATA : HOST_NOT_FOUND;
    return -1;
  }
  size_t alen = af == AF_INET6 ? 16 : 4;
  size_t n = 0;
  for (uint32_t i = 0; i < count; i++) n += (int)addrs[i].family == af;
  const char *official = canon[0] ? canon : name;
  size_t need = (n + 1) * sizeof(char *) + sizeof(char *) + n * alen + strlen(official) + 1 + sizeof(char *);
  if (need > buflen) {
    dp_free(reply);
    return ERANGE;
  }
  if (n == 0) {
    dp_free(reply);
    *herr = NO_DATA;
    return -1;
  }
  char **addr_list = (char **)buf;
  char **aliases = addr_list + n + 1;
  char *data = (char *)(aliases + 1);
  size_t j = 0;
  for (uint32_t i = 0; i < count; i++) {
    if ((int)addrs[i].family != af) continue;
    memcpy(data, addrs[i].addr, alen);
    addr_list[j++] = data;
    data += alen;
  }
  addr_list[j] = NULL;
  aliases[0] = NULL;
  strcpy(data, official);
  *he = (struct hostent){.h_name = data, .h_aliases = aliases, .h_addrtype = af, .h_length = (int)alen, .h_addr_list = addr_list};
  dp_free(reply);
  return 0;
}

int gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf, size_t buflen, struct hostent **result, int *h_errnop) {
  dp_init();
  *result = NULL;
  if (name == NULL || is_numeric(name) || (af != AF_INET && af != AF_INET6) || !dp_enter()) return REAL(gethostbyname2_r)(name, af, ret, buf, buflen, result, h_errnop);
  int herr = 0;
  int r = fill_hostent(name, af, ret, buf, buflen, &herr);
  dp_leave();
  if (r == 1) return REAL(gethostbyname2_r)(name, af, ret, buf, buflen, result, h_errnop);
  if (r == 0) {
    *result = ret;
    return 0;
  }
  if (r == ERANGE) return ERANGE;
  *h_errnop = herr;
  return herr == TRY_AGAIN ? EAGAIN : 0;
}

int gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen, struct hostent **result, int *h_errnop) {
  return gethostbyname2_r(name, AF_INET, ret, buf, buflen, result, h_errnop);
}

/* One result for the process, as glibc's: these calls are not reentrant, and a thread-local buffer would cost every
 * thread's start a clear of it. */
struct hostent *gethostbyname2(const char *name, int af) {
  static struct hostent he;
  static char buf[4096];
  struct hostent *result;
  int herr = 0;
  int r = gethostbyname2_r(name, af, &he, buf, sizeof buf, &result, &herr);
  if (result == NULL) h_errno = r == ERANGE ? NETDB_INTERNAL : herr;
  return result;
}

struct hostent *gethostbyname(const char *name) { return gethostbyname2(name, AF_INET); }
