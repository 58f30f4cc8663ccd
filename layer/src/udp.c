/* Outgoing UDP: datagrams to a remote destination go to the proxy's loopback relay for it instead, and datagrams
 * from a relay are reported as coming from its destination; the program keeps its own kernel socket. Where every
 * datagram to a non-loopback address goes to the target (DP_HELLO_UDP_IN_NETWORK), a socket that connects or first
 * sends to one is made in the target's network instead, as a TCP one is (handover.c), unless the program tied it to this
 * machine (an address or port it bound, a datagram to loopback): no relay, and the kernel's addresses. */
#define _GNU_SOURCE
#include "layer.h"
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>

/* The proxy's answers, which hold for the session: each destination's way (local, or its relay), and each relay's
 * destination. Insert-only hash tables: a slot is claimed once and never changed, so lookups take no lock, a signal
 * handler or a fork cannot catch one half-held, and a slot being written is skipped. A destination that finds no
 * free slot near its hash is simply asked about again next time. */
struct slot {
  atomic_int state; /* 0 free, 1 being written, 2 ready */
  int local;
  struct dp_addr key, value;
};
#define DP_DESTINATIONS 2048
#define DP_RELAYS 1024
#define DP_PROBES 32
static struct slot destinations[DP_DESTINATIONS];
static struct slot relays[DP_RELAYS];
static atomic_int have_relays;

/* One form for comparisons: an IPv4-mapped IPv6 address is the IPv4 address. */
static int to_key(const struct sockaddr *sa, socklen_t len, struct dp_addr *out) {
  if (sa == NULL || !dp_to_addr(sa, len, out)) return 0;
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (out->family == AF_INET6 && memcmp(out->addr, mapped, sizeof mapped) == 0) {
    out->family = AF_INET;
    memmove(out->addr, out->addr + 12, 4);
    memset(out->addr + 4, 0, 12);
  }
  return 1;
}

