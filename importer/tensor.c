/* TensorProto / SparseTensorProto decoding: every storage form, external data inside the model's folder. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "importer/onnx_internal.h"

/* Largest single tensor accepted (memory guard against hostile dims). */
#define MAX_TENSOR_BYTES ((int64_t)16 << 30)

void tensor_data_free(tensor_data *t) {
  free(t->data);
  memset(t, 0, sizeof *t);
}

int64_t tensor_numel(const tensor_data *t) { return ir_shape_numel(&t->shape); }

ir_dtype onnx_dtype(int32_t t) {
  switch (t) {
    case 1: return IR_F32;
    case 2: return IR_U8;
    case 3: return IR_I8;
    case 4: return IR_U16;
    case 5: return IR_I16;
    case 6: return IR_I32;
    case 7: return IR_I64;
    case 9: return IR_BOOL;
    case 10: return IR_F16;
    case 11: return IR_F64;
    case 12: return IR_U32;
    case 13: return IR_U64;
    case 16: return IR_BF16;
    default: return IR_UNDEF;
  }
}

const char *onnx_dtype_name(int32_t t) {
  static const char *names[] = {"UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64", "STRING",
                                "BOOL", "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16"};
  if (t >= 0 && t < (int32_t)SW_ARRAY_LEN(names)) return names[t];
  return "an unknown type";
}

static const char *tname(const Onnx__TensorProto *t) { return t->name && t->name[0] ? t->name : "(unnamed)"; }

static int bad(sw_err *e, const Onnx__TensorProto *t, const char *what) {
  sw_fail(e, SW_EINPUT, "tensor '%s': %s", tname(t), what);
  return sw_hint(e, "the model file is corrupt or was written by a broken exporter; export it again");
}

/* Shape and type checks shared by dense and sparse tensors. */
static int decode_header(const char *name, int32_t data_type, size_t n_dims, const int64_t *dims, tensor_data *out, sw_err *e) {
  out->dtype = onnx_dtype(data_type);
  if (out->dtype == IR_UNDEF) {
    sw_fail(e, SW_EINPUT, "tensor '%s' has unsupported element type %s", name, onnx_dtype_name(data_type));
    return sw_hint(e, "swatc reads numeric tensors (float, double, float16, integer, bool)");
  }
  if (n_dims > IR_MAX_RANK) {
    sw_fail(e, SW_EINPUT, "tensor '%s' has %zu dims; swatc supports rank <= %d", name, n_dims, IR_MAX_RANK);
    return sw_hint(e, "this is not a CNN/MLP tensor swatc can use");
  }
  out->shape.rank = (int)n_dims;
  int64_t numel = 1;
  for (size_t i = 0; i < n_dims; i++) {
    if (dims[i] < 0) {
      sw_fail(e, SW_EINPUT, "tensor '%s' has a negative dimension (%lld) in dims", name, (long long)dims[i]);
      return sw_hint(e, "the model file is corrupt; export it again");
    }
    if (dims[i] && numel > MAX_TENSOR_BYTES / dims[i]) {
      sw_fail(e, SW_EINPUT, "tensor '%s' is too large: its dims multiply to more than %lld elements", name,
              (long long)MAX_TENSOR_BYTES);
      return sw_hint(e, "the dims are corrupt (or the tensor exceeds 16 GiB, which swatc does not load)");
    }
    numel *= dims[i];
    out->shape.d[i] = dims[i];
  }
  if (numel * (int64_t)ir_dtype_size(out->dtype) > MAX_TENSOR_BYTES) {
    sw_fail(e, SW_EINPUT, "tensor '%s' is too large (%lld elements)", name, (long long)numel);
    return sw_hint(e, "the dims are corrupt (or the tensor exceeds 16 GiB, which swatc does not load)");
  }
  out->nbytes = (size_t)numel * ir_dtype_size(out->dtype);
  return SW_OK;
}

/* Resolves an external data location strictly inside dir. Returns a malloc'd path or NULL with e set. */
static char *external_path(const Onnx__TensorProto *t, const char *dir, const char *loc, sw_err *e) {
  if (!loc || !loc[0]) {
    bad(e, t, "external data without a location");
    return NULL;
  }
  if (loc[0] == '/' || strstr(loc, "..")) {
    sw_fail(e, SW_EINPUT, "tensor '%s': external data location '%s' is outside the model's folder", tname(t), loc);
    sw_hint(e, "external data files must sit in the model's folder (or below it) and be named relative to it");
    return NULL;
  }
  size_t n = strlen(dir) + strlen(loc) + 2;
  char *p = sw_xmalloc(n);
  snprintf(p, n, "%s/%s", dir, loc);
  char *rdir = realpath(dir, NULL), *rp = realpath(p, NULL);
  if (!rp) {
    sw_fail(e, SW_EINPUT, "tensor '%s': cannot open external data file '%s': %s", tname(t), p, strerror(errno));
    sw_hint(e, "keep the external data files beside the .onnx file they belong to");
    free(rdir);
    free(p);
    return NULL;
  }
  size_t dl = rdir ? strlen(rdir) : 0;
  if (!rdir || strncmp(rp, rdir, dl) != 0 || (rp[dl] != '/' && strcmp(rdir, "/") != 0)) {
    sw_fail(e, SW_EINPUT, "tensor '%s': external data location '%s' resolves outside the model's folder", tname(t), loc);
    sw_hint(e, "external data files must sit in the model's folder; symbolic links out of it are refused");
    free(rdir);
    free(rp);
    free(p);
    return NULL;
  }
  free(rdir);
  free(p);
  return rp;
}

