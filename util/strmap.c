#include "util/strmap.h"

#include <stdint.h>
#include <string.h>

#include "util/err.h"

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

void strmap_init(strmap *m) { memset(m, 0, sizeof *m); }

void strmap_free(strmap *m) {
  free(m->keys);
  free(m->vals);
  memset(m, 0, sizeof *m);
}

static size_t slot(const strmap *m, const char *key) {
  size_t i = (size_t)hash(key) & (m->cap - 1);
  while (m->keys[i] && strcmp(m->keys[i], key) != 0) i = (i + 1) & (m->cap - 1);
  return i;
}

void *strmap_get(const strmap *m, const char *key) {
  if (!m->cap) return NULL;
  size_t i = slot(m, key);
  return m->keys[i] ? m->vals[i] : NULL;
}

void strmap_put(strmap *m, const char *key, void *val) {
  if (2 * (m->len + 1) > m->cap) {
    strmap old = *m;
    m->cap = old.cap ? 2 * old.cap : 64;
    m->keys = sw_xcalloc(m->cap, sizeof *m->keys);
    m->vals = sw_xcalloc(m->cap, sizeof *m->vals);
    m->len = 0;
    for (size_t i = 0; i < old.cap; i++)
      if (old.keys[i]) strmap_put(m, old.keys[i], old.vals[i]);
    free(old.keys);
    free(old.vals);
  }
  size_t i = slot(m, key);
  if (!m->keys[i]) {
    m->keys[i] = key;
    m->len++;
  }
  m->vals[i] = val;
}