static uint32_t hash(const struct dp_addr *a) {
  const uint8_t *p = (const uint8_t *)a;
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < sizeof *a; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static const struct slot *lookup(const struct slot *table, size_t size, const struct dp_addr *key) {
  uint32_t h = hash(key);
  for (size_t i = 0; i < DP_PROBES; i++) {
    const struct slot *s = &table[(h + i) & (size - 1)];
    int state = atomic_load_explicit(&s->state, memory_order_acquire);
    if (state == 0) return NULL;
    if (state == 2 && memcmp(&s->key, key, sizeof *key) == 0) return s;
  }
  return NULL;
}

static void insert(struct slot *table, size_t size, const struct dp_addr *key, int local, const struct dp_addr *value) {
  uint32_t h = hash(key);
  for (size_t i = 0; i < DP_PROBES; i++) {
    struct slot *s = &table[(h + i) & (size - 1)];
    int free_slot = 0;
    if (atomic_compare_exchange_strong(&s->state, &free_slot, 1)) {
      s->key = *key;
      s->local = local;
      if (value != NULL) s->value = *value;
      atomic_store_explicit(&s->state, 2, memory_order_release);
      return;
    }
    if (free_slot == 2 && memcmp(&s->key, key, sizeof *key) == 0) return;
  }
}

static int is_datagram(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_DGRAM;
}

static int way_of(int fd) {
  struct dp_fdinfo info;
  return dp_fd_get(fd, &info) ? info.udp : DP_UDP_UNSEEN;
}

static void set_way(int fd, int way) {
  struct dp_fdinfo info;
  if (!dp_fd_get(fd, &info)) memset(&info, 0, sizeof info);
  info.udp = way;
  dp_fd_set(fd, &info);
}

/* Makes the program's datagram socket in the target's network, where every datagram to a non-loopback address goes:
 * 1 when it is there; 0 when it stays here (and so from now on). */
static int move_to_network(int fd, int way) {
  if (!dp_enter()) return 0;
  /* A target that has exited leaves the socket here, relayed. */
  uint32_t pid = dp_network_pid();
  int r = pid != 0 ? dp_move_datagram(fd, pid, way == DP_UDP_ANY_PORT) : -ESRCH;
  dp_leave();
  if (r < 0) dp_log("udp: the socket stays here, its remote datagrams relayed (errno %d)", -r);
  set_way(fd, r < 0 ? DP_UDP_HERE : DP_UDP_IN_NETWORK);
  return r == 0;
}

int dp_udp_bind(int fd, const struct sockaddr *addr, socklen_t len, const struct dp_addr *requested) {
  int r = REAL(bind)(fd, addr, len);
  if (r == 0 && requested->port == 0 && dp_is_any(requested)) {
    int saved = errno;
    set_way(fd, DP_UDP_ANY_PORT);
    errno = saved;
  }
  return r;
}

/* Where a datagram from fd to addr goes: 0 as addressed, 1 to *via instead, or -1 with errno set. */
static int route(int fd, const struct sockaddr *addr, socklen_t len, struct sockaddr_storage *via, socklen_t *via_len) {
  struct dp_addr remote;
  if (!to_key(addr, len, &remote)) return 0;
  if (dp_udp_in_network()) {
    int way = way_of(fd), local = dp_is_loopback(&remote);
    /* A socket made in the target's network sends as addressed: to the target's addresses, never through a relay. For
     * this machine's loopback it comes back here, relayed from then on, unless it is connected there. */
    if (way == DP_UDP_IN_NETWORK) {
      if (!local) return 0;
      struct sockaddr_storage peer;
      socklen_t peer_len = sizeof peer;
      int back = REAL(getpeername)(fd, (struct sockaddr *)&peer, &peer_len) == 0 ? -EISCONN : dp_remake_socket_here(fd);
      if (back < 0) {
        dp_log("udp: a socket in the target's network cannot reach this machine's loopback (errno %d)", -back);
        errno = ENETUNREACH;
        return -1;
      }
      dp_log("udp: the socket came back here for a datagram to loopback");
      set_way(fd, DP_UDP_HERE);
      way = DP_UDP_HERE;
    }
    /* Its first datagram to a remote address takes the socket there, unless it has talked to this machine's loopback,
     * which it would then lose. */
    if (way != DP_UDP_HERE && is_datagram(fd)) {
      uint64_t since = dp_trace_clock();
      if (local) set_way(fd, DP_UDP_HERE);
      else if (move_to_network(fd, way)) {
        dp_traced_address("udpSend", addr, len, since);
        return 0;
      }
    }
  }
  const struct slot *known = lookup(destinations, DP_DESTINATIONS, &remote);
  if (known != NULL && known->local) return 0;
  /* A TCP socket's sendto (TCP Fast Open) names a destination too. */
  if (!is_datagram(fd)) return 0;
  struct dp_addr relay;
  if (known != NULL) {
    relay = known->value;
  } else {
    if (!dp_enter()) return 0;
    struct dp_udp_route_req req = {.remote = remote};
    char *reply = NULL;
    uint32_t reply_len;
    int status = dp_call(DP_OP_UDP_ROUTE, &req, sizeof req, NULL, 0, &reply, &reply_len);
    int complete = status == DP_OK && reply_len >= sizeof(struct dp_udp_route_resp);
    if (complete) memcpy(&relay, reply, sizeof relay);
    dp_free(reply);
    dp_leave();
    if (status < 0 || (status == DP_OK && !complete)) {
      errno = status < 0 ? -status : EIO;
      return -1;
    }
    if (status != DP_OK) {
      insert(destinations, DP_DESTINATIONS, &remote, 1, NULL);
      dp_bypassed(DP_BYPASS_POLICY, "udp");
      return 0;
    }
    /* The relay first, so a reply that comes before the next send is already recognised. */
    insert(relays, DP_RELAYS, &relay, 0, &remote);
    atomic_store(&have_relays, 1);
    insert(destinations, DP_DESTINATIONS, &remote, 0, &relay);
  }
  *via_len = dp_from_addr(&relay, addr->sa_family, via);
  return 1;
}

void dp_udp_dissolve(int fd) {
  int way = way_of(fd);
  dp_fd_forget(fd);
  if (way != DP_UDP_UNSEEN) set_way(fd, way);
}

/* After a receive: a datagram from a relay came from its destination. */
static void unrelay(struct sockaddr_storage *addr, socklen_t *len) {
  struct dp_addr from;
  if (!to_key((struct sockaddr *)addr, *len, &from)) return;
  const struct slot *r = lookup(relays, DP_RELAYS, &from);
  if (r != NULL) *len = dp_from_addr(&r->value, addr->ss_family, addr);
}

/* connect() where every datagram to a non-loopback address goes to the target: 1 when settled here (*r is connect's
 * result), 0 to route it as any other. */
static int connect_in_network(int fd, const struct sockaddr *addr, socklen_t len, int *r) {
  struct dp_addr remote;
  if (!dp_udp_in_network() || !to_key(addr, len, &remote)) return 0;
  int local = dp_is_loopback(&remote), way = way_of(fd);
  if (way == DP_UDP_IN_NETWORK) {
    /* Connected again: there it stays for a remote destination; a loopback one needs a socket here again. */
    int back = local ? dp_remake_socket_here(fd) : 0;
    if (back < 0) {
      errno = -back;
      *r = -1;
      return 1;
    }
    if (!local) {
      *r = REAL(connect)(fd, addr, len);
      return 1;
    }
    return 0;
  }
  uint64_t since = dp_trace_clock();
  if (local || way == DP_UDP_HERE || !move_to_network(fd, way)) return 0;
  dp_log("udp: every datagram goes to the target: not asked");
  *r = REAL(connect)(fd, addr, len);
  int saved = errno;
  dp_traced_address("udpConnect", addr, len, since);
  errno = saved;
  return 1;
}

int dp_udp_connect(int fd, const struct sockaddr *addr, socklen_t len) {
  int r;
  if (connect_in_network(fd, addr, len, &r)) return r;
  /* A new connect replaces the old peer; AF_UNSPEC dissolves it. */
  dp_fd_forget(fd);
  struct sockaddr_storage via;
  socklen_t via_len;
  r = route(fd, addr, len, &via, &via_len);
  if (r < 0) return -1;
  if (r == 0) return REAL(connect)(fd, addr, len);
  if (REAL(connect)(fd, (struct sockaddr *)&via, via_len) < 0) return -1;
  struct dp_fdinfo info = {.has_peer = 1, .peer_len = len < sizeof info.peer ? len : sizeof info.peer};
  memcpy(&info.peer, addr, info.peer_len);
  dp_fd_set(fd, &info);
  return 0;
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr, socklen_t len) {
  dp_init();
  struct sockaddr_storage via;
  socklen_t via_len;
  int r = route(fd, addr, len, &via, &via_len);
  if (r < 0) return -1;
  return r ? REAL(sendto)(fd, buf, n, flags, (struct sockaddr *)&via, via_len) : REAL(sendto)(fd, buf, n, flags, addr, len);
}

/* 1 with copy addressed to the relay, 0 to send msg as it is, or -1 with errno set. */
static int readdress(int fd, const struct msghdr *msg, struct msghdr *copy, struct sockaddr_storage *via) {
  socklen_t via_len;
  int r = route(fd, msg->msg_name, msg->msg_namelen, via, &via_len);
  if (r <= 0) return r;
  *copy = *msg;
  copy->msg_name = via;
  copy->msg_namelen = via_len;
  return 1;
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
  dp_init();
  struct msghdr copy;
  struct sockaddr_storage via;
  int r = msg == NULL ? 0 : readdress(fd, msg, &copy, &via);
  if (r < 0) return -1;
  return REAL(sendmsg)(fd, r ? &copy : msg, flags);
}

int sendmmsg(int fd, struct mmsghdr *vec, unsigned int count, int flags) {
  dp_init();
  enum { BATCH = 32 };
  int sent = 0;
  /* In batches on the stack; each entry's length goes back to the caller's vector. */
  while (vec != NULL && (unsigned int)sent < count) {
    struct mmsghdr batch[BATCH];
    struct sockaddr_storage via[BATCH];
    unsigned int n = count - (unsigned int)sent < BATCH ? count - (unsigned int)sent : BATCH;
    for (unsigned int i = 0; i < n; i++) {
      batch[i] = vec[sent + (int)i];
      int r = readdress(fd, &vec[sent + (int)i].msg_hdr, &batch[i].msg_hdr, &via[i]);
      if (r < 0) {
        if (sent == 0 && i == 0) return -1;
        n = i;
        break;
      }
    }
    if (n == 0) break;
    int done = REAL(sendmmsg)(fd, batch, n, flags);
    if (done < 0) return sent > 0 ? sent : -1;
    for (int i = 0; i < done; i++) vec[sent + i].msg_len = batch[i].msg_len;
    sent += done;
    if ((unsigned int)done < n) break;
  }
  return sent;
}

/* Receives put the source in a whole address of ours first: the caller's buffer may be too short to recognise a relay
 * in, and must still get the destination's address, truncated as the kernel truncates. */
ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *len) {
  dp_init();
  if (addr == NULL || len == NULL || !atomic_load(&have_relays)) return REAL(recvfrom)(fd, buf, n, flags, addr, len);
  struct sockaddr_storage full;
  socklen_t full_len = sizeof full;
  ssize_t got = REAL(recvfrom)(fd, buf, n, flags, (struct sockaddr *)&full, &full_len);
  if (got < 0) return got;
  unrelay(&full, &full_len);
  dp_copy_out(&full, full_len, addr, len);
  return got;
}

ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags, struct sockaddr *addr, socklen_t *len) {
  dp_init();
  if (addr == NULL || len == NULL || !atomic_load(&have_relays)) return REAL(__recvfrom_chk)(fd, buf, n, buflen, flags, addr, len);
  struct sockaddr_storage full;
  socklen_t full_len = sizeof full;
  ssize_t got = REAL(__recvfrom_chk)(fd, buf, n, buflen, flags, (struct sockaddr *)&full, &full_len);
  if (got < 0) return got;
  unrelay(&full, &full_len);
  dp_copy_out(&full, full_len, addr, len);
  return got;
}

