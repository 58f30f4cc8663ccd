/* Resolves an entry of the hook table to the next definition (libc's) with dlsym(RTLD_NEXT), at its first use. */
#include "layer.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *dp_reals[DP_HOOK_COUNT];

#define DP_HOOK_NAME(name, ret, params, required) #name,
static const char *const names[DP_HOOK_COUNT] = {DP_HOOKS(DP_HOOK_NAME)};
#undef DP_HOOK_NAME
#define DP_HOOK_REQUIRED(name, ret, params, required) required,
static const unsigned char required[DP_HOOK_COUNT] = {DP_HOOKS(DP_HOOK_REQUIRED)};
#undef DP_HOOK_REQUIRED

/* Two threads may both look a hook up; they find the same definition. */
void *dp_resolve_hook(enum dp_hook hook) {
  void *fn = dlsym(RTLD_NEXT, names[hook]);
  if (fn == NULL && required[hook]) {
    static const char a[] = "doppel layer: libc has no ";
    static const char b[] = "; cannot continue\n";
    (void)!write(2, a, sizeof a - 1);
    (void)!write(2, names[hook], strlen(names[hook]));
    (void)!write(2, b, sizeof b - 1);
    abort();
  }
  __atomic_store_n(&dp_reals[hook], fn != NULL ? fn : DP_REAL_MISSING, __ATOMIC_RELAXED);
  return fn != NULL ? fn : DP_REAL_MISSING;
}

/* What a forked child calls before its exec (libuv: dup2, execvpe; shells and Python: dup2, close, fcntl, execve), looked
 * up in the parent as it forks: a lookup in the child is lost at its exec, so every spawn would walk every library's
 * symbols again (about 4 page faults a spawn, measured with node spawning sh). */
static const enum dp_hook child_hooks[] = {DP_HOOK_dup2, DP_HOOK_dup3, DP_HOOK_close, DP_HOOK_fcntl, DP_HOOK_execve, DP_HOOK_execvpe};
static void resolve_for_child(void) {
  for (size_t i = 0; i < sizeof child_hooks / sizeof child_hooks[0]; i++) (void)dp_real(child_hooks[i]);
}
__attribute__((constructor)) static void fork_safe(void) { pthread_atfork(resolve_for_child, NULL, NULL); }
