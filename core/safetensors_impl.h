/* safetensors_impl.h - test hooks of core/safetensors.c; not installed, not for
 * users of libgk. Exported (GK_API) only because the Criterion suites link the
 * shared library and cannot reach hidden symbols. */
#ifndef GK_SAFETENSORS_IMPL_H
#define GK_SAFETENSORS_IMPL_H

#include "gk/gk.h"

/* How many files of the checkpoint are open (header parsed and mapped) right
 * now: 1 for a single file, 0 for an index until a tensor is touched. Test-only:
 * reads without taking the checkpoint's lock. */
GK_API size_t gk_safetensors_shards_open(const gk_safetensors *st);

#endif