/* Points msg's name at `full` for a receive, and back at the caller's (filled in) after it. */
static void borrow_name(struct msghdr *msg, struct sockaddr_storage *full, void **name, socklen_t *cap) {
  *name = msg->msg_name;
  *cap = msg->msg_namelen;
  msg->msg_name = full;
  msg->msg_namelen = sizeof *full;
}

static void return_name(struct msghdr *msg, struct sockaddr_storage *full, void *name, socklen_t cap, int received) {
  socklen_t full_len = msg->msg_namelen;
  msg->msg_name = name;
  msg->msg_namelen = cap;
  if (!received) return;
  unrelay(full, &full_len);
  dp_copy_out(full, full_len, name, &msg->msg_namelen);
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
  dp_init();
  if (msg == NULL || msg->msg_name == NULL || !atomic_load(&have_relays)) return REAL(recvmsg)(fd, msg, flags);
  struct sockaddr_storage full;
  void *name;
  socklen_t cap;
  borrow_name(msg, &full, &name, &cap);
  ssize_t got = REAL(recvmsg)(fd, msg, flags);
  int saved = errno;
  return_name(msg, &full, name, cap, got >= 0);
  errno = saved;
  return got;
}

int recvmmsg(int fd, struct mmsghdr *vec, unsigned int count, int flags, struct timespec *timeout) {
  dp_init();
  if (vec == NULL || !atomic_load(&have_relays)) return REAL(recvmmsg)(fd, vec, count, flags, timeout);
  enum { BATCH = 64 };
  struct sockaddr_storage full[BATCH];
  void *names[BATCH];
  socklen_t caps[BATCH];
  /* At most a batch per call (a receive may always return fewer), so every address returned can be put right. */
  unsigned int n = count < BATCH ? count : BATCH;
  /* Entries without a name buffer are left as they are. */
  for (unsigned int i = 0; i < n; i++) {
    names[i] = NULL;
    if (vec[i].msg_hdr.msg_name != NULL) borrow_name(&vec[i].msg_hdr, &full[i], &names[i], &caps[i]);
  }
  int got = REAL(recvmmsg)(fd, vec, n, flags, timeout);
  int saved = errno;
  for (unsigned int i = 0; i < n; i++) {
    if (names[i] != NULL) return_name(&vec[i].msg_hdr, &full[i], names[i], caps[i], (int)i < got);
  }
  errno = saved;
  return got;
}
