/* Resolves an entry of the hook table to the next definition (libc's) with dlsym(RTLD_NEXT), at its first use. */
#include "layer.h"
#include <dlfcn.h>
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
