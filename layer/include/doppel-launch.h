/* The launch wire: how bin/doppel's trampoline (the layer preloaded into /usr/bin/env, layer/src/launch.c) asks a warm
 * session host (src/warm/) to start a program in its session. The TypeScript side is src/warm/launch-wire.ts; change
 * both in the same commit (test/unit/launch-wire.test.ts checks sizes). Little-endian, on a Unix stream socket. */
#ifndef DOPPEL_LAUNCH_H
#define DOPPEL_LAUNCH_H

#include <stdint.h>

/* Set by bin/doppel: the warm directory whose launch sockets the layer asks, in the trampoline only. */
#define DP_ENV_LAUNCH "DOPPEL_LAUNCH"
/* LD_PRELOAD as it was before bin/doppel put the layer there ("" for none): restored before anything else. */
#define DP_ENV_LAUNCH_PRELOAD "DOPPEL_LAUNCH_PRELOAD"
/* The host sockets in that directory: DP_LAUNCH_PREFIX<target pid>-<target start>-<host pid>.sock */
#define DP_LAUNCH_PREFIX "launch-"
#define DP_LAUNCH_MAGIC 0x314c5044u /* "DPL1" */
/* Requests and answers longer than this are broken. */
#define DP_LAUNCH_MAX (16u << 20)

/* Request: header, then the working directory NUL, `argc` strings NUL (the trampoline's argv from [1]: the command that
 * runs the CLI), `envc` strings NUL (the environment, LD_PRELOAD restored). `len` counts what follows the header. */
struct dp_launch_req {
  uint32_t magic;
  uint32_t len;
  int32_t pid;
  uint32_t argc;
  uint32_t envc;
  uint32_t reserved;
};

enum dp_launch_status {
  DP_LAUNCH_RUN = 0, /* payload: progress text NUL (may be empty), executable NUL, argc strings NUL, envc strings NUL */
  DP_LAUNCH_NO = 1,  /* not this host's: ask the next one, or run the CLI */
};

/* Answer: header, then `len` payload bytes. */
struct dp_launch_resp {
  uint32_t len;
  int32_t status;
  uint32_t argc;
  uint32_t envc;
};

/* After DP_LAUNCH_RUN, a failed execve is one byte on the socket, then the CLI runs instead; a successful one closes
 * the socket (it is close-on-exec). */
#define DP_LAUNCH_EXEC_FAILED 'F'

#endif
