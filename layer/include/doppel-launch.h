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
/* Beside a host's socket to be while the host starts (its CLI's marker): the trampoline waits there until it listens,
 * or until the marker is this many seconds old (then it is stale: its host was killed, and the sweep removes it). */
#define DP_LAUNCH_STARTING ".starting"
#define DP_LAUNCH_STARTING_S 3
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

/* A launch plan (src/cli/exec/launch-plan.ts): what the CLI's last start of the same request decided (the same
 * program, whatever its arguments), so that the next one starts its program before the CLI has loaded
 * (layer/src/plan.c). A plan holds only what the CLI decided; the trampoline checks that what it was decided from has
 * not changed, and the CLI, started beside the program, decides again and stops the program if its decision differs. */
/* Set by bin/doppel beside DP_ENV_LAUNCH when it started the target's agent: the directory of the plans. */
#define DP_ENV_LAUNCH_PLANS "DOPPEL_LAUNCH_PLANS"
/* Set by bin/doppel: the agent it started (src/platform/process/shell-agent.ts), left out of a plan's key. */
#define DP_ENV_EARLY_AGENT "DOPPEL_EARLY_AGENT"
/* For the CLI, when no plan was used: the file this start's plan goes to (the request's key). */
#define DP_ENV_PLAN_FILE "DOPPEL_PLAN_FILE"
/* For the CLI, when the program started from a plan: "<program pid> <listening fd> <priority> <session directory>
 * <plan file>", the priority the CLI had before the trampoline lowered it (layer/src/plan.c). */
#define DP_ENV_PLANNED "DOPPEL_PLANNED"
#define DP_PLAN_MAGIC 0x31504c44u /* "DLP1" */
/* In a plan's environment: the session's directory, made anew by each start (a 0700 `doppel-<CLI pid>-XXXXXX`). */
#define DP_PLAN_DIR_MARK "@DOPPEL_SESSION_DIR@"
/* The proxy's socket in that directory. */
#define DP_PLAN_SOCKET "layer.sock"
/* The socket on which the agent bin/doppel started answers lookups from its own start (src/agent/layer-dns.ts), in the
 * warm directory (DP_ENV_LAUNCH, where that agent listens): `early-<CLI pid>-<agent pid>` then this. A planned
 * session's DP_AGENT_DNS_SOCKET is a link to it, so that the program's first lookups need not wait for the CLI. */
#define DP_EARLY_DNS_SUFFIX ".dns.sock"

/* A plan file: header, `checks` checks, then the executable NUL, `argc` strings NUL (the program's first arguments:
 * those of the request after its program's word follow them), `envc` strings NUL, then `fast_len` bytes for the
 * session's DP_FAST_PATH_FILE (its handover pid is the started agent's). `len` counts what follows the header. */
struct dp_plan_hdr {
  uint32_t magic;
  uint32_t len;
  uint32_t checks;
  uint32_t argc;
  uint32_t envc;
  uint32_t fast_len;
};

/* A check: header, the subject NUL, then `len` bytes of what it must be. */
struct dp_plan_check {
  uint32_t kind;
  uint32_t len;
};

enum dp_plan_check_kind {
  DP_CHECK_CONTENT = 0,  /* the file holds exactly these bytes */
  DP_CHECK_ABSENT = 1,   /* there is no such file (len 0) */
  DP_CHECK_IDENTITY = 2, /* the file's "dev ino size mtime_sec mtime_nsec", in decimal */
  DP_CHECK_START = 3,    /* the process (subject: its pid) started at this time (field 22 of /proc/PID/stat), in decimal */
};

#endif
