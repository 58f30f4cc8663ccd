/* Resolves every entry of the hook table to the next definition (libc's) with dlsym(RTLD_NEXT). */
#include "layer.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define DP_DEFINE_REAL(name, ret, params, required) ret(*real_##name) params;
DP_HOOKS(DP_DEFINE_REAL)
#undef DP_DEFINE_REAL

void dp_resolve_hooks(void) {
#define DP_RESOLVE(name, ret, params, required)                                            \
  real_##name = (ret(*) params)dlsym(RTLD_NEXT, #name);                                    \
  if (real_##name == NULL && (required)) {                                                 \
    static const char msg[] = "doppel layer: libc has no " #name "; cannot continue\n";   \
    (void)!write(2, msg, sizeof msg - 1);                                                  \
    abort();                                                                               \
  }
  DP_HOOKS(DP_RESOLVE)
#undef DP_RESOLVE
}
