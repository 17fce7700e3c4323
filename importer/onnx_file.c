/* Reading a model file: every way a file can be wrong gets its own message. */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "importer/onnx_internal.h"

static int looks_like(const unsigned char *b, size_t n, const char **what) {
  if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) { *what = "a gzip file"; return 1; }
  if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) { *what = "a PNG image"; return 1; }
  if (n >= 4 && memcmp(b, "PK\x03\x04", 4) == 0) { *what = "a zip archive (a PyTorch .pt checkpoint?)"; return 1; }
  if (n >= 2 && b[0] == 0x80 && b[1] <= 5) { *what = "a Python pickle (a PyTorch .pt/.pth file?)"; return 1; }
  if (n >= 4 && memcmp(b, "\x7f" "ELF", 4) == 0) { *what = "an executable"; return 1; }
  size_t text = 0, m = n < 512 ? n : 512;
  for (size_t i = 0; i < m; i++)
    if (b[i] == '\n' || b[i] == '\r' || b[i] == '\t' || (b[i] >= 32 && b[i] < 127)) text++;
  if (m >= 16 && text == m) { *what = "a text file"; return 1; }
  return 0;
}

int onnx_read_file(const char *path, unsigned char **buf, size_t *len, sw_err *e) {
  *buf = NULL;
  *len = 0;
  struct stat st;
  if (stat(path, &st) != 0) {
    sw_fail(e, SW_EINPUT, "cannot open model '%s': %s", path, strerror(errno));
    return sw_hint(e, "check the path; models exported from PyTorch end in .onnx");
  }
  if (S_ISDIR(st.st_mode)) {
    sw_fail(e, SW_EINPUT, "'%s' is a directory, not an ONNX model file", path);
    return sw_hint(e, "give the path of the .onnx file itself");
  }
  if (!S_ISREG(st.st_mode)) {
    sw_fail(e, SW_EINPUT, "'%s' is not a regular file", path);
    return sw_hint(e, "give the path of an .onnx file");
  }
  if ((int64_t)st.st_size > IMPORTER_MAX_FILE) {
    sw_fail(e, SW_EINPUT, "model file '%s' is %.1f GiB, larger than the 2 GiB protobuf limit", path,
            (double)st.st_size / (1 << 30));
    return sw_hint(e, "models over 2 GiB must store their tensors as external data: "
                      "torch.onnx.export writes them that way when the model is large (or use onnx.save_model(..., save_as_external_data=True))");
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    sw_fail(e, SW_EINPUT, "cannot read model '%s': %s", path, strerror(errno));
    return sw_hint(e, "check the file's permissions");
  }
  size_t n = (size_t)st.st_size;
  unsigned char *b = malloc(n ? n : 1);
  if (!b) {
    fclose(f);
    return sw_fail(e, SW_ENOMEM, "out of memory reading '%s' (%zu bytes)", path, n);
  }
  size_t got = n ? fread(b, 1, n, f) : 0;
  int rerr = ferror(f);
  fclose(f);
  if (got != n || rerr) {
    free(b);
    sw_fail(e, SW_EINPUT, "cannot read model '%s': read %zu of %zu bytes", path, got, n);
    return sw_hint(e, "the file changed while it was read, or the disk has an error");
  }
  *buf = b;
  *len = n;
  return SW_OK;
}

int onnx_parse_model(const void *bytes, size_t n, const char *name, Onnx__ModelProto **model, sw_err *e) {
  *model = NULL;
  if (n == 0) {
    sw_fail(e, SW_EINPUT, "model '%s' is empty", name);
    return sw_hint(e, "the export was probably interrupted; export the model again");
  }
  const char *what = NULL;
  int odd = looks_like(bytes, n, &what);
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, bytes);
  if (!m) {
    if (odd) sw_fail(e, SW_EINPUT, "'%s' is not an ONNX model: it looks like %s", name, what);
    else sw_fail(e, SW_EINPUT, "'%s' is not a valid ONNX model: the protobuf data cannot be parsed (the file is truncated, corrupt, or not ONNX)", name);
    return sw_hint(e, "export the model again with torch.onnx.export and check it with onnx.checker.check_model");
  }
  if (!m->graph || (!m->has_ir_version && m->n_opset_import == 0)) {
    onnx__model_proto__free_unpacked(m, NULL);
    if (odd) sw_fail(e, SW_EINPUT, "'%s' is not an ONNX model: it looks like %s", name, what);
    else sw_fail(e, SW_EINPUT, "'%s' is not an ONNX model: it has no graph", name);
    return sw_hint(e, "export the model again with torch.onnx.export and check it with onnx.checker.check_model");
  }
  *model = m;
  return SW_OK;
}

int importer_metadata(const void *bytes, size_t n, const char *key, char *out, size_t cap) {
  if (cap == 0) return 0;
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, bytes);
  if (!m) return 0;
  int found = 0;
  for (size_t i = 0; i < m->n_metadata_props && !found; i++) {
    const Onnx__StringStringEntryProto *kv = m->metadata_props[i];
    if (!kv->key || strcmp(kv->key, key) != 0) continue;
    snprintf(out, cap, "%s", kv->value ? kv->value : "");
    found = 1;
  }
  onnx__model_proto__free_unpacked(m, NULL);
  return found;
}
