/* The checkpoint container: a binary file of named sections, written atomically and validated whole.
 *
 *     header   "SWATCKPT" | u32 format version | u32 0
 *     section  u32 name length | name | u64 payload length | u32 CRC-32 of payload | payload   (repeated)
 *     trailer  "SWATCEND" | u32 section count | u32 0 | u64 file length | u32 CRC-32 of every byte before it
 *
 * All integers are little-endian; CRC-32 is zlib's. A reader checks the magic, the trailer (so a file
 * cut short anywhere is reported as truncated), every length against the bytes that are there, every
 * section's CRC and the whole-file CRC, and fails with SW_EINPUT and a message naming the file and
 * what is wrong; it never reads outside the file. The writer writes a temporary file in the target's
 * folder, fsyncs it, renames it over the target and fsyncs the folder, so the previous checkpoint
 * stays intact until the new one is complete. What the sections mean is the trainer's business. */
#ifndef SWATC_TRAIN_CHECKPOINT_H
#define SWATC_TRAIN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define SW_CKPT_MAGIC "SWATCKPT"
#define SW_CKPT_END_MAGIC "SWATCEND"
#define SW_CKPT_VERSION 1u
#define SW_CKPT_MAX_NAME 4096 /* longest section name a reader accepts */

typedef struct sw_ckpt_section {
  char *name;    /* NUL-terminated */
  void *data;    /* [size] bytes (64-byte aligned, NUL-terminated one past the end for text) */
  size_t size;
} sw_ckpt_section;

typedef struct sw_ckpt {
  sw_ckpt_section *s; /* [n] in file order */
  int n, cap;
} sw_ckpt;

/* Initialises an empty checkpoint. */
void sw_ckpt_init(sw_ckpt *c);
/* Frees every section. */
void sw_ckpt_free(sw_ckpt *c);
/* Adds a section holding a copy of data[0..n) (replacing a section of the same name). */
void sw_ckpt_put(sw_ckpt *c, const char *name, const void *data, size_t n);
/* Adds a text section (a copy of the NUL-terminated string, without the NUL). */
void sw_ckpt_put_text(sw_ckpt *c, const char *name, const char *text);
/* Returns the payload of section `name` and its size in *n, or NULL if there is none. */
const void *sw_ckpt_get(const sw_ckpt *c, const char *name, size_t *n);
/* Writes c to path atomically (temp file + fsync + rename + fsync of the folder). SW_EIO with a
 * message on failure; the file previously at path is then untouched and no temp file remains. */
int sw_ckpt_write(const sw_ckpt *c, const char *path, sw_err *e);
/* Reads and validates the checkpoint at path into c (initialised here; free it with sw_ckpt_free even
 * on failure). SW_EINPUT with a message and hint for a missing, foreign, truncated or corrupt file. */
int sw_ckpt_read(const char *path, sw_ckpt *c, sw_err *e);

/* Looks up `key` in key=value lines text[0..n) and copies its value into buf[cap]; returns 1 if
 * found (a value longer than cap - 1 is cut), 0 if not. */
int sw_kv_get(const char *text, size_t n, const char *key, char *buf, size_t cap);

/* Writes the lowercase hex SHA-256 of data[0..n) into hex[65]. */
void sw_sha256_hex(const void *data, size_t n, char hex[65]);

#endif
