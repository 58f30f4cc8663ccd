/* The layer's part of --trace: each remote call it settles itself (no proxy to time it) is told to the proxy, which
 * prints it among the others. */
#define _GNU_SOURCE
#include "layer.h"
#include <arpa/inet.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t dp_trace_clock(void) {
  if (!dp_tracing()) return 0;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void dp_traced(const char *call, const char *subject, uint64_t since) {
  if (since == 0) return;
  uint64_t took = dp_trace_clock() - since;
  char message[sizeof(struct dp_layer_call) + 32 + PATH_MAX];
  struct dp_layer_call head = {.ns = took > UINT32_MAX ? UINT32_MAX : (uint32_t)took};
  size_t call_len = strnlen(call, 31), subject_len = strnlen(subject, PATH_MAX - 1);
  memcpy(message, &head, sizeof head);
  char *at = message + sizeof head;
  memcpy(at, call, call_len);
  at[call_len] = '\0';
  at += call_len + 1;
  memcpy(at, subject, subject_len);
  at[subject_len] = '\0';
  dp_tell(DP_OP_LAYER_CALL, message, (size_t)(at + subject_len + 1 - message));
}

void dp_traced_address(const char *call, const struct sockaddr *sa, socklen_t len, uint64_t since) {
  if (since == 0) return;
  struct dp_addr a;
  char text[INET6_ADDRSTRLEN + 8] = "";
  char ip[INET6_ADDRSTRLEN];
  if (dp_to_addr(sa, len, &a) && inet_ntop(a.family, a.addr, ip, sizeof ip) != NULL) snprintf(text, sizeof text, "%s:%u", ip, (unsigned)a.port);
  dp_traced(call, text, since);
}