static int read_external(const Onnx__TensorProto *t, const char *dir, tensor_data *out, sw_err *e) {
  const char *loc = NULL;
  int64_t offset = 0, length = -1;
  for (size_t i = 0; i < t->n_external_data; i++) {
    const Onnx__StringStringEntryProto *kv = t->external_data[i];
    if (!kv->key || !kv->value) continue;
    char *end;
    if (strcmp(kv->key, "location") == 0) loc = kv->value;
    else if (strcmp(kv->key, "offset") == 0 || strcmp(kv->key, "length") == 0) {
      errno = 0;
      long long v = strtoll(kv->value, &end, 10);
      if (errno || *end || v < 0) return bad(e, t, "external data has an invalid offset or length");
      if (kv->key[0] == 'o') offset = v;
      else length = v;
    }
  }
  if (length >= 0 && (size_t)length != out->nbytes) {
    char msg[200];
    snprintf(msg, sizeof msg, "external data length %lld does not match the %zu bytes its dims and type need", (long long)length,
             out->nbytes);
    return bad(e, t, msg);
  }
  char *path = external_path(t, dir, loc, e);
  if (!path) return e->code;
  struct stat st;
  FILE *f = NULL;
  if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || !(f = fopen(path, "rb"))) {
    sw_fail(e, SW_EINPUT, "tensor '%s': cannot read external data file '%s'", tname(t), path);
    sw_hint(e, "keep the external data files beside the .onnx file they belong to");
    free(path);
    return e->code;
  }
  if (offset > st.st_size || (int64_t)out->nbytes > st.st_size - offset) {
    fclose(f);
    sw_fail(e, SW_EINPUT, "tensor '%s': external data at offset %lld + %zu bytes runs past the end of '%s' (%lld bytes; truncated?)",
            tname(t), (long long)offset, out->nbytes, path, (long long)st.st_size);
    free(path);
    return sw_hint(e, "the external data file is truncated or belongs to another model; export again");
  }
  out->data = malloc(out->nbytes ? out->nbytes : 1);
  if (!out->data) {
    fclose(f);
    free(path);
    return sw_fail(e, SW_ENOMEM, "out of memory loading tensor '%s' (%zu bytes)", tname(t), out->nbytes);
  }
  int ok = fseeko(f, (off_t)offset, SEEK_SET) == 0 && fread(out->data, 1, out->nbytes, f) == out->nbytes;
  fclose(f);
  if (!ok) {
    sw_fail(e, SW_EINPUT, "tensor '%s': reading external data from '%s' failed", tname(t), path);
    free(path);
    return e->code;
  }
  free(path);
  return SW_OK;
}

static int count_mismatch(sw_err *e, const Onnx__TensorProto *t, const char *field, size_t have, int64_t want) {
  char msg[200];
  if (have == 0) snprintf(msg, sizeof msg, "no data: the tensor is empty but its dims describe %lld elements", (long long)want);
  else snprintf(msg, sizeof msg, "%s holds %zu values but dims describe %lld elements", field, have, (long long)want);
  return bad(e, t, msg);
}

