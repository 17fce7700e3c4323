/* A string-keyed hash map (open addressing) for name lookups during import and in passes. */
#ifndef SWATC_UTIL_STRMAP_H
#define SWATC_UTIL_STRMAP_H

#include <stddef.h>

typedef struct strmap {
  const char **keys; /* not owned: keys must outlive the map */
  void **vals;
  size_t cap, len;
} strmap;

/* Initialises an empty map. */
void strmap_init(strmap *m);
/* Releases the map's tables (not the keys or values). */
void strmap_free(strmap *m);
/* Value stored under key, or NULL. */
void *strmap_get(const strmap *m, const char *key);
/* Stores val under key, replacing an earlier value. */
void strmap_put(strmap *m, const char *key, void *val);

#endif
