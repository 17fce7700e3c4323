/* swatc's logits for an ONNX model, for comparison with another runtime (tests/export/ort.sh).
 *
 * usage: export_logits MODEL.onnx INPUT.bin LOGITS.bin [N]
 * Imports MODEL, runs the eval forward pass on a deterministic batch of N images (default 256): the
 * first N Fashion-MNIST test images when the dataset is installed, else seeded random pixels
 * normalised the same way. Writes the batch (float32 [N,C,H,W]) to INPUT.bin and the logits
 * (float32 [N,classes]) to LOGITS.bin, little-endian, and prints "N,C,H,W CLASSES". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "importer/importer.h"
#include "passes/passes.h"
#include "runtime/runtime.h"
#include "train/dataset.h"

static int write_floats(const char *path, const float *v, int64_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return 0;
  int ok = fwrite(v, sizeof *v, (size_t)n, f) == (size_t)n;
  return fclose(f) == 0 && ok;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: export_logits MODEL.onnx INPUT.bin LOGITS.bin [N]\n");
    return 1;
  }
  int64_t batch = argc > 4 ? atoll(argv[4]) : 256;
  sw_err e = {0};
  ir_graph *g = NULL;
  rt_state st;
  rt_state_init(&st);
  rt_program *p = NULL;
  sw_dataset train = {0}, test = {0};
  int rc = 1;
  static const char *const passes[] = {"eval-mode", "dce", "fuse", "memory-plan"};
  pass_opts po = {.batch = batch};
  if (batch < 1 || importer_load(argv[1], NULL, &g, &e) || passes_run(g, passes, 4, &po, &e) || rt_state_bind(&st, g, &e) ||
      rt_program_build(g, &st, batch, 2, NULL, &p, &e))
    goto fail;
  int64_t nin, nout;
  float *in = rt_program_buffer(p, g->inputs[0]->name, &nin);
  const ir_shape *s = &g->inputs[0]->shape;
  if (!in || s->rank != 4) {
    sw_fail(&e, SW_EINPUT, "the model's first input is not an image batch [N,C,H,W]");
    goto fail;
  }
  sw_dataset_opts dop = {.train_limit = 1, .test_limit = batch};
  if (sw_dataset_load("fashion-mnist", &dop, &train, &test, &e) == SW_OK && test.n == batch &&
      (int64_t)test.c * test.h * test.w * batch == nin) {
    sw_dataset_get(&test, 0, batch, in);
    fprintf(stderr, "export_logits: the first %lld Fashion-MNIST test images\n", (long long)batch);
  } else {
    sw_err_clear(&e);
    uint64_t r = 1;
    for (int64_t i = 0; i < nin; i++) {
      r = r * 6364136223846793005ULL + 1442695040888963407ULL;
      in[i] = ((float)(r >> 40) / (float)(1 << 24) - 0.5f) / 0.2887f;
    }
    fprintf(stderr, "export_logits: Fashion-MNIST not found; a seeded random batch of %lld\n", (long long)batch);
  }
  if (rt_program_run(p, 1, &e)) goto fail;
  float *out = rt_program_buffer(p, g->outputs[0]->name, &nout);
  if (!out || !write_floats(argv[2], in, nin) || !write_floats(argv[3], out, nout)) {
    sw_fail(&e, SW_EIO, "cannot write '%s' or '%s'", argv[2], argv[3]);
    goto fail;
  }
  printf("%lld,%lld,%lld,%lld %lld\n", (long long)batch, (long long)s->d[1], (long long)s->d[2], (long long)s->d[3],
         (long long)(nout / batch));
  rc = 0;
fail:
  if (rc) sw_err_print(&e, stderr);
  rt_program_free(p);
  rt_state_free(&st);
  ir_graph_free(g);
  sw_dataset_free(&train);
  sw_dataset_free(&test);
  return rc;
}