int tensor_from_proto(const Onnx__TensorProto *t, const char *dir, tensor_data *out, sw_err *e) {
  memset(out, 0, sizeof *out);
  if (!t->has_data_type || t->data_type == 0) return bad(e, t, "no element type");
  if (decode_header(tname(t), t->data_type, t->n_dims, t->dims, out, e)) return e->code;
  if (t->segment) {
    sw_fail(e, SW_EINPUT, "tensor '%s' is stored in segments, which swatc does not support", tname(t));
    return sw_hint(e, "re-save the model with onnx.save_model");
  }
  int64_t numel = ir_shape_numel(&out->shape);
  size_t esz = ir_dtype_size(out->dtype);
  if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
    return read_external(t, dir, out, e);
  out->data = malloc(out->nbytes ? out->nbytes : 1);
  if (!out->data) return sw_fail(e, SW_ENOMEM, "out of memory loading tensor '%s' (%zu bytes)", tname(t), out->nbytes);
  int rc = SW_OK;
  size_t typed = t->n_float_data + t->n_double_data + t->n_int32_data + t->n_int64_data + t->n_uint64_data;
  if (t->has_raw_data && typed) {
    rc = bad(e, t, "holds both raw_data and typed data fields; which one is meant is ambiguous");
  } else if (t->has_raw_data) {
    if (t->raw_data.len != out->nbytes) {
      char msg[200];
      snprintf(msg, sizeof msg, "raw_data holds %zu bytes but dims and type need %zu", t->raw_data.len, out->nbytes);
      rc = bad(e, t, msg);
    } else if (out->nbytes) {
      memcpy(out->data, t->raw_data.data, out->nbytes);
    }
  } else {
    switch (out->dtype) {
      case IR_F32:
        if ((int64_t)t->n_float_data != numel) rc = count_mismatch(e, t, "float_data", t->n_float_data, numel);
        else if (numel) memcpy(out->data, t->float_data, out->nbytes);
        break;
      case IR_F64:
        if ((int64_t)t->n_double_data != numel) rc = count_mismatch(e, t, "double_data", t->n_double_data, numel);
        else if (numel) memcpy(out->data, t->double_data, out->nbytes);
        break;
      case IR_I64:
        if ((int64_t)t->n_int64_data != numel) rc = count_mismatch(e, t, "int64_data", t->n_int64_data, numel);
        else if (numel) memcpy(out->data, t->int64_data, out->nbytes);
        break;
      case IR_U32: case IR_U64:
        if ((int64_t)t->n_uint64_data != numel) rc = count_mismatch(e, t, "uint64_data", t->n_uint64_data, numel);
        else
          for (int64_t i = 0; i < numel; i++) {
            if (esz == 4) ((uint32_t *)out->data)[i] = (uint32_t)t->uint64_data[i];
            else ((uint64_t *)out->data)[i] = t->uint64_data[i];
          }
        break;
      default: /* int32_data carries int32, int16, int8, uint16, uint8, bool, float16, bfloat16 */
        if ((int64_t)t->n_int32_data != numel) rc = count_mismatch(e, t, "int32_data", t->n_int32_data, numel);
        else
          for (int64_t i = 0; i < numel; i++) {
            int32_t v = t->int32_data[i];
            switch (esz) {
              case 1: ((uint8_t *)out->data)[i] = (uint8_t)v; break;
              case 2: ((uint16_t *)out->data)[i] = (uint16_t)v; break;
              default: ((int32_t *)out->data)[i] = v; break;
            }
          }
        break;
    }
  }
  if (rc) tensor_data_free(out);
  return rc;
}

int tensor_from_sparse(const Onnx__SparseTensorProto *s, const char *dir, tensor_data *out, sw_err *e) {
  memset(out, 0, sizeof *out);
  const Onnx__TensorProto *vt = s->values, *it = s->indices;
  const char *name = vt && vt->name ? vt->name : "(unnamed sparse tensor)";
  if (!vt || !it) {
    sw_fail(e, SW_EINPUT, "sparse tensor '%s' lacks values or indices", name);
    return sw_hint(e, "the model file is corrupt; export it again");
  }
  tensor_data vals, idx;
  if (tensor_from_proto(vt, dir, &vals, e)) return e->code;
  if (tensor_from_proto(it, dir, &idx, e)) {
    tensor_data_free(&vals);
    return e->code;
  }
  int rc = SW_OK;
  if (decode_header(name, vt->data_type, s->n_dims, s->dims, out, e)) { rc = e->code; goto done; }
  int64_t nnz = vals.shape.rank == 1 ? vals.shape.d[0] : -1;
  int rank = out->shape.rank;
  if (nnz < 0 || idx.dtype != IR_I64 ||
      !((idx.shape.rank == 1 && idx.shape.d[0] == nnz) || (idx.shape.rank == 2 && idx.shape.d[0] == nnz && idx.shape.d[1] == rank))) {
    sw_fail(e, SW_EINPUT, "sparse tensor '%s': values must be [NNZ] and indices int64 [NNZ] or [NNZ, %d]", name, rank);
    rc = sw_hint(e, "the model file is corrupt; export it again");
    goto done;
  }
  out->data = calloc(1, out->nbytes ? out->nbytes : 1);
  if (!out->data) { rc = sw_fail(e, SW_ENOMEM, "out of memory densifying '%s'", name); goto done; }
  int64_t numel = ir_shape_numel(&out->shape);
  size_t esz = ir_dtype_size(out->dtype);
  const int64_t *ix = idx.data;
  for (int64_t k = 0; k < nnz; k++) {
    int64_t lin = 0;
    if (idx.shape.rank == 1) lin = ix[k];
    else
      for (int d = 0; d < rank; d++) {
        int64_t c = ix[k * rank + d];
        if (c < 0 || c >= out->shape.d[d]) { lin = -1; break; }
        lin = lin * out->shape.d[d] + c;
      }
    if (lin < 0 || lin >= numel) {
      sw_fail(e, SW_EINPUT, "sparse tensor '%s': index %lld of entry %lld is out of range", name, (long long)lin, (long long)k);
      rc = sw_hint(e, "the model file is corrupt; export it again");
      goto done;
    }
    memcpy((char *)out->data + (size_t)lin * esz, (const char *)vals.data + (size_t)k * esz, esz);
  }
done:
  if (rc) tensor_data_free(out);
  tensor_data_free(&vals);
  tensor_data_free(&idx);
  return rc;
}
